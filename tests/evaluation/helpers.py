"""Tiny checkpoints for the evaluation tests, built through the public APIs
(agents.config.TrainConfig, policies.build_actor_critic, agents.checkpoint.save_checkpoint)."""

from __future__ import annotations

from pathlib import Path

import torch

TINY_MODEL = {
    "hidden_size": 8, "num_layers": 1, "num_heads": 2, "head_size": 4, "ff_size": 8,
    "lstm_size": 8, "cnn_channels": [4], "cnn_out": 8,
}


def make_run(run_dir: Path, *, core: str = "srwm", games: str = "cue-recall", seed: int = 0,
             state_reset: str = "never", step: int = 1000, num_levels: int = 200,
             start_level: int = 0) -> Path:
    """A run dir with config.json and one checkpoint of a randomly initialised tiny agent."""
    from agents.checkpoint import atomic_write_json, save_checkpoint
    from agents.config import TrainConfig
    from envs import make_env
    from policies import build_actor_critic
    from policies.config import ModelConfig

    cfg = TrainConfig(games=[games], algo="ppo", state_reset=state_reset, num_envs=8,
                      unroll=16, seed=seed, total_steps=step, num_levels=num_levels,
                      start_level=start_level,
                      model=ModelConfig.from_dict({**TINY_MODEL, "core": core}),
                      run_dir=str(run_dir)).resolved()
    env = make_env(cfg.games, len(cfg.games))
    n_actions = int(env.action_space.n)
    env.close()
    torch.manual_seed(seed)
    policy = build_actor_critic(cfg.model, n_actions)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", cfg.to_dict())
    save_checkpoint(run_dir, {"config": cfg.to_dict(), "model": policy.state_dict(),
                              "global_step": step, "num_actions": n_actions})
    return run_dir
