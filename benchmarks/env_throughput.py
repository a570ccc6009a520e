"""Steps per second of bare ProcGen and of envs.make_procgen_env, side by side.

For each game set it builds ONE bare ``ProcgenGym3Env`` and ONE wrapped env (same games,
same num_envs, same seed), reused across repeats, and times with random actions
(pre-generated, the same array for both):

- bare:       ``env.act(a); env.observe()``                    (the least any user does)
- bare+info:  ``env.act(a); env.observe(); env.get_info()``    (what level seeds cost in gym3)
- ours:       ``venv.step(a)`` (obs, rewards, dones, infos with game, level seed, episodes)

Repeats are interleaved (bare, bare+info, ours, bare, ...) so that drift on a shared machine
hits all of them alike; the table reports medians. Overhead = bare_sps / ours_sps - 1.

    python benchmarks/env_throughput.py                     # 64 envs, bigfish / paper6 / all
    python benchmarks/env_throughput.py --steps 500 --repeats 3 --games bigfish paper6
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
    """Median wall microseconds per VECTOR step of the wrapper's own work (stub env)."""
    venv = make_procgen_env(games, num_envs, seed=seed)
    venv.procgen_env.close()
    stub = _StubProcgen(num_envs, done_rate, seed)
    venv._env = stub
    venv._info_buffers = stub._info
    actions = np.random.default_rng(seed).integers(0, 15, (steps, num_envs)).astype(np.int32)
    times = [_time_steps(venv.step, actions)[0] for _ in range(repeats)]
    return 1e6 * statistics.median(times) / steps


def bench_game_set(spec: str, num_envs: int, steps: int, repeats: int, warmup: int,
                   seed: int) -> dict[str, tuple[float, float]]:
    """Per runner (bare, bare+info, ours): (median wall steps/s, median CPU microseconds per
    env step); an env step is one of the num_envs envs advancing once."""
    games = resolve_games(spec)
    procgen_env_cls = _import_procgen_env()
    bare = procgen_env_cls(num=num_envs, env_name=",".join(games), distribution_mode="easy",
                           num_levels=200, start_level=0, rand_seed=seed)
    ours = make_procgen_env(games, num_envs, seed=seed)
    ours.reset()
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 15, (steps, num_envs)).astype(np.int32)  # [S, N]

    def bare_step(a: np.ndarray) -> None:
        bare.act(a)
        bare.observe()

    def bare_info_step(a: np.ndarray) -> None:
        bare.act(a)
        bare.observe()
        bare.get_info()

    runners = {"bare": bare_step, "bare+info": bare_info_step, "ours": ours.step}
    for run in runners.values():
        _time_steps(run, actions[:warmup])
    wall: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            w, c = _time_steps(run, actions)
            wall[name].append(w)
            cpu[name].append(c)
    bare.close()
    ours.close()
    n = steps * num_envs
    return {name: (n / statistics.median(wall[name]), 1e6 * statistics.median(cpu[name]) / n)
            for name in runners}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="+", default=["bigfish", "paper6", "all"],
                        help="game sets to time, each anything resolve_games accepts")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1000, help="vector steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    print(f"# env throughput: {args.num_envs} envs, {args.steps} steps x {args.repeats} "
          f"interleaved repeats (median), random actions, easy, 200 levels")
    print(f"# machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print()
    print("| games | G | bare steps/s | bare+get_info steps/s | ours steps/s "
          "| wall overhead vs bare | CPU us/step bare | CPU us/step bare+get_info "
          "| CPU us/step ours | CPU overhead vs bare | wrapper-only us per vector step "
          "| wrapper-only / bare vector step |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for spec in args.games:
        g = len(resolve_games(spec))
        num_envs = args.num_envs - args.num_envs % g or g
        label = spec if num_envs == args.num_envs else f"{spec} ({num_envs} envs)"
        r = bench_game_set(spec, num_envs, args.steps, args.repeats, args.warmup, args.seed)
        (bare_sps, bare_us), (info_sps, info_us), (ours_sps, ours_us) = (
            r["bare"], r["bare+info"], r["ours"])
        own_us = wrapper_only_us(resolve_games(spec), num_envs, args.steps, args.repeats,
                                 args.seed)
        bare_vec_us = 1e6 * num_envs / bare_sps
        print(f"| {label} | {g} | {bare_sps:,.0f} | {info_sps:,.0f} | {ours_sps:,.0f} | "
              f"{100 * (bare_sps / ours_sps - 1):+.1f}% | {bare_us:.2f} | {info_us:.2f} | "
              f"{ours_us:.2f} | {100 * (ours_us / bare_us - 1):+.1f}% | {own_us:.1f} | "
              f"{100 * own_us / bare_vec_us:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
