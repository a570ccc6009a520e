"""The learning tests' bar (tests/agents/test_learning.py, `learns`): 2 of the first 3 seeds,
the third run only when exactly one of the first two misses. No training here: `run` is
replaced by a table of scores."""

from __future__ import annotations

import pytest

from tests.agents import learning_harness as lh
from tests.agents import test_learning as tl


def fake_runs(monkeypatch, scores: dict[int, float]) -> list[int]:
    seen: list[int] = []

    def run(rec, task, kwargs, core, algo, steps, seed, **changes):
        seen.append(seed)
        return lh.EvalResult(score=scores[seed], mean_return=scores[seed], by_index=[],
                             episodes=0)

    monkeypatch.setattr(tl, "run", run)
    return seen


@pytest.mark.parametrize(("scores", "ran", "ok"), [
    ({0: 1.0, 1: 0.95}, [0, 1], True),             # both learn: no spare
    ({0: 0.5, 1: 1.0, 2: 0.9}, [0, 1, 2], True),   # one misses, the spare learns
    ({0: 1.0, 1: 0.5, 2: 0.89}, [0, 1, 2], False),  # one misses, the spare misses too
    ({0: 0.5, 1: 0.5, 2: 1.0}, [0, 1], False),     # both miss: 2 of 3 is out of reach
])
def test_two_of_the_first_three_seeds(monkeypatch, scores, ran, ok):
    seen = fake_runs(monkeypatch, scores)
    if ok:
        tl.learns(None, "cue-recall", {}, "lstm", "ppo", 1, 0.9)
    else:
        with pytest.raises(AssertionError, match="of the first 3"):
            tl.learns(None, "cue-recall", {}, "lstm", "ppo", 1, 0.9)
    assert seen == ran
