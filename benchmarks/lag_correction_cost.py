"""Cost of PPO's lag correction (decoupled PPO under a policy lag), side by side in one process.

Each round collects one segment, then runs `PPO.update` on it twice from the same learner
state (parameters, optimizer, reward normaliser restored in between): as a segment with
`policy_lag` 0 (plain PPO) and as one with `policy_lag` 1 (`lag_correction`), the latter with
the proximal policy from `--lag-proximal` (`extra-pass`: one more no-grad pass over the
segment; `first-pass`: the first epoch's own forward passes), in alternating order. The
ratio is paired per round.

    .venv/bin/python benchmarks/lag_correction_cost.py [--model tiny|default] [--rounds 10]

Prints one table row (markdown). CPU only, cue-recall.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["tiny", "default"], default="tiny")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lag-proximal", choices=["first-pass", "extra-pass"],
                    default="extra-pass")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from benchmarks.cue_learner import build

    cfg, env, policy, learner, collector = build(args.model)
    learner.cfg.lag_proximal = args.lag_proximal

    times: dict[int, list[float]] = {0: [], 1: []}
    for k in range(args.rounds):
        print(f"round {k + 1}/{args.rounds}", file=sys.stderr, flush=True)
        rollout = collector.collect()
        saved = (copy.deepcopy(policy.state_dict()), copy.deepcopy(learner.state_dict()))
        for lag in ((0, 1) if k % 2 == 0 else (1, 0)):
            policy.load_state_dict(saved[0])
            learner.load_state_dict(copy.deepcopy(saved[1]))
            rollout.policy_lag = lag
            t0 = time.perf_counter()
            learner.update(rollout)
            times[lag].append(time.perf_counter() - t0)
        rollout.policy_lag = 0
    env.close()
    med = statistics.median
    ratios = sorted(c / p for c, p in zip(times[1], times[0], strict=True))
    q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
    params = sum(p.numel() for p in policy.parameters())
    print("| model | params | envs x unroll | PPO epochs | proximal | update lag 1 / lag 0 ms "
          "(median) | lag 1 / lag 0, paired (median [IQR]) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.model} | {params:,} | {cfg.num_envs} x {cfg.unroll} | {cfg.ppo.epochs} | "
          f"{args.lag_proximal} | "
          f"{1e3 * med(times[1]):.1f} / {1e3 * med(times[0]):.1f} | "
          f"{med(ratios):.3f} [{q1:.3f}, {q3:.3f}] |")


if __name__ == "__main__":
    main()
