"""Plots of a comparison of groups of runs (matplotlib, Agg backend).

- ``group_score_bars``: per game and for each aggregate (mean, median, IQM, optimality gap),
  one bar per group at its estimate with the 95% interval over runs as error bars, and every
  run as a dot. Groups of one run get no error bar (and the title says so).
- ``group_learning_curves``: from the runs' TensorBoard logs, per group the mean over its runs
  of the (EMA-smoothed) curve on a common step grid, and a band from the lowest to the highest
  run; the normalized-score aggregate and one panel per game.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .curves import RETURN_PREFIX, SCORE_TAG, CurvesError, read_scalars, smooth  # noqa: E402
from .group_report import GroupComparison, single_run_groups  # noqa: E402
from .group_stats import AGGREGATE_LABELS, AGGREGATES, Estimate  # noqa: E402

SCORE_PREFIX = SCORE_TAG + "/"


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _bars(ax, groups: list[str], estimates: list[Estimate], points: list[np.ndarray]) -> None:
    x = np.arange(len(groups))
    values = np.array([e.value for e in estimates])
    err = np.zeros((2, len(groups)))
    for i, e in enumerate(estimates):
        if e.ci is not None:
            err[:, i] = [max(0.0, e.value - e.ci[0]), max(0.0, e.ci[1] - e.value)]
    colors = [f"C{i}" for i in range(len(groups))]
    ax.bar(x, values, 0.6, color=colors, alpha=0.6, yerr=err, capsize=4)
    ax.scatter(x, values, marker="_", s=400, color=colors, zorder=2)  # visible at 0 too
    for i, pts in enumerate(points):
        ax.scatter(np.full(len(pts), x[i]) + np.linspace(-0.12, 0.12, len(pts)), pts, s=10,
                   color="black", zorder=3)
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_xticks(x, groups, rotation=30, ha="right", fontsize=8)


def group_score_bars(cmp: GroupComparison, split: str, path: Path) -> Path:
    """One panel per game and per aggregate; bars = estimates, error bars = 95% CI over runs,
    dots = the runs (for the aggregates: each run's value of the metric over the games)."""
    from .group_stats import aggregate_functions

    sg = cmp.splits[split]
    groups = list(cmp.groups)
    funcs = aggregate_functions()
    panels = [("game", g) for g in sg.games] + [("aggregate", a) for a in AGGREGATES]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.0 * rows), squeeze=False)
    for ax, (kind, item) in zip(axes.flat, panels, strict=False):
        if kind == "game":
            m = sg.games.index(item)
            _bars(ax, groups, [sg.per_game[g][m] for g in groups],
                  [sg.scores[g][:, m] for g in groups])
            ax.set_title(item, fontsize=9)
        else:
            _bars(ax, groups, [sg.aggregates[g][item] for g in groups],
                  [np.array([funcs[item](row[None, :]) for row in sg.scores[g]])
                   for g in groups])
            ax.set_title(AGGREGATE_LABELS[item], fontsize=9)
        ax.set_ylabel("normalized score", fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    single = single_run_groups(cmp)
    ci = ("no run-level CI (one run per group)" if len(single) == len(groups) else
          "bars: 95% bootstrap CI over runs" + (f" (none for {', '.join(single)}: one run)"
                                                if single else ""))
    fig.suptitle(f"{sg.name} ({sg.description}), grouped by {cmp.group_by}; dots: runs; {ci}",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _grid_mean(curves: list[tuple[np.ndarray, np.ndarray]]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Curves (steps, values) -> (grid, mean, low, high) over the steps every run reached:
    the grid is the shortest run's steps; the others are linearly interpolated onto it."""
    end = min(s[-1] for s, _ in curves)
    ref = min(curves, key=lambda c: len(c[0]))[0]
    grid = ref[ref <= end]
    values = np.stack([np.interp(grid, s, v) for s, v in curves])
    return grid, values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def group_learning_curves(groups: Mapping[str, Sequence[Path]], path: Path,
                          smoothing: float = 0.6, title: str = "") -> Path | None:
    """Mean curve per group with a min-max band over its runs; None when no run has episode
    scalars. Runs without a log are left out with a warning."""
    data: dict[str, list[dict]] = {}
    for label, runs in groups.items():
        for run in runs:
            try:
                scalars = read_scalars(run)
            except CurvesError as e:
                print(f"warning: learning curves: {e}", file=sys.stderr)
                continue
            data.setdefault(label, []).append(scalars)
    if not data:
        return None
    tags: list[tuple[str, str]] = [(SCORE_TAG, "normalized score (mean over games)")]
    games = list(dict.fromkeys(t[len(RETURN_PREFIX):] for runs in data.values()
                               for s in runs for t in s if t.startswith(RETURN_PREFIX)))
    if len(games) > 1 or not any(SCORE_TAG in s for runs in data.values() for s in runs):
        for g in games:
            tag = (SCORE_PREFIX + g if any(SCORE_PREFIX + g in s for runs in data.values()
                                            for s in runs) else RETURN_PREFIX + g)
            tags.append((tag, g + (" (normalized)" if tag.startswith(SCORE_PREFIX)
                                   else " (return)")))
    tags = [(t, label) for t, label in tags
            if any(t in s for runs in data.values() for s in runs)]
    if not tags:
        return None
    cols = min(3, len(tags))
    rows = math.ceil(len(tags) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows), squeeze=False)
    for ax, (tag, label) in zip(axes.flat, tags, strict=False):
        for k, (group, runs) in enumerate(data.items()):
            curves = [(s[tag][0], smooth(s[tag][1], smoothing)) for s in runs
                      if tag in s and len(s[tag][0])]
            if not curves:
                continue
            grid, mean, low, high = _grid_mean(curves)
            n = len(curves)
            ax.plot(grid, mean, color=f"C{k}", lw=1.6, label=f"{group} ({n} run"
                    f"{'s' if n != 1 else ''})", marker="o" if len(grid) < 3 else None, ms=3)
            if n > 1:
                ax.fill_between(grid, low, high, color=f"C{k}", alpha=0.2, lw=0)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("env steps", fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tags):]:
        ax.axis("off")
    fig.suptitle((title + ": " if title else "") + "mean over runs, band: lowest to highest "
                 f"run (EMA smoothing {smoothing})", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
