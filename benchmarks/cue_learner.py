"""The PPO learner on cue-recall that the CPU cost benchmarks time (guard_overhead.py,
lag_correction_cost.py): one config, env, policy, learner and collector per model size."""

from __future__ import annotations

from typing import Any

import torch


def build(model: str) -> tuple[Any, Any, torch.nn.Module, Any, Any]:
    """(cfg, env, policy, learner, collector) on the CPU, one segment already collected.
    model: "tiny" (the memory-tiny preset) or "default" (the default agent, 16 envs x 32
    steps, 4 minibatches)."""
    from agents.config import TrainConfig
    from agents.rollout import RolloutCollector
    from agents.trainer import build_env, build_policy_and_learner

    if model == "tiny":
        cfg = TrainConfig.from_preset("memory-tiny", device="cpu", run_dir="unused")
    else:
        cfg = TrainConfig(games=["cue-recall"], num_envs=16, unroll=32, device="cpu",
                          run_dir="unused")
        cfg.ppo.num_minibatches = 4
    cfg = cfg.resolved()
    torch.manual_seed(0)
    env = build_env(cfg)
    device = torch.device("cpu")
    policy, learner = build_policy_and_learner(cfg, int(env.action_space.n), device)
    collector = RolloutCollector(env, learner.acting_policy, cfg.unroll, cfg.state_reset, device)
    collector.collect()
    return cfg, env, policy, learner, collector
