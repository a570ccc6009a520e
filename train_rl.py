#!/usr/bin/env python
"""Train an SRWM agent (or a baseline core) on one or many ProcGen games at once.

    python train_rl.py --games all                      # PPO, SRWM core, all 16 games
    python train_rl.py --preset paper-multitask         # the paper's 6-game V-trace run
    python train_rl.py --resume runs/<run>              # continue from the latest checkpoint
    python train_rl.py --core srwm,lstm --seeds 0,1,2 --run-dir runs/cmp   # a group of runs

Wiring only: the options are the fields of agents.config.TrainConfig (agents/cli.py builds
the command line from them); then agents.trainer.train. A comma list in --core or --seeds
(or --resume of a group dir) is a group of runs: agents.groups runs one train_rl.py process
per (core, seed). Errors a user can cause print ONE
line on stderr and exit 2; Ctrl-C / SIGTERM save a checkpoint and exit 130 / 143. Under
torchrun (`torchrun --nproc-per-node N train_rl.py ...`) the same command trains one run over
N processes (agents.distributed).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def run(argv: list[str] | None) -> int:
    from agents.cli import parse_train_args
    from agents.errors import EXIT_SIGNAL
    from agents.groups import is_group_command

    argv = sys.argv[1:] if argv is None else list(argv)
    if is_group_command(argv):
        from agents.distributed import world_from_env
        from agents.errors import UsageError
        from agents.groups import run_group_command

        if world_from_env().distributed:
            raise UsageError("a group of runs (a list in --core / --seeds, or --resume of a "
                             "group dir) cannot run under torchrun; start one torchrun per run")

        return run_group_command(argv)
    request = parse_train_args(argv)
    if request.threads is not None:
        import torch

        torch.set_num_threads(request.threads)
    cfg = request.config
    from agents.distributed import world_from_env

    if world_from_env().is_main:
        for line in request.warnings:
            print(f"train_rl.py: warning: {line}", file=sys.stderr)
    if request.resume_from is not None and request.start_step >= cfg.total_steps \
            and not request.dry_run:
        print(f"train_rl.py: nothing to do: {cfg.run_dir} is at step {request.start_step:,} >= "
              f"total_steps {cfg.total_steps:,}; pass a larger --total-steps", file=sys.stderr)
        return 0
    from agents.trainer import dry_run, train

    if request.dry_run:
        for key, value in dry_run(cfg, resume_from=request.resume_from).items():
            print(f"{key}: {value}")
        return 0
    main_rank = world_from_env().is_main
    status = None
    if request.progress_file is not None and main_rank:
        from agents.groups import ProgressFile

        status = ProgressFile(request.progress_file, cfg.total_steps, request.start_step)
    result = train(cfg, resume_from=request.resume_from, progress=request.progress,
                   on_update=status.update if status else None)
    if status is not None:
        status.write(result.global_step, "stopped" if result.interrupted else "done")
    if not main_rank:
        return EXIT_SIGNAL.get(result.interrupted or "", 0)
    print(f"train_rl.py: {'stopped by ' + result.interrupted if result.interrupted else 'done'}"
          f" at step {result.global_step:,} ({result.updates} updates, {result.sps:.0f} SPS); "
          f"checkpoint: {result.checkpoint}; TensorBoard: tensorboard --logdir "
          f"{Path(result.run_dir) / 'tb'}", file=sys.stderr)
    return EXIT_SIGNAL.get(result.interrupted or "", 0)


def main(argv: list[str] | None = None) -> int:
    from agents.distributed import guard_rank
    from agents.errors import run_main

    return run_main("train_rl.py", lambda: guard_rank("train_rl.py", lambda: run(argv)),
                    interrupted="aborted (the last completed checkpoint is intact)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
