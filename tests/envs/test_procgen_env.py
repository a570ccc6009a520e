"""The multi-game ProcGen VecEnv: spaces, game map, level seeds, episode stats, errors."""

import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack, VecMonitor

from envs import make_env, make_procgen_env

PAPER6 = ["bigfish", "fruitbot", "maze", "leaper", "plunder", "starpilot"]


def _rollout(env, steps, seed=0, same_action=False):
    """Random actions; returns lists of per-step (obs, rewards, dones, infos)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        if same_action:
            actions = np.full(env.num_envs, rng.integers(0, env.action_space.n))
        else:
            actions = rng.integers(0, env.action_space.n, env.num_envs)
        out.append(env.step(actions))
    return out


def test_spaces_dtypes_and_map():
    env = make_procgen_env("bigfish,maze,starpilot", 6, seed=1)
    try:
        assert isinstance(env, VecEnv)
        assert env.observation_space == spaces.Box(0, 255, (64, 64, 3), np.uint8)
        assert env.action_space == spaces.Discrete(15)
        assert env.num_envs == 6
        assert env.games == ["bigfish", "maze", "starpilot"]
        assert env.env_games == ["bigfish", "maze", "starpilot"] * 2
        assert env.get_attr("game", [1, 5]) == ["maze", "starpilot"]
        obs = env.reset()
        assert obs.shape == (6, 64, 64, 3) and obs.dtype == np.uint8
        assert [i["game"] for i in env.reset_infos] == env.env_games
        obs, rew, done, infos = env.step(np.zeros(6, np.int64))
        assert obs.shape == (6, 64, 64, 3) and obs.dtype == np.uint8
        assert rew.shape == (6,) and rew.dtype == np.float32
        assert done.shape == (6,) and done.dtype == bool
        assert len(infos) == 6
        assert [i["game"] for i in infos] == env.env_games
        assert all(isinstance(i["level_seed"], int) for i in infos)
    finally:
        env.close()


def test_env_i_plays_game_i_mod_g_from_its_own_frames():
    """With one level, env i's first frame must equal the first frame of a single-game env of
    game i mod G on that level, and differ from every other game's."""
    level = 7
    mixed = make_procgen_env("paper6", 12, num_levels=1, start_level=level, seed=3)
    try:
        first = mixed.reset()
        reference = {}
        for game in PAPER6:
            single = make_procgen_env(game, 1, num_levels=1, start_level=level, seed=11)
            reference[game] = single.reset()[0]
            single.close()
        for i in range(12):
            matches = [g for g in PAPER6 if np.array_equal(first[i], reference[g])]
            assert matches == [PAPER6[i % 6]] == [mixed.env_games[i]], (i, matches)
    finally:
        mixed.close()


def test_level_seeds_stay_in_split_and_match_episode_stats():
    env = make_procgen_env("dodgeball,leaper,jumper,bigfish", 8, start_level=1000,
                           num_levels=200, seed=5)
    try:
        seeds = [i["level_seed"] for i in env.reset_infos]
        seen_in_episode = [{s} for s in seeds]  # level seeds reported while an episode ran
        finished = 0
        for _, _, dones, infos in _rollout(env, 400, seed=1):
            for k, info in enumerate(infos):
                assert 1000 <= info["level_seed"] < 1200
                if dones[k]:
                    ep = info["episode"]
                    assert 1000 <= ep["level_seed"] < 1200
                    # the episode's own level, not the next one's
                    assert seen_in_episode[k] == {ep["level_seed"]}
                    finished += 1
                    seen_in_episode[k] = set()
                seen_in_episode[k].add(info["level_seed"])
        assert finished > 5
    finally:
        env.close()


def test_level_seeds_match_procgen_info():
    env = make_procgen_env("maze,leaper", 4, start_level=50, num_levels=3, seed=2)
    try:
        raw = env.procgen_env.get_info()
        assert [i["level_seed"] for i in env.reset_infos] == [int(r["level_seed"]) for r in raw]
        env.reset()
        rng = np.random.default_rng(4)
        for _ in range(60):
            _, _, dones, infos = env.step(rng.integers(0, 15, 4))
            raw = env.procgen_env.get_info()
            assert [i["level_seed"] for i in infos] == [int(r["level_seed"]) for r in raw]
            for k in np.flatnonzero(dones):
                assert infos[k]["episode"]["level_seed"] == int(raw[k]["prev_level_seed"])
    finally:
        env.close()


def _check_episode_accounting(env, rollout):
    """Returns and lengths accumulated here from the raw arrays must equal the reported
    episodes, one report per done, nothing reported without a done."""
    n = env.num_envs
    ret = np.zeros(n)
    length = np.zeros(n, int)
    reported = 0
    same_step_multi = 0
    for _, rewards, dones, infos in rollout:
        ret += rewards
        length += 1
        same_step_multi += int(dones.sum() >= 2)
        for k in range(n):
            if dones[k]:
                ep = infos[k]["episode"]
                assert ep["r"] == pytest.approx(ret[k])
                assert ep["l"] == length[k]
                assert ep["game"] == env.env_games[k] == infos[k]["game"]
                reported += 1
                ret[k] = 0.0
                length[k] = 0
            else:
                assert "episode" not in infos[k]
    return reported, same_step_multi


def test_every_episode_reported_once_mixed_games():
    env = make_procgen_env("dodgeball,jumper,leaper,caveflyer", 8, seed=0)
    try:
        env.reset()
        rollout = _rollout(env, 300, seed=2)
        reported, _ = _check_episode_accounting(env, rollout)
        assert reported == sum(int(d.sum()) for _, _, d, _ in rollout) > 5
    finally:
        env.close()


