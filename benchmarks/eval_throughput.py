#!/usr/bin/env python
"""Evaluation throughput: env steps per second and finished episodes per second of the
evaluation loop (agents.evaluation.runner.play, the loop eval_rl.py runs) on the paper's
6-game set with the paper-size SRWM agent.

The agent is randomly initialised (the throughput does not depend on the weights; the episode
rate does, through the episode lengths: a random agent's episodes are not a trained agent's,
so episodes/s here is indicative only, env steps/s is the number to compare).

    python benchmarks/eval_throughput.py                       # paper6, 48 envs, srwm, CPU
    python benchmarks/eval_throughput.py --steps 400 --threads 1 --core lstm
    python benchmarks/eval_throughput.py --threads 1,2 --rounds 3   # interleaved comparison

With several thread counts, the rounds alternate them (round r runs every count once, in a
rotating order) so that the machine's load affects them alike; medians are reported.

Prints one summary line and a JSON line. Never used by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--games", default="paper6")
    p.add_argument("--num-envs", type=int, default=48, help="total envs (8 per game for paper6)")
    p.add_argument("--core", default="srwm")
    p.add_argument("--steps", type=int, default=300, help="vectorised steps to time per block")
    p.add_argument("--rounds", type=int, default=1, help="timed blocks per thread count")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    p.add_argument("--threads", default=None,
                   help="torch threads, or a comma list to compare (default: torch's)")
    p.add_argument("--sample", action="store_true", help="sample actions (default greedy)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import torch

    from agents.evaluation.runner import play
    from envs import SPLITS, make_env, resolve_games
    from policies import ModelConfig, build_actor_critic

    thread_counts = ([int(t) for t in args.threads.split(",")] if args.threads
                     else [torch.get_num_threads()])
    games = resolve_games(args.games)
    start, num = SPLITS["test1"]
    torch.manual_seed(args.seed)
    policy = build_actor_critic(ModelConfig(core=args.core), 15).to(args.device).eval()
    params = sum(p.numel() for p in policy.parameters())
    env = make_env(games, args.num_envs, num_levels=num, start_level=start, seed=args.seed)
    big = 10**9
    play(policy, env, episodes_per_game=big, greedy=not args.sample, device=args.device,
         max_steps=args.warmup, metrics_every=0)
    blocks: dict[int, list[dict]] = {t: [] for t in thread_counts}
    for r in range(args.rounds):
        k = r % len(thread_counts)
        for threads in thread_counts[k:] + thread_counts[:k]:
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            res = play(policy, env, episodes_per_game=big, greedy=not args.sample,
                       device=args.device, max_steps=args.steps, metrics_every=0)
            dt = time.perf_counter() - t0
            blocks[threads].append({"seconds": round(dt, 2), "env_steps": res.env_steps,
                                    "episodes": res.finished_episodes,
                                    "env_steps_per_s": round(res.env_steps / dt, 1)})
    env.close()
    for threads, bs in blocks.items():
        rates = sorted(b["env_steps_per_s"] for b in bs)
        episodes = sum(b["episodes"] for b in bs)
        seconds = sum(b["seconds"] for b in bs)
        env_steps = sum(b["env_steps"] for b in bs)
        out = {
            "games": games, "num_envs": args.num_envs, "core": args.core, "params": params,
            "greedy": not args.sample, "device": args.device, "threads": threads,
            "blocks": bs, "median_env_steps_per_s": rates[len(rates) // 2],
            "episodes": episodes, "episodes_per_s": round(episodes / seconds, 3),
            "mean_finished_episode_length": round(env_steps / max(1, episodes), 1),
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "load_avg": os.getloadavg(),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        print(f"{args.core} on {args.games} x {args.num_envs} envs ({args.device}, "
              f"{threads} threads, {'greedy' if out['greedy'] else 'sampled'}): median "
              f"{out['median_env_steps_per_s']} env steps/s over {len(bs)} blocks "
              f"{[b['env_steps_per_s'] for b in bs]}, {out['episodes_per_s']} episodes/s "
              f"({episodes} episodes in {seconds:.1f} s)")
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
