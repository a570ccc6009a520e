"""The synthetic tasks: documented returns for scripted and random policies, interface,
determinism and errors."""

import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv

from envs import make_env, reference_returns
from envs.synthetic import CueRecallVecEnv, SwitchingBanditVecEnv


def _stripe_of(obs: np.ndarray, count: int) -> np.ndarray:
    """Index of the brightest of ``count`` full-height vertical stripes, per frame (read from
    the middle row). obs [N, 64, 64, 3] -> [N]."""
    n = obs.shape[0]
    width = 64 // count
    row = obs[:, 32, : count * width].astype(np.int64).sum(axis=2)  # [N, count*width]
    return row.reshape(n, count, width).sum(axis=2).argmax(axis=1)


def _episode_returns(infos_list):
    return [i["episode"]["r"] for infos in infos_list for i in infos if "episode" in i]


@pytest.mark.parametrize("task, n", [("cue-recall", 2), ("switching-bandit", 2)])
def test_interface(task, n):
    env = make_env(task, 5, seed=0)
    assert isinstance(env, VecEnv)
    assert env.observation_space == spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert env.action_space == spaces.Discrete(n)
    assert env.env_games == [task] * 5 and env.games == [task]
    obs = env.reset()
    assert obs.shape == (5, 64, 64, 3) and obs.dtype == np.uint8
    assert env.reset_infos[0] == {"game": task, "level_seed": 0}
    obs, rew, done, infos = env.step(np.zeros(5, np.int64))
    assert obs.dtype == np.uint8 and rew.dtype == np.float32 and done.dtype == bool
    assert all(i["game"] == task for i in infos)


# ---- cue-recall ----------------------------------------------------------------------------


def _play_cue_recall(env, steps, policy):
    """policy(obs, memory) -> (actions, memory); returns infos per step."""
    obs = env.reset()
    memory = np.zeros(env.num_envs, np.int64)
    out = []
    for _ in range(steps):
        actions, memory = policy(obs, memory)
        obs, _, _, infos = env.step(actions)
        out.append(infos)
    return out


@pytest.mark.parametrize("num_cues, delay", [(2, 4), (3, 0), (4, 2)])
def test_cue_recall_optimal_policy_gets_one(num_cues, delay):
    env = make_env("cue-recall", 16, seed=1, num_cues=num_cues, delay=delay)

    def remember(obs, memory):
        is_cue = (obs.max(axis=(1, 2, 3)) > 0) & (obs.min(axis=(1, 2, 3)) < 255)
        memory = np.where(is_cue, _stripe_of(obs, num_cues), memory)
        return memory, memory  # answering is the only step where the action counts

    returns = _episode_returns(_play_cue_recall(env, 10 * (delay + 2), remember))
    assert len(returns) == 16 * 10
    assert returns == [1.0] * len(returns)
    assert reference_returns("cue-recall", num_cues=num_cues, delay=delay)["optimal"] == 1.0


def test_cue_recall_random_and_fixed_policies_at_chance():
    env = make_env("cue-recall", 64, seed=2)
    rng = np.random.default_rng(0)
    returns = _episode_returns(
        _play_cue_recall(env, 600, lambda o, m: (rng.integers(0, 2, 64), m)))
    assert len(returns) == 64 * 100
    assert np.mean(returns) == pytest.approx(0.5, abs=0.03)
    returns = _episode_returns(
        _play_cue_recall(env, 600, lambda o, m: (np.zeros(64, np.int64), m)))
    assert np.mean(returns) == pytest.approx(0.5, abs=0.03)
    assert reference_returns("cue-recall")["chance"] == 0.5


def test_cue_recall_answer_frame_and_reward_input_carry_no_cue():
    """What a memoryless agent sees at the answer step (obs and the reward fed in with it) is
    the same whatever the cue, so it cannot beat chance."""
    env = CueRecallVecEnv(32, num_cues=2, delay=3, seed=3)
    obs = env.reset()
    cues = _stripe_of(obs, 2)
    assert set(cues.tolist()) == {0, 1}
    assert np.array_equal(cues, env.cue)
    frames_by_step = [obs]
    rewards_by_step = []
    for _ in range(4):
        obs, rew, done, _ = env.step(np.zeros(32, np.int64))
        frames_by_step.append(obs)
        rewards_by_step.append(rew)
    for t in range(1, 5):  # black delay frames, then the white answer frame
        assert (frames_by_step[t] == frames_by_step[t][0]).all()
        assert rewards_by_step[t - 1].max() == 0.0
    assert frames_by_step[1].max() == 0 and frames_by_step[4].min() == 255
    # the first obs of the next episode is a fresh cue frame
    obs, rew, done, infos = env.step(np.zeros(32, np.int64))
    assert done.all() and np.array_equal(rew, (cues == 0).astype(np.float32))
    assert all(i["episode"]["l"] == 5 and i["level_seed"] == 1 for i in infos)


