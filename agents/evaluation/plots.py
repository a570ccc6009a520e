"""PNG plots of an evaluation (matplotlib, Agg backend; nothing is shown on screen).

- ``score_bars``: normalized score per game and the aggregates, one bar per agent, with the
  bootstrap 95% intervals as error bars.
- ``episode_index_plot``: return by episode index within each env's continuous stream of
  episodes - does the agent improve over consecutive episodes while its state carries?
- ``state_metrics_plot``: the size of the self-modification (``policy.state_metrics``) of the
  carried state over steps; for cores without self-modification, their state norm or a plain
  statement that the core has no state.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .report import AgentResult  # noqa: E402
from .runner import Episode  # noqa: E402

SELF_MODIFYING_CORES = {"srwm": "self-modification |W - W0|", "deltanet": "fast weight |F|"}


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _yerr(values, cis) -> np.ndarray:
    lo = [v - c[0] if c[0] is not None and math.isfinite(c[0]) else 0.0
          for v, c in zip(values, cis, strict=True)]
    hi = [c[1] - v if c[1] is not None and math.isfinite(c[1]) else 0.0
          for v, c in zip(values, cis, strict=True)]
    return np.maximum(0.0, np.array([lo, hi]))


def score_bars(agents: list[AgentResult], split: str, path: Path) -> Path:
    """Grouped bars: x = games + mean + IQM, one bar per agent, 95% CI error bars."""
    present = [(a, a.splits[split]) for a in agents if split in a.splits]
    games = list(dict.fromkeys(g for _, s in present for g in s.games))
    labels = games + ["mean", "IQM"]
    width = 0.8 / max(1, len(present))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels) * max(1, len(present)) ** 0.5), 4))
    x = np.arange(len(labels))
    for k, (a, s) in enumerate(present):
        vals, cis = [], []
        for g in games:
            gs = s.games.get(g)
            vals.append(gs.normalized if gs else np.nan)
            cis.append(gs.normalized_ci if gs else (None, None))
        vals += [s.aggregate.mean, s.aggregate.iqm]
        cis += [s.aggregate.mean_ci, s.aggregate.iqm_ci]
        ax.bar(x + (k - (len(present) - 1) / 2) * width, vals, width, yerr=_yerr(vals, cis),
               capsize=3, label=a.name)
    ax.axvline(len(games) - 0.5, color="grey", lw=0.8, ls=":")
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel("normalized score")
    first = present[0][1]
    ax.set_title(f"{split}: levels {first.start_level}+{first.num_levels} "
                 f"({first.distribution_mode}), 95% bootstrap CI")
    ax.legend(fontsize=8)
    return _save(fig, path)


def episode_index_plot(
    episodes: list[Episode],
    normalize: dict[str, Callable[[float], float]],
    path: Path,
    title: str,
) -> Path:
    """Mean return (+- SE over envs) by episode index in each env's stream, one panel per game,
    plus the mean normalized score over games by episode index."""
    by_game: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for e in episodes:
        by_game[e.game][e.index].append(e.ret)
    games = list(by_game)
    panels = len(games) + 1
    cols = min(4, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    agg: dict[int, list[float]] = defaultdict(list)
    for ax, g in zip(axes.flat, games, strict=False):
        idx = sorted(by_game[g])
        means = np.array([np.mean(by_game[g][i]) for i in idx])
        ses = np.array([np.std(by_game[g][i], ddof=1) / math.sqrt(len(by_game[g][i]))
                        if len(by_game[g][i]) > 1 else 0.0 for i in idx])
        ax.errorbar(idx, means, yerr=ses, marker="o", ms=3, capsize=2)
        ax.set_title(g, fontsize=9)
        ax.set_xlabel("episode index in env stream", fontsize=8)
        ax.set_ylabel("return", fontsize=8)
        for i, m in zip(idx, means, strict=True):
            agg[i].append(normalize[g](float(m)))
    ax = axes.flat[len(games)]
    idx = sorted(i for i in agg if len(agg[i]) == len(games))
    ax.plot(idx, [np.mean(agg[i]) for i in idx], marker="o", ms=3, color="C3")
    ax.set_title("mean normalized score over games", fontsize=9)
    ax.set_xlabel("episode index in env stream", fontsize=8)
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def state_metrics_plot(
    metrics: list[dict[str, float]],
    episode_ends_env0: list[int],
    core: str,
    path: Path,
    title: str,
) -> Path:
    """Each state metric against the step: the mean over the envs still playing and env 0
    alone (its episode ends marked by dotted lines). Says plainly when there is nothing."""
    names = sorted({k for row in metrics for k in row if k != "step" and not k.startswith("env0/")})
    fig, ax = plt.subplots(figsize=(8, 3.6))
    if not names:
        ax.axis("off")
        ax.text(0.5, 0.5, f"core '{core}' has no state to measure:\nno self-modification, "
                "no state norm (policy.state_metrics is empty)", ha="center", va="center",
                fontsize=11)
        ax.set_title(title, fontsize=10)
        return _save(fig, path)
    what = SELF_MODIFYING_CORES.get(core)
    for k, name in enumerate(names):
        rows = [r for r in metrics if name in r]
        ax.plot([r["step"] for r in rows], [r[name] for r in rows], color=f"C{k}",
                label=f"{name} (mean over playing envs)")
        rows0 = [r for r in metrics if "env0/" + name in r]
        if rows0:
            ax.plot([r["step"] for r in rows0], [r["env0/" + name] for r in rows0],
                    color=f"C{k}", lw=0.8, alpha=0.6, ls="--", label=f"{name} (env 0)")
    for i, s in enumerate(episode_ends_env0):
        ax.axvline(s, color="grey", lw=0.5, ls=":", label="env 0 episode end" if i == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(what or "state norm")
    note = "" if what else f" - core '{core}' does not modify itself; its state norm is shown"
    ax.set_title(title + note, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)
