#!/usr/bin/env python
"""Env steps per second of the WHOLE training loop, sync vs async pipeline, side by side.

    python benchmarks/train_throughput.py                      # paper6, CPU, tiny agent
    python benchmarks/train_throughput.py --device cuda --size paper --num-envs 96,384 \
        --unroll-ppo 256 --unroll-vtrace 50 --num-minibatches 8
    python benchmarks/train_throughput.py --pipelines sync,async,async:g1,async:lag0

One table row per (pipeline, algo, core, env count); each cell is a real
`agents.trainer.train` run (ProcGen env, TensorBoard, a checkpoint at the end) in a temp dir.
The time between consecutive `on_update` callbacks is one update's wall time (env construction
and start-up excluded; the first `--warmup` updates of every run dropped). Cells are
interleaved over `--rounds` so that a noisy, shared machine slows all alike. `--pipelines`
takes async variants too (`async:g1` one env group, `async:lag0` lag bound 0, `async:xp` PPO's
lag correction with its extra proximal pass instead of the first-pass default; combinable);
each gets its own row against sync (the env-only limit is of the default grouping). Per (algo, core,
env count) the same run also measures the two limits of the loop:

- env-only: steps/s of the same envs (the async pipeline's env groups, ProcGen threads as
  there) stepped with random actions, all groups at once on their own threads, no policy;
- learner-only: steps/s of `learner.update` alone, repeated on one stored rollout, no envs.

Breakdown of a training second (per wall-clock second of the timed updates):
- sync: env (time inside `env.step`), inference (the rest of collection: the policy's act
  calls, uploads, bookkeeping), update, other (logging, checkpoint bookkeeping);
- async: the learner thread's update and wait for a segment; the actor thread's inference,
  env wait (the env time not hidden behind acting on the other group) and param wait (the
  lag bound holding it back); env busy = time inside `env.step` on the env threads (it may
  add up to more than the second, as groups overlap with inference and with each other).
On a CPU there is no host-device transfer (it is part of inference on a GPU).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZES = {
    # the memory-tiny preset's agent
    "tiny": dict(cnn_channels=(4, 8, 8), cnn_out=32, hidden_size=32, num_heads=2, head_size=16,
                 ff_size=64, lstm_size=32),
    "small": dict(cnn_channels=(8, 16, 16), cnn_out=128, hidden_size=64, num_heads=4,
                  head_size=16, ff_size=128, lstm_size=64),
    "paper": {},  # the ModelConfig defaults: the paper-size agent
}


class EnvTimer:
    """Wraps env.step of the envs a run builds and sums the seconds spent inside it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.lock = threading.Lock()

    def wrap(self, env):
        step = env.step

        def timed(actions):
            t0 = time.perf_counter()
            try:
                return step(actions)
            finally:
                with self.lock:
                    self.seconds += time.perf_counter() - t0

        env.step = timed
        return env


def parse_variant(spec: str) -> tuple[str, dict[str, int | str]]:
    """"sync" | "async" | "async:g1:lag0:xp" ... -> (pipeline, overrides): `gN` sets env_groups
    to N, `lagN` max_policy_lag to N (otherwise --env-groups / --max-policy-lag), `xp` PPO's
    lag_proximal to extra-pass."""
    pipeline, *opts = spec.split(":")
    if pipeline not in ("sync", "async") or (pipeline == "sync" and opts):
        raise ValueError(f"bad pipeline {spec!r}; valid: sync, async[:gN][:lagN][:xp]")
    out: dict[str, int | str] = {}
    for opt in opts:
        if opt == "xp":
            out["lag_proximal"] = "extra-pass"
            continue
        for prefix, key in (("lag", "max_policy_lag"), ("g", "env_groups")):
            if opt.startswith(prefix) and opt[len(prefix):].isdigit():
                out[key] = int(opt[len(prefix):])
                break
        else:
            raise ValueError(f"bad pipeline option {opt!r} in {spec!r}; valid: gN, lagN, xp")
    return pipeline, out


def make_cfg(args, variant: str, algo: str, core: str, num_envs: int, run_dir: str):
    from agents.config import TrainConfig
    from policies import ModelConfig

    pipeline, over = parse_variant(variant)
    unroll = args.unroll_ppo if algo == "ppo" else args.unroll_vtrace
    cfg = TrainConfig(games=args.games.split(","), algo=algo, num_envs=num_envs, unroll=unroll,
                      total_steps=num_envs * unroll * (args.warmup + args.updates),
                      device=args.device, seed=0, run_dir=run_dir,
                      model=ModelConfig(core=core, **SIZES[args.size]),
                      checkpoint_every_minutes=0, checkpoint_every_steps=0, pipeline=pipeline,
                      env_groups=over.get("env_groups", args.env_groups),
                      procgen_threads=args.procgen_threads,
                      max_policy_lag=over.get("max_policy_lag", args.max_policy_lag))
    cfg.ppo.num_minibatches = args.num_minibatches
    cfg.ppo.lag_proximal = str(over.get("lag_proximal", cfg.ppo.lag_proximal))
    cfg.vtrace.batch_size = math.gcd(cfg.vtrace.batch_size, num_envs)
    return cfg.resolved()


