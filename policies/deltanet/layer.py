"""The DeltaNet layer: pre-LN, slow projection to q, k, v, beta, the op, output projection."""

from __future__ import annotations

import torch
from torch import nn

from .ops import deltanet_naive


class DeltaNetLayer(nn.Module):
    """Fast weight programmer sub-layer on a residual stream of size H*d.

    out_t = h_t + W_o concat_heads(o_t), where per head q, k, v (d each) and
    beta = sigmoid(.) come from one slow linear map (no bias) of LayerNorm(h_t).
    """

    stateful = True

    def __init__(self, num_heads: int, head_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_size = head_size
        hidden = num_heads * head_size
        self.norm = nn.LayerNorm(hidden)
        self.slow = nn.Linear(hidden, num_heads * (3 * head_size + 1), bias=False)
        self.out_proj = nn.Linear(hidden, hidden, bias=False)

    def state_shape(self, batch_size: int) -> tuple[int, ...]:
        """Shape of the fast weight F: [B, H, d, d]."""
        return (batch_size, self.num_heads, self.head_size, self.head_size)

    def forward(
        self,
        h: torch.Tensor,
        state: torch.Tensor | None,
        episode_start: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """h: [T, B, H*d]; state: [B, H, d, d]; episode_start: [T, B] bool.

        Returns (out [T, B, H*d], final_state [B, H, d, d]).
        """
        T, B, _ = h.shape
        H, d = self.num_heads, self.head_size
        proj = self.slow(self.norm(h)).reshape(T, B, H, 3 * d + 1)  # [T, B, H, 3d+1]
        q, k, v, beta = proj.split((d, d, d, 1), dim=-1)
        o, state = deltanet_naive(q, k, v, torch.sigmoid(beta.squeeze(-1)), state, episode_start)
        return h + self.out_proj(o.reshape(T, B, -1)), state
