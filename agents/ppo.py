"""Recurrent PPO (the Procgen paper's learner; docs/SPEC.md, section 4) on one Rollout per
update.

The update loop is agents.learners.Learner's; PPO supplies its targets (normalise rewards ->
bootstrap value -> GAE) and its loss. Minibatches are whole env sequences, each replayed from
its stored initial state with its stored episode_start mask, so the first minibatch of the
first epoch reproduces the behaviour log-probs exactly (ratio 1).

Under a policy lag (the async pipeline: the rollout was collected with parameters
`rollout.policy_lag` updates older than the learner's), `lag_correction` makes this the
decoupled form of PPO: the ratio is clipped around a recent policy of the learner's own (the
"proximal" policy) instead of around the old behaviour policy mu, and each sample's
surrogate is weighted by pi_prox / mu, truncated at `lag_weight_cap`. Clipping around mu
would restrain the step by how far the policy has already moved since collection; the
weight corrects for whose actions these were. Advantages and the value clip use the
proximal values. With no lag nothing changes (pi_prox = mu exactly).

Where pi_prox comes from (`lag_proximal`):
- `first-pass` (default): the first epoch visits every env exactly once, and the forward pass
  that minibatch needs anyway gives that env's proximal log-probs and values (detached): pi_prox
  of an env is the learner's policy when its minibatch is first visited. The env's advantages
  are computed then (GAE runs per env, so it needs nothing from the other envs). No extra
  compute; in the first epoch every ratio is exactly 1.
- `extra-pass`: one no-grad pass over the whole rollout at the start of the update, so pi_prox
  is the same policy for every env; it costs about one more forward per update.
With one minibatch per epoch the two are the same policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import nn

from policies.state import index_state

from .learners import Learner, check_shared_options, explained_variance, planned_updates
from .returns import gae
from .rollout import Rollout


@dataclass
class PPOConfig:
    """PPO hyperparameters (defaults: the Procgen paper's PPO; docs/SPEC.md, section 4)."""

    lr: float = 5e-4
    """Adam learning rate."""
    adam_eps: float = 1e-5
    """Adam epsilon."""
    gamma: float = 0.999
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    epochs: int = 3
    """Passes over each rollout."""
    num_minibatches: int = 8
    """Minibatches per epoch; each holds num_envs / num_minibatches whole env sequences."""
    clip: float = 0.2
    """PPO ratio clip range (also the value clip range when clip_value)."""
    clip_value: bool = True
    """Clip the value update around the behaviour values (Procgen PPO)."""
    value_coef: float = 0.5
    """Weight of the value loss 0.5 * max(squared errors)."""
    entropy_coef: float = 0.01
    """Weight of the entropy bonus."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    normalize_rewards: bool = True
    """Divide rewards by a running std of the discounted return, then clip to +-reward_clip."""
    reward_clip: float = 10.0
    """Clip of the normalised rewards."""
    normalize_advantages: bool = True
    """Normalise advantages to mean 0, std 1 per minibatch."""
    normalize_advantages_over: Literal["minibatch", "rollout"] = "minibatch"
    """What normalize_advantages takes the mean and std of: each minibatch (default, as SB3 and
    CleanRL), or the whole rollout (all envs, under torch.distributed all ranks), once per
    update. With `minibatch`, a minibatch whose episodes all went right has a tiny std, and its
    advantages (noise around 0) come out as large as those of a minibatch with mistakes in it;
    with `rollout` they stay small beside them. Measured on the harder cue-recall
    (benchmarks/RESULTS.md, "SRWM learnability", round 28): worse, 3 of 5 srwm runs never left
    chance, as the per-minibatch rescaling also lifts the small early signal. Under a policy
    lag with lag_proximal `first-pass` the rollout's moments come from the advantages of the
    behaviour values."""
    advantage_std_floor: float = 0.0
    """With normalize_advantages, divide by max(std, this) instead of std + 1e-8 (0: off).
    When a task is solved, a minibatch's advantages are all near 0 and dividing by their
    tiny std turns noise into unit-size advantages; a floor keeps them small. Measured
    (benchmarks/RESULTS.md, SRWM rounds 4-5): 0.1 kept a solved cue-recall from collapsing but
    slowed the harder one, whose early advantages are small too; hence off by default."""
    target_kl: float = 0.0
    """> 0: end an update early, before the optimizer step of the first minibatch whose
    approx_kl to the acting policy (to the proximal one under lag_correction) exceeds this;
    0 (default): off. The KL early stop of SB3 and CleanRL, against single updates that move
    the policy far: on the harder cue-recall a learned srwm policy fell to chance within one
    such update (benchmarks/RESULTS.md, "SRWM learnability", round 25). Logs losses/kl_stop
    (1 if the update was ended) and losses/minibatch_steps (the steps it kept)."""
    kl_revert: bool = False
    """With target_kl: also undo the optimizer step before the stop (parameters and Adam's
    state), so that the update ends on the last parameters whose approx_kl was within
    target_kl (the KL is measured before each step, so the step that overshot is only seen
    at the next minibatch)."""
    anneal_lr: bool = False
    """Decay the learning rate linearly towards 0 over total_steps: update k of n runs at
    lr * (1 - k / n)."""
    lag_correction: bool = True
    """Under a policy lag (async pipeline), clip around the learner's policy at the start of
    the update and weight by pi_prox / mu (decoupled PPO; docs/SPEC.md, section 4)."""
    lag_weight_cap: float = 1.0
    """Truncation of the weight pi_prox / mu under lag_correction (as V-trace's rho_bar)."""
    lag_proximal: Literal["first-pass", "extra-pass"] = "first-pass"
    """Where lag_correction's proximal policy comes from: `first-pass` keeps each env's
    log-probs and values from its forward pass in the first epoch (no extra compute),
    `extra-pass` recomputes them for all envs in one no-grad pass at the start of the update."""


LAG_PROXIMAL = ("first-pass", "extra-pass")
ADVANTAGE_SCOPES = ("minibatch", "rollout")


def check_ppo_config(cfg: PPOConfig, num_envs: int) -> None:
    """Raise ValueError (one line, naming the bad value and the valid ones) for impossible
    settings."""
    if cfg.num_minibatches < 1 or num_envs % cfg.num_minibatches != 0:
        divisors = [d for d in range(1, num_envs + 1) if num_envs % d == 0]
        raise ValueError(
            f"num_minibatches {cfg.num_minibatches} must divide num_envs {num_envs}; "
            f"valid: {', '.join(map(str, divisors))}"
        )
    if cfg.lag_proximal not in LAG_PROXIMAL:
        raise ValueError(f"PPO lag_proximal {cfg.lag_proximal!r} is not one of: "
                         f"{', '.join(LAG_PROXIMAL)}")
    if cfg.epochs < 1:
        raise ValueError(f"PPO epochs must be >= 1, got {cfg.epochs}")
    if cfg.normalize_advantages_over not in ADVANTAGE_SCOPES:
        raise ValueError(f"PPO normalize_advantages_over {cfg.normalize_advantages_over!r} is "
                         f"not one of: {', '.join(ADVANTAGE_SCOPES)}")
    check_shared_options(cfg, "PPO")
    for name in ("lr", "adam_eps", "clip", "max_grad_norm", "lag_weight_cap"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"PPO {name} must be positive, got {getattr(cfg, name)}")
    if not (0.0 <= cfg.gamma <= 1.0 and 0.0 <= cfg.gae_lambda <= 1.0):
        raise ValueError(
            f"PPO gamma and gae_lambda must lie in [0, 1], got {cfg.gamma}, {cfg.gae_lambda}"
        )


class RewardNormalizer:
    """Scales rewards by the running std of the discounted return (Procgen / baselines
    VecNormalize): ret <- ret * gamma + r; update the running variance of ret; r / sqrt(var +
    eps), clipped to +-clip; ret <- 0 where the episode ended. One return accumulator per env."""

    def __init__(self, num_envs: int, gamma: float, clip: float, eps: float = 1e-8) -> None:
        self.gamma, self.clip, self.eps = gamma, clip, eps
        self.ret = torch.zeros(num_envs, dtype=torch.float64)
        self.mean = torch.zeros((), dtype=torch.float64)
        self.var = torch.ones((), dtype=torch.float64)
        self.count = 1e-4

    def _update(self, x: torch.Tensor) -> None:
        batch_mean, batch_var, n = x.mean(), x.var(unbiased=False), x.numel()
        delta, total = batch_mean - self.mean, self.count + n
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean = self.mean + delta * n / total
        self.var = m2 / total
        self.count = total

    def __call__(self, rewards: torch.Tensor, dones: torch.Tensor) -> torch.Tensor:
        """rewards [T, B], dones [T, B] -> normalised rewards [T, B] (same device and dtype)."""
        r64 = rewards.detach().to("cpu", torch.float64)
        d = dones.detach().to("cpu")
        out = torch.empty_like(r64)
        for t in range(r64.shape[0]):
            self.ret = self.ret * self.gamma + r64[t]
            self._update(self.ret)
            out[t] = r64[t] / torch.sqrt(self.var + self.eps)
            self.ret[d[t]] = 0.0
        return out.clamp(-self.clip, self.clip).to(device=rewards.device, dtype=rewards.dtype)

    def state_dict(self) -> dict:
        return {"ret": self.ret.clone(), "mean": float(self.mean), "var": float(self.var),
                "count": float(self.count)}

    def load_state_dict(self, d: dict) -> None:
        self.ret = torch.as_tensor(d["ret"], dtype=torch.float64).clone()
        self.mean = torch.tensor(float(d["mean"]), dtype=torch.float64)
        self.var = torch.tensor(float(d["var"]), dtype=torch.float64)
        self.count = float(d["count"])


class PPOTargets(NamedTuple):
    """What `PPO.targets` computes once per update (all [T, B], no gradient)."""

    advantages: torch.Tensor
    returns: torch.Tensor
    old_values: torch.Tensor
    """The values the advantages and the value clip use (behaviour or proximal)."""
    prox_logprobs: torch.Tensor | None
    """log pi_prox(a_t) under lag_correction with a lag, else None (clip around mu)."""
    weights: torch.Tensor | None
    """min(pi_prox / mu, lag_weight_cap) under lag_correction with a lag, else None."""
    pending: torch.Tensor | None = None
    """[B] bool under `first-pass`: envs whose proximal quantities, advantages and returns
    are still to be filled in by their first forward pass (the tensors above hold NaN there
    until then); None otherwise."""
    rewards: torch.Tensor | None = None
    """The (normalised) rewards [T, B] GAE runs on, kept for `first-pass`."""
    last_value: torch.Tensor | None = None
    """The bootstrap value [B] GAE runs on, kept for `first-pass`."""
    adv_moments: tuple[torch.Tensor, torch.Tensor] | None = None
    """(mean, std) of the whole rollout's advantages with normalize_advantages_over
    `rollout`, else None (each minibatch's own)."""


class PPO(Learner):
    """Recurrent PPO: GAE targets from (normalised) rewards, the clipped surrogate loss. Adds
    the reward normaliser to `state_dict()`; `first_minibatch_ratio` keeps the ratios of the
    first minibatch of the last update (1 by construction; tests check it)."""

    algo = "ppo"
    lr_decay_per = "update"

    def __init__(self, policy: nn.Module, cfg: PPOConfig, *, num_envs: int, unroll: int,
                 total_steps: int) -> None:
        check_ppo_config(cfg, num_envs)
        optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
        super().__init__(policy, optimizer, epochs=cfg.epochs,
                         minibatch_size=num_envs // cfg.num_minibatches,
                         max_grad_norm=cfg.max_grad_norm, anneal_lr=cfg.anneal_lr,
                         schedule_steps=planned_updates(total_steps, num_envs * unroll),
                         target_kl=cfg.target_kl, kl_revert=cfg.kl_revert)
        self.cfg = cfg
        self.num_envs, self.unroll = num_envs, unroll
        self.reward_normalizer = RewardNormalizer(num_envs, cfg.gamma, cfg.reward_clip)
        self.first_minibatch_ratio: torch.Tensor | None = None

    @torch.no_grad()
    def targets(self, rollout: Rollout) -> PPOTargets:
        """Advantages and returns [T, B] from (normalised) rewards and the bootstrap value;
        under a policy lag with lag_correction, the proximal log-probs, values and weights."""
        prox_logp = weight = None
        old_values = rollout.values
        lagged = self.cfg.lag_correction and rollout.policy_lag > 0
        if lagged and self.cfg.lag_proximal == "extra-pass":
            logits, prox_values, _ = self.policy(rollout.obs, rollout.rewards_in,
                                                 rollout.episode_start, rollout.init_state)
            prox_logp = torch.distributions.Categorical(logits=logits).log_prob(rollout.actions)
            weight = (prox_logp - rollout.logprobs).exp().clamp(max=self.cfg.lag_weight_cap)
            old_values = prox_values
        b = rollout.bootstrap
        _, last_value, _ = self.policy(
            b.obs.unsqueeze(0), b.reward_in.unsqueeze(0), b.episode_start.unsqueeze(0), b.state
        )
        rewards = rollout.rewards
        if self.cfg.normalize_rewards and self.sync is not None:
            rewards = self.sync.normalize_rewards(self.reward_normalizer, rewards, rollout.dones)
        elif self.cfg.normalize_rewards:
            rewards = self.reward_normalizer(rewards, rollout.dones)
        by_rollout = self.cfg.normalize_advantages and self.cfg.normalize_advantages_over \
            == "rollout"
        if lagged and self.cfg.lag_proximal == "first-pass":  # filled in by `loss`
            nan = torch.full_like(rollout.logprobs, float("nan"))
            pending = torch.ones(rollout.num_envs, dtype=torch.bool, device=nan.device)
            moments = None
            if by_rollout:  # the proximal values come later: the behaviour values' advantages
                adv, _ = gae(rewards, old_values, rollout.dones, last_value[0],
                             self.cfg.gamma, self.cfg.gae_lambda)
                moments = self.advantage_moments(adv, over_ranks=True)
            return PPOTargets(nan.clone(), nan.clone(), nan.clone(), nan.clone(), nan.clone(),
                              pending, rewards, last_value[0], moments)
        advantages, returns = gae(rewards, old_values, rollout.dones, last_value[0],
                                  self.cfg.gamma, self.cfg.gae_lambda)
        moments = self.advantage_moments(advantages, over_ranks=True) if by_rollout else None
        return PPOTargets(advantages, returns, old_values, prox_logp, weight,
                          adv_moments=moments)

    @torch.no_grad()
    def _first_visit(self, rollout: Rollout, idx: torch.Tensor, targets: PPOTargets,
                     logp: torch.Tensor, values: torch.Tensor) -> None:
        """`first-pass`: envs `idx` are seen for the first time in this update; their forward
        pass (log-probs `logp`, values `values`, [T, len(idx)]) is the proximal policy's. Fill
        in their proximal log-probs, values, weights, advantages and returns."""
        pending = targets.pending[idx]
        if not bool(pending.any()):
            return
        if not bool(pending.all()):  # the first epoch partitions the envs
            raise RuntimeError("a minibatch mixes envs seen before with envs not yet seen")
        targets.prox_logprobs[:, idx] = logp
        targets.old_values[:, idx] = values
        targets.weights[:, idx] = (logp - rollout.logprobs[:, idx]).exp().clamp(
            max=self.cfg.lag_weight_cap)
        adv, ret = gae(targets.rewards[:, idx], values, rollout.dones[:, idx],
                       targets.last_value[idx], self.cfg.gamma, self.cfg.gae_lambda)
        targets.advantages[:, idx] = adv
        targets.returns[:, idx] = ret
        targets.pending[idx] = False

    def loss(self, rollout: Rollout, idx: torch.Tensor,
             targets: PPOTargets) -> tuple[torch.Tensor, dict[str, float]]:
        """Replay envs `idx` from their stored initial state: clipped surrogate + clipped value
        loss - entropy bonus."""
        cfg = self.cfg
        logits, values, _ = self.policy(
            rollout.obs[:, idx], rollout.rewards_in[:, idx], rollout.episode_start[:, idx],
            index_state(rollout.init_state, idx),
        )
        dist = torch.distributions.Categorical(logits=logits)
        logp = dist.log_prob(rollout.actions[:, idx])
        if targets.pending is not None:
            self._first_visit(rollout, idx, targets, logp.detach(), values.detach())
        behaviour_logratio = logp - rollout.logprobs[:, idx]  # log pi / mu
        if targets.prox_logprobs is None:
            logratio = behaviour_logratio
        else:  # lag_correction: clip around the proximal policy
            logratio = logp - targets.prox_logprobs[:, idx]
        ratio = logratio.exp()
        if self.minibatch_index == 0:
            self.first_minibatch_ratio = ratio.detach()
        adv = targets.advantages[:, idx]
        if targets.adv_moments is not None:  # the whole rollout's; log the minibatch's std
            mean, std = targets.adv_moments
            mb_std = adv.std() if adv.numel() > 1 else torch.zeros_like(std)
        else:
            mean, std = self.advantage_moments(adv, over_ranks=cfg.normalize_advantages)
            mb_std = std
        if cfg.normalize_advantages:
            adv = self.normalized(adv, mean, std, cfg.advantage_std_floor)
        pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip, 1 + cfg.clip))
        if targets.weights is not None:
            pg = targets.weights[:, idx] * pg
        pg_loss = pg.mean()
        ret, old_v = targets.returns[:, idx], targets.old_values[:, idx]
        v_err = (values - ret) ** 2
        if cfg.clip_value:
            v_clipped = old_v + (values - old_v).clamp(-cfg.clip, cfg.clip)
            v_err = torch.max(v_err, (v_clipped - ret) ** 2)
        v_loss = 0.5 * v_err.mean()
        entropy = dist.entropy().mean()
        loss = pg_loss - cfg.entropy_coef * entropy + cfg.value_coef * v_loss
        with torch.no_grad():
            stats = {
                "losses/policy": pg_loss.item(),
                "losses/value": v_loss.item(),
                "losses/entropy": entropy.item(),
                "losses/approx_kl": ((ratio - 1) - logratio).mean().item(),
                "losses/clipfrac": ((ratio - 1).abs() > cfg.clip).float().mean().item(),
                "losses/importance_ratio": behaviour_logratio.exp().mean().item(),
                # the minibatch's, before normalisation: how far advantage_std_floor is from
                # biting (with normalize_advantages_over `rollout`: how the minibatches differ)
                "losses/advantage_std": mb_std.item(),
            }
            if targets.weights is not None:
                stats["losses/lag_weight"] = targets.weights[:, idx].mean().item()
        return loss, stats

    def update_metrics(self, rollout: Rollout, targets: PPOTargets) -> dict[str, float]:
        return {"losses/explained_variance": explained_variance(targets.old_values,
                                                                targets.returns)}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "reward_normalizer": self.reward_normalizer.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        super().load_state_dict(d)
        self.reward_normalizer.load_state_dict(d["reward_normalizer"])
