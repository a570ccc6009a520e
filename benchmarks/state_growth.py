#!/usr/bin/env python
"""How large the SRWM's carried modification grows over very long carries, with and without
the state decay.

    python benchmarks/state_growth.py --steps 1000000 --out benchmarks/results/state_growth.json
    python benchmarks/state_growth.py --trained RUN_DIR_OR_CKPT ...   # also a trained agent's
    python benchmarks/state_growth.py --decays 1 --max-norm 1000 ...  # the hard bound alone

The op alone (policies.srwm.ops.srwm_naive), no gradient: H = 2 heads, d = 16, batch 8,
W0 drawn as the layer draws it (every entry Normal(0, 1/sqrt(d))), head inputs Normal(0, std^2)
(std 1 and 5), the state carried from one call to the next in chunks of 100 steps, never
reset. Every `--every` steps it records the Frobenius norm of W - W0 per head (mean and max
over batch and heads, and the max over every chunk end since the last record); a state that
stops being finite is recorded at the first chunk end where it happens. With --trained, the
same for the first SRWM layer of a trained agent: its own W0 and decay, fed head inputs
recorded while the agent played its training task (20k steps, replayed in a loop, each batch
entry from another offset; with a decay that forgets, the state then repeats with the
recording's period, so points 20k steps apart can be equal).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from policies.srwm.layer import bound_norm  # noqa: E402
from policies.srwm.ops import srwm_naive  # noqa: E402

H, D, B, CHUNK = 2, 16, 8, 100


@torch.no_grad()
def grow(w0: torch.Tensor, inputs, steps: int, every: int, decay: float,
         max_norm: float = 0.0) -> list[dict]:
    """Carry the state for `steps` steps; inputs(t0, n) -> head inputs [n, B, H, d]. With
    max_norm > 0 the state is bounded after every chunk as the layer bounds it between calls
    (policies.srwm.layer.bound_norm)."""
    state = torch.zeros(B, *w0.shape)
    curve = []
    window_max = 0.0  # the largest norm at any chunk end since the last record
    for t0 in range(0, steps, CHUNK):
        n = min(CHUNK, steps - t0)
        _, state = srwm_naive(inputs(t0, n), w0, state, decay=decay)
        if max_norm > 0:
            state = bound_norm(state, max_norm)
        done = t0 + n
        norms = torch.linalg.matrix_norm(state)  # [B, H]
        top = float(norms.max())
        window_max = top if not math.isfinite(top) else max(window_max, top)
        if done % every == 0 or done == steps or not math.isfinite(top):
            curve.append({"step": done, "mean_norm": float(norms.mean()), "max_norm": top,
                          "window_max_norm": window_max})
            window_max = 0.0
            if not math.isfinite(top):
                break  # the step recorded last is the first chunk end that is not finite
    return curve


def random_case(std: float, decay: float, steps: int, every: int, seed: int,
                max_norm: float = 0.0) -> dict:
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(H, 3 * D + 4, D, generator=g) * D**-0.5

    def inputs(t0: int, n: int) -> torch.Tensor:
        return torch.randn(n, B, H, D, generator=g) * std

    t = time.time()
    curve = grow(w0, inputs, steps, every, decay, max_norm)
    return {"case": f"random W0, inputs std {std:g}", "decay": decay, "max_norm": max_norm,
            "curve": curve,
            "seconds": round(time.time() - t, 1)}


def record_inputs(path: str, steps: int, seed: int) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Play the trained agent on its training task (16 envs) for `steps` steps and record the
    head inputs of its first SRWM layer: (w0, decay, inputs [steps, 16, H, d])."""
    from agents.checkpoint import load_agent
    from agents.rollout import RolloutCollector
    from envs import make_env

    agent = load_agent(path)
    cfg = agent.config
    layer = agent.policy.core.memories[0]
    seen: list[torch.Tensor] = []

    def hook(module, args):
        h = args[0]
        x = h if module.norm is None else module.norm(h)
        x = x * module.input_scale
        seen.append(x.reshape(*x.shape[:2], module.num_heads, module.head_size).detach())

    handle = layer.register_forward_pre_hook(hook)
    env = make_env(cfg.games, 16, seed=seed, **cfg.task_kwargs)
    collector = RolloutCollector(env, agent.policy, 100, cfg.state_reset)
    while sum(s.shape[0] for s in seen) < steps:
        collector.collect()
    handle.remove()
    env.close()
    return layer.base_weights().detach().clone(), layer.state_decay, torch.cat(seen)[:steps]


def trained_case(path: str, steps: int, every: int, seed: int, decay: float | None) -> dict:
    w0, own_decay, rec = record_inputs(path, 20_000, seed)
    decay = own_decay if decay is None else decay
    g = torch.Generator().manual_seed(seed)
    offsets = torch.randint(0, rec.shape[0], (B,), generator=g)
    envs = torch.randint(0, rec.shape[1], (B,), generator=g)

    def inputs(t0: int, n: int) -> torch.Tensor:
        idx = (offsets[None, :] + t0 + torch.arange(n)[:, None]) % rec.shape[0]  # [n, B]
        return rec[idx, envs[None, :].expand(n, B)]

    t = time.time()
    curve = grow(w0, inputs, steps, every, decay)
    return {"case": f"trained agent {path}", "decay": decay, "curve": curve,
            "seconds": round(time.time() - t, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--every", type=int, default=10_000)
    p.add_argument("--decays", default="1,0.999",
                   help="comma list of decays for the random cases ('': none)")
    p.add_argument("--stds", default="1,5", help="comma list of input stds ('': none)")
    p.add_argument("--trained", action="append", default=[],
                   help="run dir or checkpoint of a trained srwm agent (repeatable)")
    p.add_argument("--max-norm", type=float, default=0.0,
                   help="bound the state's per-head norm after every chunk (0: no bound)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = []
    def floats(text: str) -> list[float]:  # "" -> no random cases (--trained alone)
        return [float(x) for x in text.split(",") if x.strip()]

    for std in floats(args.stds):
        for decay in floats(args.decays):
            results.append(random_case(std, decay, args.steps, args.every, args.seed,
                                       args.max_norm))
            print(json.dumps({k: v for k, v in results[-1].items() if k != "curve"}
                             | {"last": results[-1]["curve"][-1]}), flush=True)
    for path in args.trained:
        for decay in (None, 1.0):
            results.append(trained_case(path, args.steps, args.every, args.seed, decay))
            print(json.dumps({k: v for k, v in results[-1].items() if k != "curve"}
                             | {"last": results[-1]["curve"][-1]}), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
