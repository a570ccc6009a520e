"""A comparison of groups of runs as data, and its Markdown table, CSV and JSON.

`GroupComparison` holds, per split, each group's [runs, games] matrix of normalized scores
and the statistics of agents/evaluation/group_stats.py. `write_group_results` writes
group_table.md, group_table.csv and group_results.json (atomic writes).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .group_stats import AGGREGATE_LABELS, AGGREGATES, Estimate
from .report import _atomic_write

FORMAT = "srwm-procgen-group-eval/1"


@dataclass
class SplitGroups:
    """Every group on one split (or on several splits pooled)."""

    name: str
    description: str
    """What was played, e.g. "levels 1000+200, easy"."""
    games: list[str]
    scores: dict[str, np.ndarray]
    """group -> normalized scores [runs, games] (runs in the group's order)."""
    returns: dict[str, np.ndarray]
    """group -> mean returns [runs, games]."""
    per_game: dict[str, list[Estimate]] = field(default_factory=dict)
    per_game_return: dict[str, list[Estimate]] = field(default_factory=dict)
    aggregates: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    improvement: dict[str, dict[str, Estimate]] = field(default_factory=dict)


@dataclass
class GroupComparison:
    """Groups of runs, how they were evaluated, and the statistics per split."""

    group_by: str
    """The dotted config key the runs are grouped by."""
    groups: dict[str, list[str]]
    """group label -> its runs' names, in order."""
    runs: dict[str, dict[str, Any]]
    """run name -> {group, run_dir, checkpoint, global_step, seed}."""
    trained: dict[str, Any]
    """What every run shares: games, algo, distribution_mode, levels."""
    settings: dict[str, Any]
    """How they were evaluated: episodes, greedy, seed, resamples, rliable version, ..."""
    splits: dict[str, SplitGroups]
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.{digits}f}"


def _est(e: Estimate, digits: int = 3) -> str:
    if e.ci is None:
        return _fmt(e.value, digits)
    return f"{_fmt(e.value, digits)} [{_fmt(e.ci[0], digits)}, {_fmt(e.ci[1], digits)}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def single_run_groups(cmp: GroupComparison) -> list[str]:
    return [g for g, runs in cmp.groups.items() if len(runs) < 2]


def to_markdown(cmp: GroupComparison) -> str:
    """The group table: per split, per game and aggregate estimates with their intervals over
    runs, the probability of improvement between groups, and every run's own scores."""
    key = cmp.group_by
    s = cmp.settings
    steps = sorted({r["global_step"] for r in cmp.runs.values()})
    step_text = (f"{steps[0]:,}" if len(steps) == 1 else
                 f"{steps[0]:,} to {steps[-1]:,} (they differ: see the runs table)")
    parts = ["# Comparison of groups of runs", ""]
    parts.append(f"- Grouped by `{key}`: " + "; ".join(
        f"**{g}** ({len(r)} run{'s' if len(r) != 1 else ''}: {', '.join(r)})"
        for g, r in cmp.groups.items()) + ".")
    t = cmp.trained
    parts.append(f"- Trained: {', '.join(t['games'])}, {t['algo']}, {t['distribution_mode']}, "
                 f"levels {t['start_level']}+{t['num_levels']}; steps per run: {step_text}.")
    parts.append(f"- Evaluated: {s['episodes_per_game']} episodes per game per run, "
                 f"{'greedy' if s['greedy'] else 'sampled'} actions, state "
                 f"{s['state_reset']}, seed {s['seed']}.")
    parts.append(
        "- A run's score on a game is the normalized score of its mean return. Per game: mean "
        "over runs. Aggregates over runs x games: mean and median of the per-game means, IQM "
        "(25% trimmed mean of all run x game scores), optimality gap (mean shortfall below "
        "1; lower is better). P(X > Y): probability that a run of X beats a run of Y on a "
        "game (ties 1/2), averaged over games.")
    single = single_run_groups(cmp)
    if len(single) < len(cmp.groups):
        parts.append(
            f"- [95% CI]: percentile bootstrap over runs ({s['bootstrap_resamples']} resamples;"
            " runs resampled within each game; the games are fixed), computed with rliable "
            f"{s.get('rliable', '?')}. They describe seed-to-seed variation; episode noise is "
            "inside each run's mean. With 2 or 3 runs they are coarse.")
    if single:
        if len(single) == len(cmp.groups):
            parts.append("- **One run per group: there are no run-level confidence intervals.** "
                         "The values are single runs; differences between them say nothing "
                         "about seed-to-seed variation. Train several seeds (--seeds 0,1,2).")
        else:
            parts.append(f"- **No run-level confidence intervals for {', '.join(single)} (one "
                         "run each)**; their values and any P(X > Y) involving them are "
                         "single-run figures.")
    for note in cmp.notes:
        parts.append(f"- Note: {note}")
    groups = list(cmp.groups)
    head = [f"{g} ({len(cmp.groups[g])})" for g in groups]
    ci = " (single runs: no CI)" if len(single) == len(groups) else " [95% CI]"
    for sg in cmp.splits.values():
        parts += ["", f"## {sg.name} ({sg.description})", ""]
        rows = [[g, *[_est(sg.per_game[k][m]) for k in groups]] for m, g in
                enumerate(sg.games)]
        parts += [f"Normalized score per game, mean over runs{ci}:", "",
                  _table(["game", *head], rows), ""]
        rows = [[g, *[_est(sg.per_game_return[k][m], 2) for k in groups]] for m, g in
                enumerate(sg.games)]
        parts += [f"Mean return per game, mean over runs{ci}:", "",
                  _table(["game", *head], rows), ""]
        rows = [[AGGREGATE_LABELS[a], *[_est(sg.aggregates[k][a]) for k in groups]]
                for a in AGGREGATES]
        parts += [f"Aggregates over runs x games ({len(sg.games)} game"
                  f"{'s' if len(sg.games) != 1 else ''}), normalized score{ci}:", "",
                  _table(["metric", *head], rows), ""]
        if len(groups) > 1:
            rows = [[f"**{x}**", *[("-" if x == y else _est(sg.improvement[x][y]))
                                   for y in groups]] for x in groups]
            parts += [f"Probability of improvement P(row > column){ci}:", "",
                      _table(["P(row > column)", *groups], rows), ""]
        rows = []
        for g in groups:
            for r, run in enumerate(cmp.groups[g]):
                rows.append([run, g, f"{cmp.runs[run]['global_step']:,}",
                             *[_fmt(v) for v in sg.scores[g][r]]])
        parts += ["Every run (normalized score per game):", "",
                  _table(["run", key.split(".")[-1], "step", *sg.games], rows)]
    return "\n".join(parts) + "\n"


