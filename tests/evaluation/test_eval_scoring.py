"""The scoring math against hand-computed values."""

import math

import numpy as np
import pytest

from agents.evaluation.scoring import aggregate, bootstrap_ci, iqm, mean_and_se, score_game
from envs import normalized_score


def test_mean_and_standard_error_by_hand():
    mean, se = mean_and_se([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    # sample variance = (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3; se = sqrt(5/3) / 2
    assert se == pytest.approx(math.sqrt(5 / 3) / 2)
    mean, se = mean_and_se([7.0])
    assert mean == 7.0 and math.isnan(se)


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm([1, 2, 3, 4]) == pytest.approx(2.5)  # mean of 2, 3
    assert iqm([0, 1, 2, 3, 4, 5, 6, 100]) == pytest.approx(3.5)  # mean of 2, 3, 4, 5
    assert iqm([10, 1, 2, 3, 4, -50]) == pytest.approx(2.5)  # 6 values: drop one on each side


def test_normalized_score_of_a_game_by_hand():
    # bigfish easy: Rmin 1, Rmax 40 (docs/SPEC.md, section 5)
    returns = [1.0, 40.0, 1.0, 40.0]
    s = score_game("bigfish", returns, lambda r: normalized_score("bigfish", r, "easy"),
                   seed=0, n_resamples=200)
    assert s.episodes == 4
    assert s.mean_return == pytest.approx(20.5)
    assert s.normalized == pytest.approx(0.5)
    assert s.se_return == pytest.approx(np.std(returns, ddof=1) / 2)
    assert s.normalized_se == pytest.approx(s.se_return / 39.0)
    lo, hi = s.normalized_ci
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
    # the normalized interval is the return interval mapped by the affine normalization
    assert lo == pytest.approx((s.return_ci[0] - 1) / 39)
    assert hi == pytest.approx((s.return_ci[1] - 1) / 39)


def test_aggregate_mean_and_iqm_by_hand():
    # identity normalization: per-game means 2, 1/3, 16/3, 1
    returns = {"a": [1, 2, 3], "b": [0, 0, 1], "c": [5, 5, 6], "d": [1, 1, 1]}
    agg = aggregate(returns, {g: (lambda r: r) for g in returns}, seed=0, n_resamples=500)
    assert agg.games == ["a", "b", "c", "d"]
    assert agg.mean == pytest.approx((2 + 1 / 3 + 16 / 3 + 1) / 4)
    assert agg.iqm == pytest.approx((1 + 2) / 2)
    assert agg.mean_ci[0] <= agg.mean <= agg.mean_ci[1]
    assert agg.iqm_ci[0] <= agg.iqm <= agg.iqm_ci[1]


def test_aggregate_normalizes_each_game_with_its_own_constants():
    returns = {"bigfish": [1.0, 40.0], "maze": [10.0, 10.0]}  # 0.5 and 1.0
    norms = {g: (lambda r, g=g: normalized_score(g, r, "easy")) for g in returns}
    agg = aggregate(returns, norms, seed=0, n_resamples=100)
    assert agg.mean == pytest.approx(0.75)
    assert agg.iqm == pytest.approx(0.75)  # two values: nothing trimmed


def test_bootstrap_is_deterministic_given_the_seed():
    x = np.arange(20.0)
    a = bootstrap_ci([x], lambda v, axis=-1: v.mean(axis=axis), seed=3, n_resamples=300)
    b = bootstrap_ci([x], lambda v, axis=-1: v.mean(axis=axis), seed=3, n_resamples=300)
    c = bootstrap_ci([x], lambda v, axis=-1: v.mean(axis=axis), seed=4, n_resamples=300)
    assert a == b
    assert a != c


def test_constant_and_single_episode_samples():
    s = score_game("g", [3.0, 3.0, 3.0], lambda r: r, seed=0, n_resamples=100)
    assert s.se_return == 0.0 and s.return_ci == (3.0, 3.0)
    s = score_game("g", [3.0], lambda r: r, seed=0, n_resamples=100)
    assert math.isnan(s.se_return) and all(math.isnan(v) for v in s.return_ci)
    assert s.to_dict()["return_ci"] == [None, None]  # valid JSON


def test_aggregate_interval_is_a_stratified_bootstrap():
    """Our interval matches a hand-written stratified percentile bootstrap (episodes
    resampled within each game, games fixed)."""
    rng = np.random.default_rng(0)
    games = {"a": rng.normal(0, 1, 15), "b": rng.normal(3, 2, 25), "c": rng.normal(1, 0.5, 10)}
    agg = aggregate(games, {g: (lambda r: r) for g in games}, seed=1, n_resamples=4000)
    ref_rng = np.random.default_rng(123)
    stats = []
    for _ in range(4000):
        means = [ref_rng.choice(v, size=len(v), replace=True).mean() for v in games.values()]
        stats.append(np.mean(means))
    lo, hi = np.percentile(stats, [2.5, 97.5])
    assert agg.mean_ci[0] == pytest.approx(lo, abs=0.08)
    assert agg.mean_ci[1] == pytest.approx(hi, abs=0.08)
