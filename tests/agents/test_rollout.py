"""Rollout bookkeeping: reset masks per state-lifetime policy, state carried across segments."""

from __future__ import annotations

import pytest
import torch

from agents.rollout import RolloutCollector, episode_start_mask
from policies.state import index_state


def test_episode_start_mask_definitions():
    prev = torch.tensor([True, False, True, False])
    assert not episode_start_mask(prev, 0, "never").any()
    assert not episode_start_mask(prev, 3, "never").any()
    assert episode_start_mask(prev, 0, "episode").tolist() == prev.tolist()
    assert episode_start_mask(prev, 3, "episode").tolist() == prev.tolist()
    assert episode_start_mask(prev, 0, "span").all()
    assert episode_start_mask(prev, 3, "span").tolist() == prev.tolist()
    with pytest.raises(ValueError, match="valid: never, episode, span"):
        episode_start_mask(prev, 0, "sometimes")


@pytest.mark.parametrize("state_reset", ["never", "episode", "span"])
def test_counting_core_state_carried_across_segments(counting_policy, fake_env, state_reset):
    T, B, K = 5, 4, 4
    env = fake_env(B)
    collector = RolloutCollector(env, counting_policy, T, state_reset)
    lengths = env.lengths
    rollouts = [collector.collect() for _ in range(K)]

    prev_reward = torch.zeros(B)
    for k, ro in enumerate(rollouts):
        assert ro.obs.shape == (T, B, 64, 64, 3) and ro.obs.dtype == torch.uint8
        assert ro.env_steps == T * B
        if k > 0:  # the stored initial state of segment k is the final state of segment k-1
            for a, b in zip(ro.init_state, rollouts[k - 1].final_state, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
                assert not a.requires_grad
        for t in range(T):
            g = k * T + t  # global step; env b starts an episode when g % L_b == 0
            episode_start = torch.tensor([g % int(n) == 0 for n in lengths])
            expected = {
                "never": torch.zeros(B, dtype=torch.bool),
                "episode": episode_start,
                "span": episode_start | (t == 0),
            }[state_reset]
            assert ro.episode_start[t].tolist() == expected.tolist(), (k, t)
            # the reward fed with obs t is the reward of the previous step
            torch.testing.assert_close(ro.rewards_in[t], prev_reward)
            prev_reward = ro.rewards[t]
            assert ro.dones[t].tolist() == [(g + 1) % int(n) == 0 for n in lengths]
        # the count after the segment = steps since the last reset (or since the beginning)
        g_end = (k + 1) * T - 1
        for b in range(B):
            if state_reset == "never":
                last_reset = 0
            else:
                last_reset = g_end - g_end % int(lengths[b])
                if state_reset == "span":
                    last_reset = max(last_reset, k * T)
            assert ro.final_state[0][b, 0].item() == g_end - last_reset + 1, (k, b)


@pytest.mark.parametrize("state_reset", ["never", "episode", "span"])
def test_replay_from_stored_state_reproduces_acting(counting_policy, fake_env, state_reset):
    """One forward over the stored segment (as the learners do) gives the acting log-probs,
    values and final state, also for a subset of envs indexed out of the stored state."""
    collector = RolloutCollector(fake_env(4), counting_policy, 6, state_reset)
    collector.collect()
    ro = collector.collect()
    idx = torch.tensor([3, 1])
    with torch.no_grad():
        logits, values, final = counting_policy(
            ro.obs[:, idx], ro.rewards_in[:, idx], ro.episode_start[:, idx],
            index_state(ro.init_state, idx))
    logp = torch.distributions.Categorical(logits=logits).log_prob(ro.actions[:, idx])
    torch.testing.assert_close(logp, ro.logprobs[:, idx], rtol=0, atol=1e-6)
    torch.testing.assert_close(values, ro.values[:, idx], rtol=0, atol=1e-6)
    torch.testing.assert_close(final[0], ro.final_state[0][idx], rtol=0, atol=0)


def test_bootstrap_is_the_next_segments_first_step(counting_policy, fake_env):
    collector = RolloutCollector(fake_env(3), counting_policy, 4, "span")
    a = collector.collect()
    b = collector.collect()
    torch.testing.assert_close(a.bootstrap.obs, b.obs[0], rtol=0, atol=0)
    torch.testing.assert_close(a.bootstrap.reward_in, b.rewards_in[0], rtol=0, atol=0)
    assert a.bootstrap.episode_start.tolist() == b.episode_start[0].tolist()


def test_episodes_reported_and_reset(counting_policy, fake_env):
    env = fake_env(3)
    collector = RolloutCollector(env, counting_policy, 6, "never")
    ro = collector.collect()
    # env lengths 2, 3, 4 over 6 steps: 3 + 2 + 1 finished episodes
    assert len(ro.episodes) == 6
    assert {e["l"] for e in ro.episodes} == {2, 3, 4}
    collector.reset()
    ro = collector.collect()
    assert (ro.init_state[0] == 0).all()
    assert (ro.rewards_in[0] == 0).all()


def test_state_lifetime_resets_only_at_episode_starts(counting_policy, fake_env):
    """never + state_lifetime L: resets fall only on the first obs of an episode, about 1/L of
    them; the bootstrap mask is the next segment's first mask; the stored segment replays the
    acting values exactly; the same lifetime_seed gives the same resets."""
    def masks(seed):
        collector = RolloutCollector(fake_env(8), counting_policy, 5, "never", state_lifetime=3,
                                     lifetime_seed=seed)
        rollouts = [collector.collect() for _ in range(40)]
        return collector, rollouts

    collector, rollouts = masks(7)
    starts, resets = 0, 0
    prev_done = torch.ones(8, dtype=torch.bool)
    for k, ro in enumerate(rollouts):
        for t in range(5):
            first_obs = prev_done
            assert not (ro.episode_start[t] & ~first_obs).any()  # only at episode starts
            if k or t:  # the very first obs after reset() starts from zeros anyway
                starts += int(first_obs.sum())
                resets += int(ro.episode_start[t].sum())
            prev_done = ro.dones[t]
        if k + 1 < len(rollouts):
            assert ro.bootstrap.episode_start.tolist() == rollouts[k + 1].episode_start[0].tolist()
    assert 0.25 < resets / starts < 0.42, (resets, starts)  # 1/3 expected over ~500 starts
    ro = rollouts[-1]
    with torch.no_grad():
        _, values, final = counting_policy(ro.obs, ro.rewards_in, ro.episode_start, ro.init_state)
    torch.testing.assert_close(values, ro.values, rtol=0, atol=1e-6)
    torch.testing.assert_close(final[0], ro.final_state[0], rtol=0, atol=0)
    _, again = masks(7)
    assert all(torch.equal(a.episode_start, b.episode_start) for a, b in zip(rollouts, again,
                                                                              strict=True))
    _, other = masks(8)
    assert not all(torch.equal(a.episode_start, b.episode_start)
                   for a, b in zip(rollouts, other, strict=True))
