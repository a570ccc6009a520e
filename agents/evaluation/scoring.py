"""Statistics of an evaluation: per-game means, standard errors, normalized scores, and
aggregates (mean and interquartile mean over games) with bootstrap confidence intervals.

The scheme (also in the README's "Evaluation" section):

- Per game: the mean episode return over its N episodes, the standard error
  std(ddof=1) / sqrt(N), and the normalized score of the mean return,
  (R - Rmin) / (Rmax - Rmin). The normalization is linear, so the normalized score of the mean
  equals the mean of the per-episode normalized scores, and its standard error is the return's
  standard error divided by (Rmax - Rmin).
- Aggregates over the games of one agent: the mean of the per-game normalized scores, and the
  interquartile mean (IQM) as rliable computes it, ``scipy.stats.trim_mean(scores, 0.25)``
  on the flattened runs x games matrix; one agent is one run here, so it is over games.
- 95% confidence intervals: percentile bootstrap (``scipy.stats.bootstrap``). For one game:
  episodes resampled with replacement. For the aggregates: a stratified bootstrap in the spirit
  of rliable - each game's episodes are resampled separately (``paired=False`` with one sample
  per game), the per-game means recomputed, then the aggregate. The set of games itself is
  fixed (not resampled): the interval describes the evaluation noise of these games.
  Resamples: ``n_resamples`` (default 9999, scipy's default); the generator is seeded, so the
  intervals are identical for the same seed.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 9999
IQM_TRIM = 0.25
# scipy >= 1.15 names the generator argument `rng`; older releases `random_state`.
_RNG_ARG = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean, std(ddof=1)/sqrt(n); the SE is NaN when n < 2."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_and_se needs at least one value")
    mean = float(x.mean())
    se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size >= 2 else math.nan
    return mean, se


def iqm(values, axis=None) -> float | np.ndarray:
    """Interquartile mean: the mean of the middle 50% (``scipy.stats.trim_mean(x, 0.25)``,
    as rliable). With 4 values it is the mean of the middle 2; with 6, of the middle 4."""
    return stats.trim_mean(np.asarray(values, dtype=np.float64), IQM_TRIM, axis=axis)


def bootstrap_ci(
    samples: Sequence[np.ndarray],
    statistic: Callable[..., np.ndarray],
    *,
    seed: int,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of ``statistic(*samples, axis=-1)``.

    Each array of ``samples`` is resampled on its own (stratified when there are several).
    Returns (nan, nan) when a sample has fewer than 2 values (no spread to resample).
    """
    if any(len(s) < 2 for s in samples) or n_resamples < 1:
        return math.nan, math.nan
    res = stats.bootstrap(
        tuple(np.asarray(s, dtype=np.float64) for s in samples),
        statistic,
        n_resamples=n_resamples,
        confidence_level=CONFIDENCE,
        method="percentile",
        paired=False,
        vectorized=True,
        axis=-1,
        batch=max(1, min(n_resamples, 2000)),
        **{_RNG_ARG: np.random.default_rng(seed)},
    )
    low, high = res.confidence_interval
    return float(low), float(high)


@dataclass
class GameScore:
    """The score of one agent on one game of one split."""

    game: str
    episodes: int
    mean_return: float
    se_return: float
    return_ci: tuple[float, float]
    normalized: float
    normalized_se: float
    normalized_ci: tuple[float, float]

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))


@dataclass
class AggregateScore:
    """Aggregates of the per-game normalized scores of one agent on one split."""

    games: list[str]
    mean: float
    mean_ci: tuple[float, float]
    iqm: float
    iqm_ci: tuple[float, float]

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))


def _jsonable(d: dict) -> dict:
    """NaN -> None and tuples -> lists, so that json.dump writes valid JSON."""

    def fix(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, (tuple, list)):
            return [fix(x) for x in v]
        return v

    return {k: fix(v) for k, v in d.items()}


def score_game(
    game: str,
    returns: Sequence[float],
    normalize: Callable[[float], float],
    *,
    seed: int,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> GameScore:
    """Score one game from its episode returns; ``normalize`` maps a return to a normalized
    score and must be affine (it is, for the Procgen constants)."""
    r = np.asarray(returns, dtype=np.float64)
    mean, se = mean_and_se(r)
    lo, hi = bootstrap_ci([r], _mean_last_axis, seed=seed, n_resamples=n_resamples)
    n0, n1 = normalize(0.0), normalize(1.0)
    scale = n1 - n0
    return GameScore(
        game=game,
        episodes=int(r.size),
        mean_return=mean,
        se_return=se,
        return_ci=(lo, hi),
        normalized=float(normalize(mean)),
        normalized_se=float(abs(scale) * se),
        normalized_ci=tuple(sorted((float(normalize(lo)), float(normalize(hi))))),
    )


def _mean_last_axis(x, axis=-1):
    return np.mean(x, axis=axis)


def aggregate(
    returns_by_game: Mapping[str, Sequence[float]],
    normalizers: Mapping[str, Callable[[float], float]],
    *,
    seed: int,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> AggregateScore:
    """Mean and IQM over games of the per-game normalized scores, with stratified bootstrap
    intervals (episodes resampled within each game)."""
    games = list(returns_by_game)
    if not games:
        raise ValueError("aggregate needs at least one game")
    # Per-episode normalized scores: the normalization is affine, so the mean of these equals
    # the normalized mean return of the game.
    samples = [
        np.array([normalizers[g](float(r)) for r in returns_by_game[g]], dtype=np.float64)
        for g in games
    ]
    per_game = np.array([s.mean() for s in samples])

    def mean_stat(*xs, axis=-1):
        return np.mean(np.stack([x.mean(axis=axis) for x in xs], axis=-1), axis=-1)

    def iqm_stat(*xs, axis=-1):
        return iqm(np.stack([x.mean(axis=axis) for x in xs], axis=-1), axis=-1)

    return AggregateScore(
        games=games,
        mean=float(per_game.mean()),
        mean_ci=bootstrap_ci(samples, mean_stat, seed=seed, n_resamples=n_resamples),
        iqm=float(iqm(per_game)),
        iqm_ci=bootstrap_ci(samples, iqm_stat, seed=seed + 1, n_resamples=n_resamples),
    )
