"""The learner skeleton shared by PPO and V-trace, and the factory that builds one by name.

A learner turns one Rollout into one update and returns metrics keyed with their namespace
(`losses/...`, `charts/learning_rate`, `core/<state metric>`). The update loop is written
once, here, in `Learner.update`:

    targets = self.targets(rollout)                 # no gradient; e.g. GAE advantages
    for each of `epochs` passes:
        perm = a random permutation of the envs     # minibatches are whole env sequences
        for each minibatch idx of `minibatch_size` envs:
            loss, stats = self.loss(rollout, idx, targets)
            if target_kl and stats' approx_kl > target_kl: end the update here (no step;
                with kl_revert also undo the step before)
            self._optimizer_step(loss)              # zero_grad, backward, (all-reduce), clip,
                                                    # step (skipped if loss / grads not finite)
    metrics = mean of the stats + self.update_metrics(...) + lr + the core's state metrics

A subclass supplies `targets` and `loss` (agents/ppo.py, agents/vtrace.py: one screen each)
and its config. The learning rate follows one schedule rule (`lr_factor`): with annealing,
step k of n planned steps runs at 1 - k/n of the initial lr, so the last step never runs at
lr 0; n comes from `planned_updates`, the same ceil rule as `TrainConfig.num_updates`. PPO
counts steps in updates, V-trace in optimizer steps of the first pass (env steps consumed).

Every learner also has `acting_policy`: the module a RolloutCollector should act with (the
trained policy itself, except for the V-trace learner with actor_lag = 1).

Any SB3 VecEnv with uint8 [64, 64, 3] observations and Discrete actions can be trained:

    policy = build_actor_critic(ModelConfig(...), env.action_space.n)
    learner = make_learner("ppo", policy, num_envs=env.num_envs, unroll=T,
                           total_steps=N, device="cpu", ppo_cfg=PPOConfig(), vtrace_cfg=None)
    collector = RolloutCollector(env, learner.acting_policy, T, "never")
    for _ in range(planned_updates(N, env.num_envs * T)):
        metrics = learner.update(collector.collect())
"""

from __future__ import annotations

import copy
import math
import os
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

import torch
from torch import nn

from .errors import UserError
from .rollout import Rollout

if TYPE_CHECKING:
    from .ppo import PPOConfig
    from .vtrace import VTraceConfig

Algo = Literal["ppo", "vtrace"]
ALGOS: tuple[str, ...] = get_args(Algo)


MAX_CONSECUTIVE_SKIPS = 10
"""Optimizer steps in a row with a non-finite loss or gradient that stop a run."""
FAULT_NAN_LOSS = "AGENTS_FAULT_NAN_LOSS"
"""Test hook (tests/test_faults.py only, not an option): a comma list of optimizer-step
numbers (0 = the first step of this process) whose loss is replaced by NaN."""


class DivergedError(UserError):
    """Training cannot go on: too many non-finite updates in a row, or parameters that are no
    longer finite. The last good checkpoint is kept."""


def _fault_nan_loss(learner: Learner, loss: torch.Tensor) -> torch.Tensor:
    """The NaN-injection test hook (FAULT_NAN_LOSS); the loss unchanged when it is not set."""
    k = getattr(learner, "_fault_step", 0)
    learner._fault_step = k + 1  # type: ignore[attr-defined]
    steps = os.environ.get(FAULT_NAN_LOSS)
    if steps and str(k) in steps.split(","):
        return loss * float("nan")
    return loss


def check_shared_options(cfg: Any, name: str) -> None:
    """The checks of the options PPOConfig and VTraceConfig share (`name`: "PPO" or "V-trace"
    in the one-line ValueError): target_kl, kl_revert, advantage_std_floor."""
    if not cfg.target_kl >= 0:
        raise ValueError(f"{name} target_kl must be >= 0 (0 = off), got {cfg.target_kl}")
    if cfg.kl_revert and not cfg.target_kl > 0:
        raise ValueError(f"{name} kl_revert needs a target_kl > 0, got target_kl "
                         f"{cfg.target_kl}")
    if not cfg.advantage_std_floor >= 0:
        raise ValueError(f"{name} advantage_std_floor must be >= 0 (0 = off), got "
                         f"{cfg.advantage_std_floor}")