CSV_FIELDS = ["split", "kind", "group", "item", "runs", "value", "ci_low", "ci_high"]
"""kind: game (item = game, value = mean normalized score over runs), return (the same for
the mean return), aggregate (item = mean | median | iqm | optimality_gap), improvement
(item = the other group, value = P(group > item)), run (group = the run's group, item =
run:game, value = the run's normalized score)."""


def csv_rows(cmp: GroupComparison) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(split, kind, group, item, runs, e: Estimate) -> None:
        lo, hi = e.ci if e.ci is not None else (None, None)
        rows.append({"split": split, "kind": kind, "group": group, "item": item, "runs": runs,
                     "value": e.value, "ci_low": lo, "ci_high": hi})

    for sg in cmp.splits.values():
        for g, runs in cmp.groups.items():
            for m, game in enumerate(sg.games):
                add(sg.name, "game", g, game, len(runs), sg.per_game[g][m])
                add(sg.name, "return", g, game, len(runs), sg.per_game_return[g][m])
            for a in AGGREGATES:
                add(sg.name, "aggregate", g, a, len(runs), sg.aggregates[g][a])
            for y in cmp.groups:
                if y != g:
                    add(sg.name, "improvement", g, y, len(runs), sg.improvement[g][y])
            for r, run in enumerate(runs):
                for m, game in enumerate(sg.games):
                    add(sg.name, "run", g, f"{run}:{game}", 1,
                        Estimate(float(sg.scores[g][r, m]), None))
    return rows


def to_json(cmp: GroupComparison) -> dict[str, Any]:
    def est_list(xs):
        return [e.to_dict() for e in xs]

    splits = {}
    for sg in cmp.splits.values():
        splits[sg.name] = {
            "description": sg.description,
            "games": sg.games,
            "groups": {g: {
                "runs": cmp.groups[g],
                "scores": sg.scores[g].tolist(),
                "returns": sg.returns[g].tolist(),
                "per_game": dict(zip(sg.games, est_list(sg.per_game[g]), strict=True)),
                "per_game_return": dict(zip(sg.games, est_list(sg.per_game_return[g]),
                                            strict=True)),
                "aggregates": {a: sg.aggregates[g][a].to_dict() for a in AGGREGATES},
                "probability_of_improvement": {y: sg.improvement[g][y].to_dict()
                                               for y in cmp.groups if y != g},
            } for g in cmp.groups},
        }
    return {"format": FORMAT, **cmp.meta, "group_by": cmp.group_by, "groups": cmp.groups,
            "runs": cmp.runs, "trained": cmp.trained, "settings": cmp.settings,
            "single_run_groups": single_run_groups(cmp), "notes": cmp.notes,
            "splits": splits}


def write_group_results(out: Path, cmp: GroupComparison) -> list[Path]:
    """group_table.md, group_table.csv and group_results.json in out."""
    out = Path(out)
    md = to_markdown(cmp)
    _atomic_write(out / "group_table.md", lambda f: f.write(md))
    doc = to_json(cmp)
    _atomic_write(out / "group_results.json",
                  lambda f: json.dump(doc, f, indent=2, allow_nan=False))

    def write_csv(f):
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in csv_rows(cmp):
            w.writerow({k: ("" if v is None or (isinstance(v, float) and not math.isfinite(v))
                            else v) for k, v in r.items()})

    _atomic_write(out / "group_table.csv", write_csv)
    return [out / "group_table.md", out / "group_table.csv", out / "group_results.json"]
