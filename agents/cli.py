"""Command lines generated from the config dataclasses (with tyro), and train_rl.py's options.

One source of truth: every option of train_rl.py is a field of TrainConfig (or of the
ModelConfig, PPOConfig and VTraceConfig inside it), with the field's type (Literal ->
choices) and its docstring as the help. Nothing is declared twice. Naming:

- TrainConfig's and ModelConfig's fields are flat: `--games`, `--total-steps`, `--core`,
  `--hidden-size`, `--srwm-pre-ln` / `--no-srwm-pre-ln`, ...
- PPOConfig's and VTraceConfig's fields carry their prefix: `--ppo.clip`, `--vtrace.rho-bar`.
- `FLAT_ALIASES`: the few nested fields that also have a flat name (`--num-minibatches`,
  `--batch-size`, `--detach-every-step`, ...). The only table of names.
- Value syntax: `StepCount` fields read 25M / 1e6 / 1.5k / 300_000_000 (`parse_steps`),
  tuples of ints read comma lists (16,32,32), task_kwargs read key=value pairs or JSON.

Options that are not config fields (`--lr`, `--resume`, `--threads`, `--dry-run`,
`--no-progress`) are the fields of `TrainOptions`. The parser returns the config fields as
plain values, not yet validated; `parse_train_args` applies only the options given (argv)
on top of a preset, the defaults or a resumed run's saved config, and TrainConfig validates.
Options given for the learner the run does not use come back as a warning
(`unused_learner_options`), which train_rl.py prints before it starts.

`parse(cls, argv, ...)` turns tyro's usage errors (boxes on stderr) into one-line
UsageErrors; `--help` prints tyro's help and exits 0.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import inspect
import io
import json
import math
import os
import re
import sys
import textwrap
import time
import typing
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import tyro
from tyro.constructors import (
    ConstructorRegistry,
    PrimitiveConstructorSpec,
    PrimitiveTypeInfo,
    StructConstructorSpec,
    StructFieldSpec,
    StructTypeInfo,
)

from policies.config import ModelConfig

from .config import PRESETS, StepCount, TrainConfig, set_learning_rate
from .errors import ConfigError, UsageError
from .ppo import PPOConfig
from .vtrace import VTraceConfig

T = TypeVar("T")

# dotted config field -> its extra flat flag
FLAT_ALIASES: dict[str, str] = {
    "model.srwm_detach_every_step": "--detach-every-step",
    "ppo.num_minibatches": "--num-minibatches",
    "vtrace.batch_size": "--batch-size",
    "vtrace.actor_lag": "--actor-lag",
    "vtrace.optimizer": "--vtrace-optimizer",
    "vtrace.epochs": "--vtrace-epochs",
}
# config class -> (dotted path of its fields, prefix of its flags)
_NESTING: dict[type, tuple[str, str]] = {
    TrainConfig: ("", ""), ModelConfig: ("model.", ""), PPOConfig: ("ppo.", "ppo."),
    VTraceConfig: ("vtrace.", "vtrace."),
}


# ---------------------------------------------------------------------- value syntax
def parse_steps(text: str) -> int:
    """'25M', '1.5k', '3e8', '300_000_000' -> int (ValueError otherwise)."""
    m = re.fullmatch(r"\s*([0-9_]*\.?[0-9_]+(?:[eE][+-]?\d+)?)\s*([kKmMgG]?)\s*", text)
    if not m:
        raise ValueError(f"invalid step count {text!r} (e.g. 25M, 1e6, 50000)")
    value = float(m.group(1).replace("_", "")) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[
        m.group(2).lower()]
    if value != int(value):
        raise ValueError(f"step count {text!r} is not a whole number")
    return int(value)


def parse_int_list(text: str) -> tuple[int, ...]:
    """'16,32,32' -> (16, 32, 32) (ValueError otherwise)."""
    try:
        out = tuple(int(c) for c in text.split(",") if c.strip())
    except ValueError:
        out = ()
    if not out:
        raise ValueError(f"invalid list {text!r} (e.g. 16,32,32)")
    return out


def parse_kwargs(items: Sequence[str]) -> dict[str, Any]:
    """['delay=8', 'num_cues=2'] or ['{"delay": 8}'] -> {"delay": 8, ...}; values are read as
    JSON where they parse (numbers, true/false), else kept as strings."""
    if len(items) == 1 and items[0].lstrip().startswith("{"):
        value = json.loads(items[0])
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, got {items[0]!r}")
        return value
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


_STEPS = PrimitiveConstructorSpec(
    nargs=1, metavar="STEPS", instance_from_str=lambda a: parse_steps(a[0]),
    is_instance=lambda x: isinstance(x, int), str_from_instance=lambda x: [f"{x:_}"])
_INT_LIST = PrimitiveConstructorSpec(
    nargs=1, metavar="INT,INT,...", instance_from_str=lambda a: parse_int_list(a[0]),
    is_instance=lambda x: isinstance(x, tuple),
    str_from_instance=lambda x: [",".join(map(str, x))])
_KWARGS = PrimitiveConstructorSpec(
    nargs="*", metavar="KEY=VALUE", instance_from_str=parse_kwargs,
    is_instance=lambda x: isinstance(x, dict),
    str_from_instance=lambda x: [f"{k}={json.dumps(v)}" for k, v in x.items()])


# ---------------------------------------------------------------------- config -> options
def field_docs(cls: type) -> dict[str, str]:
    """{field: its docstring on one line} from the string literal below each field."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body  # type: ignore
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


