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


def test_cue_recall_evaluation_counts_each_scored_episode_by_cue_and_answer():
    """A policy that always answers 2 on 4 cues: every scored episode lands in column 2, the
    diagonal holds the successes, and they give the score."""
    import torch

    from policies import build_actor_critic

    setup = lh.package_setup("cue-recall", "lstm", "ppo", 1, 0, {"num_cues": 4, "delay": 1})
    policy = build_actor_critic(setup.model_config(), 4)
    with torch.no_grad():
        policy.heads.policy.weight.zero_()
        policy.heads.policy.bias.copy_(torch.tensor([0.0, 0.0, 10.0, 0.0]))
    result = lh.evaluate(policy, setup)
    answers = result.answers
    assert len(answers) == 4 and all(len(row) == 4 for row in answers)
    assert sum(map(sum, answers)) == result.episodes == lh.EVAL_ENVS * 4
    assert all(row[a] == 0 for row in answers for a in (0, 1, 3))
    assert all(row[2] > 0 for row in answers)  # 256 episodes: every cue came up
    assert result.score == answers[2][2] / result.episodes
    bandit = lh.package_setup("switching-bandit", "lstm", "ppo", 1, 0, {})
    assert lh.evaluate(build_actor_critic(bandit.model_config(), 2), bandit).answers is None
