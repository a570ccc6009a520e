#!/usr/bin/env python
"""Env steps per second of the WHOLE training loop (collect + update + logging + bookkeeping),
PPO and V-trace, paper-size SRWM agent vs the ff core, side by side in one process.

    python benchmarks/train_throughput.py                       # paper6, CPU, small batches
    python benchmarks/train_throughput.py --device cuda --num-envs 96 --unroll-ppo 256

Each case is a real `agents.trainer.train` run (ProcGen env, TensorBoard, checkpoint at the
end) in a temp dir; the time between consecutive `on_update` callbacks is one update's wall
time, so env construction and start-up are excluded, and the first `--warmup` updates of every
run are dropped. Cases are interleaved over `--rounds` (A B C D A B C D ...) so that a noisy,
shared machine slows all of them alike. Reported: median env steps/s over all timed updates,
median seconds of collect and of update per update, and the cost per step of each core
relative to ff (= SPS_ff / SPS_core; the target for srwm is <= 1.25), pooled over all rounds
and per round (the two runs of a round ran back to back, so the per-round ratio is the one
least disturbed by other load on a shared machine; its median is the headline figure).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def run_case(algo: str, core: str, args: argparse.Namespace, tmp: Path, tag: str) -> dict:
    from agents.config import TrainConfig
    from agents.trainer import train
    from policies import ModelConfig

    unroll = args.unroll_ppo if algo == "ppo" else args.unroll_vtrace
    cfg = TrainConfig(games=args.games.split(","), algo=algo, num_envs=args.num_envs,
                      unroll=unroll, total_steps=args.num_envs * unroll * (args.warmup
                                                                            + args.updates),
                      device=args.device, seed=0, run_dir=str(tmp / tag),
                      model=ModelConfig(core=core), checkpoint_every_minutes=0,
                      checkpoint_every_steps=0)
    cfg.ppo.num_minibatches = args.num_minibatches
    stamps: list[float] = []
    parts: list[tuple[float, float]] = []

    def on_update(step: int, metrics: dict) -> None:
        stamps.append(time.perf_counter())
        parts.append((metrics["charts/time_collect_s"], metrics["charts/time_update_s"]))

    t0 = time.perf_counter()
    result = train(cfg, progress=False, on_update=on_update)
    if result.interrupted:  # train() turns SIGINT / SIGTERM into a clean stop: stop here too
        sys.exit(130 if result.interrupted == "SIGINT" else 143)
    # the first interval starts at the first update's start: approximate it by its own parts
    first = stamps[0] - sum(parts[0])
    times = [b - a for a, b in zip([first, *stamps[:-1]], stamps, strict=True)]
    keep = slice(args.warmup, None)
    return {"algo": algo, "core": core, "steps_per_update": args.num_envs * unroll,
            "update_s": times[keep], "collect_s": [c for c, _ in parts[keep]],
            "learn_s": [u for _, u in parts[keep]], "total_s": time.perf_counter() - t0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--games", default="bigfish,fruitbot,maze,leaper,plunder,starpilot",
                   help="ProcGen games (default: paper6)")
    p.add_argument("--algos", default="ppo,vtrace")
    p.add_argument("--cores", default="srwm,ff")
    p.add_argument("--num-envs", type=int, default=12)
    p.add_argument("--unroll-ppo", type=int, default=32)
    p.add_argument("--unroll-vtrace", type=int, default=50)
    p.add_argument("--num-minibatches", type=int, default=4)
    p.add_argument("--updates", type=int, default=3, help="timed updates per run")
    p.add_argument("--warmup", type=int, default=1, help="untimed updates per run")
    p.add_argument("--rounds", type=int, default=2, help="interleaved repetitions")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--json", default=None, help="write the raw results here")
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [(a, c) for a in args.algos.split(",") for c in args.cores.split(",")]
    raw: dict[tuple[str, str], dict] = {}
    per_round: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for algo, core in cases:
                res = run_case(algo, core, args, Path(tmp), f"{algo}_{core}_{r}")
                acc = raw.setdefault((algo, core), {**res, "update_s": [], "collect_s": [],
                                                    "learn_s": []})
                for k in ("update_s", "collect_s", "learn_s"):
                    acc[k] += res[k]
                per_round.setdefault((algo, core), []).append(
                    res["steps_per_update"] / statistics.median(res["update_s"]))
                print(f"round {r}: {algo:6s} {core:5s} "
                      f"{res['steps_per_update'] / statistics.median(res['update_s']):8.1f} SPS",
                      file=sys.stderr, flush=True)

    print(f"\nmachine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, device {args.device}, torch "
          f"{torch.__version__}; games {args.games}; {args.num_envs} envs; "
          f"{args.updates} timed updates x {args.rounds} rounds per case\n")
    print("| algo | core | steps/update | env steps/s (median) | collect s | update s | "
          "cost/step vs ff (pooled) | cost/step vs ff (per round) |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for (algo, core), res in raw.items():
        sps = res["steps_per_update"] / statistics.median(res["update_s"])
        rows.append((algo, core, sps, res))
    for algo, core, sps, res in rows:
        ff = next((s for a, c, s, _ in rows if a == algo and c == "ff"), None)
        ratio = f"{ff / sps:.2f}x" if ff else "-"
        rounds = "-"
        if (algo, "ff") in per_round:
            rs = [f / c for f, c in zip(per_round[(algo, "ff")], per_round[(algo, core)],
                                        strict=True)]
            rounds = f"{statistics.median(rs):.2f}x (" + ", ".join(f"{r:.2f}" for r in rs) + ")"
        print(f"| {algo} | {core} | {res['steps_per_update']} | {sps:.1f} | "
              f"{statistics.median(res['collect_s']):.2f} | "
              f"{statistics.median(res['learn_s']):.2f} | {ratio} | {rounds} |")
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{"algo": a, "core": c, "sps": s, **{k: v for k, v in r.items()}}
             for a, c, s, r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