def run_case(args, pipeline: str, algo: str, core: str, num_envs: int, run_dir: str) -> dict:
    from agents import trainer as trainer_mod

    cfg = make_cfg(args, pipeline, algo, core, num_envs, run_dir)
    timer = EnvTimer()
    real_env, real_groups = trainer_mod.build_env, trainer_mod.build_env_groups
    trainer_mod.build_env = lambda *a, **k: timer.wrap(real_env(*a, **k))
    trainer_mod.build_env_groups = lambda *a, **k: [timer.wrap(e) for e in real_groups(*a, **k)]
    stamps: list[float] = []
    env_at: list[float] = []
    parts: list[dict] = []

    def on_update(step: int, metrics: dict) -> None:
        stamps.append(time.perf_counter())
        env_at.append(timer.seconds)
        parts.append({k: v for k, v in metrics.items() if k.startswith("charts/time")
                      or k == "charts/policy_lag"})

    try:
        result = trainer_mod.train(cfg, progress=False, on_update=on_update)
    finally:
        trainer_mod.build_env, trainer_mod.build_env_groups = real_env, real_groups
    if result.interrupted:
        sys.exit(130 if result.interrupted == "SIGINT" else 143)
    w = args.warmup
    wall = stamps[-1] - stamps[w - 1] if w > 0 else stamps[-1] - stamps[0]
    timed = parts[w:] if w > 0 else parts[1:]
    n_steps = cfg.steps_per_update * len(timed)
    env_s = env_at[-1] - env_at[w - 1 if w > 0 else 0]

    def total(key: str) -> float:
        return sum(p.get(key, 0.0) for p in timed)

    if pipeline == "sync":  # the variant's name (sync, async, async:g1, ...)
        collect = total("charts/time_collect_s")
        breakdown = {"env": env_s, "inference": collect - env_s,
                     "update": total("charts/time_update_s")}
        breakdown["other"] = wall - collect - breakdown["update"]
    else:
        breakdown = {"update": total("charts/time_update_s"),
                     "learner wait": total("charts/time_wait_s"),
                     "inference": total("charts/time_act_s"),
                     "env wait": total("charts/time_env_wait_s"),
                     "param wait": total("charts/time_param_wait_s"), "env busy": env_s}
    return {"pipeline": pipeline, "algo": algo, "core": core, "num_envs": num_envs,
            "steps_per_update": cfg.steps_per_update, "sps": n_steps / wall, "wall_s": wall,
            "per_second": {k: v / wall for k, v in breakdown.items()},
            "max_lag": max((p.get("charts/policy_lag", 0.0) for p in timed), default=0.0)}


def env_only(args, algo: str, num_envs: int, seconds: float) -> float:
    """Random-action steps/s of the async pipeline's env groups, all stepping at once."""
    import numpy as np

    from agents.pipeline import default_env_groups, default_procgen_threads
    from agents.trainer import build_env_groups

    cfg = make_cfg(args, "async", algo, "ff", num_envs, "unused")
    groups = cfg.env_groups or default_env_groups(cfg.num_envs, len(cfg.games))
    threads = cfg.procgen_threads or default_procgen_threads(groups)
    envs = build_env_groups(cfg, 0, groups, threads)
    counts = [0] * len(envs)
    stop = time.perf_counter() + seconds

    def work(i: int) -> None:
        env, rng = envs[i], np.random.default_rng(i)
        env.reset()
        while time.perf_counter() < stop:
            env.step(rng.integers(0, env.action_space.n, env.num_envs))
            counts[i] += env.num_envs

    t0 = time.perf_counter()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(envs))]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    dt = time.perf_counter() - t0
    for env in envs:
        env.close()
    return sum(counts) / dt


