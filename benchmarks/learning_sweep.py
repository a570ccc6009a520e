#!/usr/bin/env python
"""Run many tiny learning runs (the setups of tests/agents/test_learning.py) in parallel.

    python benchmarks/learning_sweep.py RUNS.json --workers 15 --out results.jsonl

RUNS.json is a list of objects: {"name", "task": "cue-recall" | "switching-bandit", "core",
"algo": "ppo" | "vtrace", "steps", "seed", "state_reset", "model": {ModelConfig overrides},
"ppo": {PPOConfig fields}, "vtrace": {VTraceConfig fields}}; missing keys take the learning
tests' values. Each run trains on one process with 1 torch thread, then plays greedily on fresh
envs exactly as the tests do; one JSON line per run (greedy score, late training return,
seconds) is appended to --out and printed as it finishes. Used to choose the settings of the
learning tests; the findings are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def run_one(spec: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from agents.ppo import PPOConfig
    from agents.vtrace import VTraceConfig
    from tests.agents import test_learning as tl

    task = spec.get("task", "cue-recall")
    kwargs = tl.CUE if task == "cue-recall" else tl.BANDIT
    algo = spec.get("algo", "ppo")
    reset = spec.get("state_reset", "episode")
    ppo = PPOConfig(**{"lr": 2e-3, "num_minibatches": 4, **spec.get("ppo", {})})
    vtrace = VTraceConfig(**{"lr": 2e-3, "anneal_lr": False, "batch_size": tl.NUM_ENVS,
                             **spec.get("vtrace", {})})
    t0 = time.time()
    policy, train_return = tl.train(task, kwargs, spec.get("core", "srwm"), algo,
                                    steps=spec.get("steps", 30_000), state_reset=reset,
                                    seed=spec.get("seed", 1), ppo_cfg=ppo, vtrace_cfg=vtrace,
                                    model=spec.get("model"))
    eval_steps = 120 if task == "cue-recall" else tl.BANDIT_EVAL_STEPS
    score, n = tl.evaluate(policy, task, kwargs, state_reset=reset, steps=eval_steps)
    extra = {}
    if spec.get("extra_evals"):
        extra["greedy_4x"] = round(tl.evaluate(policy, task, kwargs, state_reset=reset,
                                               steps=4 * eval_steps)[0], 4)
        extra["sampled"] = round(tl.evaluate(policy, task, kwargs, state_reset=reset,
                                             steps=eval_steps, greedy=False)[0], 4)
    return {**spec, "greedy": round(score, 4), "episodes": n, **extra,
            "train_return": round(train_return, 4), "seconds": round(time.time() - t0, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--workers", type=int, default=max(1, mp.cpu_count() - 1))
    parser.add_argument("--out", type=Path, default=Path("sweep.jsonl"))
    args = parser.parse_args(argv)
    specs = json.loads(args.runs.read_text())
    with mp.get_context("spawn").Pool(args.workers) as pool, args.out.open("a") as out:
        for res in pool.imap_unordered(run_one, specs):
            line = json.dumps(res)
            out.write(line + "\n")
            out.flush()
            extra = "".join(f" {k} {res[k]:.3f}" for k in ("greedy_4x", "sampled") if k in res)
            print(f"{res['name']:40s} greedy {res['greedy']:.3f} train {res['train_return']:.3f}"
                  f"{extra} ({res['seconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
