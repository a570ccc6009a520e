"""IMPALA-style learner with V-trace (the SRWM paper's learner; docs/SPEC.md, section 4).

The update loop is agents.learners.Learner's; this module supplies the loss.

Batches. The paper's batch is 32 sequences of `unroll` steps. Here one Rollout holds num_envs
sequences; it is shuffled by env and split into num_envs / batch_size minibatches of
batch_size whole sequences, one optimizer step each (num_envs == batch_size: the rollout IS the
batch). With `epochs` > 1 the rollout is passed over again (reshuffled each pass); V-trace
corrects for the later passes being off-policy. When num_envs < batch_size the whole rollout
is one batch of num_envs sequences. num_envs must otherwise be a multiple of batch_size.
The learning rate decays per optimizer step of the first pass (the env steps consumed).

Loss per batch, summed over time and batch like TorchBeast (the RMSprop eps of 0.01 and the
grad clip of 40 are calibrated for sums):
    policy gradient with V-trace advantages  -sum(rho_t A_t log pi(a_t))
        (with `policy_clip` > 0: PPO's clipped surrogate -sum(min(r_t A_t, clip(r_t) A_t)),
        r_t = pi / mu, instead)
  + baseline_cost * 0.5 * sum((v_t - V(x_t))^2)
  + entropy_coef * sum(-entropy)
with rewards clipped to [-reward_clip, reward_clip] and discounts gamma * (1 - done).
With `normalize_advantages` the A_t of the policy gradient are first normalised to mean 0,
std 1 over the batch (as in PPO; over all ranks' parts of it under torch.distributed); the
value targets are not touched.
Each sequence is replayed from its stored initial state with its stored episode_start mask,
one step longer than the segment: the extra step is the bootstrap observation, whose value
(under the learner's current parameters, no gradient into the targets) is V(x_T).

Actor lag (`actor_lag`). In IMPALA the actors act with parameters that lag the learner and
V-trace corrects for it. This learner exposes `acting_policy`, the module a RolloutCollector
should act with. With actor_lag = 0 (default) it IS the trained policy: acting is on-policy
for the first minibatch of each rollout (later minibatches of the same rollout are already a
few steps off-policy). With actor_lag = 1 it is a separate copy that, at the start of every
update, receives the parameters from before that update, so each segment is collected with
parameters exactly one update old, as when the next segment is collected while the update
runs. Collection still runs sequentially (no background thread); the lag reproduces the
off-policyness, not the overlap. The mean importance ratio pi/mu is logged as
losses/importance_ratio either way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn

from policies.state import index_state

from .learners import Learner, check_shared_options, explained_variance, planned_updates
from .returns import vtrace
from .rollout import Rollout

VTraceOptimizer = Literal["rmsprop", "adam"]
VTRACE_OPTIMIZERS: tuple[str, ...] = get_args(VTraceOptimizer)


@dataclass
class VTraceConfig:
    """V-trace learner hyperparameters (defaults: the SRWM paper's IMPALA; docs/SPEC.md,
    section 4)."""

    lr: float = 6e-4
    """Learning rate at the start (decayed linearly towards 0 over total_steps when
    anneal_lr)."""
    optimizer: VTraceOptimizer = "rmsprop"
    """rmsprop (the paper's IMPALA) | adam (eps adam_eps); benchmarks/RESULTS.md, "SRWM
    learnability", compares them."""
    adam_eps: float = 1e-5
    """Adam epsilon (optimizer adam)."""
    rmsprop_alpha: float = 0.99
    """RMSprop smoothing constant."""
    rmsprop_eps: float = 0.01
    """RMSprop epsilon."""
    rmsprop_momentum: float = 0.0
    """RMSprop momentum."""
    anneal_lr: bool = True
    """Linear learning-rate decay towards 0 over total_steps: optimizer step j of the n planned
    first-pass steps runs at lr * (1 - j / n)."""
    max_grad_norm: float = 40.0
    """Global gradient-norm clip."""
    entropy_coef: float = 0.01
    """Entropy cost."""
    baseline_cost: float = 0.5
    """Baseline cost; the value loss is baseline_cost * 0.5 * squared error."""
    gamma: float = 0.99
    """Discount factor."""
    reward_clip: float = 1.0
    """Rewards are clipped to [-reward_clip, reward_clip] in the loss."""
    rho_bar: float = 1.0
    """V-trace truncation of the importance weights in the value targets and policy gradient."""
    c_bar: float = 1.0
    """V-trace truncation of the trace coefficients."""
    lam: float = 1.0
    """V-trace lambda (scales the trace coefficients)."""
    batch_size: int = 32
    """Sequences per optimizer step; a rollout of num_envs sequences gives num_envs /
    batch_size steps (min(batch_size, num_envs) is used when num_envs is smaller)."""
    actor_lag: Literal[0, 1] = 0
    """0: act with the trained parameters; 1: act with parameters one update old (see module
    docstring)."""
    normalize_advantages: bool = False
    """Normalise the policy-gradient advantages to mean 0, std 1 per batch (under
    torch.distributed: over every rank's part of the batch), as PPO does. Off (default): the
    IMPALA loss, whose policy gradient scales with the rewards while the entropy cost does
    not. On the harder cue-recall it did not help alone (benchmarks/RESULTS.md, "SRWM
    learnability, round 9"); with `policy_clip` 0.2 every srwm run left chance (round 12b)."""
    advantage_std_floor: float = 0.0
    """With normalize_advantages, divide by max(std, this) instead of std + 1e-8 (0: off), as
    PPO's option of the same name. Why it may matter: a batch's advantages on a solved task
    are all near 0, and dividing by their tiny std turns noise into unit-size advantages; an
    APPO run on the harder cue-recall that had reached 1.00 fell back to 0.52 right after its
    advantage std had dropped to 0.025 (benchmarks/RESULTS.md, "SRWM learnability", round 20).
    A one-seed check with 0.05 (round 24) fell as well, after two updates in which the floor
    acted (stds 0.030 and 0.037; round 25's trace): its benefit is unmeasured."""
    policy_clip: float = 0.0
    """0 (default): IMPALA's policy gradient, -rho_t A_t log pi(a_t). > 0: PPO's clipped
    surrogate with V-trace's advantages (the learner known as APPO): the ratio pi / mu to the
    acting policy, clipped to [1 - policy_clip, 1 + policy_clip], multiplies the advantage
    A_t = r_t + discount_t v_{t+1} - V(x_t), and the pessimistic of the clipped and unclipped
    terms is kept, so later passes over a rollout (epochs > 1) cannot move the policy far
    from the one that acted. The value targets stay V-trace's. Measured on the harder
    cue-recall in benchmarks/RESULTS.md, "SRWM learnability", round 12b and after."""
    target_kl: float = 0.0
    """> 0: end an update early, before the optimizer step of the first batch whose approx_kl
    to the acting policy (from the importance ratios pi / mu) exceeds this; 0 (default): off.
    The first batch of an update is on-policy (unless actor_lag 1), so the stop comes at the
    earliest after one step; the LR schedule still counts the whole rollout. PPO's option of
    the same name says why."""
    kl_revert: bool = False
    """With target_kl: also undo the optimizer step before the stop, as PPO's option of the
    same name."""
    epochs: int = 1
    """Passes over each rollout (1: IMPALA, every sequence is used once). With more, later
    passes are off-policy and V-trace's importance weights correct for it, as with replay;
    the LR schedule counts only the first pass (env steps consumed)."""


def effective_batch_size(cfg: VTraceConfig, num_envs: int) -> int:
    """The batch actually used: min(batch_size, num_envs)."""
    return min(cfg.batch_size, num_envs)


def check_vtrace_config(cfg: VTraceConfig, num_envs: int) -> None:
    """Raise ValueError (one line, naming the bad value and the valid ones) for impossible
    settings."""
    if cfg.batch_size < 1:
        raise ValueError(f"V-trace batch_size must be >= 1, got {cfg.batch_size}")
    b = effective_batch_size(cfg, num_envs)
    if num_envs % b != 0:
        valid = [d for d in range(1, num_envs + 1) if num_envs % d == 0]
        raise ValueError(
            f"V-trace batch_size {cfg.batch_size} must divide num_envs {num_envs}; "
            f"valid: {', '.join(map(str, valid))} (or any value >= {num_envs})"
        )
    if cfg.optimizer not in VTRACE_OPTIMIZERS:
        raise ValueError(f"unknown V-trace optimizer {cfg.optimizer!r}; valid: "
                         f"{', '.join(VTRACE_OPTIMIZERS)}")
    if cfg.epochs < 1:
        raise ValueError(f"V-trace epochs must be >= 1, got {cfg.epochs}")
    if cfg.actor_lag not in (0, 1):
        raise ValueError(f"actor_lag must be 0 or 1, got {cfg.actor_lag}")
    check_shared_options(cfg, "V-trace")
    if not 0 <= cfg.policy_clip < 1:
        raise ValueError(f"V-trace policy_clip must be in [0, 1) (0 = off), got "
                         f"{cfg.policy_clip}")
    for name in ("lr", "rmsprop_eps", "adam_eps", "max_grad_norm", "rho_bar", "c_bar"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"V-trace {name} must be positive, got {getattr(cfg, name)}")


class VTraceLearner(Learner):
    """IMPALA-style learner (see module docstring): V-trace targets computed per batch inside
    the loss, RMSprop (or Adam), the LR decayed per optimizer step of the first pass."""

    algo = "vtrace"
    lr_decay_per = "step"
    loss_reduction = "sum"

    def __init__(self, policy: nn.Module, cfg: VTraceConfig, *, num_envs: int, unroll: int,
                 total_steps: int) -> None:
        check_vtrace_config(cfg, num_envs)
        batch_size = effective_batch_size(cfg, num_envs)
        acting_policy = copy.deepcopy(policy) if cfg.actor_lag else policy
        if cfg.optimizer == "adam":
            optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
        else:
            optimizer = torch.optim.RMSprop(
                policy.parameters(), lr=cfg.lr, alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps,
                momentum=cfg.rmsprop_momentum,
            )
        steps_per_update = num_envs // batch_size  # optimizer steps of one pass
        super().__init__(policy, optimizer, epochs=cfg.epochs, minibatch_size=batch_size,
                         max_grad_norm=cfg.max_grad_norm, anneal_lr=cfg.anneal_lr,
                         schedule_steps=steps_per_update
                         * planned_updates(total_steps, num_envs * unroll),
                         target_kl=cfg.target_kl, kl_revert=cfg.kl_revert)
        self.acting_policy = acting_policy
        self.cfg = cfg
        self.num_envs, self.unroll = num_envs, unroll
        self.batch_size = batch_size

    def sync_acting_policy(self) -> None:
        """Copy the trained parameters into the acting copy (no-op without lag)."""
        if self.acting_policy is not self.policy:
            self.acting_policy.load_state_dict(self.policy.state_dict())

    def begin_update(self, rollout: Rollout) -> None:
        if self.cfg.actor_lag:
            self.sync_acting_policy()  # the next segment acts with the pre-update parameters

    def loss(self, rollout: Rollout, idx: torch.Tensor, targets: None
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Replay sequences `idx` (plus the bootstrap step); V-trace targets; summed loss."""
        cfg, b = self.cfg, rollout.bootstrap
        obs = torch.cat([rollout.obs[:, idx], b.obs[idx].unsqueeze(0)])
        rewards_in = torch.cat([rollout.rewards_in[:, idx], b.reward_in[idx].unsqueeze(0)])
        starts = torch.cat([rollout.episode_start[:, idx], b.episode_start[idx].unsqueeze(0)])
        logits, values, _ = self.policy(obs, rewards_in, starts,
                                        index_state(rollout.init_state, idx))
        dist = torch.distributions.Categorical(logits=logits[:-1])
        target_logp = dist.log_prob(rollout.actions[:, idx])  # [T, b]
        rewards = rollout.rewards[:, idx].clamp(-cfg.reward_clip, cfg.reward_clip)
        discounts = cfg.gamma * (~rollout.dones[:, idx]).to(values.dtype)
        vt = vtrace(rollout.logprobs[:, idx], target_logp.detach(), rewards, values[:-1].detach(),
                    values[-1].detach(), discounts, rho_bar=cfg.rho_bar, c_bar=cfg.c_bar,
                    lam=cfg.lam)
        if cfg.policy_clip > 0:  # APPO: the ratio goes into the clipped surrogate instead
            next_vs = torch.cat([vt.vs[1:], values[-1:].detach()])
            adv = rewards + discounts * next_vs - values[:-1].detach()
        else:
            adv = vt.pg_advantages
        mean, std = self.advantage_moments(adv, over_ranks=cfg.normalize_advantages)
        if cfg.normalize_advantages:
            adv = self.normalized(adv, mean, std, cfg.advantage_std_floor)
        if cfg.policy_clip > 0:
            ratio = (target_logp - rollout.logprobs[:, idx]).exp()
            clipped = ratio.clamp(1 - cfg.policy_clip, 1 + cfg.policy_clip)
            pg_loss = torch.max(-adv * ratio, -adv * clipped).sum()
        else:
            pg_loss = -(target_logp * adv).sum()
        baseline_loss = cfg.baseline_cost * 0.5 * ((vt.vs - values[:-1]) ** 2).sum()
        entropy = dist.entropy()
        loss = pg_loss + baseline_loss - cfg.entropy_coef * entropy.sum()
        with torch.no_grad():
            logratio = vt.rhos.log()
            stats = {
                "losses/policy": pg_loss.item(),
                "losses/value": baseline_loss.item(),
                "losses/entropy": entropy.mean().item(),
                "losses/approx_kl": ((vt.rhos - 1) - logratio).mean().item(),
                "losses/clipfrac": (vt.rhos > cfg.rho_bar).float().mean().item(),
                "losses/importance_ratio": vt.rhos.mean().item(),
                # before any normalisation: the scale the policy gradient has without it
                "losses/advantage_std": std.item(),
                "losses/explained_variance": explained_variance(values[:-1], vt.vs),
            }
            if cfg.policy_clip > 0:
                stats["losses/policy_clipfrac"] = (
                    (vt.rhos - 1).abs() > cfg.policy_clip).float().mean().item()
        return loss, stats

    def load_state_dict(self, d: dict) -> None:
        """Restore optimizer, schedule and counter; also re-syncs the acting copy from the
        policy (load the policy's weights BEFORE calling this)."""
        super().load_state_dict(d)
        self.sync_acting_policy()
