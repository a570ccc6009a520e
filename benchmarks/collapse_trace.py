#!/usr/bin/env python
"""Trace one learning run update by update, to see where a learned policy collapses.

    python benchmarks/collapse_trace.py --core srwm --seed 2 --out trace.jsonl
    python benchmarks/collapse_trace.py --seed 2 --detail 150:158 --out trace.jsonl
    python benchmarks/collapse_trace.py --task-kwargs '{"num_cues": 4, "delay": 12}' \
        --run '{"unroll": 28}' --steps 200000 --stop-after 100000 --out trace.jsonl

The run is the learning harness's (tests/agents/learning_harness.py, package defaults, the
memory-tiny preset; cue-recall 2 cues delay 4 unless --task / --task-kwargs say otherwise;
`--run` takes the other keys of a learning_sweep run, e.g. "unroll" or "model"), one torch
thread. `--steps` is the run's budget (the learning-rate schedule anneals over it);
`--stop-after` ends the trace earlier, so a fall early in a long run costs only its part.
One JSON line per update: the learner's metrics, the training return of the segment, the
largest and mean gradient norm before clipping over its minibatches, and every
`--eval-every` updates the greedy score on fresh envs (with cue-recall's answers per cue).
For the updates in `--detail A:B` it also writes, per minibatch, the gradient norm of every
parameter tensor (before clipping) and the loss's stats (approx_kl, clipfrac, ...; computed
before that minibatch's step).
A run is deterministic on one machine kind, so the same command finds the same collapse.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--core", default="srwm")
    p.add_argument("--algo", default="ppo", choices=["ppo", "vtrace"])
    p.add_argument("--task", default="cue-recall", choices=["cue-recall", "switching-bandit"])
    p.add_argument("--task-kwargs", default='{"num_cues": 2, "delay": 4}', help="JSON object")
    p.add_argument("--steps", type=int, default=40_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ppo", default="{}", help="JSON object of PPOConfig overrides")
    p.add_argument("--run", default="{}", help="JSON object of other learning_sweep run keys "
                   "(unroll, model, vtrace, state_lifetime, ...)")
    p.add_argument("--stop-after", type=int, default=0, help="env steps (0 = the whole run)")
    p.add_argument("--eval-every", type=int, default=5, help="updates between evaluations")
    p.add_argument("--detail", default="", help="A:B, updates with per-tensor gradient norms")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    try:
        kwargs, ppo, extra = json.loads(a.task_kwargs), json.loads(a.ppo), json.loads(a.run)
        lo, hi = (int(x) for x in a.detail.split(":")) if a.detail else (-1, -2)
    except ValueError as e:
        p.error(f"bad --task-kwargs, --ppo, --run or --detail: {e}")
    if not isinstance(extra, dict):
        p.error(f"--run must be a JSON object, got {a.run}")

    import torch
    from torch import nn

    torch.set_num_threads(1)
    from agents.learners import make_learner
    from agents.rollout import RolloutCollector
    from benchmarks.learning_sweep import package_run
    from envs import make_env
    from policies import build_actor_critic
    from tests.agents import learning_harness as lh

    setup = package_run({**extra, "package": True, "task": a.task, "task_kwargs": kwargs,
                         "algo": a.algo, "core": a.core, "steps": a.steps, "seed": a.seed,
                         "ppo": ppo})
    torch.manual_seed(setup.seed)
    env = make_env(setup.task, setup.num_envs, seed=setup.seed, **setup.task_kwargs)
    policy = build_actor_critic(setup.model_config(), env.action_space.n)
    learner = make_learner(setup.algo, policy, num_envs=setup.num_envs, unroll=setup.unroll,
                           total_steps=setup.steps, device="cpu", ppo_cfg=setup.ppo,
                           vtrace_cfg=setup.vtrace)
    collector = RolloutCollector(env, learner.acting_policy, setup.unroll, setup.state_reset,
                                 state_lifetime=setup.state_lifetime,
                                 lifetime_seed=setup.seed + 1)
    norms: list[float] = []
    detail: list[dict] = []
    clip = nn.utils.clip_grad_norm_

    def recording_clip(params, max_norm, *args, **kw):
        params = list(params)
        if lo <= learner.updates <= hi:
            detail.append({n: round(float(q.grad.norm()), 4)
                           for n, q in policy.named_parameters() if q.grad is not None})
        norm = clip(params, max_norm, *args, **kw)
        norms.append(float(norm))
        return norm

    nn.utils.clip_grad_norm_ = recording_clip  # the learner calls it through nn.utils
    loss_fn = learner.loss
    mb_stats: list[dict] = []

    def recording_loss(*args, **kw):
        loss, stats = loss_fn(*args, **kw)
        if lo <= learner.updates <= hi:
            mb_stats.append({k.split("/", 1)[1]: round(v, 5) for k, v in stats.items()})
        return loss, stats

    learner.loss = recording_loss
    per = setup.num_envs * setup.unroll
    updates = -(-setup.steps // per)
    if a.stop_after:
        updates = min(updates, -(-a.stop_after // per))
    with a.out.open("w") as out:
        for u in range(updates):
            rollout = collector.collect()
            norms.clear()
            detail.clear()
            mb_stats.clear()
            metrics = learner.update(rollout)
            eps = rollout.episodes
            line = {"update": u, "step": (u + 1) * per,
                    "train_return": sum(e["r"] for e in eps) / len(eps) if eps else None,
                    "grad_norm_max": max(norms), "grad_norm_mean": sum(norms) / len(norms),
                    **{k: round(v, 5) for k, v in metrics.items()}}
            if a.eval_every and (u % a.eval_every == a.eval_every - 1 or u == updates - 1):
                result = lh.evaluate(policy, setup)
                line["score"] = result.score
                if result.answers is not None:
                    line["answers"] = result.answers
            if detail:
                line["grad_norms_per_minibatch"] = list(detail)
                line["stats_per_minibatch"] = list(mb_stats)
            out.write(json.dumps(line) + "\n")
            out.flush()
            print(f"update {u + 1}/{updates}: return {line['train_return']}, grad norm max "
                  f"{line['grad_norm_max']:.2f}" + (f", score {line['score']:.3f}"
                                                    if "score" in line else ""),
                  file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
