"""envs.stream: the schedule (parsing, positions, repeat, random order), the stream VecEnv on
synthetic tasks (the schedule followed per slot, every episode reported once, whole, with its
game; inner envs paused while their slot plays another game; rewind), a short ProcGen stream,
and the evaluation loop's state bookkeeping at a switch (carried vs reset)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.evaluation.runner import play
from envs.stream import (
    Block,
    StreamSchedule,
    check_action_spaces,
    make_stream_env,
    parse_stream,
)
from envs.synthetic import GREY

CUE_LEN, BANDIT_LEN = 6, 2  # cue-recall (delay 4) and switching-bandit episode lengths


def games_of(schedule, slot, n):
    return [schedule.position(slot, k).game for k in range(n)]


def test_parse_stream():
    assert parse_stream(" bigfish:20, starpilot : 3 ") == (Block("bigfish", 20),
                                                            Block("starpilot", 3))
    assert parse_stream("cue-recall:2,switching-bandit:3")[1] == Block("switching-bandit", 3)


@pytest.mark.parametrize("spec,needle", [
    ("bigfsh:3", "unknown game 'bigfsh'"),
    ("paper6:3", "no aliases"),
    ("bigfish:0", "episodes must be >= 1, got 0"),
    ("bigfish:-2", "episodes must be >= 1, got -2"),
    ("bigfish", "is not game:episodes"),
    ("bigfish:3,", "is not game:episodes"),
    ("bigfish:x", "is not game:episodes"),
    ("", "empty stream spec"),
])
def test_bad_specs_raise_one_clear_error(spec, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")) as e:
        parse_stream(spec)
    assert "\n" not in str(e.value)


def test_games_with_different_action_spaces_are_refused():
    assert check_action_spaces(parse_stream("cue-recall:2,switching-bandit:3")) == 2
    assert check_action_spaces(parse_stream("bigfish:2,starpilot:3")) == 15
    with pytest.raises(ValueError, match="different action spaces.*bigfish 15, cue-recall 2"):
        check_action_spaces(parse_stream("bigfish:2,cue-recall:3"))
    with pytest.raises(ValueError, match="different action spaces"):
        make_stream_env("bigfish:2,cue-recall:3", 2)


def test_fixed_schedule_positions_repeat_and_merge():
    s = StreamSchedule("bigfish:2,maze:1")
    got = [(p.game, p.block, p.segment, p.since_switch) for p in
           (s.position(0, k) for k in range(7))]
    assert got == [("bigfish", 0, 0, 0), ("bigfish", 0, 0, 1), ("maze", 1, 1, 0),
                   ("bigfish", 2, 2, 0), ("bigfish", 2, 2, 1), ("maze", 3, 3, 0),
                   ("bigfish", 4, 4, 0)]
    assert not s.position(0, 1).after_switch and s.position(0, 2).after_switch
    # consecutive blocks of one game are one segment: no switch between them
    merged = StreamSchedule("maze:2,maze:1,coinrun:1")
    assert [(p.segment, p.since_switch) for p in (merged.position(3, k) for k in range(5))] == [
        (0, 0), (0, 1), (0, 2), (1, 0), (2, 0)]  # the next pass starts with maze again
    # without repeat: one pass, then the last game goes on (callers count one pass at most)
    once = StreamSchedule("maze:1,coinrun:2", repeat=False)
    assert games_of(once, 0, 5) == ["maze", "coinrun", "coinrun", "coinrun", "coinrun"]
    assert once.position(0, 4).since_switch == 3


def test_random_order_is_a_permutation_per_slot_and_pass_fixed_by_its_seed():
    spec = "bigfish:1,maze:1,coinrun:1,miner:1"
    s = StreamSchedule(spec, order="random", order_seed=5)
    for slot in range(4):
        for p in range(3):
            assert sorted(games_of(s, slot, 12)[4 * p:4 * p + 4]) == sorted(
                ["bigfish", "maze", "coinrun", "miner"])
    orders = {tuple(games_of(s, slot, 12)) for slot in range(6)}
    assert len(orders) > 1  # slots differ
    again = StreamSchedule(spec, order="random", order_seed=5)
    assert all(games_of(again, i, 12) == games_of(s, i, 12) for i in range(6))
    other = StreamSchedule(spec, order="random", order_seed=6)
    assert any(games_of(other, i, 12) != games_of(s, i, 12) for i in range(6))
    assert games_of(StreamSchedule(spec), 2, 4) == ["bigfish", "maze", "coinrun", "miner"]


def _run(env, steps, seed=0):
    """Random actions; per slot: finished episodes and the (step, obs, info) of each switch."""
    rng = np.random.default_rng(seed)
    eps = {i: [] for i in range(env.num_envs)}
    switches = {i: [] for i in range(env.num_envs)}
    obs = env.reset()
    for t in range(steps):
        obs, _, done, infos = env.step(rng.integers(0, env.action_space.n, env.num_envs))
        for i, info in enumerate(infos):
            assert set(info) >= {"game", "level_seed", "block", "switched"}
            assert ("episode" in info) == bool(done[i])
            if "episode" in info:
                eps[i].append(info["episode"])
            if info["switched"]:
                switches[i].append((t, obs[i].copy(), info))
    return eps, switches, obs


def test_synthetic_stream_follows_the_schedule_and_reports_whole_episodes_once():
    env = make_stream_env("cue-recall:2,switching-bandit:3", 3, seed=1)
    sched = env.schedule
    eps, switches, _ = _run(env, 200)
    counts = env.episode_counts()
    for i in range(3):
        assert len(eps[i]) == counts[i] > 20  # each finished episode reported once
        assert [e["game"] for e in eps[i]] == games_of(sched, i, counts[i])
        # each episode whole: its length is its game's fixed length, from its first obs
        assert [e["l"] for e in eps[i]] == [
            CUE_LEN if g == "cue-recall" else BANDIT_LEN for g in games_of(sched, i, counts[i])]
        assert [e["since_switch"] for e in eps[i]] == [
            sched.position(i, k).since_switch for k in range(counts[i])]
        # the inner env of a game waits while the slot plays the other one: its episodes
        # (level_seed = the inner env's episode index) go on 0, 1, 2, ... across segments
        for g in ("cue-recall", "switching-bandit"):
            assert [e["level_seed"] for e in eps[i] if e["game"] == g] == list(
                range(sum(e["game"] == g for e in eps[i])))
        # a switch exactly at every change of game, and its obs is the new game's first frame
        changes = [k for k in range(1, counts[i]) if eps[i][k]["game"] != eps[i][k - 1]["game"]]
        assert len(switches[i]) in (len(changes), len(changes) + 1)
        for _, frame, info in switches[i]:
            if info["game"] == "switching-bandit":
                assert (frame == np.array(GREY, np.uint8)).all()
            else:  # a cue frame: a coloured stripe on black, never the white answer frame
                assert frame.max() > 0 and frame.min() == 0
    env.close()


def test_rewind_replays_the_identical_stream():
    env = make_stream_env("switching-bandit:2,cue-recall:1", 2, seed=3)
    first = _run(env, 60)
    env.rewind()
    second = _run(env, 60)
    assert first[0] == second[0] and np.array_equal(first[2], second[2])
    env.close()


def test_procgen_stream_builds_each_env_once_and_rewinds_it():
    env = make_stream_env("bigfish:1,starpilot:1", 2, start_level=1000, num_levels=50, seed=0)
    inner = [dict(d) for d in env._inner]
    eps, _, obs = _run(env, 700)
    for i in range(2):
        assert len(eps[i]) >= 1
        assert [e["game"] for e in eps[i]] == games_of(env.schedule, i, len(eps[i]))
        assert all(1000 <= e["level_seed"] < 1050 for e in eps[i])
    env.rewind()
    assert [dict(d) for d in env._inner] == inner  # the same ProcGen envs, restored
    again, _, obs2 = _run(env, 700)
    assert again == eps and np.array_equal(obs, obs2)
    env.close()


class CountingPolicy:
    """State: steps since the last reset [B, 1]. Records every episode_start mask and the
    count after each step."""

    def __init__(self):
        self.starts, self.counts = [], []

    def initial_state(self, n, device=None):
        return (torch.zeros(n, 1),)

    def act(self, obs, reward, episode_start, state, greedy=False):
        count = torch.where(episode_start[:, None], torch.zeros_like(state[0]), state[0]) + 1
        self.starts.append(episode_start.clone())
        self.counts.append(count[:, 0].clone())
        b = obs.shape[0]
        return torch.ones(b, dtype=torch.long), torch.zeros(b), torch.zeros(b), (count,)

    def state_metrics(self, state):
        return {}


@pytest.mark.parametrize("state_reset,reset_at_switch", [
    ("never", False), ("never", True), ("episode", False), ("episode", True)])
def test_state_is_carried_or_reset_at_a_switch_exactly_as_the_policy_says(state_reset,
                                                                          reset_at_switch):
    # one slot: cue-recall x2 (6 steps each), then switching-bandit x1 (2 steps), repeated
    env = make_stream_env("cue-recall:2,switching-bandit:1", 1, seed=0)
    pol = CountingPolicy()
    res = play(pol, env, episodes_per_env=6, state_reset=state_reset,
               reset_at_switch=reset_at_switch, metrics_every=0)
    assert [e.game for e in res.episodes] == ["cue-recall", "cue-recall", "switching-bandit"] * 2
    lengths = [e.length for e in res.episodes]
    assert lengths == [6, 6, 2] * 2
    starts = [bool(s[0]) for s in pol.starts]
    counts = [int(c[0]) for c in pol.counts]
    episode_starts = set(np.cumsum([0] + lengths)[:-1].tolist())  # first obs of each episode
    switch_steps = {12, 14, 26}  # first obs of a new game: bandit, cue-recall, bandit
    assert len(starts) == sum(lengths)
    for t, s in enumerate(starts):
        if state_reset == "episode":
            assert s == (t in episode_starts), t
        else:
            assert s == (reset_at_switch and t in switch_steps), t
    if state_reset == "never" and not reset_at_switch:
        assert counts == list(range(1, 29))  # carried through every episode end and switch
    if state_reset == "never" and reset_at_switch:
        assert counts[12] == 1 and counts[14] == 1 and counts[11] == 12 and counts[13] == 2
        assert counts[15] == 2 and counts[20] == 7  # carried within the cue-recall segment
    env.close()
