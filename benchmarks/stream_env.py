#!/usr/bin/env python
"""Stream env layout (envs/stream.py): one single-env ProcGen env per (slot, game) against one
N-env ProcGen env per game, in memory and in time per env step.

Each layout is built in its own fresh process (memory = the rise of the process's peak RSS
over building and stepping it), and stepped with random actions; the rounds alternate the two
layouts so that the machine's load affects them alike, and medians are reported.

- ``per-slot``: ``make_stream_env`` with N slots over G games (N x G envs of one env each;
  every step steps N of them, one per slot).
- ``per-game``: G ``ProcgenVecEnv``s of N envs (what a stream would hold with one env per
  game; every step steps all N x G envs, of which only N would be used).

    python benchmarks/stream_env.py                      # 16 slots, 3 games, 500 steps, 3 rounds
    python benchmarks/stream_env.py --slots 8 --games bigfish,starpilot --rounds 5

Prints one line per round, a summary and a JSON line. Never used by the tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(layout: str, slots: int, games: list[str], steps: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import resource

    import numpy as np

    from envs import make_procgen_env
    from envs.stream import make_stream_env

    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # load ProcGen's assets first (once per process, whatever the layout)
    make_procgen_env(games[0], 1, num_threads=0).close()
    base = rss_mb()
    t0 = time.perf_counter()
    if layout == "per-slot":
        envs = [make_stream_env(",".join(f"{g}:5" for g in games), slots, start_level=1000)]
        stepped = slots  # env steps per vector step
    else:
        envs = [make_procgen_env(g, slots, start_level=1000) for g in games]
        stepped = slots * len(games)
    build = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    for env in envs:
        env.reset()
    for _ in range(20):  # warm-up
        for env in envs:
            env.step(rng.integers(0, 15, env.num_envs))
    t0 = time.perf_counter()
    for _ in range(steps):
        for env in envs:
            env.step(rng.integers(0, 15, env.num_envs))
    seconds = time.perf_counter() - t0
    out = {"layout": layout, "build_s": build, "memory_mb": rss_mb() - base,
           "us_per_vector_step": seconds / steps * 1e6,
           "us_per_used_env_step": seconds / (steps * slots) * 1e6,
           "us_per_stepped_env_step": seconds / (steps * stepped) * 1e6}
    for env in envs:
        env.close()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slots", type=int, default=16)
    p.add_argument("--games", default="bigfish,starpilot,fruitbot")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    games = [g.strip() for g in args.games.split(",")]
    if args.child:
        print(json.dumps(child(args.child, args.slots, games, args.steps)))
        return 0
    results: dict[str, list[dict]] = {"per-slot": [], "per-game": []}
    for r in range(args.rounds):
        order = ["per-slot", "per-game"] if r % 2 == 0 else ["per-game", "per-slot"]
        for layout in order:
            proc = subprocess.run([sys.executable, __file__, "--child", layout, "--slots",
                                   str(args.slots), "--games", args.games, "--steps",
                                   str(args.steps)], capture_output=True, text=True, check=True)
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            results[layout].append(res)
            print(f"round {r} {layout}: " + ", ".join(f"{k} {v:.1f}" for k, v in res.items()
                                                      if k != "layout"), flush=True)
    summary = {layout: {k: statistics.median(x[k] for x in rs) for k in rs[0] if k != "layout"}
               for layout, rs in results.items()}
    ps, pg = summary["per-slot"], summary["per-game"]
    print(f"median over {args.rounds} rounds, {args.slots} slots x {len(games)} games: "
          f"memory per-slot {ps['memory_mb']:.0f} MB vs per-game {pg['memory_mb']:.0f} MB; "
          f"us per used env step {ps['us_per_used_env_step']:.1f} vs "
          f"{pg['us_per_used_env_step']:.1f}; per stepped env step "
          f"{ps['us_per_stepped_env_step']:.1f} vs {pg['us_per_stepped_env_step']:.1f}; build "
          f"{ps['build_s']:.2f} s vs {pg['build_s']:.2f} s")
    print(json.dumps({"slots": args.slots, "games": games, "steps": args.steps,
                      "rounds": args.rounds, "machine": platform.platform(),
                      "summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
