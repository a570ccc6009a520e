"""Statistics over groups of runs: the uncertainty that comes from training seeds.

Input: for each group, a score matrix ``[runs, games]``, where entry (n, m) is run n's
normalized score on game m (the normalized score of its mean return over the evaluation
episodes). Everything is computed with ``rliable`` (Agarwal et al., NeurIPS 2021), the field's
library for this:

- Per game: the mean over runs, with a 95% percentile bootstrap interval over runs.
- Aggregates over runs x games: ``mean`` (of the per-game means), ``median`` (of the per-game
  means), ``iqm`` (interquartile mean: the 25% trimmed mean of all runs x games scores) and
  ``optimality_gap`` (how far the scores fall short of 1 on average, scores above 1 counted as
  1; lower is better), each with a 95% stratified percentile bootstrap interval: runs are
  resampled with replacement within each game, the games are kept (rliable's default,
  ``task_bootstrap=False``).
- Probability of improvement P(X > Y): the probability that a run of group X scores higher
  than a run of group Y on a game picked at random (ties count one half), averaged over games,
  with a 95% interval from resampling the runs of X and of Y independently within each game.
  P(X > Y) + P(Y > X) = 1, and P(X > X) = 0.5 exactly.

A group with one run has no run-level interval: its ``ci`` is None (a bootstrap of one run
would give a zero-width interval that means nothing). The same for a probability of
improvement that involves such a group. Intervals from 2 or 3 runs are coarse (few distinct
resamples); they are still reported, with the run count next to them.

The probability of improvement is computed here with a vectorised form of rliable's
``metrics.probability_of_improvement`` (the Mann-Whitney U statistic / (n_x n_y), which that
function gets from scipy one game at a time) because the bootstrap calls it thousands of times;
the tests check that both agree. The bootstrap itself is rliable's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
AGGREGATES = ("mean", "median", "iqm", "optimality_gap")
"""The aggregate metrics, in report order."""
AGGREGATE_LABELS = {"mean": "mean", "median": "median", "iqm": "IQM",
                    "optimality_gap": "optimality gap (lower is better)"}


@dataclass
class Estimate:
    """A point estimate with its 95% interval over runs (None where there is none)."""

    value: float
    ci: tuple[float, float] | None

    def to_dict(self) -> dict:
        return {"value": _finite(self.value),
                "ci": None if self.ci is None else [_finite(self.ci[0]), _finite(self.ci[1])]}


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _rliable():
    """rliable's library and metrics modules (imported on first use: it takes seconds)."""
    from rliable import library, metrics

    return library, metrics


def aggregate_functions() -> dict[str, object]:
    """{metric: f(scores [runs, games]) -> float}, rliable's estimators."""
    _, metrics = _rliable()
    return {"mean": metrics.aggregate_mean, "median": metrics.aggregate_median,
            "iqm": metrics.aggregate_iqm, "optimality_gap": metrics.aggregate_optimality_gap}


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) of score matrices x [runs_x, games], y [runs_y, games]: per game the
    fraction of (run of x, run of y) pairs where x's score is higher, ties counting 1/2,
    averaged over games (= rliable.metrics.probability_of_improvement)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    diff = x[:, None, :] - y[None, :, :]  # [runs_x, runs_y, games]
    wins = (diff > 0).mean(axis=(0, 1)) + 0.5 * (diff == 0).mean(axis=(0, 1))
    return float(wins.mean())


def _check(scores: np.ndarray, what: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 1:
        raise ValueError(f"{what}: expected a [runs, games] matrix, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"{what}: scores must be finite")
    return scores


def _interval(data, func, *, reps: int, seed: int) -> tuple[float, float] | None:
    """rliable's stratified bootstrap percentile interval of func(*data); data is one
    [runs, games] matrix or a list of them (resampled independently)."""
    if reps < 1:
        return None
    library, _ = _rliable()
    key = "x"
    # rliable's stratified resampling draws its indices from numpy's global generator (its
    # random_state argument only reaches arch), so that generator is seeded here and restored
    saved = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        with warnings.catch_warnings():
            # arch, rliable's bootstrap engine, deprecates the RandomState rliable passes it
            warnings.simplefilter("ignore", FutureWarning)
            _, intervals = library.get_interval_estimates(
                {key: data}, lambda *a: np.array([func(*a)]), method="percentile", reps=reps,
                confidence_interval_size=CONFIDENCE, random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(saved)
    low, high = (float(v) for v in np.asarray(intervals[key]).reshape(2))
    return low, high


def per_game(scores: np.ndarray, *, reps: int, seed: int) -> list[Estimate]:
    """Mean over runs of each game, with the bootstrap interval over runs (None for 1 run)."""
    scores = _check(scores, "per_game")
    _, metrics = _rliable()
    out = []
    for m in range(scores.shape[1]):
        column = scores[:, [m]]
        ci = (_interval(column, metrics.aggregate_mean, reps=reps, seed=seed + m)
              if scores.shape[0] >= 2 else None)
        out.append(Estimate(float(column.mean()), ci))
    return out


def aggregates(scores: np.ndarray, *, reps: int, seed: int) -> dict[str, Estimate]:
    """mean, median, IQM and optimality gap over runs x games, with stratified bootstrap
    intervals over runs (None for 1 run)."""
    scores = _check(scores, "aggregates")
    out = {}
    for k, (name, func) in enumerate(aggregate_functions().items()):
        ci = (_interval(scores, func, reps=reps, seed=seed + k)
              if scores.shape[0] >= 2 else None)
        out[name] = Estimate(float(func(scores)), ci)
    return out


def improvement_matrix(groups: Mapping[str, np.ndarray], *, reps: int, seed: int
                       ) -> dict[str, dict[str, Estimate]]:
    """{x: {y: P(x > y)}} for every ordered pair of groups (x == y included: 0.5), with the
    independent stratified bootstrap interval (None when x or y has one run; for x == y)."""
    names = list(groups)
    mats = {n: _check(groups[n], f"group {n!r}") for n in names}
    games = {m.shape[1] for m in mats.values()}
    if len(games) > 1:
        raise ValueError(f"groups have different numbers of games: {sorted(games)}")
    out: dict[str, dict[str, Estimate]] = {n: {} for n in names}
    for i, x in enumerate(names):
        out[x][x] = Estimate(probability_of_improvement(mats[x], mats[x]), None)
        for j in range(i + 1, len(names)):
            y = names[j]
            value = probability_of_improvement(mats[x], mats[y])
            ci = None
            if mats[x].shape[0] >= 2 and mats[y].shape[0] >= 2:
                ci = _interval([mats[x], mats[y]], probability_of_improvement, reps=reps,
                               seed=seed + 101 * i + j)
            out[x][y] = Estimate(value, ci)
            # the same resamples give the complement: P(y > x) = 1 - P(x > y)
            out[y][x] = Estimate(1.0 - value, None if ci is None else (1.0 - ci[1],
                                                                       1.0 - ci[0]))
    return out