@functools.cache
def config_flags() -> dict[str, tuple[str, ...]]:
    """{dotted config field: every flag that sets it}, for every field of TrainConfig."""
    out: dict[str, tuple[str, ...]] = {}

    def walk(cls: type, default: Any) -> None:
        path, prefix = _NESTING[cls]
        for f in dataclasses.fields(cls):
            value = getattr(default, f.name)
            if type(value) in _NESTING:
                walk(type(value), value)
                continue
            name = f.name.replace("_", "-")
            flags = [f"--{prefix}{name}"]
            if isinstance(value, bool):
                flags.append(f"--{prefix}no-{name}")
            if path + f.name in FLAT_ALIASES:
                alias = FLAT_ALIASES[path + f.name]
                flags += [alias] + ([f"--no-{alias[2:]}"] if isinstance(value, bool) else [])
            out[path + f.name] = tuple(flags)

    walk(TrainConfig, TrainConfig())
    return out


def _config_rule(info: StructTypeInfo) -> StructConstructorSpec | None:
    """tyro rule for this project's dataclasses (configs and command lines): help from
    `field_docs`; for the config dataclasses also flat names, aliases, value syntax, and an
    instantiate that returns the plain values (validation happens in TrainConfig)."""
    cls = info.type
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)
            and cls.__module__.startswith(("agents.", "policies."))):
        return None
    config = cls in _NESTING
    path = _NESTING[cls][0] if config else ""
    hints = typing.get_type_hints(cls, include_extras=True)
    docs = field_docs(cls)
    specs = []
    for f in dataclasses.fields(cls):
        hint, default = hints[f.name], _default(info.default, cls, f)
        arg: dict[str, Any] = {}
        if cls is TrainConfig and f.name == "model":
            arg["name"] = ""  # ModelConfig's fields without a prefix
        if path + f.name in FLAT_ALIASES:
            arg["aliases"] = (FLAT_ALIASES[path + f.name],)
        if hint == StepCount:
            hint = Annotated[int, _STEPS]
        elif typing.get_origin(hint) is dict:
            hint = Annotated[hint, _KWARGS]
        if arg:
            hint = Annotated[hint, tyro.conf.arg(**arg)]
        specs.append(StructFieldSpec(name=f.name, type=hint, default=default,
                                     helptext=docs.get(f.name)))
    instantiate = (lambda **values: values) if config else cls
    return StructConstructorSpec(instantiate=instantiate, fields=tuple(specs))


