"""The DeltaNet (fast weight programmer) op in plain PyTorch, as docs/SPEC.md, section 2."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def phi(u: torch.Tensor) -> torch.Tensor:
    """phi(u) = (elu(u) + 1) / sum(elu(u) + 1) over the last dim."""
    p = F.elu(u) + 1.0
    return p / p.sum(dim=-1, keepdim=True)


def deltanet_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor | None = None,
    episode_start: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Delta-rule fast weights over T steps.

    Args:
        q, k: [T, B, H, d] queries and keys BEFORE phi (the op applies phi).
        v: [T, B, H, d] values.
        beta: [T, B, H] write strengths, already in (0, 1) (the layer applies the sigmoid).
        state: [B, H, d, d] fast weight F (rows: value dim, cols: key dim); None means zeros.
        episode_start: [T, B] bool; where True, F is zeroed before step t.

    Per step: vbar = F phi(k); F <- F + beta (v - vbar) phi(k)^T; o = F phi(q) (after the write).

    Returns:
        o: [T, B, H, d] outputs; final_state: [B, H, d, d] F after the last step.
    """
    T, B, H, d = q.shape
    f = q.new_zeros(B, H, d, d) if state is None else state
    if f.shape != (B, H, d, d):
        raise ValueError(f"state must have shape {(B, H, d, d)}, got {tuple(f.shape)}")
    zero = q.new_zeros(())
    outs = []
    for t in range(T):
        if episode_start is not None:
            start = episode_start[t].to(device=q.device, dtype=torch.bool)  # [B]
            f = torch.where(start.view(B, 1, 1, 1), zero, f)
        k_t = phi(k[t])  # [B, H, d]
        q_t = phi(q[t])  # [B, H, d]
        vbar = torch.einsum("bhij,bhj->bhi", f, k_t)  # [B, H, d]
        delta = beta[t].unsqueeze(-1) * (v[t] - vbar)  # [B, H, d]
        f = f + delta.unsqueeze(-1) * k_t.unsqueeze(-2)
        outs.append(torch.einsum("bhij,bhj->bhi", f, q_t))
    o = torch.stack(outs) if outs else q.new_zeros(0, B, H, d)
    return o, f
