#!/usr/bin/env python
"""Data-parallel scaling (agents/distributed.py): steps/s of 1 and 2 processes on this machine,
the cost of one gradient all-reduce, and the expected scaling on 8 GPUs worked out from them.

    python benchmarks/scaling.py                     # CPU: 1 process vs torchrun x 2 (gloo)
    python benchmarks/scaling.py --device cuda       # the same on one GPU (2 ranks share it)

1. Steps/s: the same run (ProcGen `--games`, `--num-envs` in TOTAL, PPO) trained by
   `train_rl.py` as one process with 1 and with 2 torch threads, and by
   `torchrun --nproc-per-node 2 train_rl.py` (1 thread per rank). The figure is train_rl.py's
   own SPS (env steps of all ranks / loop seconds, start-up excluded).
2. All-reduce: under torchrun x 2, the median seconds of `dist.all_reduce` of a flat float32
   tensor the size of the paper-size SRWM agent's gradient (the learner's one all-reduce per
   optimizer step), over --reps repetitions.
3. Paper estimate for 8 GPUs (weak scaling: each GPU keeps the single-GPU run's envs, so one
   update consumes 8x the env steps): time per update = collect + learn + steps x all-reduce,
   with collect and learn per update taken from the H100 figures in RESULTS.md ("Whole
   training loop", PPO and V-trace with the SRWM core) and the all-reduce time of a ring
   all-reduce, 2 (N - 1) / N x bytes / bus bandwidth + latency, for the NCCL bus bandwidths
   stated in BANDWIDTHS (assumptions, not measured here).

Results go to stdout (a markdown table) and to --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# H100 per-update figures of the paper-size SRWM agent (RESULTS.md, "Whole training loop",
# On an H100, 2026-11-24): PPO 96 envs x 256 steps, 3 epochs x 8 minibatches; V-trace 96 envs
# x 50 steps, 96 / 32 = 3 optimizer steps.
H100 = {"ppo": {"steps_per_update": 24_576, "collect_s": 1.62, "learn_s": 1.22,
                "optimizer_steps": 24},
        "vtrace": {"steps_per_update": 4_800, "collect_s": 0.29, "learn_s": 0.09,
                   "optimizer_steps": 3}}
# Assumed NCCL all-reduce bus bandwidth (GB/s) and per-call latency (s) for messages of a few
# MB; nccl-tests report more for large messages. Assumptions, stated in RESULTS.md.
BANDWIDTHS = {"NVLink/NVSwitch node": (100.0, 50e-6), "PCIe node": (10.0, 50e-6),
              "2 nodes, 100 Gb/s network": (10.0, 100e-6),
              "2 nodes, 25 Gb/s network": (2.5, 100e-6)}


def sps_of(stderr: str) -> float:
    m = re.search(r"done at step [\d,]+ \((\d+) updates, (\d+) SPS\)", stderr)
    if not m:
        raise RuntimeError("no final line in the run's output:\n" + stderr[-2000:])
    return float(m.group(2))


def train_cmd(args: argparse.Namespace, run_dir: Path, threads: int) -> list[str]:
    return ["train_rl.py", "--games", args.games, "--num-envs", str(args.num_envs),
            "--unroll", str(args.unroll), "--num-minibatches", str(args.num_minibatches),
            "--total-steps", str(args.num_envs * args.unroll * args.updates),
            "--core", args.core, *args.model_flags.split(), "--device", args.device,
            "--threads", str(threads), "--no-progress", "--checkpoint-every-steps", "0",
            "--run-dir", str(run_dir)]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def measure_sps(args: argparse.Namespace, tmp: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"1 process, 1 thread": [], "1 process, 2 threads": [],
                                   "torchrun x 2, 1 thread each": []}
    for rnd in range(args.rounds):
        for name in out:
            run_dir = tmp / f"{rnd}_{len(out[name])}_{name.replace(' ', '_').replace(',', '')}"
            if name.startswith("torchrun"):
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       "--nproc-per-node=2", *train_cmd(args, run_dir, 1)]
            else:
                cmd = [sys.executable, *train_cmd(args, run_dir, 2 if "2 threads" in name
                                                  else 1)]
            proc = subprocess.run(cmd, cwd=ROOT, env=clean_env(OMP_NUM_THREADS="1"),
                                  capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
            out[name].append(sps_of(proc.stderr))
            print(f"round {rnd}: {name}: {out[name][-1]:.0f} SPS", file=sys.stderr)
    return out


def allreduce_worker(numel: int, reps: int, out_file: str) -> None:
    """Run under torchrun: time all_reduce of `numel` float32 values."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    x = torch.randn(numel)
    for _ in range(3):
        dist.all_reduce(x)
    times = []
    for _ in range(reps):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(x)
        times.append(time.perf_counter() - t0)
    if dist.get_rank() == 0:
        Path(out_file).write_text(json.dumps({"median_s": statistics.median(times),
                                              "times_s": times}))
    dist.destroy_process_group()