def _default(parent: Any, cls: type, f: dataclasses.Field) -> Any:
    """A field's default: from the parent's default instance, else the field's own."""
    if isinstance(parent, cls):
        return getattr(parent, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return tyro.MISSING


def _registry() -> ConstructorRegistry:
    registry = ConstructorRegistry()
    registry.struct_rule(_config_rule)

    @registry.primitive_rule
    def _int_tuples(info: PrimitiveTypeInfo) -> PrimitiveConstructorSpec | None:
        ok = typing.get_origin(info.type) is tuple and typing.get_args(info.type) == (int, ...)
        return _INT_LIST if ok else None

    return registry


# ---------------------------------------------------------------------- parsing
@contextlib.contextmanager
def _wide_terminal() -> Iterator[None]:
    """Let tyro lay out error boxes on one line each (restores COLUMNS afterwards)."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "10000"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def _one_line_usage_error(text: str) -> str:
    """The message of tyro's error box, on one line, with its "Perhaps you meant" flags."""
    rows = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped[:1] in "╭╰":
            continue
        body = stripped.strip("│").strip()
        rows.append(None if body and set(body) <= {"─"} else body)
    blocks: list[list[str]] = [[]]
    for row in rows:
        if row is None:
            blocks.append([])
        elif row:
            blocks[-1].append(row)
    blocks = [b for b in blocks if b]
    if not blocks:
        return "invalid command line"
    message = " ".join(blocks[0])
    message = message[:1].lower() + message[1:]
    for block in blocks[1:]:
        if block[0].startswith("Perhaps you meant"):
            flags = re.findall(r"--[\w.-]+", " ".join(block[1:2]))
            if flags:
                message += f"; did you mean {flags[0]}?"
    return message


def parse(cls: type[T], argv: Sequence[str], *, prog: str, description: str,
          default: T | None = None) -> T:
    """tyro.cli(cls) on argv with this module's rules; a usage error becomes a one-line
    UsageError; --help prints the help (stdout) and raises SystemExit(0)."""
    kwargs: dict[str, Any] = dict(args=list(argv), prog=prog, description=description,
                                  registry=_registry())
    if default is not None:
        kwargs["default"] = default
    if any(a in ("-h", "--help") for a in argv):
        return tyro.cli(cls, **kwargs)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), _wide_terminal():
            out = tyro.cli(cls, **kwargs)
    except SystemExit as e:
        if e.code:
            raise UsageError(_one_line_usage_error(captured.getvalue()) + " (see --help)"
                             ) from None
        raise
    sys.stderr.write(captured.getvalue())
    return out


def argparse_parser(cls: type, *, prog: str, description: str) -> Any:
    """An argparse approximation of the command line (tyro.extras.get_parser), for tools that
    read argparse actions (tests check that every option has help)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tyro.extras.get_parser(cls, prog=prog, description=description,
                                      registry=_registry())


def given_options(argv: Sequence[str], flags: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """{name: the flag as typed} for the options in argv, `flags` = {name: its flags}."""
    owner = {flag: name for name, fs in flags.items() for flag in fs}
    out: dict[str, str] = {}
    for token in argv:
        if token.startswith("--"):
            flag = token.split("=", 1)[0]
            name = owner.get("--" + flag[2:].replace("_", "-"))
            if name is not None:
                out.setdefault(name, flag)
    return out


# ---------------------------------------------------------------------- train_rl.py
PROG = "train_rl.py"
RESUME_OVERRIDABLE = ("total_steps", "device", "checkpoint_every_steps",
                      "checkpoint_every_minutes", "keep_checkpoints", "log_every", "pipeline",
                      "env_groups", "procgen_threads", "threads",
                      "no_progress", "dry_run", "resume", "progress_file")
"""What may be given together with --resume; everything else comes from the run's saved
config and may not change."""


@dataclass
class TrainOptions:
    """train_rl.py's command line: the run's config, plus the options of this invocation."""

    config: Annotated[TrainConfig, tyro.conf.arg(name="")] = field(
        default_factory=TrainConfig)
    """The run's config (saved as config.json)."""
    lr: float | None = None
    """Initial learning rate of the chosen learner: sets ppo.lr or vtrace.lr by algo."""
    resume: Annotated[str | None, tyro.conf.arg(metavar="RUN_DIR")] = None
    """Continue RUN_DIR from its latest checkpoint with its saved config. Only these may be
    given with it: --total-steps (the new total), --device, --checkpoint-every-steps,
    --checkpoint-every-minutes, --keep-checkpoints, --log-every, --pipeline, --env-groups,
    --procgen-threads, --threads, --no-progress."""
    threads: int | None = None
    """Torch CPU threads for this process (not saved in the config; allowed with --resume;
    default: torch's choice)."""
    no_progress: tyro.conf.FlagCreatePairsOff[bool] = False
    """No progress bar / lines on stderr."""
    dry_run: tyro.conf.FlagCreatePairsOff[bool] = False
    """Resolve the config, build env, model and learner, print a summary and exit, writing
    nothing."""
    seeds: Annotated[str | None, tyro.conf.arg(metavar="SEED,SEED,...")] = None
    """Seeds of a group of runs. A comma list here or in --core (e.g. --core srwm,lstm,ff
    --seeds 0,1,2) trains one ordinary run per (core, seed) in RUN_DIR/<core>_s<seed>, as
    separate processes, with group.json in RUN_DIR; --resume RUN_DIR continues every unfinished
    run of the group. One value is the same as --seed."""
    max_parallel: int | None = None
    """Runs of a group trained at the same time (default: min(CPU cores / 2, free GPU memory /
    4 GiB), printed at the start)."""
    progress_file: Annotated[str | None, tyro.conf.arg(metavar="PATH")] = None
    """Also write this run's progress (pid, step, SPS) as JSON to PATH every few seconds (the
    runs of a group write GROUP/logs/<run>.progress.json for the group's progress line)."""


