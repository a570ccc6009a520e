"""Steps per second of bare ProcGen and of envs.make_procgen_env, side by side.

For each game set it builds ONE bare ``ProcgenGym3Env`` and ONE wrapped env (same games,
same num_envs, same seed), reused across repeats, and times with random actions
(pre-generated, the same array for both):

- bare:       ``env.act(a); env.observe()``                    (the least any user does)
- bare+info:  ``env.act(a); env.observe(); env.get_info()``    (what level seeds cost in gym3)
- ours:       ``venv.step(a)`` (obs, rewards, dones, infos with game, level seed, episodes)

Timing runs in rounds: each round times one short block of each runner, in a rotating order,
so that load changes on a shared machine hit all three alike; the overhead is the median over
rounds of the ratio ours / bare (wall time and process CPU time), with its quartiles. A last
column times the wrapper's own work alone, on a zero-cost stand-in for ProcGen.

    python benchmarks/env_throughput.py                     # 64 envs, bigfish / paper6 / all
    python benchmarks/env_throughput.py --blocks 30 --games bigfish paper6
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs import make_procgen_env, resolve_games  # noqa: E402
from envs.procgen_env import _import_procgen_env  # noqa: E402


def _time_steps(step: Callable[[np.ndarray], object], actions: np.ndarray
                ) -> tuple[float, float]:
    """(wall seconds, process CPU seconds of all threads) to run ``step`` once per row of
    ``actions`` int32 [S, N]. CPU time is less sensitive to other jobs on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    for a in actions:
        step(a)
    return time.perf_counter() - wall, time.process_time() - cpu


