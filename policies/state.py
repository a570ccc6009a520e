"""Helpers for core states: tuples of tensors, each with the batch dimension first [B, ...].

A state may be the empty tuple (cores without memory).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

State = tuple[torch.Tensor, ...]


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state: State) -> State:
    """Apply `fn` to every tensor of the state."""
    return tuple(fn(s) for s in state)


def detach_state(state: State) -> State:
    """The state with every tensor detached (truncated BPTT between segments)."""
    return map_state(torch.Tensor.detach, state)


def index_state(state: State, idx) -> State:
    """Select batch entries: `s[idx]` for every tensor (idx: int tensor, bool mask or slice)."""
    return tuple(s[idx] for s in state)


def cat_state(states: Sequence[State]) -> State:
    """Concatenate states along the batch dimension."""
    if not states:
        raise ValueError("cat_state needs at least one state")
    return tuple(torch.cat(parts, dim=0) for parts in zip(*states, strict=True))


def zeros_like_state(state: State) -> State:
    """A state of zeros with the same shapes, dtypes and devices."""
    return map_state(torch.zeros_like, state)


def reset_state(state: State, mask: torch.Tensor) -> State:
    """Zero the batch entries where `mask` [B] bool is True; the rest unchanged."""

    def reset(s: torch.Tensor) -> torch.Tensor:
        m = mask.to(device=s.device, dtype=torch.bool).view(-1, *([1] * (s.dim() - 1)))
        return torch.where(m, torch.zeros((), dtype=s.dtype, device=s.device), s)

    return map_state(reset, state)


def state_to(state: State, device=None, dtype=None) -> State:
    """Move / cast every tensor of the state."""
    return map_state(lambda s: s.to(device=device, dtype=dtype), state)
