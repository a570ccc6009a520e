"""Statistics over groups of runs (agents/evaluation/group_stats.py) against values worked out
by hand on fixed score matrices, and the group table's honesty about single-run groups."""

from __future__ import annotations

import numpy as np
import pytest

from agents.evaluation import group_stats as gs

# Group A: 3 runs x 3 games; group B: 2 runs x 3 games (rows = runs, columns = games).
A = np.array([[0.2, 0.9, 0.0],
              [0.4, 0.5, 0.3],
              [0.6, 1.3, 0.3]])
B = np.array([[0.4, 0.9, 0.1],
              [0.1, 1.0, 0.3]])


def test_aggregates_match_hand_computed_values():
    a = gs.aggregates(A, reps=200, seed=0)
    # per-game means over runs: 0.4, 0.9, 0.2
    assert a["mean"].value == pytest.approx(0.5)  # (0.4 + 0.9 + 0.2) / 3
    assert a["median"].value == pytest.approx(0.4)  # median of 0.4, 0.9, 0.2
    # IQM: the 9 scores sorted 0.0 0.2 0.3 0.3 0.4 0.5 0.6 0.9 1.3, 2 cut at each end:
    # (0.3 + 0.3 + 0.4 + 0.5 + 0.6) / 5
    assert a["iqm"].value == pytest.approx(0.42)
    # optimality gap: 1 - mean(min(score, 1)) = 1 - 4.2 / 9
    assert a["optimality_gap"].value == pytest.approx(1 - 4.2 / 9)
    b = gs.aggregates(B, reps=200, seed=0)
    assert b["mean"].value == pytest.approx(1.4 / 3)  # per game 0.25, 0.95, 0.2
    assert b["median"].value == pytest.approx(0.25)
    assert b["iqm"].value == pytest.approx(0.425)  # 0.1 0.1 [0.3 0.4 0.9 1.0]... middle 4
    assert b["optimality_gap"].value == pytest.approx(1 - 2.8 / 6)
    per_game = gs.per_game(A, reps=200, seed=0)
    assert [e.value for e in per_game] == pytest.approx([0.4, 0.9, 0.2])


def test_probability_of_improvement_matches_hand_computed_value_and_rliable():
    from rliable import metrics

    # game 1: A {0.2, 0.4, 0.6} vs B {0.4, 0.1}: wins 1 + (0.5 + 1) + 2 = 4.5 of 6
    # game 2: A {0.9, 0.5, 1.3} vs B {0.9, 1.0}: 0.5 + 0 + 2 = 2.5 of 6
    # game 3: A {0.0, 0.3, 0.3} vs B {0.1, 0.3}: 0 + 1.5 + 1.5 = 3 of 6
    expected = (4.5 / 6 + 2.5 / 6 + 3 / 6) / 3
    assert gs.probability_of_improvement(A, B) == pytest.approx(expected)
    assert gs.probability_of_improvement(A, B) == pytest.approx(
        metrics.probability_of_improvement(A, B))
    rng = np.random.default_rng(3)
    for _ in range(5):
        x = rng.integers(0, 4, (int(rng.integers(1, 5)), 4)) / 4  # ties on purpose
        y = rng.integers(0, 4, (int(rng.integers(1, 5)), 4)) / 4
        assert gs.probability_of_improvement(x, y) == pytest.approx(
            metrics.probability_of_improvement(x, y))


def test_probability_of_improvement_of_a_group_over_itself_is_one_half():
    m = gs.improvement_matrix({"a": A, "b": B}, reps=300, seed=1)
    assert m["a"]["a"].value == 0.5 and m["b"]["b"].value == 0.5
    assert gs.probability_of_improvement(A, A) == 0.5
    assert m["a"]["b"].value + m["b"]["a"].value == pytest.approx(1.0)
    lo, hi = m["a"]["b"].ci
    assert 0.0 <= lo <= m["a"]["b"].value <= hi <= 1.0
    assert m["b"]["a"].ci == pytest.approx((1 - hi, 1 - lo))


def test_intervals_are_over_runs_seeded_and_absent_for_one_run():
    first = gs.aggregates(A, reps=500, seed=7)
    again = gs.aggregates(A, reps=500, seed=7)
    for name in gs.AGGREGATES:
        assert first[name].ci == again[name].ci  # same seed, same interval
        lo, hi = first[name].ci
        assert lo <= first[name].value <= hi
    for m, e in enumerate(gs.per_game(A, reps=500, seed=7)):
        # a mean of resampled runs lies between the lowest and the highest run
        assert A[:, m].min() <= e.ci[0] <= e.value <= e.ci[1] <= A[:, m].max()
    one = gs.aggregates(A[:1], reps=500, seed=7)
    assert all(e.ci is None for e in one.values())
    assert one["mean"].value == pytest.approx(A[0].mean())
    m = gs.improvement_matrix({"a": A, "one": B[:1]}, reps=100, seed=0)
    assert m["a"]["one"].ci is None and m["one"]["a"].ci is None


def test_single_run_groups_are_reported_without_intervals():
    from agents.evaluation.group_report import GroupComparison, SplitGroups, to_markdown

    scores = {"srwm": A[:1], "lstm": B[:1]}
    sg = SplitGroups("test1", "levels 1000+200, easy", ["g1", "g2", "g3"], scores,
                     {k: v * 10 for k, v in scores.items()})
    for k, v in scores.items():
        sg.per_game[k] = gs.per_game(v, reps=100, seed=0)
        sg.per_game_return[k] = gs.per_game(v * 10, reps=100, seed=0)
        sg.aggregates[k] = gs.aggregates(v, reps=100, seed=0)
    sg.improvement = gs.improvement_matrix(scores, reps=100, seed=0)
    runs = {"srwm_s0": {"global_step": 10, "group": "srwm"},
            "lstm_s0": {"global_step": 10, "group": "lstm"}}
    cmp = GroupComparison(
        group_by="model.core", groups={"srwm": ["srwm_s0"], "lstm": ["lstm_s0"]}, runs=runs,
        trained={"games": ["g1", "g2", "g3"], "algo": "ppo", "distribution_mode": "easy",
                 "start_level": 0, "num_levels": 200},
        settings={"episodes_per_game": 5, "greedy": True, "state_reset": "as trained",
                  "seed": 0, "bootstrap_resamples": 100}, splits={"test1": sg})
    md = to_markdown(cmp)
    assert "One run per group: there are no run-level confidence intervals" in md
    body = md.split("## test1")[1]
    assert "[" not in body  # no interval anywhere in the tables
