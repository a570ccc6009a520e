"""SRWM ops: one signature (docs/SPEC.md, section 1), a naive reference, an optional fused kernel.

Nothing here imports triton; the fused kernel is imported on first use only.
"""

from __future__ import annotations

import torch

from .naive import srwm_naive

KERNELS = ("auto", "naive", "fused")


def _load_fused():
    """Import the fused kernel: (function, None), or (None, the error) when unavailable."""
    try:
        from .fused_recurrent import srwm_fused_recurrent
    except Exception as err:  # noqa: BLE001 - any import failure (no triton, no module) = absent
        return None, err
    return srwm_fused_recurrent, None


def _fused_applies(x: torch.Tensor, detach_every_step: bool) -> bool:
    """Whether kernel="auto" may take the fused kernel: CUDA tensors in float32 / float16 /
    bfloat16, head size a power of two in [2, 64], no detach_every_step."""
    d = x.shape[-1]
    return (
        x.is_cuda
        and not detach_every_step
        and x.dtype in (torch.float32, torch.float16, torch.bfloat16)
        and 2 <= d <= 64
        and d & (d - 1) == 0
    )


def srwm(
    x: torch.Tensor,
    w0: torch.Tensor,
    state: torch.Tensor | None = None,
    episode_start: torch.Tensor | None = None,
    *,
    kernel: str = "auto",
    detach_every_step: bool = False,
    decay: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch to the naive op or the fused kernel (same semantics, see srwm_naive).

    kernel: "naive" | "fused" | "auto" (fused only for CUDA tensors of a dtype and head
    size it supports, without detach_every_step, when the kernel imports; naive otherwise).
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown srwm kernel {kernel!r}; valid: {', '.join(KERNELS)}")
    if kernel == "auto":
        fused = _load_fused()[0] if _fused_applies(x, detach_every_step) else None
        kernel = "naive" if fused is None else "fused"
    if kernel == "naive":
        return srwm_naive(x, w0, state, episode_start, detach_every_step=detach_every_step,
                          decay=decay)
    if detach_every_step:
        raise ValueError("the fused srwm kernel does not support detach_every_step; use 'naive'")
    fused, err = _load_fused()
    if fused is None:
        raise RuntimeError(
            "srwm kernel 'fused' requested but policies.srwm.ops.fused_recurrent could not be "
            f"imported ({type(err).__name__}: {err}); it needs triton and a CUDA device; "
            "use kernel='naive' or 'auto'"
        ) from err
    return fused(x, w0, state, episode_start, decay=decay)


__all__ = ["KERNELS", "srwm", "srwm_naive"]
