"""The learner interface and the factory that builds one by name.

A learner turns one Rollout into one update (PPO: epochs x minibatches; V-trace: one
optimizer step per batch of sequences) and returns metrics keyed with their namespace
(`losses/...`, `charts/learning_rate`, `core/<state metric>`).

Every learner also has `acting_policy`: the module a RolloutCollector should act with (the
trained policy itself, except for the V-trace learner with actor_lag = 1).

Any SB3 VecEnv with uint8 [64, 64, 3] observations and Discrete actions can be trained:

    policy = build_actor_critic(ModelConfig(...), env.action_space.n)
    learner = make_learner("ppo", policy, num_envs=env.num_envs, unroll=T,
                           total_steps=N, device="cpu", ppo_cfg=PPOConfig(), vtrace_cfg=None)
    collector = RolloutCollector(env, learner.acting_policy, T, "never")
    for _ in range(N // (env.num_envs * T)):
        metrics = learner.update(collector.collect())
"""

from __future__ import annotations

from typing import Literal, Protocol, get_args

import torch
from torch import nn

from .impala import VTraceConfig, VTraceLearner
from .ppo import PPO, PPOConfig
from .rollout import Rollout

Algo = Literal["ppo", "vtrace"]
ALGOS: tuple[str, ...] = get_args(Algo)


class Learner(Protocol):
    algo: str
    policy: nn.Module
    acting_policy: nn.Module

    def update(self, rollout: Rollout) -> dict[str, float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, d: dict) -> None: ...


def make_learner(
    algo: str,
    policy: nn.Module,
    *,
    num_envs: int,
    unroll: int,
    total_steps: int,
    device: torch.device | str | None = None,
    ppo_cfg: PPOConfig | None = None,
    vtrace_cfg: VTraceConfig | None = None,
) -> Learner:
    """Build the learner named `algo` (ppo | vtrace) for `policy` (already on `device`; the
    learner follows the policy's device). A missing config means the defaults. Impossible
    settings raise ValueError with one line naming the bad value and the valid ones."""
    del device  # the optimizers and targets follow the policy's parameters
    if algo == "ppo":
        return PPO(policy, ppo_cfg or PPOConfig(), num_envs=num_envs, unroll=unroll,
                   total_steps=total_steps)
    if algo == "vtrace":
        return VTraceLearner(policy, vtrace_cfg or VTraceConfig(), num_envs=num_envs,
                             unroll=unroll, total_steps=total_steps)
    raise ValueError(f"unknown algo {algo!r}; valid: {', '.join(ALGOS)}")