@dataclass
class TrainRequest:
    """What train_rl.py is asked to do."""

    config: TrainConfig
    """Not yet resolved (the trainer resolves it)."""
    resume_from: Path | None
    """The checkpoint to continue from."""
    start_step: int
    """The checkpoint's global step (0 for a fresh run)."""
    dry_run: bool
    progress: bool
    threads: int | None
    progress_file: Path | None = None
    """Where to write the run's progress JSON (agents.groups.ProgressFile), if anywhere."""
    warnings: tuple[str, ...] = ()
    """Lines train_rl.py prints before it starts (options given that the run does not use)."""


def _description() -> str:
    presets = "\n".join(f"  {name}: " + ", ".join(
        f"{k.split('.')[-1]}={v:_}" if isinstance(v, int) else f"{k.split('.')[-1]}={v}"
        for k, v in values.items() if k != "start_level") for name, values in PRESETS.items())
    return ("Train a self-referential weight matrix (SRWM) agent or a baseline core on ProcGen "
            "games (many at once) with recurrent PPO or IMPALA-style V-trace. Every field of "
            "the config is an option; PPO's and V-trace's are --ppo.* and --vtrace.*. Run dir: "
            "config.json, checkpoints/ckpt_<step>.pt, tb/ (TensorBoard). Errors exit 2 with "
            "one line; Ctrl-C / SIGTERM save a checkpoint and exit 130 / 143.\n\n"
            f"Presets (--preset NAME; options given with it override it):\n{presets}")


def command_flags() -> dict[str, tuple[str, ...]]:
    """{name: its flags} for every option of train_rl.py (config fields by dotted path)."""
    flags = dict(config_flags())
    for name in ("lr", "resume", "threads", "no_progress", "dry_run", "seeds", "max_parallel",
                 "progress_file"):
        flags[name] = ("--" + name.replace("_", "-"),)
    return flags


def train_parser() -> Any:
    """train_rl.py's command line as an argparse parser (see `argparse_parser`)."""
    return argparse_parser(TrainOptions, prog=PROG, description=_description())


def parse_train_args(argv: Sequence[str]) -> TrainRequest:
    """train_rl.py's argv -> what to do. UsageError / ConfigError / CheckpointError (one line)
    for bad input."""
    options = parse(TrainOptions, argv, prog=PROG, description=_description())
    given = given_options(argv, command_flags())
    if options.threads is not None and options.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {options.threads}")
    if options.max_parallel is not None:
        raise UsageError("--max-parallel applies to a group of runs (a comma list in --core or "
                         "--seeds, or --resume of a group dir)")
    values = options.config
    if options.seeds is not None:
        _single_seed(options.seeds, values, given)
    if options.resume:
        cfg, resume_from, step = _resume_config(options.resume, values, given)
    else:
        cfg, resume_from, step = _new_config(values, given, options.lr), None, 0
    return TrainRequest(config=cfg, resume_from=resume_from, start_step=step,
                        dry_run=options.dry_run, progress=not options.no_progress,
                        threads=options.threads,
                        progress_file=Path(options.progress_file) if options.progress_file
                        else None,
                        warnings=unused_learner_options(cfg.algo, given))


def _single_seed(text: str, values: dict[str, Any], given: dict[str, str]) -> None:
    """--seeds with one value is --seed (a list is a group: agents.groups)."""
    from .groups import parse_seeds

    seeds = parse_seeds(text)
    if len(seeds) > 1:
        raise UsageError(f"--seeds {text} makes a group of runs: train_rl.py runs it "
                         "(agents.groups); this parser reads one run")
    if "seed" in given:
        raise UsageError(f"give --seeds {text} or --seed {values['seed']}, not both")
    if "resume" in given:
        return  # rejected with the other options --resume does not allow
    values["seed"] = seeds[0]
    given["seed"] = "--seeds"


def config_from_args(argv: Sequence[str]) -> TrainConfig:
    """The (not yet resolved) TrainConfig that argv asks for (a new run, no --resume)."""
    return parse_train_args(argv).config


