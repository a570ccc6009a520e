"""Helpers for the agents tests: a tiny fake VecEnv, a counting core, tiny policies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from policies import CORES, ActorCritic, Heads, ImpalaCNN, ModelConfig, build_actor_critic


def tiny_model_config(core: str) -> ModelConfig:
    return ModelConfig(core=core, cnn_channels=(4, 8, 8), cnn_out=32, hidden_size=32,
                       num_heads=2, head_size=16, ff_size=64, lstm_size=32)


class FakeVecEnv:
    """Duck-typed SB3 VecEnv: env i has episodes of length 2 + (i % 3); reward of a step =
    0.1 * (step within the episode + 1) + 0.01 * i; random uint8 observations; auto-reset."""

    def __init__(self, num_envs: int, num_actions: int = 3, seed: int = 0) -> None:
        self.num_envs = num_envs
        self.num_actions = num_actions
        self.rng = np.random.default_rng(seed)
        self.lengths = 2 + np.arange(num_envs) % 3
        self.t = np.zeros(num_envs, np.int64)
        self.episodes = np.zeros(num_envs, np.int64)
        self.returns = np.zeros(num_envs)

    def _obs(self) -> np.ndarray:
        return self.rng.integers(0, 256, (self.num_envs, 64, 64, 3), dtype=np.uint8)

    def reset(self) -> np.ndarray:
        self.t[:] = 0
        self.returns[:] = 0
        return self._obs()

    def step(self, actions):
        actions = np.asarray(actions)
        assert actions.shape == (self.num_envs,)
        assert ((actions >= 0) & (actions < self.num_actions)).all()
        rewards = (0.1 * (self.t + 1) + 0.01 * np.arange(self.num_envs)).astype(np.float32)
        self.returns += rewards
        self.t += 1
        dones = self.t >= self.lengths
        infos = []
        for i in range(self.num_envs):
            info = {"game": "fake", "level_seed": int(self.episodes[i])}
            if dones[i]:
                info["episode"] = {"r": float(self.returns[i]), "l": int(self.t[i]),
                                   "game": "fake", "level_seed": int(self.episodes[i])}
                self.t[i], self.returns[i] = 0, 0.0
                self.episodes[i] += 1
            infos.append(info)
        return self._obs(), rewards, dones, infos


class CountingCore(nn.Module):
    """A fake core whose state counts the steps since its last reset: state = (count [B, 1],).
    The output is the input with the count appended."""

    def __init__(self, input_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.output_size = input_size + 1
        self.scale = nn.Parameter(torch.ones(()))

    def initial_state(self, batch_size, device=None, dtype=None):
        return (torch.zeros(batch_size, 1, device=device, dtype=dtype or torch.float32),)

    def forward(self, x, state, episode_start=None):
        (count,) = state
        outs = []
        for t in range(x.shape[0]):
            if episode_start is not None:
                count = torch.where(episode_start[t].view(-1, 1), torch.zeros_like(count), count)
            count = count + 1
            outs.append(torch.cat([x[t], self.scale * count], dim=-1))
        return torch.stack(outs), (count,)

    def state_metrics(self, state):
        return {"count_mean": float(state[0].mean())}


@pytest.fixture
def counting_policy(monkeypatch):
    """An ActorCritic with the counting core (registered in CORES only for this test)."""
    monkeypatch.setitem(CORES, "counting", CountingCore)
    torch.manual_seed(0)
    encoder = ImpalaCNN((4, 8, 8), 16)
    core = CORES["counting"](16 + 1)
    return ActorCritic(encoder, core, Heads(core.output_size, 3))


@pytest.fixture
def fake_env():
    """Factory: fake_env(num_envs, num_actions=3, seed=0) -> FakeVecEnv."""
    return FakeVecEnv


@pytest.fixture
def make_tiny_policy():
    def make(core: str, num_actions: int = 3, seed: int = 0):
        torch.manual_seed(seed)
        return build_actor_critic(tiny_model_config(core), num_actions)

    return make
