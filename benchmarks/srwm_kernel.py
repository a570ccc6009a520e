"""Speed of the SRWM op: naive, naive under torch.compile, and the fused Triton kernel.

    python benchmarks/srwm_kernel.py                     # CUDA: the full table + agent step
    python benchmarks/srwm_kernel.py --json out.json     # also write the figures as JSON
    python benchmarks/srwm_kernel.py --cpu-naive         # CPU: naive op only, small sizes

For every (B, T) at H = 8, d = 16, fp32 it reports the median forward and forward+backward
time (CUDA events, after warm-up) of each implementation, beside the floor: the larger of
(bytes that must move / measured copy bandwidth) and (flops / measured fp32 matmul rate),
both measured in this run. Inputs are random, never zero: x ~ N(0, 1.5^2), w0 ~ N(0, 1/d),
state ~ N(0, 0.1^2), episode starts with probability 1/100, random output cotangents.
Then one training step of the whole agent (policies.build_actor_critic with the paper's
ModelConfig) with srwm_kernel="naive" and "fused", if the policies package imports.

Floor model (per step t, batch element, head; R = 3d + 4; 4 bytes per float):
    bytes, forward:          x, y (d each) per step + state in, final state out (R*d each)
    bytes, fwd+bwd:          forward + dy, dx per step + d(final state) in, d(state) out
    flops, forward:          6 R d   (W a, W (q - k), the rank-1 update)
    flops, backward:         14 R d  (G k, G^T(B u), W^T du, W^T dz, two outer products,
                                      the W0 and state accumulations)
The byte floor ignores w0 (tiny) and the reset mask; the flop floor counts no softmax or
recomputation, so both are generous to the kernels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

H, D = 8, 16
R = 3 * D + 4
BATCHES = (32, 256, 1024)
LENGTHS = (50, 256)


def cuda_time(fn, warmup: int, reps: int) -> float:
    """Median milliseconds of fn() over reps runs, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def cpu_time(fn, warmup: int, reps: int) -> float:
    """Median milliseconds of fn() over reps runs (wall clock, CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure_bandwidth(device) -> float:
    """Bytes per second of a 1 GiB device-to-device copy (read + write counted)."""
    n = (1 << 30) // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    ms = cuda_time(lambda: dst.copy_(src), warmup=3, reps=10)
    return 2 * n * 4 / (ms * 1e-3)


def measure_flop_rate(device) -> float:
    """fp32 flops per second of an 8192^2 matmul, TF32 off (the kernels use fp32 FMAs)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        n = 8192
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        ms = cuda_time(lambda: a @ b, warmup=2, reps=5)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return 2 * n**3 / (ms * 1e-3)


def floor_ms(T: int, B: int, backward: bool, bandwidth: float, rate: float) -> float:
    """Lower bound in milliseconds, from the floor model in the module docstring."""
    steps = T * B * H
    nbytes = 4 * (2 * steps * D + 2 * B * H * R * D)
    flops = 6 * R * D * steps
    if backward:
        nbytes *= 2
        flops += 14 * R * D * steps
    return 1e3 * max(nbytes / bandwidth, flops / rate)