class _StubProcgen:
    """Stands in for ProcgenGym3Env at zero cost: pre-made arrays, no copies, no simulation.
    Stepping the wrapper on it times the wrapper's own work alone (done rate ``done_rate``
    per env step, so that episode reports are included)."""

    def __init__(self, num_envs: int, done_rate: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self._rew = rng.random(num_envs).astype(np.float32)
        self._ob = {"rgb": rng.integers(0, 255, (num_envs, 64, 64, 3), dtype=np.uint8)}
        self._firsts = rng.random((256, num_envs)) < done_rate  # [256, N]
        self._t = 0
        self._info = {"level_seed": rng.integers(0, 200, num_envs).astype(np.int32),
                      "prev_level_seed": rng.integers(0, 200, num_envs).astype(np.int32)}

    def act(self, ac: np.ndarray) -> None:
        self._t = (self._t + 1) % len(self._firsts)

    def observe(self) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        return self._rew, self._ob, self._firsts[self._t]

    def close(self) -> None:
        pass


def wrapper_only_us(games: list[str], num_envs: int, steps: int, repeats: int,
                    seed: int, done_rate: float = 0.01) -> float:
    """Wall microseconds per VECTOR step of the wrapper's own work (stub env), fastest repeat."""
    venv = make_procgen_env(games, num_envs, seed=seed)
    venv.procgen_env.close()
    stub = _StubProcgen(num_envs, done_rate, seed)
    venv._env = stub
    venv._info_buffers = stub._info
    actions = np.random.default_rng(seed).integers(0, 15, (steps, num_envs)).astype(np.int32)
    times = [_time_steps(venv.step, actions)[0] for _ in range(repeats)]
    return 1e6 * min(times) / steps


def bench_game_set(spec: str, num_envs: int, block: int, blocks: int, warmup: int,
                   seed: int) -> dict[str, dict[str, float]]:
    """Time bare, bare+info and ours in ``blocks`` paired blocks of ``block`` vector steps.

    Within each round the three runners run one block each, in a rotating order, so that
    load changes on a shared machine hit them alike; overheads are medians of the per-round
    ratios. Returns per runner: ``sps`` (env steps per second over all blocks), ``best_sps``
    (from the fastest block: the least disturbed by other jobs), and for ours
    ``best_ratio`` (fastest ours block / fastest bare block),
    ``wall_ratio`` / ``cpu_ratio`` (median of ours/bare time per round) with quartiles
    ``wall_q1`` / ``wall_q3``, and ``info_ratio`` (median of ours/bare+info wall time).
    """
    games = resolve_games(spec)
    procgen_env_cls = _import_procgen_env()
    bare = procgen_env_cls(num=num_envs, env_name=",".join(games), distribution_mode="easy",
                           num_levels=200, start_level=0, rand_seed=seed)
    ours = make_procgen_env(games, num_envs, seed=seed)
    ours.reset()
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 15, (block, num_envs)).astype(np.int32)  # [S, N]

    def bare_step(a: np.ndarray) -> None:
        bare.act(a)
        bare.observe()

    def bare_info_step(a: np.ndarray) -> None:
        bare.act(a)
        bare.observe()
        bare.get_info()

    runners = {"bare": bare_step, "bare+info": bare_info_step, "ours": ours.step}
    names = list(runners)
    for _ in range(max(1, warmup // block)):
        for run in runners.values():
            _time_steps(run, actions)
    wall: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(blocks):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            w, c = _time_steps(runners[name], actions)
            wall[name].append(w)
            cpu[name].append(c)
    bare.close()
    ours.close()
    n = block * num_envs
    out = {name: {"sps": n * blocks / sum(wall[name]), "best_sps": n / min(wall[name])}
           for name in runners}
    wall_ratios = [o / b for o, b in zip(wall["ours"], wall["bare"], strict=True)]
    q1, _, q3 = statistics.quantiles(wall_ratios, n=4)
    out["ours"].update(
        wall_ratio=statistics.median(wall_ratios), wall_q1=q1, wall_q3=q3,
        cpu_ratio=statistics.median(
            [o / b for o, b in zip(cpu["ours"], cpu["bare"], strict=True)]),
        info_ratio=statistics.median(
            [o / b for o, b in zip(wall["ours"], wall["bare+info"], strict=True)]),
        best_ratio=min(wall["ours"]) / min(wall["bare"]),
    )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="+", default=["bigfish", "paper6", "all"],
                        help="game sets to time, each anything resolve_games accepts")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--block", type=int, default=20, help="vector steps per timed block")
    parser.add_argument("--blocks", type=int, default=100, help="rounds of paired blocks")
    parser.add_argument("--warmup", type=int, default=100, help="vector steps before timing")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    print(f"# env throughput: {args.num_envs} envs, {args.blocks} rounds x {args.block} vector "
          f"steps per runner (paired, rotating order), random actions, easy, 200 levels")
    print(f"# machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print()
    print("| games | envs | bare steps/s | bare+get_info steps/s | ours steps/s "
          "| best block: bare / ours steps/s | overhead, best blocks "
          "| overhead vs bare, wall (median [IQR] of paired rounds) | overhead vs bare, CPU "
          "| overhead vs bare+get_info, wall | wrapper-only us per vector step "
          "| wrapper-only / bare vector step (best) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for spec in args.games:
        g = len(resolve_games(spec))
        num_envs = args.num_envs - args.num_envs % g or g
        r = bench_game_set(spec, num_envs, args.block, args.blocks, args.warmup, args.seed)
        own_us = wrapper_only_us(resolve_games(spec), num_envs, args.block * 10, 5, args.seed)
        bare_vec_us = 1e6 * num_envs / r["bare"]["best_sps"]
        o = r["ours"]
        print(f"| {spec} ({g} games) | {num_envs} | {r['bare']['sps']:,.0f} | "
              f"{r['bare+info']['sps']:,.0f} | {o['sps']:,.0f} | "
              f"{r['bare']['best_sps']:,.0f} / {o['best_sps']:,.0f} | "
              f"{100 * (o['best_ratio'] - 1):+.1f}% | "
              f"{100 * (o['wall_ratio'] - 1):+.1f}% [{100 * (o['wall_q1'] - 1):+.1f}%, "
              f"{100 * (o['wall_q3'] - 1):+.1f}%] | {100 * (o['cpu_ratio'] - 1):+.1f}% | "
              f"{100 * (o['info_ratio'] - 1):+.1f}% | {own_us:.1f} | "
              f"{100 * own_us / bare_vec_us:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
