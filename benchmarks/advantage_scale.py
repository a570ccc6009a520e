#!/usr/bin/env python
"""How large are PPO's advantages on ProcGen, before normalisation?

    python benchmarks/advantage_scale.py --games bigfish,coinrun --updates 4 --out adv.jsonl

`ppo.advantage_std_floor` divides a minibatch's advantages by max(std, floor) instead of
their std. On the synthetic memory tasks a floor of 0.1 only bites once a task is solved
(RESULTS.md, "SRWM learnability", rounds 4 and 5). Whether it would also bite on ProcGen,
where rewards are sparse early in training, depends on the std of the advantages there, which
is what this measures: PPO with the package's ProcGen settings (64 envs, unroll 256, 8
minibatches, 3 epochs, reward normalisation), one game at a time, a small CNN on a CPU (the
advantages' scale is set by the rewards, the reward normaliser and the value head, not by the
width of the CNN; the paper-size one is too slow on a CPU). One JSON line per update and
game: `losses/advantage_std` (the mean over the update's minibatches of each minibatch's
std before normalisation) and the explained variance. Early training only: what a short CPU run
can see.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--games", default="bigfish,coinrun,starpilot,maze,heist,jumper",
                   help="comma list of ProcGen games, each trained on its own")
    p.add_argument("--core", default="srwm")
    p.add_argument("--updates", type=int, default=4)
    p.add_argument("--num-envs", type=int, default=64)
    p.add_argument("--unroll", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()

    import torch

    from agents.config import TrainConfig
    from agents.trainer import train
    from envs import GAMES as PROCGEN_GAMES
    from policies.config import ModelConfig

    games = [g for g in a.games.split(",") if g]
    bad = [g for g in games if g not in PROCGEN_GAMES]
    if bad or a.updates < 1:
        p.error(f"bad --games {','.join(bad)} (valid: {', '.join(PROCGEN_GAMES)})" if bad
                else f"--updates must be >= 1, got {a.updates}")
    torch.set_num_threads(1)
    with open(a.out, "a") as out, tempfile.TemporaryDirectory() as tmp:
        for game in games:
            model = ModelConfig(core=a.core, cnn_channels=(8, 16, 16), cnn_out=64,
                                hidden_size=64, num_heads=4, head_size=16, ff_size=128,
                                lstm_size=64)
            cfg = TrainConfig(games=[game], algo="ppo", num_envs=a.num_envs, unroll=a.unroll,
                              total_steps=a.updates * a.num_envs * a.unroll, seed=a.seed,
                              device="cpu", run_dir=f"{tmp}/{game}", model=model)
            t0 = time.time()

            def log(step: int, m: dict, game: str = game, t0: float = t0) -> None:
                row = {"game": game, "core": a.core, "seed": a.seed, "step": step,
                       "advantage_std": m.get("losses/advantage_std"),
                       "explained_variance": m.get("losses/explained_variance"),
                       "seconds": round(time.time() - t0, 1)}
                out.write(json.dumps(row) + "\n")
                out.flush()
                print(json.dumps(row), flush=True)

            train(cfg, progress=False, on_update=log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
