"""Names, aliases, splits and normalized scores (pure Python, no ProcGen)."""

import math

import pytest

from envs import GAMES, SPLITS, SYNTHETIC_TASKS, normalized_score, resolve_games
from envs.games import SCORE_RANGES


def test_sixteen_distinct_games_and_two_tasks():
    assert len(GAMES) == 16 and len(set(GAMES)) == 16
    assert {"bigfish", "starpilot", "maze", "coinrun"} <= set(GAMES)
    assert SYNTHETIC_TASKS == ("cue-recall", "switching-bandit")


def test_aliases_expand_in_documented_order():
    assert resolve_games("all") == list(GAMES)
    assert resolve_games("paper6") == ["bigfish", "fruitbot", "maze", "leaper", "plunder",
                                       "starpilot"]
    assert resolve_games("memory4") == ["dodgeball", "heist", "maze", "miner"]


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("maze", ["maze"]),
        (" Maze , BIGFISH ", ["maze", "bigfish"]),
        ("maze,maze,bigfish,maze", ["maze", "bigfish"]),
        (["starpilot", "maze,bigfish"], ["starpilot", "maze", "bigfish"]),
        ("maze,paper6", ["maze", "bigfish", "fruitbot", "leaper", "plunder", "starpilot"]),
        ("memory4,paper6", ["dodgeball", "heist", "maze", "miner", "bigfish", "fruitbot",
                            "leaper", "plunder", "starpilot"]),
        ("bigfish,", ["bigfish"]),
        ("cue-recall", ["cue-recall"]),
        (("switching-bandit",), ["switching-bandit"]),
    ],
)
def test_resolve_games(spec, expected):
    assert resolve_games(spec) == expected


@pytest.mark.parametrize("spec, bad", [("mazee", "mazee"), ("maze,nope", "nope"),
                                       (["bigfish", "pong"], "pong")])
def test_unknown_game_names_bad_value_and_valid_choices(spec, bad):
    with pytest.raises(ValueError) as err:
        resolve_games(spec)
    msg = str(err.value)
    assert repr(bad) in msg
    for name in ("bigfish", "starpilot", "paper6", "memory4", "all", "cue-recall"):
        assert name in msg


@pytest.mark.parametrize("spec", ["", " , ", [], 5, [3]])
def test_empty_or_wrong_type_raises(spec):
    with pytest.raises(ValueError, match="valid games"):
        resolve_games(spec)


@pytest.mark.parametrize("spec", ["cue-recall,maze", ["paper6", "switching-bandit"],
                                  "cue-recall,switching-bandit"])
def test_synthetic_tasks_do_not_mix(spec):
    with pytest.raises(ValueError, match="cannot be mixed"):
        resolve_games(spec)


def test_splits():
    assert SPLITS == {"train": (0, 200), "test1": (1000, 200), "test2": (1200, 200),
                      "test3": (1400, 200), "all": (0, 0)}


@pytest.mark.parametrize(
    "game, ret, mode, expected",
    [
        ("bigfish", 1.0, "easy", 0.0),
        ("bigfish", 40.0, "easy", 1.0),
        ("bigfish", 20.5, "easy", 0.5),
        ("bigfish", 20.0, "hard", 0.5),
        ("starpilot", 33.25, "easy", 0.5),
        ("starpilot", 35.0, "hard", 1.0),
        ("fruitbot", -1.5, "easy", 0.0),
        ("fruitbot", 13.35, "hard", 0.5),
        ("maze", 7.5, "easy", 0.5),
        ("maze", 7.0, "hard", 0.5),
        ("miner", 20.0, "hard", 1.0),
        ("caveflyer", 7.7, "hard", (7.7 - 2.0) / 11.4),
        ("coinrun", 0.0, "easy", -1.0),
    ],
)
def test_normalized_score_constants(game, ret, mode, expected):
    assert math.isclose(normalized_score(game, ret, mode), expected, rel_tol=1e-9, abs_tol=1e-12)


def test_score_table_covers_every_game_in_both_modes():
    for mode in ("easy", "hard"):
        assert set(SCORE_RANGES[mode]) == set(GAMES)
        assert all(lo < hi for lo, hi in SCORE_RANGES[mode].values())


def test_synthetic_scores_use_chance_and_optimal():
    assert normalized_score("cue-recall", 0.5) == 0.0
    assert normalized_score("cue-recall", 1.0) == 1.0
    assert normalized_score("switching-bandit", 0.5) == 0.0
    assert math.isclose(normalized_score("switching-bandit", 0.875), 1.0)
    assert math.isclose(normalized_score("cue-recall", 1.0 / 3, task_kwargs={"num_cues": 3}), 0.0)
    assert math.isclose(normalized_score("switching-bandit", 0.75, task_kwargs={"block": 4}), 1.0)


@pytest.mark.parametrize("game, mode, match", [("bigfish", "memory", "unknown mode 'memory'"),
                                               ("bigfish", "Easy", "unknown mode"),
                                               ("pong", "easy", "unknown game 'pong'")])
def test_normalized_score_bad_input(game, mode, match):
    with pytest.raises(ValueError, match=match):
        normalized_score(game, 1.0, mode)