def make_inputs(T: int, B: int, device, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = (1.5 * torch.randn(T, B, H, D, generator=g)).to(device)
    w0 = (torch.randn(H, R, D, generator=g) / D**0.5).to(device)
    s0 = (0.1 * torch.randn(B, H, R, D, generator=g)).to(device)
    es = (torch.rand(T, B, generator=g) < 0.01).to(device)
    dy = torch.randn(T, B, H, D, generator=g).to(device)
    ds = torch.randn(B, H, R, D, generator=g).to(device)
    return x, w0, s0, es, dy, ds


def op_timings(op, T, B, device, timer, warmup, reps):
    """(forward ms, forward+backward ms) of op on random inputs."""
    x, w0, s0, es, dy, ds = make_inputs(T, B, device)

    def fwd():
        with torch.no_grad():
            op(x, w0, s0, es)

    leaves = [t.clone().requires_grad_() for t in (x, w0, s0)]

    def fwd_bwd():
        y, final = op(*leaves, es)
        torch.autograd.backward((y, final), (dy, ds))
        for t in leaves:
            t.grad = None

    return timer(fwd, warmup, reps), timer(fwd_bwd, warmup, reps)


def implementations(device, skip_compile: bool, fused_too: bool):
    from policies.srwm.ops import srwm_naive

    impls = {"naive": srwm_naive}
    if not skip_compile:
        impls["naive+compile"] = torch.compile(srwm_naive, dynamic=False)
    if fused_too:
        try:
            from policies.srwm.ops.fused_recurrent import srwm_fused_recurrent
        except ImportError as err:
            print(f"fused kernel unavailable: {err}")
        else:
            impls["fused"] = srwm_fused_recurrent
    return impls


def bench_ops(args, device, timer, batches, lengths, bandwidth=None, rate=None):
    impls = implementations(device, args.skip_compile, fused_too=device.type == "cuda")
    rows = []
    for T in lengths:
        for B in batches:
            row = {"T": T, "B": B, "H": H, "d": D}
            for name, op in impls.items():
                try:
                    f, fb = op_timings(op, T, B, device, timer, args.warmup, args.reps)
                    row[name] = {"fwd_ms": f, "fwd_bwd_ms": fb}
                except Exception as err:  # noqa: BLE001 - report (e.g. compile) failures
                    row[name] = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            if bandwidth is not None:
                row["floor"] = {
                    "fwd_ms": floor_ms(T, B, False, bandwidth, rate),
                    "fwd_bwd_ms": floor_ms(T, B, True, bandwidth, rate),
                }
            rows.append(row)
            print(format_row(row), flush=True)
    return rows


def format_row(row) -> str:
    parts = [f"T={row['T']:4d} B={row['B']:5d}"]
    for name, val in row.items():
        if not isinstance(val, dict):
            continue
        if "error" in val:
            parts.append(f"{name}: FAILED ({val['error']})")
        else:
            parts.append(f"{name}: fwd {val['fwd_ms']:.3f} ms, fwd+bwd {val['fwd_bwd_ms']:.3f} ms")
    fused, naive, floor = (row.get(k, {}) for k in ("fused", "naive", "floor"))
    if "fwd_bwd_ms" in fused and "fwd_bwd_ms" in naive:
        parts.append(f"naive/fused fwd+bwd {naive['fwd_bwd_ms'] / fused['fwd_bwd_ms']:.1f}x")
    if "fwd_bwd_ms" in fused and "fwd_bwd_ms" in floor:
        parts.append(f"fused/floor fwd+bwd {fused['fwd_bwd_ms'] / floor['fwd_bwd_ms']:.1f}x")
    return " | ".join(parts)


def bench_agent(args, device, timer):
    """One training step (forward, backward, RMSprop step) of the whole agent, per kernel."""
    try:
        from policies import ModelConfig, build_actor_critic
    except Exception as err:  # noqa: BLE001 - the package may be incomplete
        print(f"agent step skipped: policies not importable ({type(err).__name__}: {err})")
        return {"error": str(err)}
    T, B = 50, 32
    g = torch.Generator(device="cpu").manual_seed(1)
    obs = torch.randint(0, 256, (T, B, 64, 64, 3), generator=g, dtype=torch.uint8).to(device)
    reward = torch.randn(T, B, generator=g).to(device)
    es = (torch.rand(T, B, generator=g) < 0.01).to(device)
    out = {"T": T, "B": B}
    for kernel in ("naive", "fused"):
        try:
            torch.manual_seed(0)
            policy = build_actor_critic(ModelConfig(core="srwm", srwm_kernel=kernel), 15).to(device)
            opt = torch.optim.RMSprop(policy.parameters(), lr=6e-4, alpha=0.99, eps=0.01)
            state = policy.initial_state(B, device=device)

            def step(policy=policy, opt=opt, state=state):
                logits, value, _ = policy(obs, reward, es, state)
                loss = logits.logsumexp(-1).mean() + value.square().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            out[kernel] = {"train_step_ms": timer(step, args.warmup, args.reps)}
        except Exception as err:  # noqa: BLE001
            out[kernel] = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
        print(f"agent train step T={T} B={B} srwm_kernel={kernel}: {out[kernel]}", flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-naive", action="store_true",
                        help="no CUDA: time the naive op only, at small sizes, on the CPU")
    parser.add_argument("--skip-compile", action="store_true",
                        help="leave out the torch.compile variant of the naive op")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        if not args.cpu_naive:
            print("srwm_kernel.py: no CUDA device; the fused kernel is timed on CUDA only. "
                  "Run on a GPU machine, or pass --cpu-naive to time the naive op on the CPU "
                  "at small sizes.", file=sys.stderr)
            return 2
        device = torch.device("cpu")
        print("CPU, naive op only (torch.compile variant included unless --skip-compile)")
        rows = bench_ops(args, device, cpu_time, batches=(4, 32), lengths=(16,))
        result = {"device": "cpu", "ops": rows}
    else:
        device = torch.device("cuda")
        name = torch.cuda.get_device_name(device)
        bandwidth = measure_bandwidth(device)
        rate = measure_flop_rate(device)
        print(f"{name}: copy bandwidth {bandwidth / 1e9:.0f} GB/s, "
              f"fp32 matmul {rate / 1e12:.1f} TFLOP/s (TF32 off)")
        rows = bench_ops(args, device, cuda_time, BATCHES, LENGTHS, bandwidth, rate)
        agent = bench_agent(args, device, cuda_time)
        result = {"device": name, "bandwidth_Bps": bandwidth, "fp32_flops": rate,
                  "torch": torch.__version__, "ops": rows, "agent_step": agent}
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