def _lookup(values: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        values = values[part]
    return values


def _new_config(values: dict[str, Any], given: dict[str, str], lr: float | None
                ) -> TrainConfig:
    """Preset (or defaults) + the config options given."""
    overrides = {p: _lookup(values, p) for p in given if p in config_flags()}
    preset = overrides.pop("preset", None)
    _fill_head_sizes(overrides, ModelConfig())
    if preset is not None:
        cfg = TrainConfig.from_preset(preset, **overrides)
    else:
        cfg = TrainConfig()
        cfg.apply_overrides(overrides)
    if lr is not None:
        if not (math.isfinite(lr) and lr > 0):
            raise ConfigError(f"--lr must be a positive finite number, got {lr}")
        set_learning_rate(cfg, lr)
    if cfg.run_dir is None:
        cfg.run_dir = default_run_dir(cfg.games, cfg.model.core, cfg.algo)
    return cfg


LEARNER_SECTIONS = {"ppo": "PPO", "vtrace": "V-trace"}


def unused_learner_options(algo: str, given: dict[str, str]) -> tuple[str, ...]:
    """A warning when options of the learner the run does not use were given: they are saved
    with the config but change nothing, which a user should hear about. A warning, not an
    error, so that one list of options can serve runs of both learners."""
    out = []
    for section, name in LEARNER_SECTIONS.items():
        if algo not in LEARNER_SECTIONS or section == algo:  # a bad algo: validate says so
            continue
        flags = [flag for path, flag in given.items() if path.startswith(section + ".")]
        if flags:
            out.append(f"{', '.join(flags)} {'is a' if len(flags) == 1 else 'are'} {name} "
                       f"option{'s' * (len(flags) > 1)} and change{'s' * (len(flags) == 1)} "
                       f"nothing in this run: --algo is {algo} (its options are --{algo}.*)")
    return tuple(out)


def _fill_head_sizes(overrides: dict[str, Any], m: ModelConfig) -> None:
    """Keep hidden_size == num_heads * head_size when only some of them are given."""
    h, n, d = (overrides.get(f"model.{k}") for k in ("hidden_size", "num_heads", "head_size"))
    if h is None and (n is not None or d is not None):
        overrides["model.hidden_size"] = (n or m.num_heads) * (d or m.head_size)
    elif h is not None and d is None:
        heads = n or m.num_heads
        if heads > 0 and h % heads == 0:
            overrides["model.head_size"] = h // heads


def default_run_dir(games: Sequence[str], core: str, algo: str) -> str:
    """runs/<YYYYmmdd-HHMMSS>_<games>_<core>_<algo>"""
    parts = [g for item in games for g in item.split(",") if g]
    label = "-".join(parts) if len("-".join(parts)) <= 40 else f"{parts[0]}+{len(parts) - 1}"
    label = re.sub(r"[^A-Za-z0-9_.+-]", "_", label)
    return str(Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}_{label}_{core}_{algo}")


def _resume_config(run_dir: str, values: dict[str, Any], given: dict[str, str]
                   ) -> tuple[TrainConfig, Path, int]:
    """The saved config of run_dir with the allowed options applied, the checkpoint to resume
    from (its newest intact one; the run dir itself when it has a config.json but no
    checkpoint yet: the run restarts from step 0) and that checkpoint's global step."""
    from .checkpoint import (
        config_from_checkpoint,
        find_latest_checkpoint,
        list_checkpoints,
        load_checkpoint,
    )
    from .run_dir import saved_config

    from_start = not list_checkpoints(run_dir) and (Path(run_dir) / "config.json").is_file()
    if not from_start:
        find_latest_checkpoint(run_dir)  # a missing run dir or one without checkpoints
    not_allowed = [name for name in given if name not in RESUME_OVERRIDABLE]
    if "run_dir" in not_allowed and Path(values["run_dir"]).resolve() == Path(run_dir).resolve():
        not_allowed.remove("run_dir")
    if not_allowed:
        flags = ", ".join(given[name] for name in not_allowed)
        allowed = ", ".join("--" + k.replace("_", "-") for k in RESUME_OVERRIDABLE[:-2])
        raise UsageError(f"{flags} cannot be changed on --resume (the run's saved config is "
                         f"used); allowed with --resume: {allowed}")
    if from_start:
        cfg, resume_from, step = saved_config(run_dir), Path(run_dir), 0
    else:
        payload = load_checkpoint(run_dir)
        cfg = config_from_checkpoint(payload)
        resume_from, step = Path(payload["path"]), int(payload["global_step"])
    cfg.apply_overrides({k: _lookup(values, k) for k in given if k in config_flags()
                         and k != "run_dir"})
    cfg.run_dir = str(run_dir)
    return cfg, resume_from, step
