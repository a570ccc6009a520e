"""Time and peak memory of every core and of the whole ActorCritic, side by side, on CPU.

Usage:
    .venv/bin/python benchmarks/cores.py                 # paper sizes, 3 repeats
    .venv/bin/python benchmarks/cores.py --repeats 1     # quicker
    .venv/bin/python benchmarks/cores.py --no-memory     # timings only

Timing: every (model, unroll, mode) case runs once to warm up, then the cases run in
interleaved rounds (round r runs every case once) and the median over rounds is reported, so
that drifts of a shared machine hit all cases alike. Modes: "fwd" = forward under
torch.no_grad() (acting); "fwd+bwd" = forward with autograd, then backward of the sum of the
outputs (learning).

Peak memory: each case runs once more in a fresh subprocess; the figure is the growth of the
process's peak resident set size (VmHWM in /proc/self/status, Linux only) over its value right
before the case ran (after building the model and the inputs). It counts every allocation of
the process (torch's CPU allocator included), which tracemalloc would not see.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies import CORES, ModelConfig, build_actor_critic, build_core  # noqa: E402

CORE_INPUT = 257  # cnn_out + reward


def make_case(model: str, core: str, T: int, B: int, seed: int = 0):
    """Build one model and its inputs; returns a callable run(mode)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(core=core, srwm_kernel="naive")
    if model == "core":
        net = build_core(cfg, CORE_INPUT)
        x = torch.randn(T, B, CORE_INPUT)
        starts = torch.zeros(T, B, dtype=torch.bool)

        def forward():
            return net(x, net.initial_state(B), starts)[0]
    else:
        net = build_actor_critic(cfg, num_actions=15)
        obs = torch.randint(0, 256, (T, B, 64, 64, 3), dtype=torch.uint8)
        reward = torch.zeros(T, B)
        starts = torch.zeros(T, B, dtype=torch.bool)

        def forward():
            logits, value, _ = net(obs, reward, starts, net.initial_state(B))
            return logits.sum() + value.sum()

    def run(mode: str) -> None:
        if mode == "fwd":
            with torch.no_grad():
                forward()
        else:
            net.zero_grad(set_to_none=True)
            forward().sum().backward()

    return run


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM) in MiB.

    Read from /proc/self/status rather than getrusage: on Linux, ru_maxrss of a child started
    by subprocess inherits the parent's peak, while VmHWM starts afresh with the new program.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure_memory(model: str, core: str, T: int, B: int, mode: str) -> float:
    """Peak RSS growth in MiB of one run of the case, in a fresh subprocess."""
    root = str(Path(__file__).resolve().parents[1])
    code = (
        f"import sys, torch; sys.path.insert(0, {root!r}); "
        f"torch.set_num_threads({torch.get_num_threads()}); "
        "from benchmarks.cores import make_case, peak_rss_mib; "
        f"run = make_case({model!r}, {core!r}, {T}, {B}); "
        "before = peak_rss_mib(); "
        f"run({mode!r}); "
        "print(peak_rss_mib() - before)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        return float("nan")
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--unrolls", type=int, nargs="+", default=[50, 256])
    parser.add_argument("--cores", nargs="+", default=list(CORES), choices=list(CORES))
    parser.add_argument("--ac-max-frames", type=int, default=64 * 50,
                        help="run the whole ActorCritic only when T*B <= this (its CNN "
                             "needs ~1.3 MB per frame for fwd+bwd, ~0.5 MB for fwd)")
    parser.add_argument("--no-ac", action="store_true", help="skip the whole ActorCritic")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory runs")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: on a shared, loaded 2-core machine, "
                             "2 threads made the small per-step ops of srwm ~8x slower)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    cases = []
    for T in args.unrolls:
        for model in ("core", "actor-critic"):
            if model == "actor-critic" and args.no_ac:
                continue
            for core in args.cores:
                for mode in ("fwd", "fwd+bwd"):
                    if model == "actor-critic" and T * args.batch > args.ac_max_frames:
                        continue
                    cases.append((model, core, T, mode))

    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}, B={args.batch}", flush=True)
    runners = {}
    for model, core, T, mode in cases:
        key = (model, core, T)
        if key not in runners:
            runners[key] = make_case(model, core, T, args.batch)
        start = time.perf_counter()
        runners[key](mode)  # warm-up
        print(f"# warm-up {model} {core} T={T} {mode}: {time.perf_counter() - start:.2f} s",
              flush=True)
    times = {case: [] for case in cases}
    for r in range(args.repeats):
        for case in cases:
            model, core, T, mode = case
            start = time.perf_counter()
            runners[(model, core, T)](mode)
            times[case].append(time.perf_counter() - start)
        print(f"# round {r + 1}/{args.repeats} done", flush=True)
    del runners

    rows = []
    for case in cases:
        model, core, T, mode = case
        mem = float("nan") if args.no_memory else measure_memory(model, core, T, args.batch,
                                                                   mode)
        rows.append(dict(model=model, core=core, T=T, B=args.batch, mode=mode,
                         median_s=statistics.median(times[case]), peak_mib=mem))
    print("| model | core | T | mode | median s | peak RSS growth MiB |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['core']} | {row['T']} | {row['mode']} | "
              f"{row['median_s']:.3f} | {row['peak_mib']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
