"""eval_rl.py on groups of runs: evaluate every run, group the runs, compare the groups with
run-level uncertainty.

    python eval_rl.py runs/cmp --split test1,test2,test3          # a group dir (train_rl.py)
    python eval_rl.py runs/a runs/b runs/c runs/d --group-by core  # any run dirs

Group mode is on when a path is a group dir (it holds group.json, or no run of its own but
run dirs inside) or when `--group-by` is given. Steps:

1. Find the runs: a group dir's members (group.json's order), or the run dirs given. Every
   run must have a checkpoint.
2. Check that they can be compared before playing anything: the same games, distribution
   mode, training levels, algo and task parameters (except the `--group-by` key itself);
   otherwise exit 2 with one line naming the run and the value that differ.
3. Group them by `--group-by` (default `core`; any config key, dotted for nested ones:
   `model.hidden_size`, `ppo.lr`; a flat name is looked up in the run's fields, then the
   model's, then ppo's and vtrace's).
4. Evaluate every run on every split with the ordinary engine (agents/evaluation/cli.py);
   its per-run results go to OUT/runs/. A synthetic task has no levels: it is played once,
   as split `task`, whatever --split says.
5. Per split (and, with several splits, on all of them pooled: a run's score on a game is then
   its mean over the splits), the statistics of group_stats.py; write group_table.md / .csv,
   group_results.json, group_scores_<split>.png and learning_curves_groups.png (from the
   runs' TensorBoard logs).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.errors import UsageError

COMPARED_KEYS = ("games", "distribution_mode", "start_level", "num_levels", "algo",
                 "task_kwargs")
"""Config keys that must be equal across the runs of a comparison (but the grouping key)."""
SYNTHETIC_SPLIT = "task"


def _is_run_dir(p: Path) -> bool:
    return (p / "checkpoints").is_dir() or (p / "config.json").is_file()


def is_group_dir(path: str | Path) -> bool:
    """A dir with group.json, or without a run of its own but with run dirs inside."""
    from agents.groups import GROUP_FILE

    p = Path(path)
    if not p.is_dir():
        return False
    if (p / GROUP_FILE).is_file():
        return True
    if _is_run_dir(p):
        return False
    return any(c.is_dir() and _is_run_dir(c) for c in p.iterdir())


def is_group_eval(args) -> bool:
    return args.group_by is not None or any(is_group_dir(p) for p in args.agents)


def find_runs(paths: Sequence[str]) -> list[tuple[str, Path]]:
    """[(name, run dir)] of the paths: group dirs expanded into their members. Names are the
    members' dir names, prefixed with their group dir's name where they would clash."""
    from agents.checkpoint import list_checkpoints
    from agents.groups import GROUP_FILE, read_manifest

    found: list[tuple[Path, Path | None]] = []
    for raw in paths:
        p = Path(raw)
        if p.suffix == ".pt" or p.is_file():
            raise UsageError(f"{raw!r}: group comparisons take run dirs or group dirs, not "
                             "checkpoint files")
        if not p.exists():
            raise UsageError(f"run dir {raw!r} does not exist")
        if is_group_dir(p):
            if (p / GROUP_FILE).is_file():
                members = [p / str(m.get("run_dir", m["name"]))
                           for m in read_manifest(p)["members"]]
            else:
                members = sorted(c for c in p.iterdir() if c.is_dir() and _is_run_dir(c))
            found += [(m, p) for m in members]
        else:
            found.append((p, None))
    for run, group in found:
        if not list_checkpoints(run):
            hint = (f"; continue the group: python train_rl.py --resume {group}" if group
                    else "")
            raise UsageError(f"run {str(run)!r} has no checkpoint yet{hint}")
    names = [run.name for run, _ in found]
    out = []
    for (run, group), name in zip(found, names, strict=True):
        if names.count(name) > 1:
            name = f"{(group or run.parent).name}_{name}"
        out.append((name, run))
    if len({n for n, _ in out}) < len(out):
        raise UsageError("the same run is given twice: " + ", ".join(
            sorted({n for n, _ in out if [m for m, _ in out].count(n) > 1})))
    return out


def resolve_key(key: str, config: dict[str, Any]) -> str:
    """A --group-by key -> its dotted path in a TrainConfig dict (core -> model.core)."""
    norm = key.strip().replace("-", "_")
    if "." in norm:
        node: Any = config
        for part in norm.split("."):
            if not isinstance(node, dict) or part not in node:
                raise UsageError(f"unknown --group-by key {key!r}; valid: a config key such as "
                                 f"{_examples(config)}")
            node = node[part]
        return norm
    if norm in config and not isinstance(config[norm], dict):
        return norm
    for section in ("model", "ppo", "vtrace"):
        if norm in config.get(section, {}):
            return f"{section}.{norm}"
    raise UsageError(f"unknown --group-by key {key!r}; valid: a config key such as "
                     f"{_examples(config)}")


def _examples(config: dict[str, Any]) -> str:
    return ("core, seed, algo, state_reset, total_steps, model.hidden_size, ppo.lr, "
            "vtrace.optimizer (dotted for nested fields)")


def config_value(config: dict[str, Any], path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        node = node[part]
    return node


def label(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def check_comparable(runs: list[tuple[str, dict[str, Any]]], group_key: str) -> None:
    """UsageError naming the first key (of COMPARED_KEYS, but the grouping key) in which a
    run differs from the first run."""
    first_name, first = runs[0]
    for key in COMPARED_KEYS:
        if key == group_key:
            continue
        for name, cfg in runs[1:]:
            if cfg.get(key) != first.get(key):
                what = {"start_level": "training levels", "num_levels": "training levels"}.get(
                    key, key)
                raise UsageError(
                    f"the runs differ in {key} ({what}): {first_name} has "
                    f"{label(first.get(key))!r}, {name} has {label(cfg.get(key))!r}; compare "
                    f"runs trained on the same games, levels and algo (or --group-by {key})")


def run_group_eval(args, argv: list[str]) -> int:
    """Group mode of eval_rl.py (see the module docstring); returns the exit code."""
    from agents.checkpoint import load_agent
    from agents.runtime import resolve_device
    from envs import SYNTHETIC_TASKS, resolve_games

    from .cli import _default_out, evaluate_agents, resolve_splits

    found = find_runs(args.agents)
    if args.video is not None:
        raise UsageError("--video is not available with groups of runs; film one run: "
                         "eval_rl.py RUN_DIR --video PATH")
    splits = resolve_splits(args)
    device = resolve_device(args.device)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    loaded = [load_agent(path, device=device) for _, path in found]
    configs = [(name, agent.config.to_dict()) for (name, _), agent in
               zip(found, loaded, strict=True)]
    key = resolve_key(args.group_by or "core", configs[0][1])
    check_comparable(configs, key)
    groups: dict[str, list[str]] = {}
    for name, cfg in configs:
        groups.setdefault(label(config_value(cfg, key)), []).append(name)
    try:
        games = resolve_games(args.games) if args.games else list(loaded[0].config.games)
    except ValueError as e:
        raise UsageError(f"--games: {e}") from None
    notes = []
    if games[0] in SYNTHETIC_TASKS:
        if args.split or args.start_level is not None or args.num_levels is not None:
            notes.append(f"{games[0]} is a synthetic task without levels: --split does not "
                         f"apply; each run was played once (split '{SYNTHETIC_SPLIT}')")
            print(f"eval_rl.py: note: {notes[-1]}", file=sys.stderr)
        splits = [(SYNTHETIC_SPLIT, 0, 200)]
    steps = {a.global_step for a in loaded}
    if len(steps) > 1:
        notes.append("the runs are at different steps (" + ", ".join(
            f"{n} {a.global_step:,}" for (n, _), a in zip(found, loaded, strict=True))
            + "): the comparison is not at equal training")
        print(f"warning: {notes[-1]}", file=sys.stderr)
    out = Path(args.out or _default_out())
    names = [n for n, _ in found]
    split_list = ", ".join(s for s, _, _ in splits)
    print(f"eval_rl.py: {len(found)} runs in {len(groups)} groups by {key}: " + "; ".join(
        f"{g} ({len(r)})" for g, r in groups.items()) + f"; splits {split_list}",
        file=sys.stderr, flush=True)
    results = evaluate_agents(args, names, loaded, splits, device, out / "runs", quiet=True)

    from .report import write_results

    meta = {"command": "eval_rl.py " + " ".join(argv),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    written = write_results(out / "runs", results, meta)
    seeds = {n: int(cfg["seed"]) for n, cfg in configs}
    cmp = build_comparison(results, found, groups, key, args, splits, notes, meta, seeds)

    from .group_plots import group_learning_curves, group_score_bars
    from .group_report import write_group_results

    written += write_group_results(out, cmp)
    for split in cmp.splits:
        written.append(group_score_bars(cmp, split, out / f"group_scores_{_file(split)}.png"))
    paths = dict(found)
    curves = group_learning_curves({g: [paths[r] for r in runs] for g, runs in groups.items()},
                                   out / "learning_curves_groups.png",
                                   title=f"grouped by {key}")
    if curves is not None:
        written.append(curves)
    print((out / "group_table.md").read_text(), flush=True)
    print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


def _file(split: str) -> str:
    return split.replace("+", "_")


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def build_comparison(results, found, groups: dict[str, list[str]], key: str, args, splits,
                     notes: list[str], meta: dict[str, Any], seeds: dict[str, int]):
    """The GroupComparison of evaluated runs: score matrices per split and group, their
    statistics; with several splits also all splits pooled."""
    from .group_report import GroupComparison, SplitGroups
    from .group_stats import aggregates, improvement_matrix, per_game

    by_name = {r.name: r for r in results}
    first = results[0]
    split_names = [s for s, _, _ in splits]
    games = list(first.splits[split_names[0]].games)
    tables: dict[str, SplitGroups] = {}
    for split in split_names:
        sr = first.splits[split]
        scores = {g: np.array([[by_name[r].splits[split].games[m].normalized for m in games]
                               for r in runs]) for g, runs in groups.items()}
        returns = {g: np.array([[by_name[r].splits[split].games[m].mean_return for m in games]
                                for r in runs]) for g, runs in groups.items()}
        desc = (f"{', '.join(games)}: no levels (synthetic task)" if split == SYNTHETIC_SPLIT
                else f"levels {sr.start_level}+{sr.num_levels or 'all'}, "
                     f"{sr.distribution_mode}")
        tables[split] = SplitGroups(split, desc, games, scores, returns)
    if len(split_names) > 1:
        name = "+".join(split_names)
        tables[name] = SplitGroups(
            name, "the splits pooled: a run's score per game is its mean over them", games,
            {g: np.mean([tables[s].scores[g] for s in split_names], axis=0) for g in groups},
            {g: np.mean([tables[s].returns[g] for s in split_names], axis=0) for g in groups})
    reps, seed = args.bootstrap_resamples, args.seed
    for k, sg in enumerate(tables.values()):
        base = seed * 7919 + 1000 * k
        for i, g in enumerate(groups):
            sg.per_game[g] = per_game(sg.scores[g], reps=reps, seed=base + 10 * i)
            sg.per_game_return[g] = per_game(sg.returns[g], reps=reps, seed=base + 10 * i + 5)
            sg.aggregates[g] = aggregates(sg.scores[g], reps=reps, seed=base + 10 * i + 7)
        sg.improvement = improvement_matrix(sg.scores, reps=reps, seed=base + 500)
    runs = {}
    paths = dict(found)
    for g, members in groups.items():
        for r in members:
            a = by_name[r]
            runs[r] = {"group": g, "run_dir": str(paths[r]), "checkpoint": a.checkpoint,
                       "global_step": a.global_step, "core": a.core, "seed": seeds[r]}
    t = first.trained
    trained = {k: t[k] for k in ("games", "algo", "distribution_mode", "start_level",
                                 "num_levels")}
    s = first.settings
    settings = {"episodes_per_game": s["episodes_per_game"], "greedy": s["greedy"],
                "state_reset": args.state_reset or "as trained", "seed": s["seed"],
                "distribution_mode": s["distribution_mode"], "score_mode": s["score_mode"],
                "bootstrap_resamples": reps, "confidence": 0.95,
                "rliable": _version("rliable"),
                "splits": split_names}
    return GroupComparison(group_by=key, groups=groups, runs=runs, trained=trained,
                           settings=settings, splits=tables, notes=notes, meta=meta)
