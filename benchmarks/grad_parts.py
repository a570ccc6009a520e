#!/usr/bin/env python
"""Which loss term drives the core's gradient: the policy gradient, the value loss or the
entropy cost, PPO against V-trace, on a synthetic memory task.

    python benchmarks/grad_parts.py --updates 40 --every 8            # T2, srwm, both learners

The memory of a recurrent agent is learned through its core's parameters, from every term of
the loss. This trains one tiny agent per learner with the package's defaults (the learning
tests' `memory-tiny` setup: 16 envs, lifetime 4, SRWM decay 0.9, V-trace lr 1e-3) on the
harder cue-recall (4 cues, delay 12, unroll 28) and, every `--every` updates, splits the
gradient of one minibatch's loss (the first 4 envs, before that update) into its three
terms, counting only the core's parameters. It prints one line per learner and probe: the
norm of each term's part and the cosine between the policy-gradient and value parts.
The parts are taken by zeroing coefficients: policy gradient = the loss with value and
entropy coefficients 0; value = (loss without entropy) - that; entropy = the rest.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from agents.learners import make_learner  # noqa: E402
from agents.rollout import RolloutCollector  # noqa: E402
from envs import make_env  # noqa: E402
from policies.actor_critic import build_actor_critic  # noqa: E402
from tests.agents.learning_harness import package_setup  # noqa: E402

ZERO = {"ppo": ("value_coef", "entropy_coef"), "vtrace": ("baseline_cost", "entropy_coef")}


def core_grad(learner, cfg, rollout, idx, targets) -> torch.Tensor:
    """The flattened gradient of the minibatch loss under `cfg`, core parameters only."""
    learner.cfg = cfg
    learner.policy.zero_grad(set_to_none=True)
    loss, _ = learner.loss(rollout, idx, targets)
    loss.backward()
    return torch.cat([p.grad.flatten() for n, p in learner.policy.named_parameters()
                      if p.grad is not None and n.startswith("core.")])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--updates", type=int, default=40)
    ap.add_argument("--every", type=int, default=8)
    ap.add_argument("--core", default="srwm")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    task = {"delay": 12, "num_cues": 4}
    for algo in ("ppo", "vtrace"):
        s = package_setup("cue-recall", args.core, algo, 200_000, seed=args.seed,
                          task_kwargs=task)
        s.unroll, s.state_lifetime = 28, 4.0
        s.model["srwm_state_decay"] = 0.9
        s.vtrace.lr = 1e-3
        torch.manual_seed(args.seed)
        env = make_env("cue-recall", s.num_envs, seed=args.seed, **task)
        policy = build_actor_critic(s.model_config(), env.action_space.n)
        learner = make_learner(algo, policy, num_envs=s.num_envs, unroll=s.unroll,
                               total_steps=s.steps, device="cpu", ppo_cfg=s.ppo,
                               vtrace_cfg=s.vtrace)
        collector = RolloutCollector(env, learner.acting_policy, s.unroll, s.state_reset,
                                     state_lifetime=s.state_lifetime,
                                     lifetime_seed=args.seed + 1)
        value_key, entropy_key = ZERO[algo]
        for u in range(args.updates):
            rollout = collector.collect()
            if u % args.every == 0:
                twin = copy.deepcopy(learner)
                cfg, idx = twin.cfg, torch.arange(4)
                targets = twin.targets(rollout)
                pg = core_grad(twin, dataclasses.replace(cfg, **{value_key: 0.0,
                                                                 entropy_key: 0.0}),
                               rollout, idx, targets)
                pv = core_grad(twin, dataclasses.replace(cfg, **{entropy_key: 0.0}),
                               rollout, idx, targets)
                everything = core_grad(twin, cfg, rollout, idx, targets)
                value, entropy = pv - pg, everything - pv
                cos = torch.nn.functional.cosine_similarity(pg, value, dim=0).item()
                print(f"{algo:6s} update {u:3d}  core gradient norm: policy {pg.norm():.4f}  "
                      f"value {value.norm():.4f}  entropy {entropy.norm():.5f}  "
                      f"value / policy {value.norm() / pg.norm():.2f}  cos(policy, value) "
                      f"{cos:.2f}", flush=True)
            learner.update(rollout)
        env.close()


if __name__ == "__main__":
    main()
