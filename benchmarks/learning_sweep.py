#!/usr/bin/env python
"""Many tiny learning runs on the synthetic tasks, in parallel processes, one JSON line each.

    python benchmarks/learning_sweep.py RUNS.json --workers 2 --out results.jsonl
    python benchmarks/learning_sweep.py --summary results.jsonl      # the study's table

RUNS.json is a list of objects, or {"defaults": {...}, "runs": [...]} where every run is
merged over the defaults ("model", "ppo" and "vtrace" key by key, other keys replaced).
Keys: "name", "task" (cue-recall | switching-bandit), "task_kwargs", "core", "algo" (ppo |
vtrace), "steps", "seed" (or "seeds": [..], expanded to one run per seed), "num_envs",
"unroll", "state_reset", "state_lifetime", "model" (ModelConfig overrides), "ppo" / "vtrace"
(learner config fields), "eval_every" (env steps); "package": true starts from the package's
defaults and the memory-tiny preset instead (what the learning tests use), with "profile"
naming an SRWM profile (default | published | spec) applied before the overrides.
Every run trains one tiny agent on one process with 1 torch thread
(tests/agents/learning_harness.py) and evaluates it greedily on fresh envs every eval_every
steps and at the end. Its line holds the curve of
scores, steps_to_success (first evaluation at or above the task's bar, SUCCESS in the
harness), the final score, min_after_success (the lowest score after the first success: a
collapse shows here), "diag" (per evaluation: the learner's entropy and core metrics and, on
cue-recall, "answers", the K x K count of scored episodes by cue and answer) and the seconds
it took, and "resolved", the learner config and model fields it trained with (lines from
before 2026-12-07 afternoon lack it). Lines already in --out (same name and seed) are
skipped, so an interrupted sweep resumes.

"package": true means the preset of the checkout that runs it. When a preset default moves,
the run lists written before pin the old value in their "defaults" (e.g. the memory-tiny
V-trace setting of 2026-12-07: "policy_clip" 0 and "normalize_advantages" false in the
lists of rounds up to 13b), so that they rerun as they ran.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def expand(doc) -> list[dict]:
    """The runs of a RUNS.json document: defaults merged (nested dicts too), seeds expanded."""
    if isinstance(doc, dict):
        defaults, runs = doc.get("defaults", {}), doc["runs"]
    else:
        defaults, runs = {}, doc
    out = []
    for run in runs:
        spec = dict(defaults)
        for k, v in run.items():
            merge = k in ("model", "ppo", "vtrace") and isinstance(spec.get(k), dict)
            spec[k] = {**spec[k], **v} if merge else v
        for seed in spec.pop("seeds", [spec.get("seed", 0)]):
            out.append({**spec, "seed": seed})
    return out


def package_run(spec: dict):
    """A run with `"package": true`: the package's defaults and the memory-tiny preset
    (learning_harness.package_setup, exactly what the learning tests use), then the SRWM
    profile named by "profile" (agents.config.SRWM_PROFILES), then "model", "ppo", "vtrace",
    "state_reset", "state_lifetime", "num_envs" and "unroll" overrides."""
    import dataclasses

    from agents.config import SRWM_PROFILES
    from tests.agents import learning_harness as lh

    setup = lh.package_setup(spec["task"], spec["core"], spec["algo"], int(spec["steps"]),
                             int(spec["seed"]), dict(spec.get("task_kwargs", {})))
    for key, value in SRWM_PROFILES[spec.get("profile", "default")].items():
        if key.startswith("model."):
            setup.model[key.split(".", 1)[1]] = value
        else:
            setattr(setup, key, value)
    setup.model.update(spec.get("model", {}))
    setup.ppo = dataclasses.replace(setup.ppo, **spec.get("ppo", {}))
    setup.vtrace = dataclasses.replace(setup.vtrace, **spec.get("vtrace", {}))
    for key in ("state_reset", "state_lifetime", "num_envs", "unroll"):
        if key in spec:
            setattr(setup, key, spec[key])
    return setup


def make_setup(spec: dict):
    """The learning harness's Setup for one expanded run (package defaults or explicit)."""
    from agents.ppo import PPOConfig
    from agents.vtrace import VTraceConfig
    from tests.agents import learning_harness as lh

    if spec.get("package"):
        return package_run(spec)
    return lh.Setup(
        task=spec["task"], task_kwargs=dict(spec.get("task_kwargs", {})), core=spec["core"],
        algo=spec["algo"], steps=int(spec["steps"]), seed=int(spec["seed"]),
        num_envs=int(spec.get("num_envs", 16)), unroll=int(spec.get("unroll", 12)),
        state_reset=spec.get("state_reset", "never"),
        state_lifetime=float(spec.get("state_lifetime", 0.0)),
        model=dict(spec.get("model", {})),
        ppo=PPOConfig(**spec.get("ppo", {})), vtrace=VTraceConfig(**spec.get("vtrace", {})))


