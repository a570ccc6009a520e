#!/usr/bin/env bash
# srwm vs lstm vs deltanet vs ff on one GPU, trained at the same time on one ProcGen game, then
# evaluated on the three test splits and compared with run-level statistics; about 8 minutes.
#
#   bash benchmarks/gpu_compare.sh [--game starpilot] [--steps 1M] [--seeds 0] [--algo ppo]
#                                  [--train-limit 330] [--episodes 50] [--out runs/gpu_compare]
#
# Sizing (benchmarks/RESULTS.md, "Whole training loop", H100): the paper-size agent trains at
# about 8.6k env steps/s with PPO (12.6k with V-trace) when it has the GPU to itself. Four runs
# share the GPU and the CPU cores here (train_rl.py gives each --threads = cores / 4), so we
# budget about 4-5k steps/s per run: 1M steps per run is about 4 minutes, plus start-up (CUDA,
# the fused SRWM kernel's compilation). Training is stopped with SIGTERM after --train-limit
# seconds whatever happens (each run saves a checkpoint, the table then shows each run's steps),
# which leaves about 2 minutes for the evaluation: 50 episodes per split, one per env, 3 splits,
# 4 runs, greedy. With one seed per core the table says plainly that it has no run-level
# confidence intervals; --seeds 0,1,2 (and a longer limit) gives them.
#
# Writes into OUT: machine.txt, train.log, runs/ (the group: group.json, one run dir per core,
# logs/), eval.log and eval/ (group_table.md / .csv, group_results.json, group_scores_*.png,
# learning_curves_groups.png, runs/ with every run's own results).
# DEVICE (default cuda) and TRAIN_ARGS (extra train_rl.py options, e.g. a tiny model) exist for
# trying the script on a CPU; the figures come from the defaults on a GPU.
set -u
game=starpilot steps=1M seeds=0 algo=ppo limit=330 episodes=50 out=runs/gpu_compare
while [ $# -gt 0 ]; do
    case $1 in
    --game) game=$2 ;;
    --steps) steps=$2 ;;
    --seeds) seeds=$2 ;;
    --algo) algo=$2 ;;
    --train-limit) limit=$2 ;;
    --episodes) episodes=$2 ;;
    --out) out=$2 ;;
    *) echo "unknown option $1 (valid: --game --steps --seeds --algo --train-limit --episodes --out)"
       exit 2 ;;
    esac
    shift 2
done
if [ -e "$out/runs" ]; then
    echo "$out/runs exists: continue it with python train_rl.py --resume $out/runs, or pick --out"
    exit 2
fi
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then  # a machine without a package registry
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $py -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  echo "cpu cores: $(nproc)"; date -u; } 2>&1 | tee "$out/machine.txt"

device=${DEVICE:-cuda}
ngames=$($py -c "from envs import resolve_games; print(len(resolve_games('$game')))") || exit 2
start=$(date +%s)
# shellcheck disable=SC2086  # TRAIN_ARGS is a list of options
timeout -s TERM -k 90 "$limit" $py train_rl.py --games "$game" --core srwm,lstm,deltanet,ff \
    --seeds "$seeds" --algo "$algo" --total-steps "$steps" --device "$device" --max-parallel 4 \
    --checkpoint-every-minutes 1 --run-dir "$out/runs" ${TRAIN_ARGS:-} 2>&1 | tee "$out/train.log"
rc=${PIPESTATUS[0]}
case $rc in
0) ;;
124|143) echo "gpu_compare.sh: training stopped at the ${limit}s limit; evaluating the checkpoints \
the runs saved (their steps are in the table)" | tee -a "$out/train.log" ;;
*) echo "gpu_compare.sh: training exited with $rc (see $out/train.log and $out/runs/logs/);" \
        "evaluating what has a checkpoint" | tee -a "$out/train.log" ;;
esac
echo "gpu_compare.sh: training took $(( $(date +%s) - start ))s" | tee -a "$out/train.log"

# one env per episode: a split takes as long as its longest episode
$py eval_rl.py "$out/runs" --split test1,test2,test3 --episodes "$episodes" \
    --num-envs $(( episodes * ngames )) --device "$device" --out "$out/eval" 2>&1 \
    | tee "$out/eval.log"
rc=${PIPESTATUS[0]}
echo "gpu_compare.sh: done in $(( $(date +%s) - start ))s; table: $out/eval/group_table.md" \
    | tee -a "$out/eval.log"
exit "$rc"
