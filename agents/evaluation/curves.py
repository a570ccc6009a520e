"""Learning curves from runs' TensorBoard logs (RUN_DIR/tb) to PNG.

Reads the scalars the trainer writes (docs/DESIGN.md, convention 6; agents/metrics.py):
``charts/episodic_return/<game>`` per game and ``charts/normalized_score`` (the mean over games
of each game's normalized mean return), against the env step. Curves of several runs share
the axes, one colour per run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from agents.errors import UserError  # noqa: E402

RETURN_PREFIX = "charts/episodic_return/"
SCORE_TAG = "charts/normalized_score"


class CurvesError(UserError, ValueError):
    """A run dir without TensorBoard scalars; one-line message."""


def tb_dir(run: str | Path) -> Path:
    """RUN/tb when it exists, else RUN itself if it holds event files."""
    run = Path(run)
    if not run.exists():
        raise CurvesError(f"run dir {str(run)!r} does not exist")
    if (run / "tb").is_dir():
        return run / "tb"
    if run.is_dir() and any(run.glob("events.out.tfevents.*")):
        return run
    raise CurvesError(f"no TensorBoard log in {str(run)!r} (expected {str(run / 'tb')!r} "
                      "with events.out.tfevents.* files)")


def read_scalars(run: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every scalar tag of a run: tag -> (steps, values), sorted by step (last write wins on
    duplicate steps, as after a resume)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir(run)), size_guidance={"scalars": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags().get("scalars", []):
        by_step = {}
        for ev in acc.Scalars(tag):
            by_step[int(ev.step)] = float(ev.value)
        steps = np.array(sorted(by_step), dtype=np.int64)
        out[tag] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
    return out


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard-style exponential moving average with debiasing (weight in [0, 1))."""
    if weight <= 0 or len(values) == 0:
        return values
    out = np.empty_like(values)
    acc, norm = 0.0, 0.0
    for i, v in enumerate(values):
        acc = weight * acc + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[i] = acc / norm
    return out


def _run_label(run: Path, labels: list[str]) -> str:
    name = run.resolve().name or str(run)
    return name if name not in labels else f"{name}#{len(labels)}"


def plot_learning_curves(
    runs: Sequence[str | Path], out: str | Path, smoothing: float = 0.6
) -> list[Path]:
    """Write learning_curves_games.png (one panel per game: episodic return) and
    learning_curves_score.png (normalized score aggregate) into ``out``; returns the paths.
    Raises CurvesError when a run has no log or no episode scalars at all."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data, labels = [], []
    for run in runs:
        scalars = read_scalars(run)
        if not any(t.startswith(RETURN_PREFIX) or t == SCORE_TAG for t in scalars):
            raise CurvesError(f"run {str(run)!r} has no {RETURN_PREFIX}<game> or {SCORE_TAG} "
                              "scalars yet (has it finished an episode?)")
        label = _run_label(Path(run), labels)
        labels.append(label)
        data.append(scalars)
    games = list(dict.fromkeys(
        t[len(RETURN_PREFIX):] for s in data for t in s if t.startswith(RETURN_PREFIX)
    ))
    written = []
    if games:
        cols = min(3, len(games))
        rows = math.ceil(len(games) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
        for ax, game in zip(axes.flat, games, strict=False):
            for k, (label, s) in enumerate(zip(labels, data, strict=True)):
                if RETURN_PREFIX + game in s:
                    steps, vals = s[RETURN_PREFIX + game]
                    _curve(ax, steps, vals, smoothing, f"C{k}", label)
            ax.set_title(game, fontsize=10)
            ax.set_xlabel("env steps", fontsize=8)
            ax.set_ylabel("episodic return", fontsize=8)
        for ax in list(axes.flat)[len(games):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        fig.suptitle(f"episodic return per game (EMA smoothing {smoothing})", fontsize=10)
        fig.tight_layout()
        written.append(_save(fig, out / "learning_curves_games.png"))
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    drawn = False
    for k, (label, s) in enumerate(zip(labels, data, strict=True)):
        if SCORE_TAG in s:
            steps, vals = s[SCORE_TAG]
            _curve(ax, steps, vals, smoothing, f"C{k}", label)
            drawn = True
    if drawn:
        ax.set_xlabel("env steps")
        ax.set_ylabel("normalized score (mean over games)")
        ax.set_title(f"normalized score (EMA smoothing {smoothing})", fontsize=10)
        ax.legend(fontsize=8)
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, f"no run logged {SCORE_TAG}", ha="center", va="center")
    written.append(_save(fig, out / "learning_curves_score.png"))
    return written


def _curve(ax, steps, vals, smoothing, color, label) -> None:
    if smoothing > 0:
        ax.plot(steps, vals, color=color, alpha=0.25, lw=0.8)
    ax.plot(steps, smooth(vals, smoothing), color=color, lw=1.5, label=label,
            marker="o" if len(steps) < 3 else None, ms=3)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
