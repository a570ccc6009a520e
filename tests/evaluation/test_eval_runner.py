"""The evaluation loop on a scripted env and a counting policy: exact episode counts without
favouring short episodes, state lifetime, reward input, frozen finished envs, video frames."""

import numpy as np
import pytest
import torch

from agents.evaluation.runner import env_quotas, episode_quotas, play


class ScriptedEnv:
    """Env i of game g has episodes of fixed length lengths[i]; each step pays 1, so an
    episode's return is its length. obs[i] is filled with the env's step count mod 256."""

    def __init__(self, env_games, lengths):
        self.env_games = list(env_games)
        self.games = list(dict.fromkeys(env_games))
        self.lengths = np.asarray(lengths)
        self.num_envs = len(env_games)
        self.t = np.zeros(self.num_envs, dtype=np.int64)
        self.total = 0
        self.actions = []

    def _obs(self):
        obs = np.zeros((self.num_envs, 64, 64, 3), np.uint8)
        obs[:] = (self.total % 256)
        return obs

    def reset(self):
        self.t[:] = 0
        return self._obs()

    def step(self, actions):
        self.actions.append(np.array(actions))
        self.t += 1
        self.total += 1
        done = self.t >= self.lengths
        infos = []
        for i in range(self.num_envs):
            info = {"game": self.env_games[i], "level_seed": 0}
            if done[i]:
                info["episode"] = {"r": float(self.t[i]), "l": int(self.t[i]),
                                   "game": self.env_games[i], "level_seed": 0}
            infos.append(info)
        self.t[done] = 0
        return self._obs(), np.ones(self.num_envs, np.float32), done, infos

    def close(self):
        pass


class CountingPolicy:
    """State: steps since the last reset [B, 1], and the last reward input [B, 1].
    Action: 1 always. state_metrics: the mean count."""

    def initial_state(self, n, device=None):
        return (torch.zeros(n, 1, device=device), torch.zeros(n, 1, device=device))

    def act(self, obs, reward, episode_start, state, greedy=False):
        count, _ = state
        count = torch.where(episode_start[:, None], torch.zeros_like(count), count) + 1
        action = torch.ones(obs.shape[0], dtype=torch.long)
        return action, torch.zeros(obs.shape[0]), torch.zeros(obs.shape[0]), (
            count, reward[:, None].float())

    def state_metrics(self, state):
        return {"count": float(state[0].mean())}


def test_quotas_split_the_episodes_evenly():
    assert episode_quotas(3, 7) == [3, 2, 2]
    assert episode_quotas(4, 2) == [1, 1, 0, 0]
    q = env_quotas(["a", "b", "a", "b", "a", "b"], 5)
    assert q.tolist() == [2, 2, 2, 2, 1, 1]


def test_each_game_gets_exactly_n_episodes_and_short_ones_are_not_favoured():
    # game a: env 0 has 1-step episodes, env 2 has 10-step episodes.
    env = ScriptedEnv(["a", "b", "a", "b"], [1, 3, 10, 4])
    res = play(CountingPolicy(), env, episodes_per_game=6)
    per_game = {g: [e for e in res.episodes if e.game == g] for g in "ab"}
    assert len(per_game["a"]) == 6 and len(per_game["b"]) == 6
    # each env contributes its fixed quota (3), however short its episodes: "first 6 finished"
    # would have taken six 1-step episodes of env 0.
    for env_id in range(4):
        eps = [e for e in res.episodes if e.env == env_id]
        assert [e.index for e in eps] == [0, 1, 2]
    assert sorted(e.ret for e in per_game["a"]) == [1, 1, 1, 10, 10, 10]
    assert res.steps == 30  # env 2 needs 3 x 10 steps


def test_finished_envs_stop_acting_and_their_state_freezes():
    env = ScriptedEnv(["a", "a"], [1, 5])
    res = play(CountingPolicy(), env, episodes_per_game=2, state_reset="never")
    # env 0 is done after 1 step; later it gets action 0 and is no longer counted
    acts = np.stack(env.actions)
    assert acts[0].tolist() == [1, 1]
    assert (acts[1:, 0] == 0).all() and (acts[:, 1] == 1).all()
    assert res.env_steps == 1 + 5
    assert res.metrics[-1]["count"] == 5.0  # mean over the envs still playing (env 1 only)


@pytest.mark.parametrize("mode", ["never", "episode", "span"])
def test_state_lifetime_follows_the_mask(mode):
    env = ScriptedEnv(["a"], [3])
    res = play(CountingPolicy(), env, episodes_per_game=3, state_reset=mode, unroll=4)
    counts = [row["env0/count"] for row in res.metrics]
    if mode == "never":
        assert counts == list(range(1, 10))
    elif mode == "episode":
        assert counts == [1, 2, 3] * 3
    else:  # reset at episode starts (steps 3, 6) and at span starts (steps 0, 4, 8)
        assert counts == [1, 2, 3, 1, 1, 2, 1, 2, 1]
    assert res.episode_ends_env0 == [2, 5, 8]


def test_reward_input_is_the_previous_reward_in_every_mode_as_in_training():
    """Like agents.rollout.RolloutCollector: the first obs of an episode comes with the previous
    episode's last reward, whatever the state lifetime (only the core state is reset)."""
    class Spy(CountingPolicy):
        def __init__(self):
            self.seen = []

        def act(self, obs, reward, episode_start, state, greedy=False):
            self.seen.append(float(reward[0]))
            return super().act(obs, reward, episode_start, state, greedy)

    for mode, expected in (("never", 1.0), ("episode", 1.0), ("span", 1.0)):
        spy = Spy()
        play(spy, ScriptedEnv(["a"], [2]), episodes_per_game=2, state_reset=mode)
        seen = spy.seen
        # steps: 0 (start, reward 0), 1 (reward 1), 2 (first obs of episode 2), 3
        assert seen[0] == 0.0 and seen[1] == 1.0 and seen[2] == expected


def test_video_callback_gets_one_frame_per_step_until_it_declines():
    frames = []

    def on_frame(obs, step):
        frames.append((step, int(obs[0, 0, 0, 0])))
        return len(frames) < 4

    env = ScriptedEnv(["a", "a"], [1, 6])
    res = play(CountingPolicy(), env, episodes_per_game=2, on_frame=on_frame, video_envs=[0])
    assert [s for s, _ in frames] == [0, 1, 2, 3]
    assert [v for _, v in frames] == [0, 1, 2, 3]
    # env 0 (in the video) keeps acting while frames are wanted (the 4th frame is the last),
    # then stops
    acts = np.stack(env.actions)
    assert acts[:3, 0].tolist() == [1, 1, 1] and (acts[3:, 0] == 0).all()
    assert len(res.episodes) == 2


def test_bad_arguments():
    with pytest.raises(ValueError, match="state_reset"):
        play(CountingPolicy(), ScriptedEnv(["a"], [1]), episodes_per_game=1, state_reset="x")
    with pytest.raises(ValueError, match="episodes_per_game"):
        play(CountingPolicy(), ScriptedEnv(["a"], [1]), episodes_per_game=0)
