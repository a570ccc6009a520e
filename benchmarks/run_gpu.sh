#!/usr/bin/env bash
# Every GPU check and figure of this repo in one go, for a CUDA machine lent for a short time.
#
#   bash benchmarks/run_gpu.sh OUTDIR [PART ...]
#       PART: tests kernel compile train pipeline (default: tests pipeline, about 6.5 minutes at
#       most: each part has its own time limit; the pipeline table, the short one, comes last)
#
# If ./.whl holds wheels (procgen-mirror, gym, gym3, SB3, ... for a machine without a package
# registry), they are installed into /tmp/site first. Each part runs under its own time limit
# so that one slow part cannot take the others' time; logs and JSON land in OUTDIR.
set -u
out=${1:?usage: run_gpu.sh OUTDIR [PART ...]}
shift
parts=${*:-tests pipeline}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $py -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  nproc; } 2>&1 | tee "$out/machine.txt"

for part in $parts; do
    case $part in
    tests)  # the CUDA cases of the fused kernel (skipped on CPU-only machines), the pipeline's
        timeout 120 $py -m pytest tests/policies/test_fused_recurrent.py \
            tests/agents/test_pipeline.py -q -p no:cacheprovider -n 0 -rs 2>&1 \
            | tee "$out/tests.log" | tail -n 15 ;;
    kernel)  # op timings (naive, fused, floor) and one agent training step per kernel
        timeout 180 $py benchmarks/srwm_kernel.py --skip-compile --json "$out/kernel.json" \
            2>&1 | tee "$out/kernel.log" ;;
    compile)  # the naive op under torch.compile (compiling the unrolled loop is slow)
        timeout 300 $py benchmarks/srwm_kernel.py --json "$out/kernel_compile.json" \
            2>&1 | tee "$out/kernel_compile.log" ;;
    train)  # whole training loop, srwm vs ff, PPO and V-trace, paper6 on ProcGen
        timeout 420 $py benchmarks/train_throughput.py --device cuda --num-envs 96 \
            --unroll-ppo 256 --unroll-vtrace 50 --num-minibatches 8 --updates 3 --warmup 1 \
            --rounds 2 --json "$out/train.json" 2>&1 | tee "$out/train.log" | tail -n 20 ;;
    pipeline)  # issue 11: sync vs async, ff vs srwm, PPO vs V-trace, paper-size agent, 96 envs,
        # with the env-only and learner-only limits and the breakdown of a training second
        timeout 270 $py benchmarks/train_throughput.py --device cuda --size paper \
            --num-envs 96 --unroll-ppo 256 --unroll-vtrace 50 --num-minibatches 8 \
            --updates 2 --warmup 1 --limit-seconds 5 --json "$out/pipeline.json" 2>&1 \
            | tee "$out/pipeline.log" | tail -n 22 ;;
    *) echo "unknown part $part (valid: tests kernel compile train pipeline)"; exit 2 ;;
    esac
done