def learner_only(args, algo: str, core: str, num_envs: int, updates: int) -> float:
    """Steps/s of learner.update alone on one stored rollout."""
    import torch

    from agents.rollout import RolloutCollector
    from agents.runtime import resolve_device
    from agents.trainer import build_env, build_policy_and_learner

    cfg = make_cfg(args, "sync", algo, core, num_envs, "unused")
    device = resolve_device(cfg.device)
    env = build_env(cfg)
    policy, learner = build_policy_and_learner(cfg, int(env.action_space.n), device)
    rollout = RolloutCollector(env, learner.acting_policy, cfg.unroll, cfg.state_reset,
                               device).collect()
    env.close()
    learner.update(rollout)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(updates):
        learner.update(rollout)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return cfg.steps_per_update * updates / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--games", default="bigfish,fruitbot,maze,leaper,plunder,starpilot",
                   help="ProcGen games (default: paper6)")
    p.add_argument("--pipelines", default="sync,async",
                   help="comma list of sync | async[:gN][:lagN][:xp] (async with N env groups / "
                        "lag bound N / PPO's extra proximal pass; each async variant is compared "
                        "with sync)")
    p.add_argument("--algos", default="ppo,vtrace")
    p.add_argument("--cores", default="ff,srwm")
    p.add_argument("--num-envs", default="12,48", help="comma list of env counts")
    p.add_argument("--size", default="tiny", choices=sorted(SIZES), help="agent size")
    p.add_argument("--unroll-ppo", type=int, default=32)
    p.add_argument("--unroll-vtrace", type=int, default=20)
    p.add_argument("--num-minibatches", type=int, default=4)
    p.add_argument("--env-groups", type=int, default=0, help="0: the pipeline's default")
    p.add_argument("--procgen-threads", type=int, default=0, help="0: the pipeline's default")
    p.add_argument("--max-policy-lag", type=int, default=1)
    p.add_argument("--updates", type=int, default=3, help="timed updates per run")
    p.add_argument("--warmup", type=int, default=1, help="untimed updates per run")
    p.add_argument("--rounds", type=int, default=1, help="interleaved repetitions")
    p.add_argument("--limit-seconds", type=float, default=3.0,
                   help="seconds of the env-only limit (0: skip both limits)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--json", default=None, help="write the raw results here")
    args = p.parse_args()
    for spec in args.pipelines.split(","):  # bad variants: one line, exit 2, before any run
        try:
            parse_variant(spec)
        except ValueError as e:
            p.error(str(e))

    import os

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    env_counts = [int(n) for n in args.num_envs.split(",")]
    cells = [(pl, a, c, n) for n in env_counts for a in args.algos.split(",")
             for c in args.cores.split(",") for pl in args.pipelines.split(",")]
    raw: dict[tuple, list[dict]] = {}
    limits: dict[tuple, dict[str, float]] = {}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for pl, a, c, n in cells:
                res = run_case(args, pl, a, c, n, str(Path(tmp) / f"{pl}_{a}_{c}_{n}_{r}"))
                raw.setdefault((pl, a, c, n), []).append(res)
                print(f"round {r}: {pl:5s} {a:6s} {c:5s} {n:5d} envs {res['sps']:9.1f} SPS",
                      file=sys.stderr, flush=True)
        if args.limit_seconds > 0:
            for n in env_counts:
                for a in args.algos.split(","):
                    env_sps = env_only(args, a, n, args.limit_seconds)
                    for c in args.cores.split(","):
                        limits[(a, c, n)] = {"env": env_sps, "learner": learner_only(
                            args, a, c, n, max(1, args.updates))}
                        print(f"limits: {a} {c} {n} envs: env-only {env_sps:.0f}, "
                              f"learner-only {limits[(a, c, n)]['learner']:.0f} SPS",
                              file=sys.stderr, flush=True)

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU "
          f"cores, {torch.get_num_threads()} torch threads, device {args.device}, torch "
          f"{torch.__version__}; games {args.games}; agent {args.size}; unroll PPO "
          f"{args.unroll_ppo} / V-trace {args.unroll_vtrace}; {args.updates} timed updates x "
          f"{args.rounds} rounds per cell; {time.perf_counter() - t_start:.0f} s in all\n")
    print("| algo | core | envs | sync SPS | async SPS | async / sync | env-only SPS | "
          "learner-only SPS | async / min(limits) | max lag |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    table = []
    variants = args.pipelines.split(",")
    asyncs = [v for v in variants if v != "sync"] or [None]

    def f(v):
        return "-" if v is None else f"{v:.0f}"

    for n in env_counts:
        for a in args.algos.split(","):
            for c in args.cores.split(","):
                sps = {pl: statistics.median(x["sps"] for x in raw[(pl, a, c, n)])
                       for pl in variants if (pl, a, c, n) in raw}
                lim = limits.get((a, c, n), {})
                low = min(lim.values()) if lim else None
                for v in asyncs:
                    s_sync, s_async = sps.get("sync"), sps.get(v)
                    lag = max((x["max_lag"] for x in raw.get((v, a, c, n), [])), default=0)
                    ratio = f"{s_async / s_sync:.2f}x" if s_sync and s_async else "-"
                    eff = f"{s_async / low:.0%}" if low and s_async else "-"
                    name = "" if v in (None, "async") else f" ({v})"
                    print(f"| {a} | {c} | {n} | {f(s_sync)} | {f(s_async)}{name} | {ratio} | "
                          f"{f(lim.get('env'))} | {f(lim.get('learner'))} | {eff} | {lag:.0f} |")
                table.append({"algo": a, "core": c, "num_envs": n, **sps, **lim})
    print("\nWhere a training second goes (seconds per wall second, median cell of the rounds):")
    print("| pipeline | algo | core | envs | " + " | ".join(
        ["env / env busy", "inference", "update", "other / learner wait", "env wait",
         "param wait"]) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (pl, a, c, n), runs in raw.items():
        b = runs[len(runs) // 2]["per_second"]
        if parse_variant(pl)[0] == "sync":
            vals = [b["env"], b["inference"], b["update"], b["other"], None, None]
        else:
            vals = [b["env busy"], b["inference"], b["update"], b["learner wait"],
                    b["env wait"], b["param wait"]]
        print(f"| {pl} | {a} | {c} | {n} | " + " | ".join(
            "-" if v is None else f"{v:.2f}" for v in vals) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"args": vars(args), "table": table,
             "runs": [x for runs in raw.values() for x in runs]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
