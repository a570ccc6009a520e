"""The SRWM op as one fused Triton kernel: forward and backward of the whole unroll.

Same signature and semantics as `srwm_naive` (docs/SPEC.md, section 1). The design, the memory
formula and the derivation of the backward pass are in FUSED.md beside this file.

Importing this module imports triton (it raises ImportError with a clear message when triton
is missing); nothing is compiled before the first call. CUDA tensors run the compiled kernels;
CPU tensors run the same kernels through the Triton interpreter (slow: for tests only), which
needs TRITON_INTERPRET=1 set before triton is first imported in the process.
Set SRWM_FUSED_NAN_OUTPUTS=1 to allocate every output and gradient filled with NaN, so that
memory a kernel fails to write shows up in tests.
"""

from __future__ import annotations

import math
import os

import torch

try:
    import triton  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "policies.srwm.ops.fused_recurrent needs the 'triton' package (pip install triton); "
        "use the naive op (kernel='naive') without it"
    ) from err

from . import _fused_kernels as _k

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_HEAD_SIZE = 64
DEFAULT_CHECKPOINT_EVERY = 16
NAN_ENV = "SRWM_FUSED_NAN_OUTPUTS"

_interpreted: dict[str, object] = {}


def _kernel(name: str, device: torch.device):
    """The kernel to launch: compiled for CUDA, interpreted for CPU tensors."""
    kern = getattr(_k, name)
    if device.type == "cuda":
        return kern
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(tl.max, InterpretedFunction):
        raise RuntimeError(
            "the fused srwm kernel runs CPU tensors only in the Triton interpreter, which needs "
            "TRITON_INTERPRET=1 in the environment before triton is first imported in this "
            "process; use kernel='naive' on CPU, or CUDA tensors"
        )
    if isinstance(kern, InterpretedFunction):
        return kern
    if name not in _interpreted:
        _interpreted[name] = InterpretedFunction(kern.fn)
    return _interpreted[name]


