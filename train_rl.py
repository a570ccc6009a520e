#!/usr/bin/env python
"""Train an SRWM agent (or a baseline core) on one or many ProcGen games at once.

    python train_rl.py --games all                      # PPO, SRWM core, all 16 games
    python train_rl.py --preset paper-multitask         # the paper's 6-game V-trace run
    python train_rl.py --resume runs/<run>              # continue from the latest checkpoint

Wiring only: parse the options into a TrainConfig (agents.config), then agents.trainer.train.
Errors a user can cause print ONE line on stderr and exit 2; Ctrl-C / SIGTERM save a
checkpoint and exit 130 / 143.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

EXIT_USAGE = 2
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}

# Options that may be given together with --resume (everything else comes from the saved
# config of the run and may not change).
RESUME_OVERRIDABLE = ("total_steps", "device", "checkpoint_every_steps",
                      "checkpoint_every_minutes", "keep_checkpoints", "log_every")


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (exit 2)."""

    def error(self, message: str) -> NoReturn:
        from agents.errors import one_line

        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} "
                              f"(see --help)\n")


def parse_steps(text: str) -> int:
    """'25M', '1.5k', '3e8', '300_000_000' -> int."""
    m = re.fullmatch(r"\s*([0-9_]*\.?[0-9_]+(?:[eE][+-]?\d+)?)\s*([kKmMgG]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid step count {text!r} (e.g. 25M, 1e6, 50000)")
    value = float(m.group(1).replace("_", "")) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[
        m.group(2).lower()]
    if value != int(value):
        raise argparse.ArgumentTypeError(f"step count {text!r} is not a whole number")
    return int(value)


