"""Tiny agents on the synthetic tasks: train, evaluate greedily on fresh envs, score.

Shared by tests/agents/test_learning.py (the learning tests) and benchmarks/learning_sweep.py
(the study that chose the defaults; results in benchmarks/RESULTS.md). It drives the package's
own learners and RolloutCollector directly (no run dir, no logging), with the learning tests'
tiny network, so a run takes one CPU core for a minute or a few.

Scores (`score`): cue-recall, the greedy success rate on fresh envs (chance 1/K); the bandit,
the greedy mean return from a FRESH zero state over episodes 1-3 of every env (episode 0 is a
guess that no agent can win more than half the time; win-stay / lose-shift gets 0.875 from
episode 1 on), i.e. how well the agent adapts from nothing. A task is "learned" when its score
reaches `SUCCESS` (0.9 for cue-recall, 0.8 for the bandit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from agents.config import PRESETS, TrainConfig
from agents.learners import make_learner
from agents.ppo import PPOConfig
from agents.rollout import RolloutCollector
from agents.vtrace import VTraceConfig
from envs import make_env
from policies import ModelConfig, build_actor_critic

PRESET = "memory-tiny"
"""The package preset whose settings (tiny agent, envs, unroll, learner settings, state reset
and lifetime) `package_setup` uses: the learning tests train with exactly what a user gets from
`train_rl.py --preset memory-tiny`."""
TINY_SIZES = {k.split(".", 1)[1]: v for k, v in PRESETS[PRESET].items()
              if k.startswith("model.") and k != "model.core"}
SUCCESS = {"cue-recall": 0.9, "switching-bandit": 0.8}
EVAL_ENVS = 64
EVAL_SEED = 12345
BANDIT_EVAL_EPISODES = 8  # per env, from a fresh state: 512 episodes, 192 of them in 1-3


@dataclass
class Setup:
    """One learning run on a synthetic task."""

    task: str
    task_kwargs: dict[str, Any]
    core: str
    algo: str
    steps: int
    seed: int = 0
    num_envs: int = 16
    unroll: int = 12
    state_reset: str = "never"
    state_lifetime: float = 0.0
    model: dict[str, Any] = field(default_factory=dict)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    vtrace: VTraceConfig = field(default_factory=VTraceConfig)

    def model_config(self) -> ModelConfig:
        return ModelConfig(core=self.core, **{**TINY_SIZES, **self.model})


def package_setup(task: str, core: str, algo: str, steps: int, seed: int = 0,
                  task_kwargs: dict[str, Any] | None = None) -> Setup:
    """A Setup with the package's defaults and the `memory-tiny` preset, only the task, core,
    learner, budget and seed chosen."""
    cfg = TrainConfig.from_preset(PRESET, games=[task], algo=algo,
                                  **{"model.core": core}).resolved()
    model = {k: v for k, v in cfg.model.to_dict().items() if k != "core"}
    return Setup(task=task, task_kwargs=dict(task_kwargs or {}), core=core, algo=algo,
                 steps=steps, seed=seed, num_envs=int(cfg.num_envs), unroll=int(cfg.unroll),
                 state_reset=cfg.state_reset, state_lifetime=cfg.state_lifetime, model=model,
                 ppo=cfg.ppo, vtrace=cfg.vtrace)


@dataclass
class EvalResult:
    score: float
    """The task's score (see the module docstring)."""
    mean_return: float
    """Mean return over every evaluation episode."""
    by_index: list[float]
    """Mean return of the i-th episode of every env (i = 0, 1, ...)."""
    episodes: int
    train_metrics: dict[str, float] = field(default_factory=dict)
    """The learner's metrics of the last update before this evaluation (when training)."""
    answers: list[list[int]] | None = None
    """cue-recall only: answers[c][a] = how many of the scored episodes with cue c were
    answered a (a K x K count; the diagonal is the successes). It tells which cues an agent
    that is part way (e.g. 0.75 on 4 cues) has not learned, or which two it confuses."""


