"""Learning tests: tiny agents on the synthetic memory tasks, with the package's defaults.

Every run here uses exactly what `train_rl.py --preset memory-tiny` gives (the package's
ModelConfig defaults, the state carried across episodes with a mean lifetime of 4 episodes,
one learner setting for every core; see tests/agents/learning_harness.py). Only the task, the
core, the learner, the budget and the seed differ.

Seeds: every cell (task, core, learner) trains seeds 0 and 1, the first two, for every core;
no seed was picked because it passes. A cell passes when both reach the bar, or when one
does and seed 2, run only then, does too: 2 of the first 3 seeds. Why not "each of seeds 0
and 1": which seeds learn depends on the CPU kind (the floating-point order of its kernels),
not only on the learner. The lstm on cue-recall at 40k PPO steps learned on 6 of 6 seeds on
one CI machine (a Xeon with AMX) and on 4 of 5 on another (an AMD EPYC; seed 1 at chance
throughout; benchmarks/RESULTS.md, "SRWM learnability, round 3"). The issue's bar is 4 of 5
seeds: a learner that learns on 4 of 5 seeds passes 2 of 3 with probability 0.90 (both of
2: 0.64); a learner at chance on every seed never does.

Scores (learning_harness.evaluate): greedy play on 64 fresh envs (another env seed) from a
zero state. cue-recall: the success rate over each env's first 4 episodes (chance 1/2). The
bandit: the mean return of episodes 1-3 from the fresh state (episode 0 is a guess), i.e. how
well the agent adapts from nothing within its first 4 episodes (win-stay / lose-shift: 0.875).

Which cells CI runs: every srwm cell and the two controls (ff at chance, the bandit reset at
every episode). The lstm cells are marked `baseline` and left out of the default run
(pyproject's addopts), since with them the CI run took 36 min on a 2-core AVX2 EPYC
(2026-12-06; the limit is 30); run them with `pytest -m baseline` (or `-m learning` for all).
The lstm's learning stays in CI through tests/agents/test_pipeline.py and test_distributed.py
(lstm + PPO on cue-recall at 40k, through the async pipeline and with two ranks, bar 0.9).

The bars are the study's (benchmarks/RESULTS.md, "SRWM learnability"): >= 0.9 on cue-recall,
>= 0.8 on the bandit. Budgets: 40k steps on cue-recall for every core, 20k on the bandit.
"""

from __future__ import annotations

import pytest

from envs import reference_returns
from tests.agents import learning_harness as lh

pytestmark = pytest.mark.learning

CUE = {"num_cues": 2, "delay": 4}  # the task's defaults: episodes of 6 steps
BANDIT = {"num_arms": 2, "block": 8}
SEEDS = (0, 1)
SPARE_SEED = 2
"""Run only when exactly one of SEEDS misses the bar (see the module docstring)."""

LSTM_CUE_STEPS = 40_000
"""At 40k PPO steps the lstm learned cue-recall on 6 of 6 seeds (each at 1.00 by 15k steps)
on the AMX Xeon that CI ran on; at 20k (the lr annealed twice as fast) seed 0 stayed at
chance there (0.51, 5 of 6 seeds learned), though seeds 0 and 1 learned at 20k on the
first CI machine. benchmarks/RESULTS.md, "The learning tests on these defaults". On an AMD
EPYC at 40k: 4 of 5 (seed 1 at chance throughout; RESULTS.md, round 3)."""
SRWM_CUE_STEPS = 40_000
"""The study's budget (benchmarks/RESULTS.md, "SRWM learnability"). At 30k (the lr annealed
faster) the srwm learned on 3 of 5 seeds with each learner on the AVX2 EPYC, where 40k passes
seeds 0 and 1 of both (RESULTS.md, "CI time, continued")."""
FF_CUE_STEPS = 20_000
"""The control's budget: by 20k steps the memory cores are at 1.00 on cue-recall (lstm by
~15k, srwm median 5-10k, RESULTS.md rounds 2-3), so a leak of the cue past the memory would
show by then too."""
BANDIT_STEPS = 20_000  # lstm ~4k, srwm ~2-12k steps to the bar
RESET_CONTROL_STEPS = 10_000
"""The episode-reset control's budget: with PPO the carried srwm reaches the bandit's bar in
2-8k steps (RESULTS.md, round 2), so what a reset agent could learn would show by 10k."""


@pytest.fixture
def rec(record_property):
    """pytest's record_property under a short name."""
    return record_property


def run(rec, task, kwargs, core, algo, steps, seed, **changes) -> lh.EvalResult:
    """Train and evaluate one run; its figures go to stdout and, through `rec` (pytest's
    record_property), to the summary at the end of the test session (tests/conftest.py)."""
    setup = lh.package_setup(task, core, algo, steps, seed, kwargs)
    for name, value in changes.items():
        setattr(setup, name, value)
    policy, collector, train_return = lh.train_run(setup)
    collector.env.close()
    result = lh.evaluate(policy, setup)
    text = (f"{core} {algo} {task} seed {seed} ({steps} steps, {changes or 'defaults'}): "
            f"score {result.score:.3f}, by episode index "
            f"{' '.join(f'{x:.2f}' for x in result.by_index)}, late training return "
            f"{train_return:.3f}")
    print(text)
    rec("figure", text)
    return result


