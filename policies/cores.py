"""Cores: the recurrent (or not) part of the agent, chosen by name from `CORES`.

Every core maps features x [T, B, D] to out [T, B, D'] and carries a state, a tuple of
tensors each [B, ...] (possibly empty). `episode_start[t, b]` zeroes the state of batch
entry b before input t, inside the core's own loop, so that acting (T = 1) and learning
(T = unroll) run the same code.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import CORE_NAMES, ModelConfig
from .deltanet import DeltaNetLayer
from .srwm import SRWMLayer
from .state import State, reset_state


class Core(nn.Module):
    """Interface of every core. Subclasses set input_size and output_size."""

    input_size: int
    output_size: int

    def initial_state(self, batch_size: int, device=None, dtype=None) -> State:
        """The state at the start of everything: zeros, each tensor [B, ...]."""
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, state: State, episode_start: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """x: [T, B, input_size], episode_start: [T, B] bool -> (out [T, B, output_size], state)."""
        raise NotImplementedError

    def state_metrics(self, state: State) -> dict[str, float]:
        """Scalar summaries of the state for logging (empty when there is none)."""
        return {}

    def _defaults(self, device, dtype):
        p = next(self.parameters())
        return (p.device if device is None else device), (p.dtype if dtype is None else dtype)


class FeedForward(nn.Module):
    """Pre-LN residual feed-forward sub-layer: x + W2 relu(W1 LayerNorm(x))."""

    def __init__(self, hidden_size: int, ff_size: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.fc1 = nn.Linear(hidden_size, ff_size)
        self.fc2 = nn.Linear(ff_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., hidden] -> [..., hidden]."""
        return x + self.fc2(torch.relu(self.fc1(self.norm(x))))


