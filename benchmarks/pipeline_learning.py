#!/usr/bin/env python
"""Does the async pipeline's policy lag cost learning? Sync vs async runs, seed by seed.

    python benchmarks/pipeline_learning.py --seeds 0 1 2 3 --workers 2 --out results.jsonl

Every run is the async learning test's (tests/agents/test_pipeline.py): the memory-tiny preset
on cue-recall (2 cues, delay 4), `--core` (lstm), `--algo` (ppo), `--steps` (40k) through
train(), once with `--pipeline sync` and once with `--pipeline async --max-policy-lag 1`,
then evaluated greedily on fresh envs by the learning harness (bar: 0.9). One torch thread
per process. Async runs are reproducible (fixed lag schedule, the actor's own generator), so
a line here is what the test sees for that seed on this kind of machine. One JSON line per
run in --out; a table (score per seed, runs at the bar) at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def one_run(spec: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from agents import checkpoint as ckpt
    from agents.config import TrainConfig
    from agents.trainer import train
    from tests.agents import learning_harness as lh

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        kw = {"max_policy_lag": spec["max_policy_lag"]} if spec["pipeline"] == "async" else {}
        if spec["algo"] == "ppo":
            kw["ppo.lag_correction"] = spec["lag_correction"]
            kw["ppo.lag_proximal"] = spec.get("lag_proximal", "extra-pass")
        cfg = TrainConfig.from_preset(
            "memory-tiny", games=["cue-recall"], total_steps=spec["steps"], seed=spec["seed"],
            algo=spec["algo"], pipeline=spec["pipeline"], device="cpu",
            run_dir=str(Path(tmp) / "run"), **kw, **{"model.core": spec["core"]})
        lags: list[float] = []
        train(cfg, progress=False,
              on_update=lambda s, m: lags.append(float(m.get("charts/policy_lag", 0.0))))
        setup = lh.package_setup("cue-recall", spec["core"], spec["algo"], spec["steps"],
                                 spec["seed"], {"num_cues": 2, "delay": 4})
        result = lh.evaluate(ckpt.load_agent(Path(tmp) / "run").policy, setup)
    return {**spec, "score": round(result.score, 4),
            "by_index": [round(x, 3) for x in result.by_index],
            "success": result.score >= lh.SUCCESS["cue-recall"],
            "mean_lag": sum(lags) / max(1, len(lags)), "seconds": round(time.perf_counter() - t0)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--pipelines", nargs="+", default=["sync", "async"],
                   choices=["sync", "async"])
    p.add_argument("--core", default="lstm")
    p.add_argument("--algo", default="ppo", choices=["ppo", "vtrace"])
    p.add_argument("--steps", type=int, default=40_000)
    p.add_argument("--max-policy-lag", type=int, default=1)
    p.add_argument("--no-lag-correction", action="store_true",
                   help="PPO clips around the behaviour policy mu even under a lag")
    p.add_argument("--lag-proximal", default="first-pass", choices=["first-pass", "extra-pass"],
                   help="where PPO's lag correction takes its proximal policy from")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    specs = [{"core": a.core, "algo": a.algo, "steps": a.steps, "seed": s, "pipeline": pl,
              "max_policy_lag": a.max_policy_lag, "lag_correction": not a.no_lag_correction,
              "lag_proximal": a.lag_proximal}
             for pl in a.pipelines for s in a.seeds]
    rows = []
    ctx = mp.get_context("spawn")
    with ctx.Pool(a.workers) as pool:
        for row in pool.imap_unordered(one_run, specs):
            rows.append(row)
            print(json.dumps(row), flush=True)
            if a.out is not None:
                with a.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    print(f"\n{a.core} {a.algo} cue-recall, {a.steps} steps, max_policy_lag {a.max_policy_lag}"
          f", lag_correction {not a.no_lag_correction} ({a.lag_proximal})")
    for pl in a.pipelines:
        mine = sorted((r for r in rows if r["pipeline"] == pl), key=lambda r: r["seed"])
        scores = " ".join(f"s{r['seed']}={r['score']:.3f}" for r in mine)
        print(f"{pl:5s}: {sum(r['success'] for r in mine)}/{len(mine)} at the bar; {scores}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