def test_cue_recall_every_episode_reported_once_all_envs_together():
    env = make_env("cue-recall", 8, seed=0, delay=1)
    env.reset()
    rng = np.random.default_rng(1)
    count = 0
    ret = np.zeros(8)
    for step in range(30):
        _, rew, done, infos = env.step(rng.integers(0, 2, 8))
        ret += rew
        assert done.all() == ((step + 1) % 3 == 0) and (done.all() or not done.any())
        for k in range(8):
            if done[k]:
                ep = infos[k]["episode"]
                assert ep == {"r": ret[k], "l": 3, "game": "cue-recall",
                              "level_seed": (step + 1) // 3 - 1}
                ret[k] = 0.0
                count += 1
            else:
                assert "episode" not in infos[k]
    assert count == 8 * 10


# ---- switching-bandit ----------------------------------------------------------------------


def _play_bandit(env, episodes, choose):
    """choose(last_arm, last_paid, first) -> arms; returns per-env episode returns [E, N]."""
    n = env.num_envs
    env.reset()
    last_arm = np.zeros(n, np.int64)
    last_paid = np.zeros(n, bool)
    first = np.ones(n, bool)
    returns = []
    for _ in range(episodes):
        obs, rew, done, _ = env.step(choose(last_arm, last_paid, first))
        assert not done.any()
        last_arm = _stripe_of(obs, env.num_arms)
        last_paid = obs[:, 32, :, 1].max(axis=1) == 255  # green = paid
        assert np.array_equal(last_paid, rew == 1.0)
        obs, rew2, done, infos = env.step(np.zeros(n, np.int64))
        assert done.all() and rew2.max() == 0.0
        assert (obs == 128).all()  # the same grey choose frame every episode
        returns.append([i["episode"]["r"] for i in infos])
        first = np.zeros(n, bool)
    return np.array(returns)


def test_bandit_win_stay_lose_shift_reaches_documented_optimum():
    env = SwitchingBanditVecEnv(64, num_arms=2, block=8, seed=5)

    def wsls(last_arm, last_paid, first):
        return np.where(first, 0, np.where(last_paid, last_arm, 1 - last_arm))

    returns = _play_bandit(env, 200, wsls)
    optimal = reference_returns("switching-bandit")["optimal"]
    assert optimal == 0.875
    assert returns[1:].mean() == pytest.approx(optimal, abs=0.02)
    assert returns[0].mean() == pytest.approx(0.5, abs=0.2)


def test_bandit_reset_each_episode_and_random_at_chance():
    env = SwitchingBanditVecEnv(64, seed=6)
    fixed = _play_bandit(env, 150, lambda a, p, f: np.zeros(64, np.int64))
    assert fixed.mean() == pytest.approx(0.5, abs=0.04)
    rng = np.random.default_rng(0)
    rand = _play_bandit(env, 150, lambda a, p, f: rng.integers(0, 2, 64))
    assert rand.mean() == pytest.approx(0.5, abs=0.03)
    assert reference_returns("switching-bandit")["chance"] == 0.5


def test_bandit_switches_to_another_arm_with_mean_block_length():
    env = SwitchingBanditVecEnv(64, num_arms=3, block=5, seed=7)
    env.reset()
    goods = [env.good.copy()]
    for _ in range(300):
        env.step(np.zeros(64, np.int64))
        env.step(np.zeros(64, np.int64))
        goods.append(env.good.copy())
    goods = np.array(goods)  # [E+1, N]
    changed = goods[1:] != goods[:-1]
    assert changed.mean() == pytest.approx(1 / 5, abs=0.02)
    assert set(np.unique(goods).tolist()) == {0, 1, 2}


def test_bandit_oracle_gets_one_per_episode():
    env = SwitchingBanditVecEnv(16, num_arms=4, seed=8)
    env.reset()
    for _ in range(20):
        _, rew, _, _ = env.step(env.good.copy())
        assert (rew == 1.0).all()
        env.step(np.zeros(16, np.int64))


# ---- determinism, seeding, errors ----------------------------------------------------------


@pytest.mark.parametrize("task", ["cue-recall", "switching-bandit"])
def test_same_seed_same_trajectory(task):
    def run(seed):
        env = make_env(task, 8, seed=seed)
        rng = np.random.default_rng(0)
        frames = [env.reset()]
        rewards = []
        for _ in range(40):
            obs, rew, _, _ = env.step(rng.integers(0, 2, 8))
            frames.append(obs)
            rewards.append(rew)
        return np.stack(frames), np.stack(rewards)

    a, ra = run(3)
    b, rb = run(3)
    c, _ = run(4)
    assert np.array_equal(a, b) and np.array_equal(ra, rb)
    assert not np.array_equal(a, c)


def test_seed_then_reset_restarts_the_same_way():
    env = make_env("cue-recall", 8, seed=0)
    first = env.reset().copy()
    env.step(np.zeros(8, np.int64))
    assert env.seed(0) == [0] * 8
    assert np.array_equal(env.reset(), first)
    assert env.reset_infos[3]["level_seed"] == 0


@pytest.mark.parametrize(
    "task, kwargs, match",
    [
        ("cue-recall", {"num_cues": 1}, "num_cues must be an integer in \\[2, 8\\], got 1"),
        ("cue-recall", {"num_cues": 9}, "num_cues must be"),
        ("cue-recall", {"delay": -1}, "delay must be an integer >= 0, got -1"),
        ("cue-recall", {"num_arms": 2}, "unknown parameter\\(s\\) num_arms for cue-recall"),
        ("switching-bandit", {"block": 1}, "block must be an integer >= 2, got 1"),
        ("switching-bandit", {"num_arms": 2.5}, "num_arms must be"),
        ("switching-bandit", {"delay": 3}, "unknown parameter\\(s\\) delay"),
        ("cue-recall", {"num_levels": -1}, "num_levels must be an integer >= 0"),
        ("cue-recall", {"distribution_mode": "nope"}, "unknown distribution_mode 'nope'"),
    ],
)
def test_bad_task_parameters(task, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_env(task, 4, **kwargs)


def test_bad_num_envs_and_actions():
    with pytest.raises(ValueError, match="num_envs must be an integer >= 1, got 0"):
        make_env("cue-recall", 0)
    env = make_env("switching-bandit", 2)
    env.reset()
    with pytest.raises(ValueError, match="actions must be in \\[0, 1\\]"):
        env.step(np.array([0, 2]))
    with pytest.raises(ValueError, match="actions must be in"):
        env.step(np.array([-1, 0]))
