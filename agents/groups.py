"""Groups of runs: one train_rl.py call trains every (core, seed) pair of a comparison.

    python train_rl.py --games starpilot --core srwm,lstm,deltanet,ff --seeds 0,1,2 \\
        --total-steps 5M --run-dir runs/cmp
    python train_rl.py --resume runs/cmp            # every unfinished run of the group

A comma list in `--core` or `--seeds` makes a group (one value in each keeps the single-run
behaviour exactly). The group dir holds `group.json` (the manifest: the command, the shared
config, the members and the arguments that start each one), one ordinary run dir per member,
`<core>_s<seed>/`, resumable on its own with `train_rl.py --resume`, and `logs/`
(`<member>.log`, the member's output; `<member>.progress.json`, its step and SPS, written by
the member through `--progress-file`). Each member runs as its own process
(`sys.executable train_rl.py ... --run-dir <group>/<member>`), at most `--max-parallel` at a
time. The group prints one progress line (runs done / failed / running / waiting, steps
summed over the runs, SPS, ETA), reports a failing member in one line and goes on with the
others. Exit code: 0 when every member finished, 1 when one failed, 130 / 143 when stopped
by SIGINT / SIGTERM (forwarded to the members as SIGTERM: each saves a checkpoint; a second
signal makes them abort at once).

Everything is checked before anything starts: the lists (unknown or repeated core, repeated
or non-integer seed), every member's config (parsed and resolved exactly as a single run),
the device, the group dir (new or empty), and one dry run per core (env, model, learner built
on the CPU, nothing written). Bad input is one line, exit 2 (agents.errors).

The default `--max-parallel` is the smaller of (CPU cores / 2) and, when the runs use a GPU,
(free GPU memory / 4 GiB); both assumptions are printed with the choice. Each member gets
`--threads` = CPU cores / max-parallel unless `--threads` is given.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .errors import EXIT_SIGNAL, ConfigError, UsageError

GROUP_FILE = "group.json"
GROUP_FORMAT = "srwm-procgen-group/1"
LOG_DIR = "logs"
"""Inside the group dir: <member>.log (its output) and <member>.progress.json."""
CPUS_PER_RUN = 2
"""CPU cores one run is assumed to need (env stepping, acting, the learner's host work)."""
GPU_GIB_PER_RUN = 4.0
"""GPU memory one run is assumed to need (the paper-size agent with PPO's default batch)."""
EXIT_FAILED = 1
GROUP_RESUME_OPTIONS = ("total_steps", "device", "checkpoint_every_steps",
                        "checkpoint_every_minutes", "keep_checkpoints", "log_every", "threads",
                        "no_progress")
"""What may be given with --resume GROUP_DIR (plus --max-parallel and --dry-run); they apply to
every member."""
_VALUELESS = {"--no-progress", "--dry-run"}
_TRAIN_SCRIPT = Path(__file__).resolve().parents[1] / "train_rl.py"
_MEMBER_FILES = {"config.json", "tb"}
"""What a member that never reached its first checkpoint may hold (cleared on resume)."""


# ---------------------------------------------------------------------- argv helpers
def _norm(flag: str) -> str:
    return "--" + flag[2:].replace("_", "-")


def take_option(argv: Sequence[str], flag: str) -> tuple[list[str], list[str]]:
    """Remove every `flag VALUE` / `flag=VALUE` (or a valueless flag) from argv.

    Returns (the values in order, the other tokens); "" for a valueless flag."""
    values: list[str] = []
    rest: list[str] = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        token = argv[i]
        name, eq, value = token.partition("=")
        if token.startswith("--") and _norm(name) == flag:
            if flag in _VALUELESS:
                values.append("")
                i += 1
            elif eq:
                values.append(value)
                i += 1
            elif i + 1 < len(argv):
                values.append(argv[i + 1])
                i += 2
            else:
                raise UsageError(f"{flag} needs a value (see --help)")
            continue
        rest.append(token)
        i += 1
    return values, rest


def _list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def is_group_command(argv: Sequence[str]) -> bool:
    """Does this train_rl.py argv ask for a group: a comma list in --core or --seeds, or
    --resume of a dir holding group.json?"""
    if any(a in ("-h", "--help") for a in argv):
        return False
    try:
        cores, _ = take_option(argv, "--core")
        seeds, _ = take_option(argv, "--seeds")
        resume, _ = take_option(argv, "--resume")
    except UsageError:
        return False  # the single-run parser reports it
    return bool((cores and "," in cores[-1]) or (seeds and "," in seeds[-1])
                or (resume and (Path(resume[-1]) / GROUP_FILE).is_file()))


def parse_seeds(text: str, flag: str = "--seeds") -> list[int]:
    """'0,1,2' -> [0, 1, 2]; UsageError for a non-integer or repeated seed."""
    seeds: list[int] = []
    for item in _list(text):
        try:
            seed = int(item)
        except ValueError:
            raise UsageError(f"invalid seed {item!r} in {flag} {text}; give integers, e.g. "
                             f"{flag} 0,1,2") from None
        if seed in seeds:
            raise UsageError(f"duplicate seed {seed} in {flag} {text}; give each seed once")
        seeds.append(seed)
    if not seeds:
        raise UsageError(f"no seed in {flag} {text!r}; e.g. {flag} 0,1,2")
    return seeds


def parse_cores(text: str) -> list[str]:
    """'srwm,lstm' -> ['srwm', 'lstm']; UsageError for an unknown or repeated core."""
    from policies.config import CORE_NAMES

    cores: list[str] = []
    for core in _list(text):
        if core not in CORE_NAMES:
            raise UsageError(f"unknown core {core!r} in --core {text}; valid: "
                             f"{', '.join(CORE_NAMES)}")
        if core in cores:
            raise UsageError(f"duplicate core {core!r} in --core {text}; give each core once")
        cores.append(core)
    if not cores:
        raise UsageError(f"no core in --core {text!r}; e.g. --core srwm,lstm")
    return cores


# ---------------------------------------------------------------------- the plan
@dataclass
class Member:
    """One (core, seed) run of a group."""

    name: str
    """`<core>_s<seed>`, also its dir name inside the group dir."""
    core: str
    seed: int
    run_dir: Path
    argv: list[str]
    """train_rl.py arguments that start it (or, with `resume`, continue it)."""
    total_steps: int
    start_step: int = 0
    resume: bool = False
    clear: bool = False
    """Its dir holds only what a run leaves before its first checkpoint: cleared, then
    started afresh."""


@dataclass
class GroupPlan:
    """What a group command will do; everything in it has been validated."""

    group_dir: Path
    members: list[Member]
    """Every member, in the manifest's order."""
    to_run: list[Member]
    """The members to start or resume (the others have reached their total steps)."""
    manifest: dict[str, Any]
    max_parallel: int
    parallel_reason: str
    threads: int | None
    """--threads passed to each member (None: the user gave --threads, passed through)."""
    progress: bool
    dry_run: bool
    first_config: Any = None
    """The resolved TrainConfig of the first member (for the summary)."""
    notes: list[str] = field(default_factory=list)


def default_max_parallel(device: str, members: int) -> tuple[int, str]:
    """(runs at a time, why): min(CPU cores / CPUS_PER_RUN, free GPU memory / GPU_GIB_PER_RUN
    when the runs use a GPU, the number of runs)."""
    cpus = os.cpu_count() or 1
    by_cpu = max(1, cpus // CPUS_PER_RUN)
    reasons = [f"{cpus} CPU cores / {CPUS_PER_RUN} per run = {by_cpu}"]
    n = min(members, by_cpu)
    free = _gpu_free_gib(device)
    if free is not None:
        by_gpu = max(1, int(free // GPU_GIB_PER_RUN))
        reasons.append(f"{free:.0f} GiB free GPU memory / {GPU_GIB_PER_RUN:g} GiB per run = "
                       f"{by_gpu}")
        n = min(n, by_gpu)
    else:
        reasons.append("no GPU")
    return max(1, n), "; ".join(reasons)


def _gpu_free_gib(device: str) -> float | None:
    """Free memory of the GPU the runs will use, or None when they run on the CPU."""
    if device == "cpu":
        return None
    index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free",
                                  "--format=csv,noheader,nounits", "-i", str(index)],
                                 capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                return float(out.stdout.split()[0]) / 1024.0
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.mem_get_info(index)[0] / 2**30


def _max_parallel(values: list[str], device: str, members: int) -> tuple[int, str]:
    if not values:
        return default_max_parallel(device, members)
    try:
        n = int(values[-1])
    except ValueError:
        n = 0
    if n < 1:
        raise UsageError(f"--max-parallel must be an integer >= 1, got {values[-1]!r}")
    return n, "--max-parallel"


def plan_group(argv: Sequence[str]) -> GroupPlan:
    """Validate a group command (new group or --resume GROUP_DIR) and return its plan.
    UsageError / ConfigError / CheckpointError (one line) for bad input; writes nothing."""
    resume, _ = take_option(argv, "--resume")
    if resume:
        return _plan_resume(argv)
    return _plan_new(argv)


def _plan_new(argv: Sequence[str]) -> GroupPlan:
    from .cli import default_run_dir, parse_train_args
    from .run_dir import check_new_run_dir
    from .runtime import resolve_device

    cores_v, rest = take_option(argv, "--core")
    seeds_v, rest = take_option(rest, "--seeds")
    seed_v, rest = take_option(rest, "--seed")
    parallel_v, rest = take_option(rest, "--max-parallel")
    run_dir_v, rest = take_option(rest, "--run-dir")
    dry_v, rest = take_option(rest, "--dry-run")
    progress_v, rest = take_option(rest, "--progress-file")
    if progress_v:
        raise UsageError("--progress-file is for a single run; in a group each run writes its "
                         f"own {LOG_DIR}/<run>.progress.json")
    if seeds_v and seed_v:
        raise UsageError(f"give --seeds {seeds_v[-1]} or --seed {seed_v[-1]}, not both")
    cores: list[str | None] = list(parse_cores(cores_v[-1])) if cores_v else [None]
    if seeds_v:
        seeds: list[str | None] = [str(s) for s in parse_seeds(seeds_v[-1])]
    else:
        seeds = [seed_v[-1]] if seed_v else [None]

    def member_args(core: str | None, seed: str | None) -> list[str]:
        return rest + (["--core", core] if core else []) + (["--seed", seed] if seed else [])

    first_request = parse_train_args(member_args(cores[0], seeds[0]))
    for line in first_request.warnings:  # the same for every member: said once, here
        print(f"train_rl.py: warning: {line}", file=sys.stderr)
    first = first_request.config.resolved()
    group_dir = Path(run_dir_v[-1] if run_dir_v else default_run_dir(first.games, "group",
                                                                      first.algo))
    check_new_run_dir(group_dir)
    members: list[Member] = []
    configs = []
    for core in cores:
        for seed in seeds:
            args = member_args(core, seed)
            cfg = parse_train_args(args).config
            name = f"{cfg.model.core}_s{cfg.seed}"
            run_dir = group_dir / name
            cfg.run_dir = str(run_dir)
            cfg = cfg.resolved()
            if any(m.name == name for m in members):
                raise UsageError(f"two runs of the group would share the dir {run_dir}")
            members.append(Member(name=name, core=cfg.model.core, seed=cfg.seed,
                                  run_dir=run_dir, argv=args + ["--run-dir", str(run_dir)],
                                  total_steps=cfg.total_steps))
            configs.append(cfg)
    resolve_device(first.device)
    _dry_run_each_core(configs)
    max_parallel, reason = _max_parallel(parallel_v, first.device, len(members))
    threads = _threads(rest, max_parallel)
    shared = first.to_dict()
    for key in ("seed", "run_dir"):
        shared.pop(key)
    shared["model"].pop("core")
    manifest = {
        "format": GROUP_FORMAT,
        "created_utc": _utc(),
        "command": "train_rl.py " + " ".join(argv),
        "cores": [m.core for m in members if m.seed == members[0].seed],
        "seeds": [m.seed for m in members if m.core == members[0].core],
        "config": shared,
        "members": [{"name": m.name, "core": m.core, "seed": m.seed, "run_dir": m.name,
                     "argv": m.argv[:-2]} for m in members],
        "history": [],
    }
    return GroupPlan(group_dir=group_dir, members=members, to_run=list(members),
                     manifest=manifest, max_parallel=max_parallel, parallel_reason=reason,
                     threads=threads, progress="--no-progress" not in rest,
                     dry_run=bool(dry_v), first_config=first)


def _dry_run_each_core(configs: list[Any]) -> None:
    """Build env, model and learner once per core (on the CPU; nothing written), so that a
    member cannot fail at its setup after others have started."""
    from .config import TrainConfig
    from .trainer import dry_run

    seen = set()
    for cfg in configs:
        if cfg.model.core in seen:
            continue
        seen.add(cfg.model.core)
        probe = TrainConfig.from_dict(cfg.to_dict())
        probe.device = "cpu"
        dry_run(probe)


def _threads(rest: list[str], max_parallel: int) -> int | None:
    given, _ = take_option(rest, "--threads")
    if given:
        return None
    return max(1, (os.cpu_count() or 1) // max_parallel)


def read_manifest(group_dir: str | os.PathLike) -> dict[str, Any]:
    """The group.json of group_dir; ConfigError (one line) when missing or not a manifest."""
    path = Path(group_dir) / GROUP_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{str(group_dir)!r} is not a group dir (no {GROUP_FILE})") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {str(path)!r}: {' '.join(str(e).split())}") from None
    if not isinstance(doc, dict) or doc.get("format") != GROUP_FORMAT or not isinstance(
            doc.get("members"), list):
        raise ConfigError(f"{str(path)!r} is not a group manifest (format {GROUP_FORMAT})")
    return doc


def _plan_resume(argv: Sequence[str]) -> GroupPlan:
    from . import checkpoint as ckpt
    from .cli import command_flags, given_options, parse_train_args

    resume_v, rest = take_option(argv, "--resume")
    parallel_v, rest = take_option(rest, "--max-parallel")
    dry_v, rest = take_option(rest, "--dry-run")
    group_dir = Path(resume_v[-1])
    manifest = read_manifest(group_dir)
    flags = command_flags()
    given = given_options(rest, flags)
    not_allowed = [name for name in given if name not in GROUP_RESUME_OPTIONS]
    if not_allowed:
        allowed = ", ".join("--" + k.replace("_", "-") for k in GROUP_RESUME_OPTIONS)
        raise UsageError(f"{', '.join(given[n] for n in not_allowed)} cannot be changed on "
                         f"--resume of a group (each run's saved config is used); allowed: "
                         f"{allowed}, --max-parallel")
    members: list[Member] = []
    to_run: list[Member] = []
    notes: list[str] = []
    first = None
    for entry in manifest["members"]:
        name = str(entry["name"])
        run_dir = group_dir / str(entry.get("run_dir", name))
        _, base = take_option([str(a) for a in entry["argv"]], "--run-dir")
        for name_given in given:  # the options given replace the stored ones
            for flag in flags[name_given]:
                _, base = take_option(base, flag)
        entry["argv"] = base + [a for a in rest if a != "--no-progress"]
        fresh_args = base + rest + ["--run-dir", str(run_dir)]
        if ckpt.list_checkpoints(run_dir):
            request = parse_train_args(["--resume", str(run_dir), *rest])
            cfg = request.config.resolved()
            member = Member(name=name, core=cfg.model.core, seed=cfg.seed, run_dir=run_dir,
                            argv=["--resume", str(run_dir), *rest],
                            total_steps=cfg.total_steps, start_step=request.start_step,
                            resume=True)
        else:
            clear = _never_checkpointed(run_dir)
            cfg = parse_train_args(fresh_args).config
            cfg.run_dir = str(run_dir)
            cfg = cfg.resolved()
            member = Member(name=name, core=cfg.model.core, seed=cfg.seed, run_dir=run_dir,
                            argv=fresh_args, total_steps=cfg.total_steps, clear=clear)
            if clear:
                notes.append(f"{name} stopped before its first checkpoint: its dir is cleared "
                             "and it starts again")
        first = first or cfg
        members.append(member)
        if member.start_step < member.total_steps:
            to_run.append(member)
    if not members:
        raise ConfigError(f"{str(group_dir / GROUP_FILE)!r} lists no runs")
    if "total_steps" in given:
        manifest["config"]["total_steps"] = first.total_steps
    manifest.setdefault("history", []).append(
        {"resumed_utc": _utc(), "command": "train_rl.py " + " ".join(argv)})
    max_parallel, reason = _max_parallel(parallel_v, first.device, max(1, len(to_run)))
    return GroupPlan(group_dir=group_dir, members=members, to_run=to_run, manifest=manifest,
                     max_parallel=max_parallel, parallel_reason=reason,
                     threads=_threads(rest, max_parallel),
                     progress="--no-progress" not in rest, dry_run=bool(dry_v),
                     first_config=first, notes=notes)


def _never_checkpointed(run_dir: Path) -> bool:
    """True when run_dir holds only what a run writes before its first checkpoint (so it may
    be cleared); False when it is missing or empty; ConfigError when it holds anything else."""
    if not run_dir.exists():
        return False
    if not run_dir.is_dir():
        raise ConfigError(f"group member {str(run_dir)!r} is not a directory; move it away")
    entries = {p.name for p in run_dir.iterdir()}
    if not entries:
        return False
    ckpt_dir = run_dir / "checkpoints"
    if "checkpoints" in entries and not any(not p.name.endswith(".tmp")  # killed writes
                                            for p in ckpt_dir.iterdir()):
        entries.discard("checkpoints")
    other = sorted(entries - _MEMBER_FILES)
    if other:
        raise ConfigError(f"group member {str(run_dir)!r} has no checkpoint but holds "
                          f"{', '.join(other)}; move them away to restart it")
    return True


def _clear(run_dir: Path) -> None:
    for p in run_dir.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


# ---------------------------------------------------------------------- the members' side
class ProgressFile:
    """A run's progress as JSON (pid, step, total, SPS, state), rewritten at most every
    `every_s` seconds through train()'s on_update hook; read by the group's supervisor.
    Written by rename (not fsynced: losing it costs nothing)."""

    def __init__(self, path: str | os.PathLike, total_steps: int, start_step: int = 0,
                 every_s: float = 2.0) -> None:
        self.path = Path(path)
        self.total, self.start = int(total_steps), int(start_step)
        self.every_s = every_s
        self._t0 = time.monotonic()
        self._last = -float("inf")
        self.write(self.start, "running")

    def update(self, step: int, metrics: dict[str, float] | None = None) -> None:
        if time.monotonic() - self._last >= self.every_s:
            self.write(step, "running")

    def write(self, step: int, state: str) -> None:
        self._last = time.monotonic()
        dt = self._last - self._t0
        doc = {"pid": os.getpid(), "step": int(step), "total_steps": self.total,
               "start_step": self.start, "sps": (step - self.start) / dt if dt > 0 else 0.0,
               "state": state, "updated_unix": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc) + "\n")
        os.replace(tmp, self.path)


def log_path(group_dir: Path, name: str) -> Path:
    """Where a member's output goes: GROUP/logs/<name>.log."""
    return Path(group_dir) / LOG_DIR / f"{name}.log"


def progress_path(group_dir: Path, name: str) -> Path:
    """Where a member writes its progress: GROUP/logs/<name>.progress.json."""
    return Path(group_dir) / LOG_DIR / f"{name}.progress.json"


def read_progress(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------- running a group
def run_group_command(argv: Sequence[str]) -> int:
    """train_rl.py's entry for a group: plan (validate everything), then run."""
    plan = plan_group(argv)
    return run_group(plan)


def run_group(plan: GroupPlan, stream: TextIO | None = None, line_every_s: float | None = None
              ) -> int:
    """Run the plan's members as processes, at most max_parallel at a time; returns the exit
    code (0 all done, 1 a member failed, 130 / 143 stopped by a signal)."""
    out = stream if stream is not None else sys.stderr
    _print_plan(plan, out)
    if plan.dry_run:
        return 0
    from .checkpoint import atomic_write_json

    plan.group_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(plan.group_dir / GROUP_FILE, plan.manifest)
    for m in plan.to_run:
        if m.clear:
            _clear(m.run_dir)
    if line_every_s is None:
        line_every_s = 10.0 if _is_tty(out) else 30.0
    return _Supervisor(plan, out, line_every_s).run()


def _print_plan(plan: GroupPlan, out: TextIO) -> None:
    cfg = plan.first_config
    p = "train_rl.py: group"
    waiting = {m.name for m in plan.to_run}
    names = ", ".join(m.name for m in plan.members)
    print(f"{p} {plan.group_dir}: {len(plan.members)} runs ({names}), {len(plan.to_run)} to "
          f"run; games {','.join(cfg.games)}, {cfg.algo}, {cfg.total_steps:,} steps per run",
          file=out, flush=True)
    threads = f", --threads {plan.threads} each" if plan.threads else ""
    print(f"{p}: {plan.max_parallel} at a time ({plan.parallel_reason}){threads}", file=out,
          flush=True)
    for note in plan.notes:
        print(f"{p}: {note}", file=out, flush=True)
    if plan.dry_run:
        for m in plan.members:
            state = ("resume from step " + f"{m.start_step:,}" if m.resume else "start") \
                if m.name in waiting else f"done (step {m.start_step:,})"
            print(f"{m.name}: {m.run_dir}: {state} -> {m.total_steps:,} steps; train_rl.py "
                  f"{' '.join(m.argv)}", flush=True)


@dataclass
class _Running:
    member: Member
    proc: subprocess.Popen
    log: Any
    started: float


class _Supervisor:
    def __init__(self, plan: GroupPlan, out: TextIO, line_every_s: float) -> None:
        self.plan, self.out, self.line_every_s = plan, out, line_every_s
        self.pending = deque(plan.to_run)
        self.running: dict[str, _Running] = {}
        self.steps: dict[str, int] = {m.name: m.start_step for m in plan.members}
        self.done = [m.name for m in plan.members if m not in plan.to_run]
        self.failed: list[str] = []
        self.stopped: list[str] = []
        self.signals: list[str] = []

    def _say(self, text: str) -> None:
        print(f"train_rl.py: group: {text}", file=self.out, flush=True)

    def run(self) -> int:
        t0 = time.monotonic()
        steps0 = sum(self.steps.values())
        last_line = time.monotonic()
        forwarded = 0
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            self.signals.append(signal.Signals(signum).name)

        for s in previous:
            signal.signal(s, handler)
        try:
            while self.pending or self.running:
                changed = self._poll()
                while self.pending and len(self.running) < self.plan.max_parallel \
                        and not self.signals:
                    self._start(self.pending.popleft())
                if len(self.signals) > forwarded:
                    # first signal: SIGTERM (each member saves a checkpoint after its update);
                    # a second one: SIGINT, which makes a member abort at once
                    sig = signal.SIGTERM if forwarded == 0 else signal.SIGINT
                    forwarded = len(self.signals)
                    if sig == signal.SIGTERM:
                        self._say(f"received {self.signals[0]}: stopping the running runs (each "
                                  "saves a checkpoint), starting no more")
                    for r in self.running.values():
                        _send(r.proc, sig)
                if self.signals and not self.running:
                    break
                now = time.monotonic()
                if self.plan.progress and (changed or now - last_line >= self.line_every_s):
                    self._progress_line(now - t0, steps0)
                    last_line = now
                time.sleep(0.2)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            for r in self.running.values():  # only on an error of the supervisor itself
                _send(r.proc, signal.SIGTERM)
        return self._summary(time.monotonic() - t0)

    def _start(self, m: Member) -> None:
        group = self.plan.group_dir
        log_path(group, m.name).parent.mkdir(parents=True, exist_ok=True)
        args = [*m.argv, "--progress-file", str(progress_path(group, m.name))]
        if self.plan.threads is not None:
            args += ["--threads", str(self.plan.threads)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.plan.threads is not None:
            env.update(OMP_NUM_THREADS=str(self.plan.threads),
                       MKL_NUM_THREADS=str(self.plan.threads))
        log = open(log_path(group, m.name), "a")
        log.write(f"== {_utc()} train_rl.py {' '.join(args)}\n")
        log.flush()
        proc = subprocess.Popen([sys.executable, str(_TRAIN_SCRIPT), *args], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=os.getcwd(), start_new_session=True)
        self.running[m.name] = _Running(m, proc, log, time.monotonic())

    def _poll(self) -> bool:
        changed = False
        for name, r in list(self.running.items()):
            progress = read_progress(progress_path(self.plan.group_dir, name))
            if progress and progress.get("pid") == r.proc.pid:
                self.steps[name] = int(progress.get("step", self.steps[name]))
            rc = r.proc.poll()
            if rc is None:
                continue
            r.log.close()
            del self.running[name]
            changed = True
            progress = read_progress(progress_path(self.plan.group_dir, name))
            if progress and progress.get("pid") == r.proc.pid:
                self.steps[name] = int(progress.get("step", self.steps[name]))
            minutes = (time.monotonic() - r.started) / 60
            if rc == 0:
                self.done.append(name)
                self._say(f"{name} done at step {self.steps[name]:,} ({minutes:.1f} min)")
            elif self.signals and rc in EXIT_SIGNAL.values():
                self.stopped.append(name)
                self._say(f"{name} stopped at step {self.steps[name]:,} (checkpoint saved)")
            else:
                self.failed.append(name)
                why = f"exit code {rc}"
                if rc < 0:
                    try:
                        why = f"killed by {signal.Signals(-rc).name}"
                    except ValueError:
                        why = f"killed by signal {-rc}"

                log = log_path(self.plan.group_dir, name)
                last = _last_line(log)
                self._say(f"{name} FAILED ({why}) at step {self.steps[name]:,}"
                          + (f": {last}" if last and rc > 0 else "")
                          + f"; log: {log}; the other runs go on")
        return changed

    def _progress_line(self, elapsed: float, steps0: int) -> None:
        from .metrics import format_count, format_duration

        total = sum(m.total_steps for m in self.plan.members)
        steps = sum(self.steps.values())
        sps = (steps - steps0) / elapsed if elapsed > 0 else 0.0
        remaining = sum(max(0, m.total_steps - self.steps[m.name]) for m in self.plan.members
                        if m.name not in self.failed)
        eta = remaining / sps if sps > 0 else float("inf")
        n = len(self.plan.members)
        print(f"group {self.plan.group_dir}: {len(self.done)}/{n} done, {len(self.failed)} "
              f"failed, {len(self.running)} running, {len(self.pending)} waiting | steps "
              f"{format_count(steps)}/{format_count(total)} ({100 * steps / max(1, total):.1f}%)"
              f" | {format_count(sps)} SPS | ETA {format_duration(eta)}", file=self.out,
              flush=True)

    def _summary(self, elapsed: float) -> int:
        from .metrics import format_duration

        n = len(self.plan.members)
        parts = [f"{len(self.done)}/{n} runs done"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed ({', '.join(self.failed)})")
        if self.stopped or self.pending:
            parts.append(f"{len(self.stopped)} stopped, {len(self.pending)} not started")
        text = ", ".join(parts) + f" in {format_duration(elapsed)}"
        if self.failed or self.stopped or self.pending:
            text += f"; continue with: python train_rl.py --resume {self.plan.group_dir}"
        else:
            text += f"; evaluate with: python eval_rl.py {self.plan.group_dir}"
        print(f"train_rl.py: group {self.plan.group_dir}: {text}", file=self.out, flush=True)
        if self.signals:
            return EXIT_SIGNAL.get(self.signals[0], EXIT_SIGNAL["SIGTERM"])
        return EXIT_FAILED if self.failed else 0


def _send(proc: subprocess.Popen, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except (ProcessLookupError, OSError):
        pass


def _last_line(path: Path) -> str:
    """The last non-empty line of a log (its final error message, usually), shortened."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln and not ln.startswith("== ")]
    text = re.sub(r"\s+", " ", lines[-1]) if lines else ""
    return text[:200]


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