def parse_channels(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(c) for c in text.split(",") if c.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid channel list {text!r} (e.g. 16,32,32)") from None
    if not out:
        raise argparse.ArgumentTypeError(f"invalid channel list {text!r} (e.g. 16,32,32)")
    return out


def build_parser() -> argparse.ArgumentParser:
    """Every option with its help; defaults are None so that only flags given are applied."""
    from agents.config import ALGOS, DISTRIBUTION_MODES, PRESETS, STATE_RESETS, TrainConfig
    from policies import CORES
    from policies.config import SRWM_KERNELS, ModelConfig

    d, m = TrainConfig(), ModelConfig()
    p = OneLineParser(
        prog="train_rl.py",
        description="Train a self-referential weight matrix (SRWM) agent or a baseline core on "
                    "ProcGen games (many at once) with recurrent PPO or IMPALA-style V-trace.",
        epilog="Run dir layout: config.json, checkpoints/ckpt_<step>.pt, tb/ (TensorBoard). "
               "Errors exit 2 with one line; Ctrl-C / SIGTERM save a checkpoint and exit "
               "130 / 143. Presets: " + "; ".join(
                   f"{k} = {_preset_text(v)}" for k, v in PRESETS.items()),
    )
    g = p.add_argument_group("what to train")
    g.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="start from a named paper experiment; flags given with it override it")
    g.add_argument("--games", default=None,
                   help=f"a game, a comma list, all, paper6, memory4, or a synthetic task "
                        f"(cue-recall, switching-bandit) [default: {','.join(d.games)}]")
    g.add_argument("--core", choices=sorted(CORES), default=None,
                   help=f"memory core of the agent [default: {m.core}]")
    g.add_argument("--algo", choices=list(ALGOS), default=None,
                   help=f"learner: recurrent PPO or IMPALA-style V-trace [default: {d.algo}]")
    g.add_argument("--state-reset", choices=list(STATE_RESETS), default=None,
                   help="core state lifetime: never = carry across episodes, episode = reset at "
                        "episode starts, span = also reset every --unroll steps "
                        f"[default: {d.state_reset}]")
    g.add_argument("--total-steps", type=parse_steps, default=None,
                   help=f"env steps to train (25M, 1e6, ...); with --resume: the new total "
                        f"[default: {d.total_steps:,}]")
    g.add_argument("--num-envs", type=int, default=None,
                   help="parallel envs, a multiple of the number of games [default: PPO 64, "
                        "V-trace 32, rounded up to a multiple of the number of games and of "
                        "the minibatch / batch split]")
    g.add_argument("--unroll", type=int, default=None,
                   help="steps per env per segment = backprop span [default: PPO 256, V-trace 50]")
    g.add_argument("--seed", type=int, default=None, help=f"random seed [default: {d.seed}]")
    g.add_argument("--device", default=None,
                   help=f"auto (CUDA when present) | cpu | cuda | cuda:N [default: {d.device}]")
    g.add_argument("--run-dir", default=None,
                   help="output dir, must be new or empty [default: "
                        "runs/<timestamp>_<games>_<core>_<algo>]")
    g.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue RUN_DIR from its latest checkpoint with its saved config; only "
                        + ", ".join("--" + k.replace("_", "-") for k in RESUME_OVERRIDABLE)
                        + " may be given with it")
    g = p.add_argument_group("levels")
    g.add_argument("--distribution-mode", choices=list(DISTRIBUTION_MODES), default=None,
                   help=f"ProcGen distribution mode [default: {d.distribution_mode}]")
    g.add_argument("--num-levels", type=int, default=None,
                   help=f"training levels, 0 = unbounded [default: {d.num_levels}]")
    g.add_argument("--start-level", type=int, default=None,
                   help=f"first training level seed [default: {d.start_level}]")
    g = p.add_argument_group("learner")
    g.add_argument("--lr", type=float, default=None,
                   help=f"initial learning rate of the chosen learner [default: PPO "
                        f"{d.ppo.lr}, V-trace {d.vtrace.lr}]")
    g.add_argument("--num-minibatches", type=int, default=None,
                   help=f"PPO minibatches per epoch (split by env; must divide --num-envs) "
                        f"[default: {d.ppo.num_minibatches}]")
    g.add_argument("--batch-size", type=int, default=None,
                   help=f"V-trace sequences per optimizer step (must divide --num-envs, "
                        f"or be >= it: then the whole segment is one batch) "
                        f"[default: {d.vtrace.batch_size}]")
    g.add_argument("--actor-lag", type=int, choices=(0, 1), default=None,
                   help="V-trace: act with parameters 0 or 1 update old "
                        f"[default: {d.vtrace.actor_lag}]")
    g.add_argument("--vtrace-optimizer", choices=("rmsprop", "adam"), default=None,
                   help="V-trace optimizer: rmsprop (the paper) or adam [default: "
                        f"{d.vtrace.optimizer}]")
    g.add_argument("--vtrace-epochs", type=int, default=None, metavar="K",
                   help="V-trace passes over each rollout (later passes are off-policy, "
                        f"corrected by V-trace) [default: {d.vtrace.epochs}]")
    g = p.add_argument_group("model")
    g.add_argument("--hidden-size", type=int, default=None,
                   help=f"width of the memory stack = num_heads * head_size "
                        f"[default: {m.hidden_size}]")
    g.add_argument("--num-layers", type=int, default=None,
                   help=f"[memory, feed-forward] layer pairs [default: {m.num_layers}]")
    g.add_argument("--num-heads", type=int, default=None,
                   help=f"heads of srwm / deltanet / fake-sr [default: {m.num_heads}]")
    g.add_argument("--head-size", type=int, default=None,
                   help=f"size d of one head [default: {m.head_size}]")
    g.add_argument("--ff-size", type=int, default=None,
                   help=f"inner width of the feed-forward sub-layers [default: {m.ff_size}]")
    g.add_argument("--lstm-size", type=int, default=None,
                   help=f"units of the lstm core [default: {m.lstm_size}]")
    g.add_argument("--cnn-channels", type=parse_channels, default=None,
                   help=f"IMPALA CNN stage channels [default: "
                        f"{','.join(map(str, m.cnn_channels))}]")
    g.add_argument("--cnn-out", type=int, default=None,
                   help=f"CNN feature size [default: {m.cnn_out}]")
    g.add_argument("--srwm-kernel", choices=list(SRWM_KERNELS), default=None,
                   help=f"SRWM op: auto = fused on CUDA, naive elsewhere [default: "
                        f"{m.srwm_kernel}]")
    g.add_argument("--detach-every-step", action="store_true", default=None,
                   help="detach the SRWM state after every step (the published code; no "
                        "gradient through the self-modification) [default: off]")
    g.add_argument("--srwm-pre-ln", action="store_true", default=None,
                   help="LayerNorm before the SRWM heads (departs from SPEC; see "
                        "policies/srwm/README.md) [default: off]")
    g.add_argument("--srwm-qk-init-scale", type=float, default=None, metavar="S",
                   help=f"init std of W0's q/k rows times S (SPEC: 1) [default: "
                        f"{m.srwm_qk_init_scale}]")
    g.add_argument("--srwm-input-scale", type=float, default=None, metavar="S",
                   help=f"factor before the SRWM input softmax (SPEC: 1) [default: "
                        f"{m.srwm_input_scale}]")
    g.add_argument("--srwm-beta-init", type=float, default=None, metavar="B",
                   help=f"init mean of W0's learning-rate rows (SPEC: 0) [default: "
                        f"{m.srwm_beta_init}]")
    g = p.add_argument_group("checkpoints and logging")
    g.add_argument("--checkpoint-every-steps", type=parse_steps, default=None,
                   help=f"checkpoint every N env steps, 0 = off "
                        f"[default: {d.checkpoint_every_steps:,}]")
    g.add_argument("--checkpoint-every-minutes", type=float, default=None,
                   help=f"also checkpoint every N minutes, 0 = off "
                        f"[default: {d.checkpoint_every_minutes}]")
    g.add_argument("--keep-checkpoints", type=int, default=None,
                   help=f"keep the newest k checkpoints [default: {d.keep_checkpoints}]")
    g.add_argument("--log-every", type=int, default=None,
                   help=f"TensorBoard scalars every N updates [default: {d.log_every}]")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bar / lines on stderr")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads for this process (not saved in the config; allowed "
                        "with --resume) [default: torch's choice; on a small shared CPU 1 is "
                        "often fastest]")
    g.add_argument("--dry-run", action="store_true",
                   help="resolve the config, build env, model and learner, print a summary and "
                        "exit without writing anything")
    return p