def test_every_episode_reported_once_when_envs_finish_together():
    """One level and identical actions: all 8 dodgeball envs finish in the same steps."""
    env = make_procgen_env("dodgeball", 8, num_levels=1, start_level=3, seed=0)
    try:
        env.reset()
        rollout = _rollout(env, 120, seed=0, same_action=True)
        reported, multi = _check_episode_accounting(env, rollout)
        assert multi >= 1
        assert reported == sum(int(d.sum()) for _, _, d, _ in rollout) >= 8
    finally:
        env.close()


def test_auto_reset_obs_is_next_episode_first_obs():
    """With one level, the obs returned with done equals the env's very first obs."""
    env = make_procgen_env("dodgeball", 2, num_levels=1, start_level=3, seed=0)
    try:
        start = env.reset().copy()
        hits = 0
        for obs, _, dones, _ in _rollout(env, 120, seed=0, same_action=True):
            for k in np.flatnonzero(dones):
                assert np.array_equal(obs[k], start[k])
                hits += 1
        assert hits >= 2
    finally:
        env.close()


def test_same_seed_same_observations_other_seed_differs():
    def run(seed):
        env = make_procgen_env("bigfish,maze", 4, seed=seed)
        try:
            frames = [env.reset().copy()]
            seeds = [[i["level_seed"] for i in env.reset_infos]]
            for obs, _, _, infos in _rollout(env, 30, seed=9):
                frames.append(obs.copy())
                seeds.append([i["level_seed"] for i in infos])
            return np.stack(frames), seeds
        finally:
            env.close()

    a, sa = run(4)
    b, sb = run(4)
    c, sc = run(5)
    assert np.array_equal(a, b) and sa == sb
    assert not np.array_equal(a, c)


def test_sb3_wrappers_work():
    env = VecFrameStack(VecMonitor(make_procgen_env("maze,leaper", 4, seed=0)), 2)
    try:
        obs = env.reset()
        assert obs.shape == (4, 64, 64, 6)
        obs, rew, done, infos = env.step(np.zeros(4, np.int64))
        assert obs.shape == (4, 64, 64, 6) and infos[0]["game"] == "maze"
        assert env.unwrapped.env_games == ["maze", "leaper"] * 2
    finally:
        env.close()


def test_unsupported_vecenv_calls_are_clear():
    env = make_procgen_env("maze", 2, seed=0)
    try:
        with pytest.raises(NotImplementedError, match="one vectorised env"):
            env.env_method("render")
        with pytest.raises(NotImplementedError, match="cannot be set"):
            env.set_attr("foo", 1)
        with pytest.raises(AttributeError, match="per-env attributes"):
            env.get_attr("foo")
        assert env.env_is_wrapped(object) == [False, False]
        assert env.seed(0) == [0, 0]
        with pytest.warns(UserWarning, match="no effect"):
            env.seed(3)
    finally:
        env.close()
    env.close()  # closing twice is harmless


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(games="maze,bigfish", num_envs=3), "num_envs=3 is not a multiple"),
        (dict(games="paper6", num_envs=64),
         "num_envs=64 is not a multiple of the number of games \\(6"),
        (dict(games="maze", num_envs=0), "num_envs must be an integer >= 1, got 0"),
        (dict(games="maze", num_envs=2.0), "num_envs must be an integer"),
        (dict(games="maze", num_envs=2, distribution_mode="medium"),
         "unknown distribution_mode 'medium'; valid: easy, hard, extreme, memory"),
        (dict(games="maze", num_envs=2, num_levels=-1), "num_levels must be an integer >= 0"),
        (dict(games="maze", num_envs=2, start_level=-5),
         "start_level must be an integer >= 0, got -5"),
        (dict(games="bigfish", num_envs=2, distribution_mode="memory"),
         "does not support bigfish; games with 'memory': caveflyer, dodgeball"),
        (dict(games="maze", num_envs=2, distribution_mode="extreme"), "does not support maze"),
        (dict(games="mazee", num_envs=2), "unknown game 'mazee'"),
        (dict(games="cue-recall", num_envs=2), "use envs.make_env"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_procgen_env(**kwargs)


def test_make_env_dispatches_to_procgen():
    env = make_env("memory4", 4, distribution_mode="memory", num_levels=500, seed=0)
    try:
        assert env.env_games == ["dodgeball", "heist", "maze", "miner"]
        assert env.action_space.n == 15
        env.reset()
        _, _, _, infos = env.step(np.zeros(4, np.int64))
        assert all(0 <= i["level_seed"] < 500 for i in infos)
    finally:
        env.close()


def test_import_prints_no_gym_banner():
    code = ("import numpy as np, envs; e = envs.make_env('maze', 1); e.reset();"
            "e.step(np.zeros(1, int)); e.close()")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert "Gym has been unmaintained" not in res.stderr


def test_episode_counts_per_game():
    """Episodes come back tagged with the game of the env that played them."""
    env = make_procgen_env("dodgeball,jumper", 4, seed=1)
    try:
        env.reset()
        per_game = defaultdict(int)
        for _, _, dones, infos in _rollout(env, 200, seed=3):
            for k in np.flatnonzero(dones):
                per_game[infos[k]["episode"]["game"]] += 1
                assert infos[k]["episode"]["game"] == ["dodgeball", "jumper"][k % 2]
        assert set(per_game) <= {"dodgeball", "jumper"} and sum(per_game.values()) > 0
    finally:
        env.close()
