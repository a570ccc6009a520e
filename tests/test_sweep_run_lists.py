"""The committed run lists of the learning studies (benchmarks/sweep_runs_*.json) still build.

RESULTS.md points at these files as the way to reproduce every row of the SRWM study. If an
option is renamed or a default moves into a profile, a run list can silently stop meaning
what its rows say, or stop running at all. This builds every distinct run of every list
exactly as benchmarks/learning_sweep.py would (task env, model, learner, rollout collector)
and takes one acting step, without training.

The first-wave lists (sweep_runs_1..4.json, 2026-11-24) are history, not recipes: they ran
with the harness of commit 3529e02, whose runs defaulted to the srwm core and to the
ModelConfig defaults of that day (docs/SPEC.md's init), so today's code would train other
agents from them. RESULTS.md says so where it cites them; they are left out here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import learning_sweep  # noqa: E402

from agents.learners import make_learner  # noqa: E402
from agents.rollout import RolloutCollector  # noqa: E402
from envs import make_env  # noqa: E402
from policies import build_actor_critic  # noqa: E402

HISTORICAL = {f"sweep_runs_{i}.json" for i in range(1, 5)}
RUN_LISTS = sorted(p for p in BENCH.glob("sweep_runs_*.json") if p.name not in HISTORICAL)


def distinct_runs(path: Path) -> list[dict]:
    """One expanded spec per run name (seeds differ only in the seed)."""
    seen: dict[str, dict] = {}
    for spec in learning_sweep.expand(json.loads(path.read_text())):
        seen.setdefault(spec["name"], spec)
    return list(seen.values())


def test_run_lists_exist():
    assert len(RUN_LISTS) >= 8, RUN_LISTS
    assert HISTORICAL <= {p.name for p in BENCH.glob("sweep_runs_*.json")}


@pytest.mark.parametrize("path", RUN_LISTS, ids=lambda p: p.stem)
def test_run_list_builds(path: Path):
    runs = distinct_runs(path)
    assert runs, f"{path.name} has no runs"
    keys = [(r["name"], r["seed"]) for r in learning_sweep.expand(json.loads(path.read_text()))]
    # learning_sweep resumes by (name, seed): a repeated pair would silently run only once
    assert len(set(keys)) == len(keys), f"{path.name}: a (name, seed) pair repeats"
    torch.manual_seed(0)
    for spec in runs:
        setup = learning_sweep.make_setup(spec)
        assert setup.steps > 0 and setup.num_envs > 0 and setup.unroll > 0, spec["name"]
        env = make_env(setup.task, setup.num_envs, seed=0, **setup.task_kwargs)
        try:
            policy = build_actor_critic(setup.model_config(), env.action_space.n)
            learner = make_learner(setup.algo, policy, num_envs=setup.num_envs, unroll=setup.unroll,
                                   total_steps=setup.steps, device="cpu", ppo_cfg=setup.ppo,
                                   vtrace_cfg=setup.vtrace)
            collector = RolloutCollector(env, learner.acting_policy, 1, setup.state_reset,
                                         state_lifetime=setup.state_lifetime, lifetime_seed=1)
            rollout = collector.collect()
            assert rollout.dones.shape[1] == setup.num_envs, spec["name"]
        finally:
            env.close()