@torch.no_grad()
def evaluate(policy: torch.nn.Module, setup: Setup, *, seed: int = EVAL_SEED,
             episodes_per_env: int | None = None, greedy: bool = True) -> EvalResult:
    """Play EVAL_ENVS fresh envs from a zero state (another env seed than training) with the
    training state-reset policy (no lifetime resets: the state is carried as long as the
    policy allows) until every env finished `episodes_per_env` episodes."""
    if episodes_per_env is None:
        episodes_per_env = BANDIT_EVAL_EPISODES if setup.task == "switching-bandit" else 4
    env = make_env(setup.task, EVAL_ENVS, seed=seed, **setup.task_kwargs)
    collector = RolloutCollector(env, policy, 1, setup.state_reset, greedy=greedy)
    returns: list[list[float]] = [[] for _ in range(EVAL_ENVS)]
    cues = getattr(env, "num_cues", 0) if setup.task == "cue-recall" else 0
    answers = np.zeros((cues, cues), np.int64)
    while min(len(r) for r in returns) < episodes_per_env:
        cue = env.cue.copy() if cues else None  # the cue of each env's running episode
        rollout = collector.collect()
        done = rollout.dones[0].tolist()
        action = rollout.actions[0].tolist()
        # episodes are reported in env order within a step; match them to their env
        finished = [b for b in range(EVAL_ENVS) if done[b]]
        for b, ep in zip(finished, rollout.episodes, strict=True):
            if cues and len(returns[b]) < episodes_per_env:
                answers[cue[b], action[b]] += 1
            returns[b].append(float(ep["r"]))
    env.close()
    per_env = np.array([r[:episodes_per_env] for r in returns])  # [envs, episodes]
    by_index = per_env.mean(axis=0).tolist()
    if setup.task == "switching-bandit":
        score = float(per_env[:, 1:4].mean())
    else:
        score = float(per_env.mean())
    return EvalResult(score=score, mean_return=float(per_env.mean()), by_index=by_index,
                      episodes=int(per_env.size), answers=answers.tolist() if cues else None)


def train_run(setup: Setup, *, eval_every: int = 0,
              on_eval: Callable[[int, EvalResult], None] | None = None
              ) -> tuple[torch.nn.Module, RolloutCollector, float]:
    """Train; every `eval_every` env steps (0: never) evaluate and call on_eval(step, result).
    Returns (policy, collector, mean return of the episodes finished in the last tenth of
    training). The collector still holds the training envs and the carried state."""
    torch.manual_seed(setup.seed)
    env = make_env(setup.task, setup.num_envs, seed=setup.seed, **setup.task_kwargs)
    policy = build_actor_critic(setup.model_config(), env.action_space.n)
    learner = make_learner(setup.algo, policy, num_envs=setup.num_envs, unroll=setup.unroll,
                           total_steps=setup.steps, device="cpu", ppo_cfg=setup.ppo,
                           vtrace_cfg=setup.vtrace)
    collector = RolloutCollector(env, learner.acting_policy, setup.unroll, setup.state_reset,
                                 state_lifetime=setup.state_lifetime,
                                 lifetime_seed=setup.seed + 1)
    per_update = setup.num_envs * setup.unroll
    updates = max(1, -(-setup.steps // per_update))
    late: list[float] = []
    next_eval = eval_every
    kl_stops = 0
    for u in range(updates):
        rollout = collector.collect()
        metrics = learner.update(rollout)
        kl_stops += int(metrics.get("losses/kl_stop", 0))
        if u >= updates - max(1, updates // 10):
            late += [e["r"] for e in rollout.episodes]
        step = (u + 1) * per_update
        if eval_every and (step >= next_eval or u == updates - 1):
            next_eval += eval_every
            result = evaluate(policy, setup)
            result.train_metrics = {k: float(v) for k, v in metrics.items()
                                    if k.startswith(("losses/entropy", "losses/advantage_std",
                                                     "losses/approx_kl", "losses/grad_norm",
                                                     "core/"))}
            if "losses/kl_stop" in metrics:  # target_kl: updates it ended since the last eval
                result.train_metrics["losses/kl_stops"] = float(kl_stops)
                kl_stops = 0
            if on_eval is not None:
                on_eval(step, result)
    return policy, collector, float(np.mean(late)) if late else float("nan")


def learned(setup: Setup, result: EvalResult) -> bool:
    return result.score >= SUCCESS[setup.task]