def learns(rec, task, kwargs, core, algo, steps, bar, **changes) -> None:
    """Assert that the cell reaches `bar` on 2 of its first 3 seeds: SEEDS, and SPARE_SEED
    only when exactly one of them misses (none is run when both miss: 2 can no longer pass)."""
    scores = {s: run(rec, task, kwargs, core, algo, steps, s, **changes).score for s in SEEDS}
    passed = sum(v >= bar for v in scores.values())
    if passed == len(SEEDS) - 1:
        scores[SPARE_SEED] = run(rec, task, kwargs, core, algo, steps, SPARE_SEED,
                                 **changes).score
        passed = sum(v >= bar for v in scores.values())
    assert passed >= len(SEEDS), (
        f"{core} {algo} {task}: {passed} of {len(scores)} seeds reached {bar} "
        f"(scores by seed: {scores}); the bar is {len(SEEDS)} of the first {len(SEEDS) + 1}")


@pytest.mark.baseline
def test_cue_recall_lstm_ppo_learns(rec):
    learns(rec, "cue-recall", CUE, "lstm", "ppo", LSTM_CUE_STEPS, 0.9)


def test_cue_recall_srwm_ppo_learns(rec):
    """With the state decay of 2026-12-04 (0.9) the SRWM learned cue-recall with PPO on 4 of 5
    seeds at 40k steps (benchmarks/RESULTS.md, "SRWM learnability, round 2"; seed 3 stayed at
    chance); with the earlier 0.99 on 3 of 5, which is why this test used to ask only that one
    of its two seeds learn. Now it has the bar of every cell (2 of the first 3 seeds)."""
    learns(rec, "cue-recall", CUE, "srwm", "ppo", SRWM_CUE_STEPS, 0.9)


def test_cue_recall_srwm_vtrace_learns(rec):
    """V-trace (memory-tiny: Adam lr 1e-3 annealed, 3 passes, APPO's clip 0.2 with normalised
    advantages) with the default SRWM learned cue-recall on 4 of 5 seeds at 40k steps, as
    it did with IMPALA's policy gradient (RESULTS.md, "SRWM learnability", rounds 2 and 13;
    seed 3 stayed at chance with both)."""
    learns(rec, "cue-recall", CUE, "srwm", "vtrace", SRWM_CUE_STEPS, 0.9)


@pytest.mark.baseline
def test_cue_recall_lstm_vtrace_learns(rec):
    """With IMPALA's policy gradient the lstm learned cue-recall with V-trace on 3 of 5 seeds
    on each of two machine kinds (seed 1 at chance on both); with the preset's APPO setting
    on 5 of 5 (RESULTS.md, "SRWM learnability", round 13b)."""
    learns(rec, "cue-recall", CUE, "lstm", "vtrace", LSTM_CUE_STEPS, 0.9)


def test_cue_recall_ff_ppo_stays_at_chance(rec):
    """Without memory the answer frame says nothing about the cue: the best a feed-forward
    policy can do is chance (1/2). Over 256 greedy episodes the std of the success rate at
    chance is about 0.03, so chance + 0.1 is > 3 standard deviations above it, far below the
    0.9 that the memory cores reach by then."""
    chance = reference_returns("cue-recall", **CUE)["chance"]
    assert run(rec, "cue-recall", CUE, "ff", "ppo", FF_CUE_STEPS, 0).score < chance + 0.1


CORES = ["srwm", pytest.param("lstm", marks=pytest.mark.baseline)]


@pytest.mark.parametrize("core", CORES)
def test_switching_bandit_ppo_adapts_from_a_fresh_state(core, rec):
    """Carried across episodes (with the default lifetime), the agent learns to find the good
    arm from a fresh state within its first 4 episodes on new envs."""
    learns(rec, "switching-bandit", BANDIT, core, "ppo", BANDIT_STEPS, 0.8)


def test_switching_bandit_srwm_episode_reset_stays_at_chance(rec):
    """Reset at every episode start, the agent cannot know which arm paid last (the reward fed
    in at the choice frame is 0): its expected return is chance, 0.5. So the score the carried
    state reaches above is the memory's, not something a reset agent could also get."""
    chance = reference_returns("switching-bandit", **BANDIT)["chance"]
    result = run(rec, "switching-bandit", BANDIT, "srwm", "ppo", RESET_CONTROL_STEPS, 0,
                 state_reset="episode", state_lifetime=0.0)
    assert result.score < chance + 0.1


@pytest.mark.parametrize("core", CORES)
def test_switching_bandit_vtrace_adapts_from_a_fresh_state(core, rec):
    learns(rec, "switching-bandit", BANDIT, core, "vtrace", BANDIT_STEPS, 0.8)
