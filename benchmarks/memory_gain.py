#!/usr/bin/env python
"""How strongly a core's output depends on an input 3 steps back, at initialisation.

    python benchmarks/memory_gain.py

For each core (the learning tests' tiny sizes) and each SRWM option set: 64 sequences of 4
random inputs x ~ N(0, 0.5^2), then the same sequences with only the first input redrawn;
gain = mean |y_3 - y'_3| / mean |y_0 - y'_0| (mean over 5 init seeds). A core whose gain is tiny
must first grow its memory path before any memory task can be learned.

    python benchmarks/memory_gain.py --delays 2 4 12

adds a second table shaped like cue-recall: a random first input (the cue), then the same
input `delay` times (the blank frames), then one more fixed input (the answer frame); the
gain is that of the answer step's output to the cue, i.e. what of the cue reaches the step
where it is needed, at initialisation. Same seeds, batch and ratio as above.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents.config import SRWM_PROFILES  # noqa: E402
from policies import ModelConfig, build_core  # noqa: E402

TINY = dict(cnn_channels=(4, 8, 8), cnn_out=32, hidden_size=32, num_heads=2, head_size=16,
            ff_size=64, lstm_size=32)
# docs/SPEC.md's init and op (the "spec" SRWM profile, without its training-side settings)
SPEC_INIT = {k.split(".", 1)[1]: v for k, v in SRWM_PROFILES["spec"].items()
             if k.startswith("model.") and k != "model.srwm_detach_every_step"}
CASES = [
    ("lstm", {}), ("deltanet", {}), ("srwm", {}),
    ("srwm", {"srwm_state_decay": 0.99}),  # the default before 2026-12-04
    ("srwm", SPEC_INIT),
]


@torch.no_grad()
def _last_over_first(core, x: torch.Tensor, x2: torch.Tensor) -> float:
    """x, x2 [T, B, D] differing only at step 0: mean output change at the last step over the
    mean output change at step 0, both from a zero state."""
    y1, _ = core(x, core.initial_state(x.shape[1]))
    y2, _ = core(x2, core.initial_state(x.shape[1]))
    d = (y1 - y2).norm(dim=-1).mean(dim=1)  # [T]
    return (d[-1] / d[0]).item()


@torch.no_grad()
def memory_gain(core_name: str, options: dict, seeds: int = 5, batch: int = 64) -> float:
    gains = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        core = build_core(ModelConfig(core=core_name, **TINY, **options), TINY["cnn_out"] + 1)
        x = 0.5 * torch.randn(4, batch, core.input_size)
        x2 = x.clone()
        x2[0] = 0.5 * torch.randn(batch, core.input_size)
        gains.append(_last_over_first(core, x, x2))
    return sum(gains) / len(gains)


@torch.no_grad()
def delay_gain(core_name: str, options: dict, delay: int, seeds: int = 5,
               batch: int = 64) -> float:
    """Gain of the answer step's output to the cue after `delay` repeats of one blank input."""
    gains = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        core = build_core(ModelConfig(core=core_name, **TINY, **options), TINY["cnn_out"] + 1)
        blank, answer = 0.5 * torch.randn(2, core.input_size)
        x = blank.expand(delay + 2, batch, core.input_size).clone()  # [cue, blanks, answer]
        x[-1] = answer
        x2 = x.clone()
        x[0] = 0.5 * torch.randn(batch, core.input_size)
        x2[0] = 0.5 * torch.randn(batch, core.input_size)
        gains.append(_last_over_first(core, x, x2))
    return sum(gains) / len(gains)


DELAY_CASES = CASES[:3] + [
    ("srwm", {"srwm_state_decay": 0.95}), ("srwm", {"srwm_state_decay": 0.99}),
    ("srwm", {"srwm_beta_init": 0.0}), ("srwm", {"srwm_qk_init_scale": 32.0}),
]


def _describe(options: dict) -> str:
    return ("docs/SPEC.md init and op" if options is SPEC_INIT
            else ", ".join(f"{k}={v}" for k, v in options.items()) or "package defaults")


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delays", type=int, nargs="*", default=[],
                        help="also print the cue-recall-shaped gain at these delays (>= 0)")
    args = parser.parse_args(argv)
    if any(d < 0 for d in args.delays):
        parser.error(f"--delays must be >= 0, got {args.delays}")
    torch.set_num_threads(1)
    print("| core | options | memory gain |\n|---|---|---|")
    for core_name, options in CASES:
        print(f"| {core_name} | {_describe(options)} | {memory_gain(core_name, options):.4f} |")
    if args.delays:
        heads = " | ".join(f"delay {d}" for d in args.delays)
        print(f"\n| core | options | {heads} |\n|---|---|" + "---|" * len(args.delays))
        for core_name, options in DELAY_CASES:
            gains = " | ".join(f"{delay_gain(core_name, options, d):.4f}" for d in args.delays)
            print(f"| {core_name} | {_describe(options)} | {gains} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
