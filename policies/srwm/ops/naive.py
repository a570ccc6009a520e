"""The SRWM op in plain PyTorch: a step loop that reads like docs/SPEC.md, section 1.

See policies/srwm/README.md for the math.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _row_rates(b: torch.Tensor, d: int) -> torch.Tensor:
    """Expand the 4 learning rates to one rate per row of W.

    b: [B, H, 4] -> [B, H, 3d+4]: rows y, q, k get b[0], b[1], b[2]; the 4 rate rows get b[3].
    """
    sizes = (d, d, d, 4)
    return torch.cat([b[..., i : i + 1].expand(*b.shape[:-1], n) for i, n in enumerate(sizes)],
                     dim=-1)


def srwm_naive(
    x: torch.Tensor,
    w0: torch.Tensor,
    state: torch.Tensor | None = None,
    episode_start: torch.Tensor | None = None,
    *,
    detach_every_step: bool = False,
    decay: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the self-referential weight matrix over T steps.

    Args:
        x: [T, B, H, d] head inputs BEFORE the per-head softmax (the op applies it).
        w0: [H, 3d+4, d] base weights, row blocks y | q | k | 4 rates.
        state: [B, H, 3d+4, d] modification W - W0 at the start; None means zeros.
        episode_start: [T, B] bool; where True the state is zeroed before step t.
        detach_every_step: detach the state after every update (the published code's
            behaviour: no gradient through the self-modification).
        decay: lambda in (0, 1]: before step t reads W, the modification is scaled,
            S <- lambda S (after the reset of step t, if any). 1 = no decay (the paper's op).

    v_t - vbar_t = W q_t - W k_t is computed as one product W (q_t - k_t) (same value,
    one matrix-vector product fewer).

    Returns:
        y: [T, B, H, d], y_t = W_y x_t read before step t's update.
        final_state: [B, H, 3d+4, d] modification after the last step's update.
    """
    T, B, H, d = x.shape
    rows = 3 * d + 4
    if w0.shape != (H, rows, d):
        raise ValueError(f"w0 must have shape {(H, rows, d)}, got {tuple(w0.shape)}")
    s = x.new_zeros(B, H, rows, d) if state is None else state
    if s.shape != (B, H, rows, d):
        raise ValueError(f"state must have shape {(B, H, rows, d)}, got {tuple(s.shape)}")
    zero = x.new_zeros(())
    ys = []
    for t in range(T):
        if episode_start is not None:
            start = episode_start[t].to(device=x.device, dtype=torch.bool)  # [B]
            s = torch.where(start.view(B, 1, 1, 1), zero, s)
        if decay != 1.0:
            s = decay * s
        w = w0 + s  # [B, H, 3d+4, d]
        x_t = F.softmax(x[t], dim=-1)  # [B, H, d]
        out = torch.einsum("bhrc,bhc->bhr", w, x_t)  # [B, H, 3d+4]
        y_t, q_raw, k_raw, b_raw = out.split((d, d, d, 4), dim=-1)
        q_t = F.softmax(q_raw, dim=-1)  # [B, H, d]
        k_t = F.softmax(k_raw, dim=-1)  # [B, H, d]
        b_t = torch.sigmoid(b_raw)  # [B, H, 4]
        v_minus_vbar = torch.einsum("bhrc,bhc->bhr", w, q_t - k_t)  # [B, H, 3d+4]
        delta = _row_rates(b_t, d) * v_minus_vbar  # [B, H, 3d+4]
        s = s + delta.unsqueeze(-1) * k_t.unsqueeze(-2)
        if detach_every_step:
            s = s.detach()
        ys.append(y_t)
    y = torch.stack(ys) if ys else x.new_zeros(0, B, H, d)
    return y, s
