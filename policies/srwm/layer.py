"""The SRWM layer: per-head input, the SRWM op, output projection, residual."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ops import srwm


def bound_norm(state: torch.Tensor, max_norm: float) -> torch.Tensor:
    """state [B, H, rows, d] with every (b, h) matrix scaled down to Frobenius norm <= max_norm.
    Matrices already within the bound are multiplied by exactly 1 (bitwise unchanged)."""
    norm = torch.linalg.vector_norm(state.flatten(2), dim=-1)  # [B, H]
    scale = (max_norm / norm.clamp_min(torch.finfo(state.dtype).tiny)).clamp(max=1.0)
    return state * scale[..., None, None].to(state.dtype)


class SRWMLayer(nn.Module):
    """Self-referential weight matrix sub-layer on a residual stream of size H*d.

    out_t = h_t + W_o concat_heads(y_t), with y_t from the SRWM op fed softmax(h_t[head])
    (the op applies the softmax). With self_modify=False (the fake-sr layer) W stays W0 and
    only its y block exists: y_t = W0_y softmax(h_t[head]); the layer then has no state.

    W0 init: every entry ~ Normal(mean 0, std 1/sqrt(d)) (docs/SPEC.md, section 1). Four options
    depart from that on purpose, all OFF by default (see policies/srwm/README.md, "Options that
    depart from docs/SPEC.md"); none touches the op, so the naive and fused kernels both apply:
      pre_ln:          LayerNorm on h before the heads: x_t = softmax(LN(h_t)[head]).
      qk_init_scale:   the q and k row blocks of W0 start with std qk_init_scale/sqrt(d).
      beta_init:       the rate rows of W0 start with mean beta_init; since x_t sums to 1,
                       this is exactly an offset of beta_init on the rates' logits.
      input_scale:     a fixed factor on the (normalised) head input before the softmax:
                       x_t = softmax(input_scale * LN(h_t)[head]); > 1 sharpens x_t.
      state_decay:     lambda in (0, 1]: the modification decays, S <- lambda S, before every
                       step (a change of the op, supported by both kernels).
      state_max_norm:  > 0: the state this layer returns (the one carried to its next call) has
                       per-head Frobenius norm at most this; larger ones are scaled down
                       (0: no bound). Applied between calls, not inside the op.
      w0_scale:        W0 is stored divided by this factor (see base_weights): with Adam or
                       RMSprop, W0 learns this many times faster than the other parameters.
    """

    def __init__(
        self,
        num_heads: int,
        head_size: int,
        *,
        self_modify: bool = True,
        kernel: str = "auto",
        detach_every_step: bool = False,
        pre_ln: bool = False,
        qk_init_scale: float = 1.0,
        beta_init: float = 0.0,
        input_scale: float = 1.0,
        state_decay: float = 1.0,
        w0_scale: float = 1.0,
        state_max_norm: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_size = head_size
        self.self_modify = self_modify
        self.stateful = self_modify
        self.kernel = kernel
        self.detach_every_step = detach_every_step
        if not 0.0 < float(state_decay) <= 1.0:
            raise ValueError(f"state_decay must be in (0, 1], got {state_decay}")
        self.state_decay = float(state_decay)
        if not float(state_max_norm) >= 0:
            raise ValueError(f"state_max_norm must be >= 0, got {state_max_norm}")
        self.state_max_norm = float(state_max_norm)
        rows = 3 * head_size + 4 if self_modify else head_size
        w0 = torch.randn(num_heads, rows, head_size) * head_size**-0.5
        if self_modify:
            d = head_size
            w0[:, d : 3 * d] *= qk_init_scale
            w0[:, 3 * d :] += beta_init
        if not float(w0_scale) > 0:
            raise ValueError(f"w0_scale must be positive, got {w0_scale}")
        self.w0_scale = float(w0_scale)
        self.w0 = nn.Parameter(w0 / self.w0_scale)  # stored divided; see base_weights
        hidden = num_heads * head_size
        self.norm = nn.LayerNorm(hidden) if pre_ln else None
        self.input_scale = float(input_scale)
        self.out_proj = nn.Linear(hidden, hidden, bias=False)

    def base_weights(self) -> torch.Tensor:
        """W0 [H, rows, d] = the stored parameter times w0_scale. Adam and RMSprop take steps
        of about lr per parameter whatever the gradient's size, so storing W0 / s multiplies
        W0's effective learning rate by s (and nothing else changes)."""
        return self.w0 if self.w0_scale == 1.0 else self.w0 * self.w0_scale

    def state_shape(self, batch_size: int) -> tuple[int, ...]:
        """Shape of the modification W - W0: [B, H, 3d+4, d]."""
        return (batch_size, self.num_heads, 3 * self.head_size + 4, self.head_size)

    def forward(
        self,
        h: torch.Tensor,
        state: torch.Tensor | None,
        episode_start: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """h: [T, B, H*d]; state: [B, H, 3d+4, d] or None; episode_start: [T, B] bool.

        Returns (out [T, B, H*d], final_state [B, H, 3d+4, d], or None without self_modify).
        """
        T, B, _ = h.shape
        x = h if self.norm is None else self.norm(h)
        if self.input_scale != 1.0:
            x = x * self.input_scale
        x = x.reshape(T, B, self.num_heads, self.head_size)  # [T, B, H, d]
        if self.self_modify:
            y, state = srwm(x, self.base_weights(), state, episode_start, kernel=self.kernel,
                            detach_every_step=self.detach_every_step, decay=self.state_decay)
            if self.state_max_norm > 0:
                state = bound_norm(state, self.state_max_norm)
        else:
            y = torch.einsum("hrc,tbhc->tbhr", self.base_weights(), F.softmax(x, dim=-1))
            state = None
        return h + self.out_proj(y.reshape(T, B, -1)), state
