"""ActorCritic = IMPALA CNN encoder -> core -> policy and value heads."""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .cores import Core, build_core
from .encoder import ImpalaCNN
from .state import State


class Heads(nn.Module):
    """Policy logits and value from the core's output."""

    def __init__(self, in_size: int, num_actions: int) -> None:
        super().__init__()
        self.policy = nn.Linear(in_size, num_actions)
        self.value = nn.Linear(in_size, 1)
        nn.init.orthogonal_(self.policy.weight, gain=0.01)
        nn.init.zeros_(self.policy.bias)
        nn.init.orthogonal_(self.value.weight, gain=1.0)
        nn.init.zeros_(self.value.bias)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z: [T, B, D] -> (logits [T, B, A], value [T, B])."""
        return self.policy(z), self.value(z).squeeze(-1)


class ActorCritic(nn.Module):
    """The agent's network, composed of one encoder, one core and the heads."""

    def __init__(self, encoder: ImpalaCNN, core: Core, heads: Heads) -> None:
        super().__init__()
        self.encoder = encoder
        self.core = core
        self.heads = heads
        self.precision = "fp32"
        """fp32 | bf16 (ModelConfig.precision): bf16 autocasts the encoder and the heads."""

    def initial_state(self, batch_size: int, device=None) -> State:
        """Zero core state for batch_size envs (tuple of [B, ...] tensors)."""
        return self.core.initial_state(batch_size, device=device)

    def state_metrics(self, state: State) -> dict[str, float]:
        """The core's state summaries, e.g. {"srwm_l0_mod_norm": ...}."""
        return self.core.state_metrics(state)

    def forward(
        self,
        obs: torch.Tensor,
        reward: torch.Tensor,
        episode_start: torch.Tensor,
        state: State,
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """obs uint8 [T, B, 64, 64, 3], reward [T, B] (received with each obs),
        episode_start [T, B] bool -> (logits [T, B, A], value [T, B], new_state)."""
        T, B = obs.shape[:2]
        frames = obs.reshape(T * B, *obs.shape[2:]).permute(0, 3, 1, 2)  # [T*B, 3, 64, 64]
        if self.precision == "bf16":
            return self._forward_bf16(frames, reward, episode_start, state, T, B)
        dtype = self.heads.value.weight.dtype
        features = self.encoder(frames.to(dtype) / 255.0).reshape(T, B, -1)  # [T, B, cnn_out]
        r = reward.to(device=features.device, dtype=dtype).clamp(-1.0, 1.0).unsqueeze(-1)
        z, new_state = self.core(torch.cat([features, r], dim=-1), state, episode_start)
        logits, value = self.heads(z)
        return logits, value, new_state

    def _forward_bf16(self, frames: torch.Tensor, reward: torch.Tensor,
                      episode_start: torch.Tensor, state: State, T: int, B: int
                      ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """forward with the encoder and the heads under bf16 autocast, the core in fp32."""
        kind = frames.device.type
        with torch.autocast(kind, dtype=torch.bfloat16):
            features = self.encoder(frames.float() / 255.0)
        features = features.float().reshape(T, B, -1)
        r = reward.to(device=features.device, dtype=torch.float32).clamp(-1.0, 1.0).unsqueeze(-1)
        with torch.autocast(kind, enabled=False):
            z, new_state = self.core(torch.cat([features, r], dim=-1), state, episode_start)
        with torch.autocast(kind, dtype=torch.bfloat16):
            logits, value = self.heads(z)
        return logits.float(), value.float(), new_state

    def act(
        self,
        obs: torch.Tensor,
        reward: torch.Tensor,
        episode_start: torch.Tensor,
        state: State,
        greedy: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, State]:
        """One step: obs [B, 64, 64, 3], reward [B], episode_start [B] bool
        -> (action [B], logprob [B], value [B], new_state). Runs under the caller's grad mode.
        Actions are sampled from `generator` when given (the async actor thread has its own,
        so that its draws do not interleave with the learner's), else from torch's global one."""
        logits, value, new_state = self.forward(
            obs.unsqueeze(0), reward.unsqueeze(0), episode_start.unsqueeze(0), state
        )
        dist = torch.distributions.Categorical(logits=logits[0])
        if greedy:
            action = logits[0].argmax(dim=-1)
        elif generator is None:
            action = dist.sample()
        else:  # what Categorical.sample does, from the given generator
            action = torch.multinomial(dist.probs, 1, True, generator=generator)[:, 0]
        return action, dist.log_prob(action), value[0], new_state


def build_actor_critic(cfg: ModelConfig, num_actions: int) -> ActorCritic:
    """Build the ActorCritic described by cfg for num_actions discrete actions."""
    encoder = ImpalaCNN(cfg.cnn_channels, cfg.cnn_out)
    core = build_core(cfg, cfg.cnn_out + 1)
    policy = ActorCritic(encoder, core, Heads(core.output_size, num_actions))
    policy.precision = cfg.precision
    return policy
