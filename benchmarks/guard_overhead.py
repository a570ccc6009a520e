"""Cost of the finite-value guards (issue 14), measured side by side in one process.

- update: `Learner.update` with the guarded optimizer step (agents/learners.py: isfinite of the
  loss and of the gradient norm, i.e. two host syncs per optimizer step) against the same
  learner with the unguarded step (zero_grad, backward, clip, step), alternating, on the same
  stored rollouts.
- per segment: the trainer's non-finite core-state check (`Trainer._reset_nonfinite_state`)
  and, per checkpoint, the poisoned-policy check (`_poisoned_policy`: all parameters + one act
  step), against the time of one collected segment.

    .venv/bin/python benchmarks/guard_overhead.py [--model tiny|default] [--rounds 20]

Prints one table row (markdown). CPU only, cue-recall, PPO.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def unguarded_step(self, loss: torch.Tensor) -> float:
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = float(nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm))
    self.optimizer.step()
    return norm  # the learner logs it either way (losses/grad_norm)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["tiny", "default"], default="tiny")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from agents.trainer import Trainer, _poisoned_policy
    from benchmarks.cue_learner import build

    cfg, env, policy, learner, collector = build(args.model)
    guarded = learner._optimizer_step
    plain = types.MethodType(unguarded_step, learner)
    trainer = Trainer.__new__(Trainer)  # only for its per-segment check
    trainer.collector, trainer.state_resets_nonfinite = collector, 0

    t_guard, t_plain, t_collect, t_state, t_probe = [], [], [], [], []
    for k in range(args.rounds):
        print(f"round {k + 1}/{args.rounds}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        rollout = collector.collect()
        t_collect.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        trainer._reset_nonfinite_state(rollout)
        t_state.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        assert _poisoned_policy(policy, rollout.bootstrap) is None
        t_probe.append(time.perf_counter() - t0)
        order = [(guarded, t_guard), (plain, t_plain)]
        for step, times in (order if k % 2 == 0 else order[::-1]):
            learner._optimizer_step = step
            t0 = time.perf_counter()
            learner.update(rollout)
            times.append(time.perf_counter() - t0)
    env.close()
    med = statistics.median
    ratios = sorted(g / p for g, p in zip(t_guard, t_plain, strict=True))
    q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
    params = sum(p.numel() for p in policy.parameters())
    print("| model | params | envs x unroll | update guarded / unguarded ms (median) | "
          "guarded / unguarded, paired (median [IQR]) | segment ms | state check ms | "
          "poison check ms (per checkpoint) |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.model} | {params:,} | {cfg.num_envs} x {cfg.unroll} | "
          f"{1e3 * med(t_guard):.1f} / {1e3 * med(t_plain):.1f} | "
          f"{med(ratios):.3f} [{q1:.3f}, {q3:.3f}] | {1e3 * med(t_collect):.1f} | "
          f"{1e3 * med(t_state):.2f} | {1e3 * med(t_probe):.1f} |")


if __name__ == "__main__":
    main()