def planned_updates(total_steps: int, steps_per_update: int) -> int:
    """Updates a run of `total_steps` env steps makes: the run stops at the first update that
    reaches total_steps (ceil; at least 1). The one rule for the trainer and the schedules."""
    return max(1, math.ceil(int(total_steps) / int(steps_per_update)))


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var[target - pred] / Var[target] (nan when the target is constant)."""
    var = target.var()
    return float("nan") if var == 0 else float(1.0 - (target - pred).var() / var)


class Learner:
    """The shared update loop (see the module docstring). Owns the optimizer and the LR
    schedule; `state_dict()` holds both and the update counter (subclasses add their own)."""

    algo: ClassVar[str]
    lr_decay_per: ClassVar[Literal["update", "step"]]
    """What one step of the LR schedule is: an update, or an optimizer step of the first
    pass."""
    loss_reduction: ClassVar[Literal["mean", "sum"]] = "mean"
    """How the loss reduces over the minibatch: under torch.distributed the ranks' gradients
    are averaged ("mean") or summed ("sum"), so that they are the gradient of the whole
    distributed minibatch."""

    def __init__(self, policy: nn.Module, optimizer: torch.optim.Optimizer, *, epochs: int,
                 minibatch_size: int, max_grad_norm: float, anneal_lr: bool,
                 schedule_steps: int, target_kl: float = 0.0, kl_revert: bool = False) -> None:
        self.policy = policy
        self.acting_policy = policy
        self.optimizer = optimizer
        self.epochs, self.minibatch_size = int(epochs), int(minibatch_size)
        self.max_grad_norm = float(max_grad_norm)
        self.schedule_steps = int(schedule_steps)
        self.target_kl = float(target_kl)
        """> 0: end an update early, before the step of the first minibatch whose approx_kl
        (to the policy the minibatch's log-probs are measured against) exceeds it."""
        self.kl_revert = bool(kl_revert)
        """With target_kl: also undo the step before the stop (parameters and optimizer state),
        so that the update keeps the last parameters whose measured KL was within target_kl."""

        def lr_factor(k: int) -> float:
            """Step k of schedule_steps runs at 1 - k / schedule_steps of the initial lr."""
            return max(0.0, 1.0 - k / self.schedule_steps) if anneal_lr else 1.0

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        self.updates = 0
        self.skipped_steps = 0
        """Optimizer steps skipped for a non-finite loss or gradient (this process)."""
        self.consecutive_skips = 0
        self.minibatch_index = 0
        """Index of the minibatch being computed within the current update (0 = the first
        minibatch of the first pass, which is on-policy)."""
        self.sync: Any = None
        """agents.distributed.Sync under torch.distributed (gradients all-reduced before every
        optimizer step; see agents/distributed.py), None in a single process."""

    # ------------------------------------------------------------------ what subclasses supply
    def targets(self, rollout: Rollout) -> Any:
        """Everything the losses need that is computed once per update, without gradient."""
        return None

    def loss(self, rollout: Rollout, idx: torch.Tensor, targets: Any
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of the minibatch of envs `idx` and its scalar stats (`losses/...`)."""
        raise NotImplementedError

    def update_metrics(self, rollout: Rollout, targets: Any) -> dict[str, float]:
        """Metrics of the whole update, added after the minibatch means."""
        return {}

    def begin_update(self, rollout: Rollout) -> None:
        """Called first in every update (V-trace's actor lag keeps the pre-update weights)."""

    def advantage_moments(self, adv: torch.Tensor, *, over_ranks: bool
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and unbiased std of a minibatch's advantages: of every rank's minibatch
        together when `over_ranks` and under torch.distributed (one all-reduce; every rank must
        call it), else of this process's. A one-element minibatch has std 0, not NaN."""
        if over_ranks and self.sync is not None:
            return self.sync.mean_std(adv)
        mean = adv.mean()
        return mean, adv.std() if adv.numel() > 1 else torch.zeros_like(mean)

    @staticmethod
    def normalized(adv: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                   std_floor: float) -> torch.Tensor:
        """(adv - mean) / max(std, std_floor) with a floor > 0, else / (std + 1e-8). A floor
        keeps the advantages of a solved task (all near 0) near 0 instead of scaling their
        noise up to unit size."""
        if std_floor > 0:
            return (adv - mean) / std.clamp_min(std_floor)
        return (adv - mean) / (std + 1e-8)

    # ------------------------------------------------------------------ the shared loop
    def update(self, rollout: Rollout) -> dict[str, float]:
        """One update (epochs x minibatches of whole env sequences); returns mean metrics."""
        self.begin_update(rollout)
        targets = self.targets(rollout)
        lr = self.optimizer.param_groups[0]["lr"]
        B = rollout.num_envs
        sums: dict[str, float] = {}
        n, skipped_before = 0, self.skipped_steps
        norms: list[float] = []
        first_pass_steps = -(-B // self.minibatch_size)
        kl_stopped, reverted = False, False
        snapshot = None
        for epoch in range(self.epochs):
            perm = torch.randperm(B, device=rollout.obs.device)
            for start in range(0, B, self.minibatch_size):
                self.minibatch_index = n
                try:
                    loss, stats = self.loss(rollout, perm[start:start + self.minibatch_size],
                                            targets)
                except ValueError as e:  # Categorical refusing NaN logits: weights are broken
                    self._raise_if_poisoned(e)
                    raise
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                n += 1
                if self.target_kl > 0 and self._kl_exceeded(stats):
                    kl_stopped = True
                    if snapshot is not None:  # kl_revert: back to before the last step
                        self._restore(snapshot)
                        reverted = True
                    break
                if self.kl_revert:
                    snapshot = self._snapshot()
                norm = self._optimizer_step(loss)
                if norm is not None:
                    norms.append(norm)
                if self.lr_decay_per == "step" and epoch == 0:
                    self.scheduler.step()
            if kl_stopped:
                break
        if self.lr_decay_per == "update":
            self.scheduler.step()
        elif kl_stopped and epoch == 0:  # the schedule counts env steps consumed, stepped or not
            for _ in range(first_pass_steps - (n - 1)):
                self.scheduler.step()
        self.updates += 1
        metrics = {k: v / n for k, v in sums.items()}
        metrics.update(self.update_metrics(rollout, targets))
        metrics["charts/learning_rate"] = lr
        # before clipping: how far max_grad_norm is from biting (nan if every step was skipped)
        metrics["losses/grad_norm"] = sum(norms) / len(norms) if norms else float("nan")
        metrics["losses/skipped_updates"] = float(self.skipped_steps - skipped_before)
        if self.target_kl > 0:
            metrics["losses/kl_stop"] = float(kl_stopped)
            metrics["losses/minibatch_steps"] = float(len(norms) + self.skipped_steps
                                                      - skipped_before - reverted)
        for k, v in self.policy.state_metrics(rollout.final_state).items():
            metrics[f"core/{k}"] = v
        return metrics

    def _snapshot(self) -> tuple[list[torch.Tensor], dict]:
        """The parameters and the optimizer's state, copied (kl_revert)."""
        params = [p.detach().clone() for p in self.policy.parameters()]
        return params, copy.deepcopy(self.optimizer.state_dict())

    @torch.no_grad()
    def _restore(self, snapshot: tuple[list[torch.Tensor], dict]) -> None:
        params, opt_state = snapshot
        for p, saved in zip(self.policy.parameters(), params, strict=True):
            p.copy_(saved)
        self.optimizer.load_state_dict(opt_state)

    def _kl_exceeded(self, stats: dict[str, float]) -> bool:
        """Whether this minibatch's approx_kl is above target_kl (under torch.distributed: the
        ranks' mean, so that every rank stops at the same minibatch)."""
        kl = stats["losses/approx_kl"]
        if self.sync is not None:
            kl = self.sync.mean_scalar(kl)
        return kl > self.target_kl

    def _optimizer_step(self, loss: torch.Tensor) -> float | None:
        """The one place parameters change: zero_grad, backward, clip the global norm, step.
        Returns the gradient's global norm before clipping; a non-finite loss or gradient norm
        skips the step (`_skip`) and returns None."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = _fault_nan_loss(self, loss)
        if self.sync is None:
            if not bool(torch.isfinite(loss)):
                return self._skip()
            loss.backward()
        else:  # every rank joins the all-reduce; one rank's non-finite loss skips them all
            loss.backward()
            if not self.sync.all_reduce_grads(self.policy.parameters(), self.loss_reduction,
                                              finite=bool(torch.isfinite(loss))):
                self.optimizer.zero_grad(set_to_none=True)
                return self._skip()
        norm = float(nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm))
        if not math.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            return self._skip()
        self.optimizer.step()
        self.consecutive_skips = 0
        return norm

    def _raise_if_poisoned(self, error: ValueError) -> None:
        """DivergedError when a parameter is no longer finite, or the loss failed on
        non-finite logits of finite (too large) parameters: no skipped step can repair that."""
        bad = [n for n, p in self.policy.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise DivergedError(f"training diverged: {len(bad)} parameter tensors became "
                                f"non-finite (e.g. {bad[0]}) in update {self.updates + 1}; the "
                                f"learning rate is likely too high") from None
        if "invalid values" in str(error):
            raise DivergedError(f"training diverged: the logits of update {self.updates + 1} "
                                f"are not finite although the parameters are (they grew too "
                                f"large; the learning rate is likely too high)") from None

    def _skip(self) -> None:
        """Count a skipped optimizer step; MAX_CONSECUTIVE_SKIPS in a row raise DivergedError."""
        self.skipped_steps += 1
        self.consecutive_skips += 1
        if self.consecutive_skips >= MAX_CONSECUTIVE_SKIPS:
            raise DivergedError(f"training diverged: {self.consecutive_skips} optimizer steps "
                                f"in a row had a non-finite loss or gradient (update "
                                f"{self.updates + 1})")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "updates": self.updates}

    def load_state_dict(self, d: dict) -> None:
        self.optimizer.load_state_dict(d["optimizer"])
        self.scheduler.load_state_dict(d["scheduler"])
        self.updates = int(d["updates"])


def make_learner(
    algo: str,
    policy: nn.Module,
    *,
    num_envs: int,
    unroll: int,
    total_steps: int,
    device: torch.device | str | None = None,
    ppo_cfg: PPOConfig | None = None,
    vtrace_cfg: VTraceConfig | None = None,
) -> Learner:
    """Build the learner named `algo` (ppo | vtrace) for `policy` (already on `device`; the
    learner follows the policy's device). A missing config means the defaults. Impossible
    settings raise ValueError with one line naming the bad value and the valid ones."""
    del device  # the optimizers and targets follow the policy's parameters
    if algo == "ppo":
        from .ppo import PPO, PPOConfig

        return PPO(policy, ppo_cfg or PPOConfig(), num_envs=num_envs, unroll=unroll,
                   total_steps=total_steps)
    if algo == "vtrace":
        from .vtrace import VTraceConfig, VTraceLearner

        return VTraceLearner(policy, vtrace_cfg or VTraceConfig(), num_envs=num_envs,
                             unroll=unroll, total_steps=total_steps)
    raise ValueError(f"unknown algo {algo!r}; valid: {', '.join(ALGOS)}")