def run_one(spec: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from tests.agents import learning_harness as lh

    setup = make_setup(spec)
    curve: list[tuple[int, float]] = []
    diag: list[dict] = []
    last: dict = {}

    def on_eval(step: int, result) -> None:
        curve.append((step, round(result.score, 4)))
        diag.append({"step": step, **{k: round(v, 4) for k, v in result.train_metrics.items()},
                     **({"answers": result.answers} if result.answers is not None else {})})
        last["result"] = result

    t0 = time.time()
    _, collector, train_return = lh.train_run(setup, eval_every=int(spec.get("eval_every", 0))
                                              or setup.steps, on_eval=on_eval)
    collector.env.close()
    bar = lh.SUCCESS[setup.task]
    first = next((s for s, v in curve if v >= bar), None)
    after = [v for s, v in curve if first is not None and s >= first]
    final = last["result"]
    return {**spec, "final": round(final.score, 4), "final_mean_return":
            round(final.mean_return, 4), "by_index": [round(v, 3) for v in final.by_index],
            "steps_to_success": first, "min_after_success": min(after) if after else None,
            "learned": first is not None and final.score >= bar, "curve": curve, "diag": diag,
            "train_return": round(train_return, 4), "seconds": round(time.time() - t0, 1),
            "resolved": resolved(setup)}


def resolved(setup) -> dict:
    """What the run trained with after defaults, preset, profile and overrides: the learner's
    whole config and the model's fields, so that a line stays readable when defaults move."""
    import dataclasses

    learner = setup.ppo if setup.algo == "ppo" else setup.vtrace
    return {"learner": dataclasses.asdict(learner), "model": dict(setup.model),
            "num_envs": setup.num_envs, "unroll": setup.unroll,
            "state_reset": setup.state_reset, "state_lifetime": setup.state_lifetime}


def summarize(rows: list[dict]) -> str:
    """Markdown: per name, seeds learned (score >= bar at the end and at some evaluation),
    median steps to first success, final scores per seed."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["name"]].append(r)
    lines = ["| run | task, learner, core, budget | seeds learned | median steps to success | "
             "final score per seed | lowest after success |", "|---|---|---|---|---|---|"]
    for name, rs in groups.items():
        rs.sort(key=lambda r: r["seed"])
        steps = [r["steps_to_success"] for r in rs if r["steps_to_success"] is not None]
        med = f"{statistics.median(steps) / 1000:.1f}k" if steps else "-"
        mins = [r["min_after_success"] for r in rs if r["min_after_success"] is not None]
        first = rs[0]
        what = (f"{first['task']} {first.get('task_kwargs') or ''}, {first['algo']}, "
                f"{first['core']}, {first['steps'] / 1000:g}k")
        lines.append(f"| {name} | {what} | {sum(r['learned'] for r in rs)} / {len(rs)} | {med} | "
                     + " ".join(f"{r['final']:.2f}" for r in rs) + " | "
                     + (f"{min(mins):.2f}" if mins else "-") + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="?")
    parser.add_argument("--workers", type=int, default=max(1, mp.cpu_count() - 1))
    parser.add_argument("--out", type=Path, default=Path("sweep.jsonl"))
    parser.add_argument("--summary", type=Path, nargs="+", default=None,
                        help="print the Markdown summary of these results files and exit")
    args = parser.parse_args(argv)
    if args.summary is not None:
        rows = [json.loads(line) for path in args.summary
                for line in path.read_text().splitlines() if line]
        print(summarize(rows))
        return 0
    if args.runs is None:
        parser.error("RUNS.json is required (or --summary FILE)")
    specs = expand(json.loads(args.runs.read_text()))
    done = set()
    if args.out.exists():
        done = {(r["name"], r["seed"]) for r in map(json.loads, args.out.read_text().splitlines())
                if r}
    todo = [s for s in specs if (s["name"], s["seed"]) not in done]
    print(f"{len(todo)} runs to do ({len(specs) - len(todo)} already in {args.out})", flush=True)
    with mp.get_context("spawn").Pool(args.workers) as pool, args.out.open("a") as out:
        for res in pool.imap_unordered(run_one, todo):
            out.write(json.dumps(res) + "\n")
            out.flush()
            print(f"{res['name']:44s} seed {res['seed']} final {res['final']:.3f} "
                  f"first success {res['steps_to_success']} ({res['seconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
