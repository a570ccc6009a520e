"""Triton kernels of the fused SRWM op (see FUSED.md for the math and the memory layout).

Imported only by fused_recurrent.py, never at `import policies` time. The kernels call no
other @triton.jit function on purpose: fused_recurrent.py runs them through the Triton
interpreter for CPU tensors by wrapping `kernel.fn`, which works only for self-contained
kernels.

One program per (batch element b, head h) keeps the head's matrix on chip for all T steps,
as four row blocks: y, q, k (D x D each) and the 4 rate rows (4 x D). D must be a power of
two (tl.arange). All arithmetic is fp32.

Memory layouts (contiguous, R = 3D + 4, NC = ceil(T / CK)):
    x, y, dy, dx, kv:    [T, B, H, D]
    w0:                  [H, R, D]
    s0, sT, ds0, dw0p:   [B, H, R, D]
    es:                  [T, B] uint8 (1 = zero the state before step t)
    ck:                  [B, H, NC+1, R, D] slot c < NC: state before step c*CK (before that
                         step's reset); slot NC: the final state
    u:                   [T, B, H, R]      rate-scaled update vector B_t (v_t - vbar_t)
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def srwm_fwd_kernel(
    x_ptr, w0_ptr, s0_ptr, es_ptr,
    y_ptr, st_ptr, ck_ptr, u_ptr, kv_ptr,
    T, B, H, NC, LAM,
    HAS_S0: tl.constexpr, HAS_ES: tl.constexpr, SAVE: tl.constexpr,
    D: tl.constexpr, CK: tl.constexpr,
):
    """Forward recurrence; with SAVE, also write checkpoints and per-step update vectors.
    LAM: the state decay, S <- LAM * S after step t's reset and before it reads W."""
    R: tl.constexpr = 3 * D + 4
    pid = tl.program_id(0).to(tl.int64)
    b = pid // H
    h = pid % H
    rows = tl.arange(0, D)
    rows4 = tl.arange(0, 4)
    cols = tl.arange(0, D)
    blk = rows[:, None] * D + cols[None, :]  # [D, D] offsets inside a D-row block
    blk4 = rows4[:, None] * D + cols[None, :]  # [4, D] offsets inside the rate block

    w0_base = w0_ptr + h * R * D
    a_y = tl.load(w0_base + blk).to(tl.float32)
    a_q = tl.load(w0_base + D * D + blk).to(tl.float32)
    a_k = tl.load(w0_base + 2 * D * D + blk).to(tl.float32)
    a_b = tl.load(w0_base + 3 * D * D + blk4).to(tl.float32)

    s_off = pid * R * D
    if HAS_S0:
        s_y = tl.load(s0_ptr + s_off + blk).to(tl.float32)
        s_q = tl.load(s0_ptr + s_off + D * D + blk).to(tl.float32)
        s_k = tl.load(s0_ptr + s_off + 2 * D * D + blk).to(tl.float32)
        s_b = tl.load(s0_ptr + s_off + 3 * D * D + blk4).to(tl.float32)
    else:
        s_y = tl.zeros([D, D], dtype=tl.float32)
        s_q = tl.zeros([D, D], dtype=tl.float32)
        s_k = tl.zeros([D, D], dtype=tl.float32)
        s_b = tl.zeros([4, D], dtype=tl.float32)

    for t in range(0, T):
        if SAVE:
            if t % CK == 0:
                c_off = (pid * (NC + 1) + t // CK) * R * D
                tl.store(ck_ptr + c_off + blk, s_y)
                tl.store(ck_ptr + c_off + D * D + blk, s_q)
                tl.store(ck_ptr + c_off + 2 * D * D + blk, s_k)
                tl.store(ck_ptr + c_off + 3 * D * D + blk4, s_b)
        if HAS_ES:
            reset = tl.load(es_ptr + t * B + b) != 0
            s_y = tl.where(reset, 0.0, s_y)
            s_q = tl.where(reset, 0.0, s_q)
            s_k = tl.where(reset, 0.0, s_k)
            s_b = tl.where(reset, 0.0, s_b)
        s_y = s_y * LAM
        s_q = s_q * LAM
        s_k = s_k * LAM
        s_b = s_b * LAM
        w_y = a_y + s_y
        w_q = a_q + s_q
        w_k = a_k + s_k
        w_b = a_b + s_b

        v_off = ((t * B + b) * H + h) * D
        xin = tl.load(x_ptr + v_off + cols).to(tl.float32)
        xe = tl.exp(xin - tl.max(xin, 0))
        a = xe / tl.sum(xe, 0)  # softmax of the head input
        z_y = tl.sum(w_y * a[None, :], 1)
        z_q = tl.sum(w_q * a[None, :], 1)
        z_k = tl.sum(w_k * a[None, :], 1)
        z_b = tl.sum(w_b * a[None, :], 1)
        tl.store(y_ptr + v_off + rows, z_y)

        qe = tl.exp(z_q - tl.max(z_q, 0))
        q = qe / tl.sum(qe, 0)
        ke = tl.exp(z_k - tl.max(z_k, 0))
        k = ke / tl.sum(ke, 0)
        beta = tl.sigmoid(z_b)
        qk = q - k  # v - vbar = W (q - k)
        u_y = tl.sum(w_y * qk[None, :], 1) * tl.sum(tl.where(rows4 == 0, beta, 0.0), 0)
        u_q = tl.sum(w_q * qk[None, :], 1) * tl.sum(tl.where(rows4 == 1, beta, 0.0), 0)
        u_k = tl.sum(w_k * qk[None, :], 1) * tl.sum(tl.where(rows4 == 2, beta, 0.0), 0)
        u_b = tl.sum(w_b * qk[None, :], 1) * tl.sum(tl.where(rows4 == 3, beta, 0.0), 0)
        s_y = s_y + u_y[:, None] * k[None, :]
        s_q = s_q + u_q[:, None] * k[None, :]
        s_k = s_k + u_k[:, None] * k[None, :]
        s_b = s_b + u_b[:, None] * k[None, :]
        if SAVE:
            u_off = ((t * B + b) * H + h) * R
            tl.store(u_ptr + u_off + rows, u_y)
            tl.store(u_ptr + u_off + D + rows, u_q)
            tl.store(u_ptr + u_off + 2 * D + rows, u_k)
            tl.store(u_ptr + u_off + 3 * D + rows4, u_b)
            tl.store(kv_ptr + v_off + cols, k)

    tl.store(st_ptr + s_off + blk, s_y)
    tl.store(st_ptr + s_off + D * D + blk, s_q)
    tl.store(st_ptr + s_off + 2 * D * D + blk, s_k)
    tl.store(st_ptr + s_off + 3 * D * D + blk4, s_b)
    if SAVE:
        c_off = (pid * (NC + 1) + NC) * R * D
        tl.store(ck_ptr + c_off + blk, s_y)
        tl.store(ck_ptr + c_off + D * D + blk, s_q)
        tl.store(ck_ptr + c_off + 2 * D * D + blk, s_k)
        tl.store(ck_ptr + c_off + 3 * D * D + blk4, s_b)


@triton.jit
def srwm_bwd_kernel(
    x_ptr, w0_ptr, es_ptr, dy_ptr, dst_ptr, ck_ptr, u_ptr, kv_ptr,
    dx_ptr, dw0p_ptr, ds0_ptr,
    T, B, H, NC, LAM,
    HAS_ES: tl.constexpr, D: tl.constexpr, CK: tl.constexpr,
):
    """Reverse pass over t = T-1 .. 0. Each chunk of CK steps starts from the stored state
    after its last update (the next checkpoint) and walks back by undoing the stored rank-1
    updates, S_t = S_{t+1} - U_t k_t^T, which is the (reset and decayed) state step t read;
    dividing it by LAM gives the state after step t-1. Where step t reset the state, the state
    before the reset is rebuilt by replaying the chunk's resets, decays and updates from its
    first checkpoint.

    g_* blocks hold dL/dS (the gradient w.r.t. the state AFTER the step being processed);
    da_* accumulate dL/dW0 of this (b, h) (summed over b on the host).
    """
    R: tl.constexpr = 3 * D + 4
    pid = tl.program_id(0).to(tl.int64)
    b = pid // H
    h = pid % H
    rows = tl.arange(0, D)
    rows4 = tl.arange(0, 4)
    cols = tl.arange(0, D)
    blk = rows[:, None] * D + cols[None, :]
    blk4 = rows4[:, None] * D + cols[None, :]

    w0_base = w0_ptr + h * R * D
    a_y = tl.load(w0_base + blk).to(tl.float32)
    a_q = tl.load(w0_base + D * D + blk).to(tl.float32)
    a_k = tl.load(w0_base + 2 * D * D + blk).to(tl.float32)
    a_b = tl.load(w0_base + 3 * D * D + blk4).to(tl.float32)

    s_off = pid * R * D
    g_y = tl.load(dst_ptr + s_off + blk).to(tl.float32)
    g_q = tl.load(dst_ptr + s_off + D * D + blk).to(tl.float32)
    g_k = tl.load(dst_ptr + s_off + 2 * D * D + blk).to(tl.float32)
    g_b = tl.load(dst_ptr + s_off + 3 * D * D + blk4).to(tl.float32)
    da_y = tl.zeros([D, D], dtype=tl.float32)
    da_q = tl.zeros([D, D], dtype=tl.float32)
    da_k = tl.zeros([D, D], dtype=tl.float32)
    da_b = tl.zeros([4, D], dtype=tl.float32)

    for ci in range(0, NC):
        c = NC - 1 - ci
        t_lo = c * CK
        t_hi = tl.minimum(t_lo + CK, T)
        # the state after the chunk's last update = the next checkpoint (slot NC: final state)
        n_off = (pid * (NC + 1) + c + 1) * R * D
        s_y = tl.load(ck_ptr + n_off + blk)
        s_q = tl.load(ck_ptr + n_off + D * D + blk)
        s_k = tl.load(ck_ptr + n_off + 2 * D * D + blk)
        s_b = tl.load(ck_ptr + n_off + 3 * D * D + blk4)
        for j in range(0, t_hi - t_lo):
            t = t_hi - 1 - j
            # --- undo step t's update: S_t = S_{t+1} - U_t k_t^T (the state step t read)
            r_off = ((t * B + b) * H + h) * R
            kr = tl.load(kv_ptr + ((t * B + b) * H + h) * D + cols)
            s_y = s_y - tl.load(u_ptr + r_off + rows)[:, None] * kr[None, :]
            s_q = s_q - tl.load(u_ptr + r_off + D + rows)[:, None] * kr[None, :]
            s_k = s_k - tl.load(u_ptr + r_off + 2 * D + rows)[:, None] * kr[None, :]
            s_b = s_b - tl.load(u_ptr + r_off + 3 * D + rows4)[:, None] * kr[None, :]
            if HAS_ES:
                reset = tl.load(es_ptr + t * B + b) != 0
                s_y = tl.where(reset, 0.0, s_y)
                s_q = tl.where(reset, 0.0, s_q)
                s_k = tl.where(reset, 0.0, s_k)
                s_b = tl.where(reset, 0.0, s_b)
            w_y = a_y + s_y
            w_q = a_q + s_q
            w_k = a_k + s_k
            w_b = a_b + s_b

            # --- recompute step t's forward quantities
            v_off = ((t * B + b) * H + h) * D
            xin = tl.load(x_ptr + v_off + cols).to(tl.float32)
            xe = tl.exp(xin - tl.max(xin, 0))
            a = xe / tl.sum(xe, 0)
            z_q = tl.sum(w_q * a[None, :], 1)
            z_k = tl.sum(w_k * a[None, :], 1)
            z_b = tl.sum(w_b * a[None, :], 1)
            qe = tl.exp(z_q - tl.max(z_q, 0))
            q = qe / tl.sum(qe, 0)
            ke = tl.exp(z_k - tl.max(z_k, 0))
            k = ke / tl.sum(ke, 0)
            beta = tl.sigmoid(z_b)
            b0 = tl.sum(tl.where(rows4 == 0, beta, 0.0), 0)
            b1 = tl.sum(tl.where(rows4 == 1, beta, 0.0), 0)
            b2 = tl.sum(tl.where(rows4 == 2, beta, 0.0), 0)
            b3 = tl.sum(tl.where(rows4 == 3, beta, 0.0), 0)
            qk = q - k
            u_y = tl.sum(w_y * qk[None, :], 1)  # v - vbar, before the rate
            u_q = tl.sum(w_q * qk[None, :], 1)
            u_k = tl.sum(w_k * qk[None, :], 1)
            u_b = tl.sum(w_b * qk[None, :], 1)

            # --- through the update S' = S + diag(beta_rows) u k^T, upstream G = g_*
            gk_y = tl.sum(g_y * k[None, :], 1)  # G k, per row block
            gk_q = tl.sum(g_q * k[None, :], 1)
            gk_k = tl.sum(g_k * k[None, :], 1)
            gk_b = tl.sum(g_b * k[None, :], 1)
            du_y = b0 * gk_y
            du_q = b1 * gk_q
            du_k = b2 * gk_k
            du_b = b3 * gk_b
            dbeta = (
                tl.where(rows4 == 0, tl.sum(u_y * gk_y, 0), 0.0)
                + tl.where(rows4 == 1, tl.sum(u_q * gk_q, 0), 0.0)
                + tl.where(rows4 == 2, tl.sum(u_k * gk_k, 0), 0.0)
                + tl.where(rows4 == 3, tl.sum(u_b * gk_b, 0), 0.0)
            )
            dk_upd = (
                tl.sum(g_y * (b0 * u_y)[:, None], 0)
                + tl.sum(g_q * (b1 * u_q)[:, None], 0)
                + tl.sum(g_k * (b2 * u_k)[:, None], 0)
                + tl.sum(g_b * (b3 * u_b)[:, None], 0)
            )
            dq = (  # W^T du (v = W q);  vbar = W k gives -W^T du to dk
                tl.sum(w_y * du_y[:, None], 0)
                + tl.sum(w_q * du_q[:, None], 0)
                + tl.sum(w_k * du_k[:, None], 0)
                + tl.sum(w_b * du_b[:, None], 0)
            )
            dk = dk_upd - dq
            dz_q = q * (dq - tl.sum(dq * q, 0))
            dz_k = k * (dk - tl.sum(dk * k, 0))
            dz_b = dbeta * beta * (1.0 - beta)
            dz_y = tl.load(dy_ptr + v_off + rows).to(tl.float32)

            # --- into the input softmax
            da_in = (
                tl.sum(w_y * dz_y[:, None], 0)
                + tl.sum(w_q * dz_q[:, None], 0)
                + tl.sum(w_k * dz_k[:, None], 0)
                + tl.sum(w_b * dz_b[:, None], 0)
            )
            tl.store(dx_ptr + v_off + cols, a * (da_in - tl.sum(da_in * a, 0)))

            # --- dL/dW_t (local): dz a^T + du (q - k)^T; feeds W0 and the state carry
            l_y = dz_y[:, None] * a[None, :] + du_y[:, None] * qk[None, :]
            l_q = dz_q[:, None] * a[None, :] + du_q[:, None] * qk[None, :]
            l_k = dz_k[:, None] * a[None, :] + du_k[:, None] * qk[None, :]
            l_b = dz_b[:, None] * a[None, :] + du_b[:, None] * qk[None, :]
            da_y += l_y
            da_q += l_q
            da_k += l_k
            da_b += l_b
            g_y = (g_y + l_y) * LAM  # S_read = LAM * S_before
            g_q = (g_q + l_q) * LAM
            g_k = (g_k + l_k) * LAM
            g_b = (g_b + l_b) * LAM
            s_y = s_y / LAM  # the state after step t-1 (rebuilt below where step t reset)
            s_q = s_q / LAM
            s_k = s_k / LAM
            s_b = s_b / LAM
            if HAS_ES:
                g_y = tl.where(reset, 0.0, g_y)
                g_q = tl.where(reset, 0.0, g_q)
                g_k = tl.where(reset, 0.0, g_k)
                g_b = tl.where(reset, 0.0, g_b)
                if reset & (t > t_lo):
                    # the reset destroyed S_t before the reset: rebuild it from the chunk's
                    # checkpoint by replaying the stored updates of steps t_lo .. t-1
                    c_off = (pid * (NC + 1) + c) * R * D
                    s_y = tl.load(ck_ptr + c_off + blk)
                    s_q = tl.load(ck_ptr + c_off + D * D + blk)
                    s_k = tl.load(ck_ptr + c_off + 2 * D * D + blk)
                    s_b = tl.load(ck_ptr + c_off + 3 * D * D + blk4)
                    for s in range(t_lo, t):
                        rs = tl.load(es_ptr + s * B + b) != 0
                        s_y = tl.where(rs, 0.0, s_y)
                        s_q = tl.where(rs, 0.0, s_q)
                        s_k = tl.where(rs, 0.0, s_k)
                        s_b = tl.where(rs, 0.0, s_b)
                        s_y = s_y * LAM
                        s_q = s_q * LAM
                        s_k = s_k * LAM
                        s_b = s_b * LAM
                        p_off = ((s * B + b) * H + h) * R
                        kp = tl.load(kv_ptr + ((s * B + b) * H + h) * D + cols)
                        s_y = s_y + tl.load(u_ptr + p_off + rows)[:, None] * kp[None, :]
                        s_q = s_q + tl.load(u_ptr + p_off + D + rows)[:, None] * kp[None, :]
                        s_k = s_k + tl.load(u_ptr + p_off + 2 * D + rows)[:, None] * kp[None, :]
                        s_b = s_b + tl.load(u_ptr + p_off + 3 * D + rows4)[:, None] * kp[None, :]

    tl.store(ds0_ptr + s_off + blk, g_y)
    tl.store(ds0_ptr + s_off + D * D + blk, g_q)
    tl.store(ds0_ptr + s_off + 2 * D * D + blk, g_k)
    tl.store(ds0_ptr + s_off + 3 * D * D + blk4, g_b)
    tl.store(dw0p_ptr + s_off + blk, da_y)
    tl.store(dw0p_ptr + s_off + D * D + blk, da_q)
    tl.store(dw0p_ptr + s_off + 2 * D * D + blk, da_k)
    tl.store(dw0p_ptr + s_off + 3 * D * D + blk4, da_b)