def gradient_numel(core: str) -> int:
    from policies import ModelConfig, build_actor_critic

    return sum(p.numel() for p in build_actor_critic(ModelConfig(core=core), 15).parameters())


def measure_allreduce(numel: int, reps: int, tmp: Path) -> dict:
    out = tmp / "allreduce.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           __file__, "--allreduce-worker", str(numel), str(reps), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=clean_env(OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError("all-reduce timing failed:\n" + proc.stderr[-3000:])
    return json.loads(out.read_text())


def paper_estimate(numel: int, measured_s: float, gpus: int = 8) -> list[dict]:
    """Rows per (algo, link); the last link of each algo charges every all-reduce the time
    measured here (gloo, 2 local CPU processes): a pessimistic bound."""
    rows = []
    nbytes = 4 * numel
    links = {**BANDWIDTHS, "measured gloo time (this CPU)": (None, measured_s)}
    for algo, f in H100.items():
        base = f["collect_s"] + f["learn_s"]
        for link, (gbps, latency) in links.items():
            t_ar = latency if gbps is None else (
                latency + 2 * (gpus - 1) / gpus * nbytes / (gbps * 1e9))
            comm = f["optimizer_steps"] * t_ar
            t = base + comm
            rows.append({"algo": algo, "link": link, "allreduce_ms": 1e3 * t_ar,
                         "comm_s_per_update": comm, "update_s_1gpu": base,
                         "sps_1gpu": f["steps_per_update"] / base,
                         "sps_8gpu": gpus * f["steps_per_update"] / t,
                         "efficiency": base / t})
    return rows


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--allreduce-worker":
        allreduce_worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--games", default="bigfish,starpilot")
    p.add_argument("--num-envs", type=int, default=16, help="total over the ranks")
    p.add_argument("--unroll", type=int, default=64)
    p.add_argument("--num-minibatches", type=int, default=2)
    p.add_argument("--updates", type=int, default=6)
    p.add_argument("--core", default="lstm")
    p.add_argument("--model-flags", default="--cnn-channels 4,8,8 --cnn-out 32 --hidden-size 32 "
                   "--lstm-size 32", help="model options for the steps/s runs (a small agent)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--out", default=None, help="JSON file for the raw figures")
    p.add_argument("--estimate-from", default=None, metavar="JSON",
                   help="measure nothing: redo the tables from a JSON written by --out")
    args = p.parse_args()
    if args.estimate_from:
        result = json.loads(Path(args.estimate_from).read_text())
        numel, allreduce, sps = (result["gradient_numel"], result["allreduce_gloo_2proc"],
                                 result["sps"])
        args.rounds, args.reps = result["args"]["rounds"], result["args"]["reps"]
    else:
        with tempfile.TemporaryDirectory(prefix="scaling_") as tmp_name:
            tmp = Path(tmp_name)
            numel = gradient_numel("srwm")
            allreduce = measure_allreduce(numel, args.reps, tmp)
            sps = measure_sps(args, tmp)
        result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                             f"{platform.processor()}",
                  "args": vars(args), "sps": sps, "gradient_numel": numel,
                  "allreduce_gloo_2proc": allreduce}
    estimate = paper_estimate(numel, float(allreduce["median_s"]))
    result["estimate_8gpu"] = estimate
    print(f"| run | env steps/s (median of {args.rounds}) | rounds |\n|---|---|---|")
    for name, v in sps.items():
        print(f"| {name} | {statistics.median(v):.0f} | {', '.join(f'{x:.0f}' for x in v)} |")
    print(f"\ngradient: {numel:,} float32 = {4 * numel / 1e6:.2f} MB; gloo all-reduce over 2 "
          f"local processes: {1e3 * allreduce['median_s']:.2f} ms (median of {args.reps})\n")
    print("| algo | link (assumed bus bandwidth) | all-reduce ms | comm s / update | "
          "update s (1 GPU) | SPS 1 GPU | SPS 8 GPUs | efficiency |")
    print("|---|---|---|---|---|---|---|---|")
    for r in estimate:
        gbps = BANDWIDTHS.get(r["link"], (None,))[0]
        link = r["link"] + (f" ({gbps:g} GB/s)" if gbps else "")
        print(f"| {r['algo']} | {link} | {r['allreduce_ms']:.2f} | "
              f"{r['comm_s_per_update']:.3f} | {r['update_s_1gpu']:.2f} | {r['sps_1gpu']:,.0f} | "
              f"{r['sps_8gpu']:,.0f} | {100 * r['efficiency']:.0f}% |")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