class MemoryStack(Core):
    """Linear input projection D -> hidden, then num_layers x [memory sub-layer, FF sub-layer].

    Subclasses choose the memory sub-layer with `make_memory` (None: no memory sub-layer).
    Memory layers say whether they carry state (`stateful`) and its shape
    (`state_shape(batch_size)`); the core's state holds one tensor per stateful layer, in
    layer order.
    """

    metric_name = ""  # e.g. "srwm_l{i}_mod_norm"; empty: no metrics

    def __init__(self, input_size: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_size = input_size
        self.output_size = cfg.hidden_size
        self.in_proj = nn.Linear(input_size, cfg.hidden_size)
        memories = [self.make_memory(cfg) for _ in range(cfg.num_layers)]
        self.memories = nn.ModuleList([m for m in memories if m is not None])
        self.ffs = nn.ModuleList(
            [FeedForward(cfg.hidden_size, cfg.ff_size) for _ in range(cfg.num_layers)]
        )
        self._has_memory = [m is not None for m in memories]

    def make_memory(self, cfg: ModelConfig) -> nn.Module | None:
        """One memory sub-layer (or None)."""
        raise NotImplementedError

    def _stateful(self) -> list[nn.Module]:
        return [m for m in self.memories if m.stateful]

    def initial_state(self, batch_size: int, device=None, dtype=None) -> State:
        device, dtype = self._defaults(device, dtype)
        return tuple(
            torch.zeros(m.state_shape(batch_size), device=device, dtype=dtype)
            for m in self._stateful()
        )

    def forward(
        self, x: torch.Tensor, state: State, episode_start: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        h = self.in_proj(x)  # [T, B, hidden]
        states = iter(state)
        new_state = []
        memories = iter(self.memories)
        for has_memory, ff in zip(self._has_memory, self.ffs, strict=True):
            if has_memory:
                memory = next(memories)
                layer_state = next(states) if memory.stateful else None
                h, layer_state = memory(h, layer_state, episode_start)
                if layer_state is not None:
                    new_state.append(layer_state)
            h = ff(h)
        return h, tuple(new_state)

    def state_metrics(self, state: State) -> dict[str, float]:
        if not self.metric_name:
            return {}
        return {
            self.metric_name.format(i=i): float(
                torch.linalg.matrix_norm(s.detach().float()).mean()
            )
            for i, s in enumerate(state)
        }


class SRWMCore(MemoryStack):
    """Memory stack with SRWM sub-layers (docs/SPEC.md, section 1). State: per layer W - W0
    [B, H, 3d+4, d]. Metric `srwm_l{i}_mod_norm`: Frobenius norm of W - W0 per head,
    averaged over batch and heads."""

    metric_name = "srwm_l{i}_mod_norm"

    def make_memory(self, cfg: ModelConfig) -> nn.Module:
        return SRWMLayer(cfg.num_heads, cfg.head_size, self_modify=True,
                         kernel=cfg.srwm_kernel, detach_every_step=cfg.srwm_detach_every_step,
                         pre_ln=cfg.srwm_pre_ln, qk_init_scale=cfg.srwm_qk_init_scale,
                         beta_init=cfg.srwm_beta_init, input_scale=cfg.srwm_input_scale,
                         state_decay=cfg.srwm_state_decay, w0_scale=cfg.srwm_w0_scale,
                         state_max_norm=cfg.srwm_state_max_norm)


class FakeSRCore(MemoryStack):
    """Memory stack with SRWM layers whose self-modification is off (W stays W0): no state."""

    def make_memory(self, cfg: ModelConfig) -> nn.Module:
        return SRWMLayer(cfg.num_heads, cfg.head_size, self_modify=False)


class DeltaNetCore(MemoryStack):
    """Memory stack with DeltaNet sub-layers (docs/SPEC.md, section 2). State: per layer the fast
    weight F [B, H, d, d]. Metric `deltanet_l{i}_fast_norm`: Frobenius norm of F per head,
    averaged over batch and heads."""

    metric_name = "deltanet_l{i}_fast_norm"

    def make_memory(self, cfg: ModelConfig) -> nn.Module:
        return DeltaNetLayer(cfg.num_heads, cfg.head_size)


class FFCore(MemoryStack):
    """No memory: the memory stack with its memory sub-layers removed, i.e. input projection
    then num_layers pre-LN FF sub-layers (same output size as the memory cores). State: ()."""

    def make_memory(self, cfg: ModelConfig) -> None:
        return None


class LSTMCore(Core):
    """One LSTM layer of lstm_size units on the input features. State: (h [B, U], c [B, U]).
    Metric `lstm_cell_norm`: L2 norm of c, averaged over the batch."""

    def __init__(self, input_size: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_size = input_size
        self.output_size = cfg.lstm_size
        self.lstm = nn.LSTM(input_size, cfg.lstm_size)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> State:
        device, dtype = self._defaults(device, dtype)
        shape = (batch_size, self.output_size)
        return (torch.zeros(shape, device=device, dtype=dtype),
                torch.zeros(shape, device=device, dtype=dtype))

    def forward(
        self, x: torch.Tensor, state: State, episode_start: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """Runs nn.LSTM over the spans between steps where some entry resets."""
        T = x.shape[0]
        if T == 0:
            return x.new_zeros(0, x.shape[1], self.output_size), state
        if episode_start is None:
            cuts = [0]
        else:
            any_start = episode_start.to(torch.bool).any(dim=1).tolist()  # [T]
            cuts = [0] + [t for t in range(1, T) if any_start[t]]
        outs = []
        for begin, end in zip(cuts, cuts[1:] + [T], strict=True):
            if episode_start is not None:
                state = reset_state(state, episode_start[begin])
            h, c = state
            out, (h, c) = self.lstm(x[begin:end], (h.unsqueeze(0), c.unsqueeze(0)))
            outs.append(out)
            state = (h.squeeze(0), c.squeeze(0))
        return torch.cat(outs), state

    def state_metrics(self, state: State) -> dict[str, float]:
        return {"lstm_cell_norm": float(state[1].detach().float().norm(dim=-1).mean())}


CORES: dict[str, type[Core]] = {
    "srwm": SRWMCore,
    "deltanet": DeltaNetCore,
    "lstm": LSTMCore,
    "ff": FFCore,
    "fake-sr": FakeSRCore,
}
assert tuple(CORES) == CORE_NAMES, "policies.config.CORE_NAMES must name exactly the CORES"


def build_core(cfg: ModelConfig, input_size: int) -> Core:
    """The core named cfg.core, taking input_size features."""
    return CORES[cfg.core](input_size, cfg)
