"""PPO and V-trace learners: state replay (ratio 1), configs, metrics, state_dict round trip."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch

from agents.learners import make_learner
from agents.ppo import PPOConfig, RewardNormalizer
from agents.rollout import RolloutCollector
from agents.vtrace import VTraceConfig


@pytest.mark.parametrize("core", ["srwm", "lstm"])
@pytest.mark.parametrize("state_reset", ["never", "episode", "span"])
def test_ppo_first_minibatch_ratio_is_one(make_tiny_policy, fake_env, core, state_reset):
    """Replaying each sequence from its stored initial state with its stored mask reproduces
    the behaviour log-probs: ratio 1 on the first minibatch of the first epoch (also on a
    segment that does not start from a zero state)."""
    policy = make_tiny_policy(core)
    learner = make_learner("ppo", policy, num_envs=4, unroll=6, total_steps=10_000,
                           device="cpu", ppo_cfg=PPOConfig(num_minibatches=2, epochs=2),
                           vtrace_cfg=VTraceConfig())
    collector = RolloutCollector(fake_env(4), learner.acting_policy, 6, state_reset)
    for _ in range(2):
        ro = collector.collect()
        if core == "srwm":
            assert any(s.abs().sum() > 0 for s in ro.init_state) or _ == 0
        metrics = learner.update(ro)
        ratio = learner.first_minibatch_ratio
        assert ratio.shape == (6, 2)
        torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=0, atol=1e-6)
    # later minibatches have moved away from the behaviour policy
    assert metrics["losses/approx_kl"] >= 0
    assert any(k.startswith("core/") for k in metrics)


def _lagged_rollout(policy, fake_env, cfg):
    """A learner on `policy` that has made one update, and a rollout of 4 envs x 6 steps
    collected with the parameters from before that update (policy_lag 1, as the async
    pipeline hands it over)."""
    stale = copy.deepcopy(policy)
    collector = RolloutCollector(fake_env(4), stale, 6, "never")
    learner = make_learner("ppo", policy, num_envs=4, unroll=6, total_steps=10_000,
                           device="cpu", ppo_cfg=cfg, vtrace_cfg=VTraceConfig())
    learner.update(collector.collect())  # the learner moves away from `stale`
    ro = collector.collect()
    ro.policy_lag = 1
    return learner, ro


@pytest.mark.parametrize("core", ["lstm", "srwm"])
def test_ppo_lag_correction_clips_around_the_learners_policy(make_tiny_policy, fake_env, core):
    """`extra-pass`: with lag_correction the first minibatch's ratio is 1 again (clipped around
    the learner's policy at the start of the update, recomputed from the stored initial
    state), pi/mu is not, and the weights are min(pi_prox / mu, cap). Without a lag, or with
    the correction off, the ratio is pi/mu as before."""
    torch.manual_seed(0)
    cfg = PPOConfig(num_minibatches=2, epochs=1, lr=5e-2, lag_proximal="extra-pass")
    learner, ro = _lagged_rollout(make_tiny_policy(core), fake_env, cfg)
    policy = learner.policy
    targets = learner.targets(ro)
    assert targets.prox_logprobs is not None and targets.weights is not None
    assert targets.pending is None
    assert float((targets.prox_logprobs - ro.logprobs).abs().max()) > 1e-3
    expected = (targets.prox_logprobs - ro.logprobs).exp().clamp(max=cfg.lag_weight_cap)
    torch.testing.assert_close(targets.weights, expected)
    assert float(targets.weights.max()) <= cfg.lag_weight_cap
    metrics = learner.update(ro)
    ratio = learner.first_minibatch_ratio
    torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=0, atol=1e-5)
    assert abs(metrics["losses/importance_ratio"] - 1.0) > 1e-4
    assert "losses/lag_weight" in metrics

    for lag, correction in ((0, True), (1, False)):
        for proximal in ("extra-pass", "first-pass"):
            learner = make_learner(
                "ppo", copy.deepcopy(policy), num_envs=4, unroll=6, total_steps=10_000,
                device="cpu", vtrace_cfg=VTraceConfig(), ppo_cfg=dataclasses.replace(
                    cfg, lag_correction=correction, lag_proximal=proximal))
            ro.policy_lag = lag
            targets = learner.targets(ro)
            assert targets.prox_logprobs is None and targets.weights is None
            assert targets.pending is None
            assert targets.old_values is ro.values
            metrics = learner.update(ro)
            assert float((learner.first_minibatch_ratio - 1).abs().max()) > 1e-4
            assert "losses/lag_weight" not in metrics


@pytest.mark.parametrize("core", ["lstm", "srwm"])
def test_ppo_first_pass_proximal_is_the_policy_at_first_visit(make_tiny_policy, fake_env, core):
    """`first-pass` (the default): each env's proximal log-probs, values, weights, advantages
    and returns are those of the parameters its minibatch met in the first epoch (before
    that minibatch's own step): recomputed here from a snapshot of those parameters, they
    agree. Every env is filled exactly once, and every first-epoch ratio is 1."""
    from agents.returns import gae

    torch.manual_seed(0)
    cfg = PPOConfig(num_minibatches=2, epochs=2, lr=5e-2)
    assert cfg.lag_proximal == "first-pass"
    learner, ro = _lagged_rollout(make_tiny_policy(core), fake_env, cfg)
    seen: list[tuple] = []
    loss = learner.loss

    def recording_loss(rollout, idx, targets):
        snapshot = copy.deepcopy(learner.policy) if len(seen) < 2 else None
        out = loss(rollout, idx, targets)
        seen.append((idx.clone(), snapshot, targets,
                     out[1]["losses/approx_kl"], out[1]["losses/clipfrac"]))
        return out

    learner.loss = recording_loss
    metrics = learner.update(ro)
    assert "losses/lag_weight" in metrics and abs(metrics["losses/importance_ratio"] - 1) > 1e-4
    targets = seen[0][2]
    assert not bool(targets.pending.any())
    for t in (targets.prox_logprobs, targets.old_values, targets.weights, targets.advantages,
              targets.returns):
        assert bool(torch.isfinite(t).all())
    assert sorted(torch.cat([s[0] for s in seen[:2]]).tolist()) == [0, 1, 2, 3]
    for idx, snapshot, _, approx_kl, clipfrac in seen[:2]:
        assert approx_kl == pytest.approx(0.0, abs=1e-7) and clipfrac == 0.0  # ratio 1
        with torch.no_grad():
            logits, values, _ = snapshot(ro.obs[:, idx], ro.rewards_in[:, idx],
                                         ro.episode_start[:, idx],
                                         tuple(s[idx] for s in ro.init_state))
        logp = torch.distributions.Categorical(logits=logits).log_prob(ro.actions[:, idx])
        torch.testing.assert_close(targets.prox_logprobs[:, idx], logp, rtol=0, atol=1e-5)
        torch.testing.assert_close(targets.old_values[:, idx], values, rtol=0, atol=1e-5)
        torch.testing.assert_close(targets.weights[:, idx],
                                   (logp - ro.logprobs[:, idx]).exp().clamp(max=1.0))
        adv, ret = gae(targets.rewards[:, idx], values, ro.dones[:, idx],
                       targets.last_value[idx], cfg.gamma, cfg.gae_lambda)
        torch.testing.assert_close(targets.advantages[:, idx], adv, rtol=0, atol=1e-5)
        torch.testing.assert_close(targets.returns[:, idx], ret, rtol=0, atol=1e-5)
    # the second epoch's ratios are clipped around those proximal log-probs: not all 1
    assert any(s[3] > 1e-7 for s in seen[2:])


@pytest.mark.parametrize("core", ["lstm", "srwm"])
def test_ppo_first_pass_equals_extra_pass_with_one_minibatch(make_tiny_policy, fake_env, core):
    """With one minibatch per epoch the first visit of every env is at the parameters of the
    start of the update, so the two ways of getting pi_prox give the same update."""
    torch.manual_seed(0)
    cfg = PPOConfig(num_minibatches=1, epochs=3, lr=5e-2)
    learner, ro = _lagged_rollout(make_tiny_policy(core), fake_env, cfg)
    results = []
    for proximal in ("first-pass", "extra-pass"):
        other = copy.deepcopy(learner)
        other.cfg = dataclasses.replace(cfg, lag_proximal=proximal)
        metrics = other.update(ro)
        results.append((metrics, other.policy.state_dict()))
    (m_first, p_first), (m_extra, p_extra) = results
    for name in p_first:
        torch.testing.assert_close(p_first[name], p_extra[name], rtol=1e-4, atol=1e-6)
    for key in ("losses/lag_weight", "losses/explained_variance", "losses/policy"):
        assert m_first[key] == pytest.approx(m_extra[key], rel=1e-3, abs=1e-6), key


def test_ppo_lag_correction_on_its_own_rollout_changes_nothing(make_tiny_policy, fake_env):
    """Recomputing the proximal policy on a rollout the learner's own parameters collected
    gives back the behaviour log-probs and values (weights 1): the correction is exact where
    there is nothing to correct."""
    policy = make_tiny_policy("srwm")
    learner = make_learner("ppo", policy, num_envs=4, unroll=6, total_steps=10_000,
                           device="cpu",
                           ppo_cfg=PPOConfig(num_minibatches=2, lag_proximal="extra-pass"),
                           vtrace_cfg=VTraceConfig())
    collector = RolloutCollector(fake_env(4), policy, 6, "never")
    collector.collect()
    ro = collector.collect()
    ro.policy_lag = 1
    targets = learner.targets(ro)
    torch.testing.assert_close(targets.prox_logprobs, ro.logprobs, rtol=0, atol=1e-5)
    torch.testing.assert_close(targets.old_values, ro.values, rtol=0, atol=1e-5)
    torch.testing.assert_close(targets.weights, torch.ones_like(ro.logprobs), rtol=0,
                               atol=1e-5)


@pytest.mark.parametrize("actor_lag", [0, 1])
def test_vtrace_importance_ratio(make_tiny_policy, fake_env, actor_lag):
    """Without lag the first batch is on-policy (ratio 1); with lag 1 the second rollout was
    collected with the parameters from before the first update, so its ratios differ from 1."""
    policy = make_tiny_policy("srwm")
    cfg = VTraceConfig(batch_size=4, actor_lag=actor_lag, lr=5e-3)
    learner = make_learner("vtrace", policy, num_envs=4, unroll=5, total_steps=10_000,
                           device="cpu", ppo_cfg=PPOConfig(), vtrace_cfg=cfg)
    collector = RolloutCollector(fake_env(4), learner.acting_policy, 5, "never")
    m1 = learner.update(collector.collect())
    assert m1["losses/importance_ratio"] == pytest.approx(1.0, abs=1e-6)
    m2 = learner.update(collector.collect())
    if actor_lag:
        assert learner.acting_policy is not policy
        assert abs(m2["losses/importance_ratio"] - 1.0) > 1e-4
    else:
        assert learner.acting_policy is policy
        assert m2["losses/importance_ratio"] == pytest.approx(1.0, abs=1e-6)
    for key in ("losses/policy", "losses/value", "losses/entropy", "losses/approx_kl",
                "losses/clipfrac", "losses/explained_variance", "charts/learning_rate"):
        assert key in m2


def test_vtrace_learning_rate_decays_linearly_to_zero(make_tiny_policy, fake_env):
    policy = make_tiny_policy("ff")
    # 4 envs, batch 2, unroll 5: 2 optimizer steps of 10 env steps per rollout; total 40
    learner = make_learner("vtrace", policy, num_envs=4, unroll=5, total_steps=40,
                           device="cpu", vtrace_cfg=VTraceConfig(batch_size=2))
    collector = RolloutCollector(fake_env(4), policy, 5, "never")
    lrs = []
    for _ in range(2):
        lrs.append(learner.update(collector.collect())["charts/learning_rate"])
    assert lrs == pytest.approx([6e-4, 6e-4 * 0.5])
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(0.0)


def test_vtrace_epochs_and_adam(make_tiny_policy, fake_env):
    """epochs K: K passes over each rollout (K x the optimizer steps), the LR schedule still
    follows env steps consumed (same decay as one pass); optimizer adam gives Adam."""
    steps = {}
    for epochs in (1, 3):
        policy = make_tiny_policy("srwm")
        cfg = VTraceConfig(batch_size=2, epochs=epochs, optimizer="adam", lr=5e-3)
        learner = make_learner("vtrace", policy, num_envs=4, unroll=5, total_steps=40,
                               device="cpu", vtrace_cfg=cfg)
        assert isinstance(learner.optimizer, torch.optim.Adam)
        collector = RolloutCollector(fake_env(4), policy, 5, "never")
        learner.update(collector.collect())
        state = next(iter(learner.optimizer.state.values()))
        steps[epochs] = int(state["step"])
        assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(5e-3 * 0.5)
    assert steps == {1: 2, 3: 6}
    with pytest.raises(ValueError, match="optimizer 'sgd'"):
        make_learner("vtrace", make_tiny_policy("ff"), num_envs=4, unroll=5, total_steps=40,
                     device="cpu", vtrace_cfg=VTraceConfig(optimizer="sgd"))
    with pytest.raises(ValueError, match="epochs"):
        make_learner("vtrace", make_tiny_policy("ff"), num_envs=4, unroll=5, total_steps=40,
                     device="cpu", vtrace_cfg=VTraceConfig(epochs=0))


def test_configs_round_trip_through_json():
    for cls in (PPOConfig, VTraceConfig):
        d = json.loads(json.dumps(dataclasses.asdict(cls())))
        assert cls(**d) == cls()
    assert PPOConfig().lr == 5e-4 and PPOConfig().gamma == 0.999
    assert VTraceConfig().lr == 6e-4 and VTraceConfig().batch_size == 32


BAD_SETTINGS = [  # (algo, num_envs, config fields, the one line it must raise)
    ("ppo", 8, dict(num_minibatches=3), r"num_minibatches 3 must divide num_envs 8; valid: "
                                        r"1, 2, 4, 8"),
    ("vtrace", 24, dict(batch_size=16), "batch_size 16 must divide num_envs 24"),
    ("ppo", 8, dict(lag_weight_cap=0.0), "PPO lag_weight_cap must be positive, got 0.0"),
    ("ppo", 8, dict(advantage_std_floor=-0.1), "PPO advantage_std_floor must be >= 0"),
    ("vtrace", 8, dict(advantage_std_floor=-0.1), "V-trace advantage_std_floor must be >= 0"),
    ("ppo", 8, dict(target_kl=-0.01), "PPO target_kl must be >= 0 .0 = off., got -0.01"),
    ("vtrace", 8, dict(target_kl=-1), "V-trace target_kl must be >= 0 .0 = off., got -1"),
    ("ppo", 8, dict(kl_revert=True), "PPO kl_revert needs a target_kl > 0, got target_kl 0.0"),
    ("ppo", 8, dict(normalize_advantages_over="env"),
     "PPO normalize_advantages_over 'env' is not one of: minibatch, rollout"),
    ("ppo", 8, dict(lag_proximal="both"), "PPO lag_proximal 'both' is not one of: first-pass"),
]


@pytest.mark.parametrize("algo, num_envs, fields, message", BAD_SETTINGS)
def test_bad_settings_give_one_clear_line(make_tiny_policy, algo, num_envs, fields, message):
    cfg = {"ppo_cfg": PPOConfig(**fields)} if algo == "ppo" else \
        {"vtrace_cfg": VTraceConfig(**fields)}
    with pytest.raises(ValueError, match=message):
        make_learner(algo, make_tiny_policy("ff"), num_envs=num_envs, unroll=4,
                     total_steps=100, device="cpu", **cfg)


def test_unknown_algo_and_a_batch_larger_than_the_rollout(make_tiny_policy):
    policy = make_tiny_policy("ff")
    with pytest.raises(ValueError, match="unknown algo 'a2c'; valid: ppo, vtrace"):
        make_learner("a2c", policy, num_envs=8, unroll=4, total_steps=100, device="cpu")
    # fewer envs than the batch: the whole rollout is one batch
    learner = make_learner("vtrace", policy, num_envs=4, unroll=4, total_steps=100,
                           device="cpu", vtrace_cfg=VTraceConfig())
    assert learner.batch_size == 4


@pytest.mark.parametrize("algo", ["ppo", "vtrace"])
def test_learner_state_dict_round_trip(make_tiny_policy, fake_env, algo):
    """A learner restored from state_dict (with the policy's weights) continues exactly like
    the original: same parameters after one more update on the same rollout."""
    cfgs = dict(ppo_cfg=PPOConfig(num_minibatches=2, anneal_lr=True),
                vtrace_cfg=VTraceConfig(batch_size=2))
    policy = make_tiny_policy("lstm")
    learner = make_learner(algo, policy, num_envs=4, unroll=5, total_steps=400, device="cpu",
                           **cfgs)
    collector = RolloutCollector(fake_env(4), policy, 5, "episode")
    learner.update(collector.collect())
    saved_policy = {k: v.clone() for k, v in policy.state_dict().items()}
    saved = copy.deepcopy(learner.state_dict())  # as if saved to disk: no shared tensors
    ro = collector.collect()

    policy2 = make_tiny_policy("lstm", seed=1)
    policy2.load_state_dict(saved_policy)
    learner2 = make_learner(algo, policy2, num_envs=4, unroll=5, total_steps=400,
                            device="cpu", **cfgs)
    learner2.load_state_dict(saved)
    assert learner2.updates == 1
    torch.manual_seed(7)
    m1 = learner.update(ro)
    torch.manual_seed(7)
    m2 = learner2.update(ro)
    assert m1 == m2
    for (k, a), b in zip(policy.state_dict().items(), policy2.state_dict().values(),
                         strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_reward_normalizer_matches_running_return_std():
    """Scale = 1 / std of all discounted returns seen so far (one accumulator per env, reset
    at episode ends); normalised rewards clipped at +-clip."""
    torch.manual_seed(0)
    norm = RewardNormalizer(num_envs=3, gamma=0.9, clip=10.0)
    rewards = torch.randn(6, 3)
    dones = torch.zeros(6, 3, dtype=torch.bool)
    dones[2, 1] = True
    out = norm(rewards, dones)
    rets, ret = [], torch.zeros(3, dtype=torch.float64)
    for t in range(6):
        ret = ret * 0.9 + rewards[t].double()
        rets.append(ret.clone())
        seen = torch.cat(rets)
        # the running stats start from a tiny pseudo-count (1e-4) at var 1
        var = (seen.var(unbiased=False) * seen.numel() + 1e-4) / (seen.numel() + 1e-4)
        torch.testing.assert_close(out[t].double(), rewards[t].double() / torch.sqrt(var + 1e-8),
                                   rtol=1e-4, atol=1e-5)
        ret[dones[t]] = 0.0
    big = norm(torch.full((1, 3), 1e6), torch.zeros(1, 3, dtype=torch.bool))
    assert big.max() <= 10.0


@pytest.mark.parametrize("algo", ["ppo", "vtrace"])
def test_same_seed_same_result(make_tiny_policy, algo):
    """Two runs from the same seeds (torch and env) end with identical parameters and metrics."""
    from envs import make_env

    def run():
        policy = make_tiny_policy("srwm", num_actions=2, seed=3)
        learner = make_learner(algo, policy, num_envs=4, unroll=6, total_steps=1000,
                               device="cpu", ppo_cfg=PPOConfig(num_minibatches=2),
                               vtrace_cfg=VTraceConfig(batch_size=2))
        collector = RolloutCollector(make_env("cue-recall", 4, seed=5), policy, 6, "never")
        metrics = [learner.update(collector.collect()) for _ in range(2)]
        return policy.state_dict(), metrics

    (params1, m1), (params2, m2) = run(), run()
    assert m1 == m2
    for k, v in params1.items():
        torch.testing.assert_close(v, params2[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("algo", ["ppo", "vtrace"])
def test_lr_schedule_and_update_count_are_one_rule(make_tiny_policy, fake_env, algo):
    """total_steps 50 with 20 env steps per update: the run makes ceil(50 / 20) = 3 updates
    (TrainConfig.num_updates and the schedules use the same rule), and with annealing update
    k of 3 starts at lr * (1 - k / 3): the last update does not run at lr 0. V-trace (2
    optimizer steps per update) decays per optimizer step: 1, 5/6, ..., 1/6."""
    from agents.config import TrainConfig
    from agents.learners import planned_updates

    cfg = TrainConfig(games=["cue-recall"], algo=algo, num_envs=4, unroll=5, total_steps=50)
    cfg.ppo.num_minibatches = 2
    cfg.vtrace.batch_size = 2
    assert cfg.resolved().num_updates == planned_updates(50, 20) == 3
    lr = 1e-3
    learner = make_learner(algo, make_tiny_policy("ff"), num_envs=4, unroll=5, total_steps=50,
                           device="cpu",
                           ppo_cfg=PPOConfig(num_minibatches=2, anneal_lr=True, lr=lr),
                           vtrace_cfg=VTraceConfig(batch_size=2, lr=lr))
    collector = RolloutCollector(fake_env(4), learner.acting_policy, 5, "never")
    lrs = [learner.update(collector.collect())["charts/learning_rate"] for _ in range(3)]
    assert lrs == pytest.approx([lr, lr * 2 / 3, lr / 3])
    if algo == "vtrace":  # the step inside the last update ran at lr / 6
        assert learner.scheduler.get_last_lr()[0] == pytest.approx(0.0)
    assert min(lrs) > 0


@pytest.mark.parametrize("scale", [1e-4, 10.0])
def test_ppo_advantage_std_floor(make_tiny_policy, fake_env, scale):
    """With a floor, advantages whose std is below it are divided by the floor instead of
    their std (the policy gradient shrinks by std / floor); above it nothing changes."""
    policy = make_tiny_policy("lstm")
    collector = RolloutCollector(fake_env(4), policy, 6, "never")
    ro = collector.collect()
    grads = {}
    for floor in (0.0, 0.5):
        cfg = PPOConfig(num_minibatches=1, value_coef=0.0, entropy_coef=0.0,
                        advantage_std_floor=floor)
        learner = make_learner("ppo", copy.deepcopy(policy), num_envs=4, unroll=6,
                               total_steps=10_000, device="cpu", ppo_cfg=cfg,
                               vtrace_cfg=VTraceConfig())
        targets = learner.targets(ro)
        torch.manual_seed(1)
        adv = scale * torch.randn_like(targets.advantages)
        targets = targets._replace(advantages=adv)
        loss, stats = learner.loss(ro, torch.arange(4), targets)
        loss.backward()
        grads[floor] = learner.policy.heads.policy.weight.grad.clone()
        # the logged std is the advantages' own, before any normalisation or floor
        assert stats["losses/advantage_std"] == pytest.approx(float(adv.std()), rel=1e-6)
    std = float(adv.std())
    factor = (std + 1e-8) / 0.5 if std < 0.5 else 1.0
    torch.testing.assert_close(grads[0.5], grads[0.0] * factor, rtol=1e-4, atol=1e-9)
    assert (factor < 1e-3) == (scale < 1)


def _zero_value_rollout(make_tiny_policy, fake_env):
    """A tiny srwm policy with a zero value head (its V-trace advantages are then linear in
    the rewards) and one rollout of 4 envs x 6 steps with some reward in it."""
    policy = make_tiny_policy("srwm")
    for p in policy.heads.value.parameters():
        torch.nn.init.zeros_(p)
    ro = RolloutCollector(fake_env(4), policy, 6, "never").collect()
    assert float(ro.rewards.abs().sum()) > 0
    return policy, ro


def _vtrace_policy_grad(policy, ro, scale, **cfg_kwargs):
    """(gradient of the policy head's weight, logged advantage std) of the V-trace loss alone
    (no baseline or entropy term) on `ro` with its rewards times `scale`."""
    cfg = VTraceConfig(batch_size=4, baseline_cost=0.0, entropy_coef=0.0, reward_clip=1e6,
                       **cfg_kwargs)
    learner = make_learner("vtrace", copy.deepcopy(policy), num_envs=4, unroll=6,
                           total_steps=10_000, device="cpu", vtrace_cfg=cfg)
    scaled = dataclasses.replace(ro, rewards=ro.rewards * scale)
    loss, stats = learner.loss(scaled, torch.arange(4), None)
    loss.backward()
    return learner.policy.heads.policy.weight.grad.clone(), stats["losses/advantage_std"]


@pytest.mark.parametrize("normalize", [False, True])
def test_vtrace_normalize_advantages(make_tiny_policy, fake_env, normalize):
    """With a zero value head the V-trace advantages are linear in the rewards. Without
    normalisation the policy gradient then scales with the rewards; with it, it does not
    (and the logged std, taken before normalisation, does)."""
    policy, ro = _zero_value_rollout(make_tiny_policy, fake_env)
    grads, stds = {}, {}
    for scale in (1.0, 7.0):
        grads[scale], stds[scale] = _vtrace_policy_grad(policy, ro, scale,
                                                        normalize_advantages=normalize)
    assert stds[7.0] == pytest.approx(7.0 * stds[1.0], rel=1e-5)
    assert float(grads[1.0].abs().max()) > 0
    factor = 1.0 if normalize else 7.0
    torch.testing.assert_close(grads[7.0], grads[1.0] * factor, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("base", [1e-3, 100.0])
def test_vtrace_advantage_std_floor(make_tiny_policy, fake_env, base):
    """With normalised advantages and a floor, V-trace divides by max(std, floor): advantages
    whose std is below the floor keep their scale (the policy gradient doubles with the
    rewards), while without the floor, or above it, normalisation removes the scale."""
    policy, ro = _zero_value_rollout(make_tiny_policy, fake_env)
    grads, stds = {}, {}
    for floor in (0.0, 0.5):
        for scale in (base, 2 * base):
            grads[floor, scale], stds[scale] = _vtrace_policy_grad(
                policy, ro, scale, normalize_advantages=True, advantage_std_floor=floor)
    below = stds[2 * base] < 0.5
    assert below == (base < 1)  # the floor bites at the small scale only
    assert float(grads[0.0, base].abs().max()) > 0
    torch.testing.assert_close(grads[0.0, 2 * base], grads[0.0, base], rtol=1e-4, atol=1e-7)
    factor = 2.0 if below else 1.0
    torch.testing.assert_close(grads[0.5, 2 * base], grads[0.5, base] * factor, rtol=1e-4,
                               atol=1e-9)
    if not below:  # above the floor it changes nothing
        torch.testing.assert_close(grads[0.5, base], grads[0.0, base], rtol=1e-5, atol=1e-9)


def test_ppo_normalize_advantages_over_the_rollout(make_tiny_policy, fake_env):
    """normalize_advantages_over `rollout`: one mean and std for the whole rollout. A minibatch
    whose advantages are 1000x smaller than the rest's then keeps a 1000x smaller policy
    gradient, where per-minibatch normalisation scales it up to the others' size; with one
    minibatch per epoch the two scopes are the same update."""
    ro = RolloutCollector(fake_env(4), make_tiny_policy("srwm"), 6, "never").collect()
    grads = {}
    for scope in ("minibatch", "rollout"):
        cfg = PPOConfig(num_minibatches=2, value_coef=0.0, entropy_coef=0.0,
                        normalize_advantages_over=scope)
        learner = make_learner("ppo", make_tiny_policy("srwm"), num_envs=4, unroll=6,
                               total_steps=10_000, device="cpu", ppo_cfg=cfg)
        targets = learner.targets(ro)
        adv = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
        adv[:, :2] *= 1e-3  # envs 0-1: a minibatch whose episodes all went right
        adv[:, 2:] -= adv[:, 2:].mean()  # a rollout mean of ~0: no common offset
        moments = learner.advantage_moments(adv, over_ranks=True)
        targets = targets._replace(advantages=adv,
                                   adv_moments=moments if scope == "rollout" else None)
        for name, idx in (("small", torch.tensor([0, 1])), ("large", torch.tensor([2, 3]))):
            learner.policy.zero_grad()
            loss, stats = learner.loss(ro, idx, targets)
            loss.backward()
            grads[scope, name] = float(learner.policy.heads.policy.weight.grad.norm())
            assert stats["losses/advantage_std"] == pytest.approx(float(adv[:, idx].std()),
                                                                  rel=1e-5)
    assert grads["minibatch", "small"] > 0.1 * grads["minibatch", "large"]
    assert grads["rollout", "small"] < 0.01 * grads["rollout", "large"]
    after = {}
    for scope in ("minibatch", "rollout"):
        policy = make_tiny_policy("srwm")
        learner = make_learner("ppo", policy, num_envs=4, unroll=6, total_steps=10_000,
                               device="cpu", ppo_cfg=PPOConfig(num_minibatches=1,
                                                               normalize_advantages_over=scope))
        torch.manual_seed(0)
        learner.update(ro)
        after[scope] = policy.state_dict()
    for k, v in after["minibatch"].items():
        torch.testing.assert_close(v, after["rollout"][k], rtol=1e-5, atol=1e-7, msg=k)


@pytest.mark.parametrize("algo", ["ppo", "vtrace"])
def test_target_kl_ends_an_update_early(make_tiny_policy, fake_env, algo):
    """target_kl: the update stops before the step of the first minibatch whose approx_kl
    exceeds it. A tiny target leaves one optimizer step (the first minibatch is on-policy,
    KL 0); a target never reached changes nothing; the LR schedule advances as without it."""
    cfgs = dict(ppo=dict(num_minibatches=4, epochs=3, lr=1e-2, anneal_lr=True),
                vtrace=dict(batch_size=2, epochs=3, lr=1e-2, optimizer="adam"))[algo]
    ro = RolloutCollector(fake_env(8), make_tiny_policy("srwm"), 6, "never").collect()
    after, metrics, steps, lrs = {}, {}, {}, {}
    for target in (0.0, 1e-12, 1e9):
        policy = make_tiny_policy("srwm")
        kw = {"ppo_cfg" if algo == "ppo" else "vtrace_cfg":
              (PPOConfig if algo == "ppo" else VTraceConfig)(**cfgs, target_kl=target)}
        learner = make_learner(algo, policy, num_envs=8, unroll=6, total_steps=8 * 6 * 10,
                               device="cpu", **kw)
        torch.manual_seed(0)
        metrics[target] = learner.update(ro)
        after[target] = {k: v.clone() for k, v in policy.state_dict().items()}
        steps[target] = int(learner.optimizer.state[policy.heads.policy.weight]["step"])
        lrs[target] = learner.optimizer.param_groups[0]["lr"]
    assert steps[0.0] == steps[1e9] == 12
    assert steps[1e-12] == 1
    assert metrics[1e-12]["losses/kl_stop"] == 1.0
    assert metrics[1e-12]["losses/minibatch_steps"] == 1.0
    assert metrics[1e-12]["losses/approx_kl"] > 0  # the mean includes the minibatch that stopped
    assert metrics[1e9]["losses/kl_stop"] == 0.0 and metrics[1e9]["losses/minibatch_steps"] == 12
    assert "losses/kl_stop" not in metrics[0.0]
    for k, v in after[0.0].items():
        assert torch.equal(v, after[1e9][k]), k
    assert any(not torch.equal(v, after[1e-12][k]) for k, v in after[0.0].items())
    assert lrs[0.0] == lrs[1e-12] == lrs[1e9] < 1e-2
    # kl_revert: the step before the stop is undone as well; here that was the only step
    policy = make_tiny_policy("srwm")
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    kw = {"ppo_cfg" if algo == "ppo" else "vtrace_cfg":
          (PPOConfig if algo == "ppo" else VTraceConfig)(**cfgs, target_kl=1e-12,
                                                         kl_revert=True)}
    learner = make_learner(algo, policy, num_envs=8, unroll=6, total_steps=8 * 6 * 10,
                           device="cpu", **kw)
    m = learner.update(ro)
    assert m["losses/kl_stop"] == 1.0 and m["losses/minibatch_steps"] == 0.0
    for k, v in policy.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not learner.optimizer.state  # Adam's moments are back to before the step, too
    assert learner.optimizer.param_groups[0]["lr"] == lrs[0.0]


@pytest.mark.parametrize("algo", ["ppo", "vtrace"])
def test_grad_norm_is_logged_before_clipping(make_tiny_policy, fake_env, algo):
    """`losses/grad_norm` is the global gradient norm before clipping: with one minibatch of
    every env and one pass it is the norm of the gradient of that minibatch's loss, computed
    here from a copy of the learner, and it exceeds a max_grad_norm that bites."""
    torch.manual_seed(0)
    policy = make_tiny_policy("srwm")
    clip = 1e-3
    learner = make_learner(algo, policy, num_envs=4, unroll=5, total_steps=1_000, device="cpu",
                           ppo_cfg=PPOConfig(epochs=1, num_minibatches=1, max_grad_norm=clip),
                           vtrace_cfg=VTraceConfig(epochs=1, batch_size=4, max_grad_norm=clip))
    rollout = RolloutCollector(fake_env(4), learner.acting_policy, 5, "never").collect()
    twin = copy.deepcopy(learner)
    loss, _ = twin.loss(rollout, torch.arange(4), twin.targets(rollout))
    loss.backward()
    expected = torch.stack([p.grad.norm() for p in twin.policy.parameters()
                            if p.grad is not None]).norm().item()
    got = learner.update(rollout)["losses/grad_norm"]
    assert got == pytest.approx(expected, rel=1e-4)
    assert got > 10 * clip


def test_vtrace_policy_clip(make_tiny_policy, fake_env):
    """policy_clip (APPO): on-policy (pi = mu) its gradient is IMPALA's; off-policy, with
    non-negative advantages (zero value head, positive rewards), a ratio above 1 + clip gives
    no policy gradient at all, while a ratio below 1 - clip keeps the unclipped term -r A."""
    policy = make_tiny_policy("srwm")
    for p in policy.heads.value.parameters():
        torch.nn.init.zeros_(p)
    ro = RolloutCollector(fake_env(4), policy, 6, "never").collect()
    assert float(ro.rewards.min()) > 0

    def policy_grad(rollout, clip):
        cfg = VTraceConfig(batch_size=4, baseline_cost=0.0, entropy_coef=0.0, policy_clip=clip)
        learner = make_learner("vtrace", copy.deepcopy(policy), num_envs=4, unroll=6,
                               total_steps=10_000, device="cpu", vtrace_cfg=cfg)
        loss, stats = learner.loss(rollout, torch.arange(4), None)
        loss.backward()
        return learner.policy.heads.policy.weight.grad.clone(), stats

    impala, _ = policy_grad(ro, 0.0)
    appo, stats = policy_grad(ro, 0.2)
    assert float(impala.abs().max()) > 0
    torch.testing.assert_close(appo, impala, rtol=1e-4, atol=1e-7)
    assert stats["losses/policy_clipfrac"] == 0.0

    too_likely = dataclasses.replace(ro, logprobs=ro.logprobs - math.log(2.0))  # pi / mu = 2
    grad, stats = policy_grad(too_likely, 0.2)
    assert stats["losses/policy_clipfrac"] == 1.0
    assert float(grad.abs().max()) == 0.0
    unclipped, _ = policy_grad(too_likely, 0.0)
    assert float(unclipped.abs().max()) > 0

    too_unlikely = dataclasses.replace(ro, logprobs=ro.logprobs + math.log(2.0))  # pi / mu = 1/2
    grad, _ = policy_grad(too_unlikely, 0.2)
    # -r A with r = 1/2 and rho = 1/2: the same gradient as IMPALA's -rho A log pi
    impala_half, _ = policy_grad(too_unlikely, 0.0)
    assert float(grad.abs().max()) > 0
    torch.testing.assert_close(grad, impala_half, rtol=1e-4, atol=1e-7)