def _preset_text(v: dict[str, Any]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v[k]:,}" if isinstance(v[k], int) else
                     f"{k.split('.')[-1]}={v[k]}" for k in v
                     if k not in ("start_level",))


# argparse dest -> TrainConfig key (dotted for nested configs)
_CONFIG_KEYS = {
    "games": "games", "core": "model.core", "algo": "algo", "state_reset": "state_reset",
    "total_steps": "total_steps", "num_envs": "num_envs", "unroll": "unroll", "seed": "seed",
    "device": "device", "run_dir": "run_dir", "distribution_mode": "distribution_mode",
    "num_levels": "num_levels", "start_level": "start_level",
    "num_minibatches": "ppo.num_minibatches", "batch_size": "vtrace.batch_size",
    "actor_lag": "vtrace.actor_lag", "vtrace_optimizer": "vtrace.optimizer",
    "vtrace_epochs": "vtrace.epochs",
    "hidden_size": "model.hidden_size", "num_layers": "model.num_layers",
    "num_heads": "model.num_heads", "head_size": "model.head_size", "ff_size": "model.ff_size",
    "lstm_size": "model.lstm_size", "cnn_channels": "model.cnn_channels",
    "cnn_out": "model.cnn_out", "srwm_kernel": "model.srwm_kernel",
    "detach_every_step": "model.srwm_detach_every_step",
    "srwm_pre_ln": "model.srwm_pre_ln", "srwm_qk_init_scale": "model.srwm_qk_init_scale",
    "srwm_input_scale": "model.srwm_input_scale", "srwm_beta_init": "model.srwm_beta_init",
    "checkpoint_every_steps": "checkpoint_every_steps",
    "checkpoint_every_minutes": "checkpoint_every_minutes",
    "keep_checkpoints": "keep_checkpoints", "log_every": "log_every",
}


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options the user actually gave (not None), as {dest: value}."""
    return {k: v for k, v in vars(args).items()
            if v is not None and k in (*_CONFIG_KEYS, "lr")}


def config_from_args(args: argparse.Namespace) -> Any:
    """A TrainConfig (not yet resolved) from preset + the flags given."""
    from agents.config import ConfigError, TrainConfig, set_learning_rate
    from policies.config import ModelConfig

    given = given_options(args)
    overrides = {_CONFIG_KEYS[k]: v for k, v in given.items() if k in _CONFIG_KEYS}
    _fill_head_sizes(overrides, ModelConfig())
    cfg = (TrainConfig.from_preset(args.preset, **overrides) if args.preset
           else TrainConfig())
    if not args.preset:
        cfg.apply_overrides(overrides)
    if "lr" in given:
        if given["lr"] <= 0:
            raise ConfigError(f"--lr must be positive, got {given['lr']}")
        set_learning_rate(cfg, given["lr"])
    if cfg.run_dir is None:
        cfg.run_dir = default_run_dir(args.games or _preset_games(args.preset) or "all",
                                      cfg.model.core, cfg.algo)
    return cfg


def _fill_head_sizes(overrides: dict[str, Any], m: Any) -> None:
    """Keep hidden_size == num_heads * head_size when only some of them are given."""
    h, n, d = (overrides.get(f"model.{k}") for k in ("hidden_size", "num_heads", "head_size"))
    if h is None and (n is not None or d is not None):
        overrides["model.hidden_size"] = (n or m.num_heads) * (d or m.head_size)
    elif h is not None and d is None:
        heads = n or m.num_heads
        if heads > 0 and h % heads == 0:
            overrides["model.head_size"] = h // heads


def _preset_games(preset: str | None) -> str | None:
    from agents.config import PRESETS

    return PRESETS[preset].get("games") if preset else None


def default_run_dir(games: str, core: str, algo: str) -> str:
    """runs/<YYYYmmdd-HHMMSS>_<games>_<core>_<algo>"""
    parts = [g for g in games.split(",") if g]
    label = "-".join(parts) if len("-".join(parts)) <= 40 else f"{parts[0]}+{len(parts) - 1}"
    label = re.sub(r"[^A-Za-z0-9_.+-]", "_", label)
    return str(Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}_{label}_{core}_{algo}")


def resume_config(args: argparse.Namespace) -> tuple[Any, Path, int]:
    """The saved config of --resume RUN_DIR with the allowed overrides, the checkpoint and its
    global step."""
    from agents.checkpoint import config_from_checkpoint, find_latest_checkpoint, load_checkpoint
    from agents.config import ConfigError

    path = find_latest_checkpoint(args.resume)
    given = given_options(args)
    if args.preset:
        given["preset"] = args.preset
    not_allowed = [k for k in given if k not in RESUME_OVERRIDABLE]
    if "run_dir" in not_allowed and Path(args.run_dir).resolve() == Path(args.resume).resolve():
        not_allowed.remove("run_dir")
    if not_allowed:
        flags = ", ".join("--" + k.replace("_", "-") for k in not_allowed)
        allowed = ", ".join("--" + k.replace("_", "-") for k in RESUME_OVERRIDABLE)
        raise ConfigError(f"{flags} cannot be changed on --resume (the run's saved config is "
                          f"used); allowed with --resume: {allowed}")
    payload = load_checkpoint(path)
    cfg = config_from_checkpoint(payload)
    cfg.apply_overrides({k: given[k] for k in RESUME_OVERRIDABLE if k in given})
    cfg.run_dir = str(args.resume)
    return cfg, path, int(payload["global_step"])


def _fail(message: str) -> int:
    from agents.errors import one_line

    print(f"train_rl.py: error: {one_line(message)}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from agents.checkpoint import CheckpointError
    from agents.config import ConfigError
    from agents.trainer import dry_run, train

    if args.threads is not None:
        if args.threads < 1:
            return _fail(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    try:
        if args.resume:
            cfg, resume_from, step = resume_config(args)
            if step >= cfg.total_steps and not args.dry_run:
                print(f"train_rl.py: nothing to do: {args.resume} is at step {step:,} >= "
                      f"total_steps {cfg.total_steps:,}; pass a larger --total-steps",
                      file=sys.stderr)
                return 0
        else:
            cfg, resume_from = config_from_args(args), None
        if args.dry_run:
            summary = dry_run(cfg, resume_from=resume_from)
            for key, value in summary.items():
                print(f"{key}: {value}")
            return 0
        result = train(cfg, resume_from=resume_from, progress=not args.no_progress)
    except (ConfigError, CheckpointError) as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        print("train_rl.py: aborted (the last completed checkpoint is intact)", file=sys.stderr)
        return EXIT_SIGNAL["SIGINT"]
    ckpt = result.checkpoint
    print(f"train_rl.py: {'stopped by ' + result.interrupted if result.interrupted else 'done'}"
          f" at step {result.global_step:,} ({result.updates} updates, {result.sps:.0f} SPS); "
          f"checkpoint: {ckpt}; TensorBoard: tensorboard --logdir {Path(result.run_dir) / 'tb'}",
          file=sys.stderr)
    return EXIT_SIGNAL.get(result.interrupted or "", 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
