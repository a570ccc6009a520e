"""agents.evaluation.stream: the adaptation statistics on a fixed episode table, against values
worked out by hand (only the t quantiles come from scipy)."""

import math

import pytest
from scipy import stats

from agents.evaluation.stream import (
    ALL_GAMES,
    StreamEpisode,
    adaptation_gap,
    carried_minus_fresh,
    curve,
    default_windows,
    summarize,
    t_interval,
    welch_difference,
)

# (slot, segment, game, scores by since_switch) in the carried mode; segment 0 starts the
# stream (no switch before it)
CARRIED = [
    (0, 0, "A", [0.0, 0.5]), (0, 1, "B", [0.2, 0.4, 0.6]), (0, 2, "A", [0.1, 0.7]),
    (1, 0, "A", [0.3, 0.9]), (1, 1, "B", [0.0, 0.2, 0.4]), (1, 2, "A", [0.5, 0.9]),
]
# the fresh mode differs only in the first episode after each switch
FRESH_FIRST = {(0, 1): 0.0, (0, 2): 0.1, (1, 1): 0.0, (1, 2): 0.3}


def table():
    rows = []
    for mode in ("carried", "fresh"):
        index = {0: 0, 1: 0}
        for slot, seg, game, scores in CARRIED:
            for j, s in enumerate(scores):
                if mode == "fresh" and j == 0 and (slot, seg) in FRESH_FIRST:
                    s = FRESH_FIRST[(slot, seg)]
                rows.append(StreamEpisode(mode=mode, slot=slot, index=index[slot], game=game,
                                          segment=seg, since_switch=j, ret=10 * s, score=s))
                index[slot] += 1
    return rows


def t(df):
    return stats.t.ppf(0.975, df)


def close(iv, n, mean, half):
    assert iv.n == n
    assert iv.mean == pytest.approx(mean, abs=1e-12)
    assert iv.low == pytest.approx(mean - half, abs=1e-9)
    assert iv.high == pytest.approx(mean + half, abs=1e-9)


def test_t_interval_by_hand():
    # 0.1, 0.5: mean 0.3, sd sqrt(0.08), half = t(1) * sqrt(0.08) / sqrt(2) = t(1) * 0.2
    close(t_interval([0.1, 0.5]), 2, 0.3, t(1) * 0.2)
    one = t_interval([0.4])
    assert one.n == 1 and one.mean == 0.4 and math.isnan(one.low) and math.isnan(one.high)
    assert t_interval([]).n == 0 and math.isnan(t_interval([]).mean)


def test_curves_leave_out_the_first_segment():
    rows = table()
    a = curve(rows, "carried", "A")
    assert [j for j, _ in a] == [0, 1]
    close(a[0][1], 2, 0.3, t(1) * 0.2)            # 0.1, 0.5 (not 0.0, 0.3 of segment 0)
    close(a[1][1], 2, 0.8, t(1) * 0.1)            # 0.7, 0.9: sd sqrt(0.02), / sqrt(2) = 0.1
    b = curve(rows, "carried", "B")
    assert [round(iv.mean, 12) for _, iv in b] == [0.1, 0.3, 0.5]
    pooled = curve(rows, "carried", ALL_GAMES)
    # j = 0: 0.1, 0.5, 0.2, 0.0 -> mean 0.2, squares of deviations .01+.09+0+.04 = .14
    close(pooled[0][1], 4, 0.2, t(3) * math.sqrt(0.14 / 3) / 2)
    assert pooled[2][1].n == 2 and pooled[2][1].mean == pytest.approx(0.5)  # only B has j=2


def test_adaptation_gap_by_hand():
    rows = table()
    g = adaptation_gap(rows, "carried", "A", early=1, steady=1)
    # early: after a switch, j < 1: 0.1, 0.5. steady: j >= 1 in any segment: .5 .7 .9 .9
    close(g.early, 2, 0.3, t(1) * 0.2)
    assert g.steady.n == 4 and g.steady.mean == pytest.approx(0.75)
    ve, vs = 0.08 / 2, (0.0625 + 0.0025 + 0.0225 + 0.0225) / 3 / 4
    df = (ve + vs) ** 2 / (ve ** 2 / 1 + vs ** 2 / 3)
    close(g.gap, 6, 0.45, t(df) * math.sqrt(ve + vs))
    # wider windows: early j < 2 after a switch (.1 .7 .5 .9), steady j >= 2: A has none
    w = adaptation_gap(rows, "carried", "A", early=2, steady=2)
    assert w.early.mean == pytest.approx(0.55) and w.steady.n == 0 and math.isnan(w.gap.mean)
    b = adaptation_gap(rows, "carried", "B", early=1, steady=2)
    assert b.early.mean == pytest.approx(0.1) and b.steady.mean == pytest.approx(0.5)
    assert b.gap.mean == pytest.approx(0.4)
    with pytest.raises(ValueError, match="1 <= early <= steady"):
        adaptation_gap(rows, "carried", "A", early=2, steady=1)


def test_welch_difference_edge_cases():
    assert welch_difference([1.0, 1.0], [0.0, 0.0]).low == 1.0  # no spread: a point
    assert math.isnan(welch_difference([1.0], [0.0, 2.0]).low)
    assert math.isnan(welch_difference([], [0.0]).mean)


def test_carried_minus_fresh_is_paired_by_slot_and_episode():
    rows = table()
    # first episodes after a switch: carried .2 .1 .0 .5, fresh .0 .1 .0 .3 -> .2 0 0 .2
    close(carried_minus_fresh(rows, early=1), 4, 0.1, t(3) * math.sqrt(0.04 / 3) / 2)
    a = carried_minus_fresh(rows, "A", early=1)   # slots 0, 1 segment 2: 0 and .2
    close(a, 2, 0.1, t(1) * 0.1)
    # the fresh gap uses the fresh scores: early .1 .3 for A, steady as carried
    f = adaptation_gap(rows, "fresh", "A", early=1, steady=1)
    assert f.early.mean == pytest.approx(0.2) and f.gap.mean == pytest.approx(0.55)
    bad = [r if r.mode == "carried" or r.index != 2 else
           StreamEpisode("fresh", r.slot, r.index, "Z", r.segment, r.since_switch, 0, 0)
           for r in rows]
    with pytest.raises(ValueError, match="not the same stream"):
        carried_minus_fresh(bad, early=1)


def test_summarize_has_every_game_then_all_games():
    out = summarize(table(), ["A", "B"], early=1, steady=1)
    assert [s.game for s in out] == ["A", "B", ALL_GAMES]
    assert out[0].carried.gap.mean == pytest.approx(0.45)
    d = out[2].to_dict()
    assert d["curve"]["carried"][0]["since_switch"] == 0
    assert d["carried"]["gap"]["n"] == out[2].carried.gap.n


def test_default_windows():
    assert default_windows(3) == (1, 1)
    assert default_windows(20) == (1, 10)
    assert default_windows(20, early=3) == (3, 10)
    assert default_windows(4, early=3) == (3, 3)
    assert default_windows(4, steady=1) == (1, 1)