def _new(shape, like: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """A fresh output buffer; NaN-filled when SRWM_FUSED_NAN_OUTPUTS=1."""
    if os.environ.get(NAN_ENV, "0") not in ("", "0"):
        return torch.full(shape, float("nan"), device=like.device, dtype=dtype)
    return torch.empty(shape, device=like.device, dtype=dtype)


def _num_warps(d: int, backward: bool) -> int:
    """Warps per program: the fewest that compile for sm_90 without register spills at d <= 32
    (ptxas reports, FUSED.md); not tuned on a GPU."""
    fwd = {2: 1, 4: 1, 8: 1, 16: 2, 32: 4, 64: 8}[d]
    return 2 * fwd if backward else fwd


def _validate(x, w0, state, episode_start) -> None:
    """Raise ValueError / TypeError / RuntimeError naming the bad input."""
    for name, t in (("x", x), ("w0", w0), ("state", state)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(
                f"{name} has dtype {t.dtype}; the fused srwm kernel supports "
                f"{', '.join(str(s) for s in SUPPORTED_DTYPES)} (computed in float32)"
            )
    if x.dim() != 4:
        raise ValueError(f"x must have shape [T, B, H, d], got {tuple(x.shape)}")
    T, B, H, d = x.shape
    if d < 2 or d > MAX_HEAD_SIZE or d & (d - 1):
        raise ValueError(
            f"the fused srwm kernel needs a head size d that is a power of two in "
            f"[2, {MAX_HEAD_SIZE}], got d={d}; use kernel='naive'"
        )
    rows = 3 * d + 4
    if tuple(w0.shape) != (H, rows, d):
        raise ValueError(f"w0 must have shape {(H, rows, d)}, got {tuple(w0.shape)}")
    if state is not None and tuple(state.shape) != (B, H, rows, d):
        raise ValueError(f"state must have shape {(B, H, rows, d)}, got {tuple(state.shape)}")
    dtypes = {t.dtype for t in (x, w0, state) if t is not None}
    if len(dtypes) > 1:
        raise TypeError(f"x, w0 and state must share one dtype, got {sorted(map(str, dtypes))}")
    if episode_start is not None:
        if not isinstance(episode_start, torch.Tensor):
            raise TypeError("episode_start must be a bool torch.Tensor of shape [T, B]")
        if tuple(episode_start.shape) != (T, B):
            raise ValueError(
                f"episode_start must have shape {(T, B)}, got {tuple(episode_start.shape)}"
            )
        if episode_start.dtype.is_floating_point or episode_start.dtype.is_complex:
            raise TypeError(f"episode_start must be bool (or integer), got {episode_start.dtype}")
    devices = {t.device for t in (x, w0, state, episode_start) if t is not None}
    if len(devices) > 1:
        raise RuntimeError(
            f"x, w0, state and episode_start must be on one device, got {sorted(map(str, devices))}"
        )
    if x.device.type not in ("cuda", "cpu"):
        raise RuntimeError(
            f"the fused srwm kernel runs on CUDA (or on CPU through the Triton interpreter), "
            f"got device {x.device}"
        )


class _SRWMFused(torch.autograd.Function):
    """Autograd wrapper: Triton forward, Triton backward (checkpoints + replay)."""

    @staticmethod
    def forward(ctx, x, w0, state, episode_start, checkpoint_every, grad_wanted, decay):
        T, B, H, d = x.shape
        rows = 3 * d + 4
        out_dtype = x.dtype
        xf = x.float().contiguous()
        wf = w0.float().contiguous()
        sf = None if state is None else state.float().contiguous()
        es = None if episode_start is None else episode_start.to(torch.uint8).contiguous()
        save = grad_wanted and any(ctx.needs_input_grad[:3])
        ck = max(1, int(checkpoint_every))
        nc = max(1, math.ceil(T / ck))
        y = _new((T, B, H, d), xf)
        final = _new((B, H, rows, d), xf)
        if save:
            ckpts = _new((B, H, nc + 1, rows, d), xf)
            u = _new((T, B, H, rows), xf)
            kv = _new((T, B, H, d), xf)
        else:
            ckpts = u = kv = xf  # never written (SAVE=False)
        if B * H > 0:
            _kernel("srwm_fwd_kernel", xf.device)[(B * H,)](
                xf, wf, xf if sf is None else sf, xf if es is None else es,
                y, final, ckpts, u, kv,
                T, B, H, nc, float(decay),
                HAS_S0=sf is not None, HAS_ES=es is not None, SAVE=save,
                D=d, CK=ck, num_warps=_num_warps(d, backward=False),
            )
        if save:
            ctx.save_for_backward(xf, wf, es if es is not None else xf, ckpts, u, kv)
            ctx.meta = (es is not None, state is not None, ck, nc, x.dtype, w0.dtype,
                        None if state is None else state.dtype, float(decay))
        return y.to(out_dtype), final.to(out_dtype)

    @staticmethod
    def backward(ctx, dy, dfinal):
        xf, wf, es, ckpts, u, kv = ctx.saved_tensors
        has_es, has_state, ck, nc, x_dtype, w_dtype, s_dtype, decay = ctx.meta
        T, B, H, d = xf.shape
        rows = 3 * d + 4
        dyf = dy.float().contiguous()
        dsf = dfinal.float().contiguous()
        dx = _new((T, B, H, d), xf)
        dw0p = _new((B, H, rows, d), xf)
        ds0 = _new((B, H, rows, d), xf)
        if B * H > 0:
            _kernel("srwm_bwd_kernel", xf.device)[(B * H,)](
                xf, wf, es, dyf, dsf, ckpts, u, kv,
                dx, dw0p, ds0,
                T, B, H, nc, decay,
                HAS_ES=has_es, D=d, CK=ck, num_warps=_num_warps(d, backward=True),
            )
        dw0 = dw0p.sum(0)
        return (
            dx.to(x_dtype) if ctx.needs_input_grad[0] else None,
            dw0.to(w_dtype) if ctx.needs_input_grad[1] else None,
            ds0.to(s_dtype) if (has_state and ctx.needs_input_grad[2]) else None,
            None,
            None,
            None,
            None,
        )


def compile_kernels_offline(d: int = 16, capability: int = 90) -> dict[str, dict]:
    """Lower both kernels through the Triton compiler to a CUDA binary for one compute
    capability, with no GPU present (a check for machines without one; TRITON_INTERPRET
    must be unset in this process). Returns {kernel name: compiled asm dict}."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    ints = {"T": "i32", "B": "i32", "H": "i32", "NC": "i32", "LAM": "fp32"}
    fwd = ("x_ptr", "w0_ptr", "s0_ptr", "es_ptr", "y_ptr", "st_ptr", "ck_ptr", "u_ptr", "kv_ptr")
    bwd = ("x_ptr", "w0_ptr", "es_ptr", "dy_ptr", "dst_ptr", "ck_ptr", "u_ptr", "kv_ptr",
           "dx_ptr", "dw0p_ptr", "ds0_ptr")
    cases = (
        ("srwm_fwd_kernel", fwd, {"HAS_S0": True, "HAS_ES": True, "SAVE": True}, False),
        ("srwm_bwd_kernel", bwd, {"HAS_ES": True}, True),
    )
    out = {}
    for name, ptrs, flags, backward in cases:
        consts = {**flags, "D": d, "CK": DEFAULT_CHECKPOINT_EVERY}
        sig = {n: ("*u8" if n == "es_ptr" else "*fp32") for n in ptrs}
        sig.update(ints)
        sig.update({n: "constexpr" for n in consts})
        kern = getattr(_k, name)
        src = ASTSource(JITFunction(kern.fn), sig, constexprs=consts)
        compiled = triton.compile(
            src, target=GPUTarget("cuda", capability, 32),
            options={"num_warps": _num_warps(d, backward=backward)},
        )
        out[name] = compiled.asm
    return out


def srwm_fused_recurrent(
    x: torch.Tensor,
    w0: torch.Tensor,
    state: torch.Tensor | None = None,
    episode_start: torch.Tensor | None = None,
    *,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    decay: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the self-referential weight matrix over T steps in one fused kernel.

    Args:
        x: [T, B, H, d] head inputs BEFORE the per-head softmax (the op applies it).
            d must be a power of two in [2, 64]. float32, bfloat16 or float16 (computed
            in float32; outputs in the input dtype). Non-contiguous inputs are copied.
        w0: [H, 3d+4, d] base weights, row blocks y | q | k | 4 rates (same dtype as x).
        state: [B, H, 3d+4, d] modification W - W0 at the start; None means zeros.
        episode_start: [T, B] bool; where True the state is zeroed before step t.
        checkpoint_every: K, the backward pass keeps the state every K steps and replays
            the rank-1 updates in between (memory / recompute trade-off, see FUSED.md).
        decay: lambda in (0, 1], S <- lambda S before each step reads W (after its reset).

    Returns:
        y: [T, B, H, d], y_t = W_y softmax(x_t), read before step t's update.
        final_state: [B, H, 3d+4, d] modification after the last step's update.

    Gradients flow to x, w0 (summed over the batch) and state through the whole unroll.
    """
    _validate(x, w0, state, episode_start)
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if not 0.0 < float(decay) <= 1.0:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    grad_wanted = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, w0, state)
    )
    return _SRWMFused.apply(x, w0, state, episode_start, checkpoint_every, grad_wanted,
                            float(decay))


__all__ = ["srwm_fused_recurrent", "SUPPORTED_DTYPES", "MAX_HEAD_SIZE"]
