"""Return targets as small pure functions on time-major [T, B] tensors.

- `gae`: generalised advantage estimation (Schulman et al. 2016), used by PPO.
- `vtrace`: V-trace targets (Espeholt et al. 2018, IMPALA), used by the V-trace learner.

Conventions shared by both: step t is (obs t, action t, reward t). `dones[t]` (GAE) means the
episode ended with action t, so obs t+1 already belongs to the next episode (SB3 auto-reset)
and nothing is bootstrapped across it; V-trace takes the per-step discounts directly,
`discounts[t] = gamma * (1 - dones[t])`. Both run under `torch.no_grad()`: they produce targets.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


@torch.no_grad()
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_value: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and lambda-returns.

    rewards, values: [T, B] float; dones: [T, B] bool (episode ended at step t, after action t);
    last_value: [B], the value of the observation after the last step.

        delta_t = r_t + gamma (1 - done_t) V_{t+1} - V_t        (V_T = last_value)
        A_t     = delta_t + gamma lam (1 - done_t) A_{t+1}      (A_T = 0)

    Returns (advantages [T, B], returns = advantages + values [T, B]).
    """
    T = rewards.shape[0]
    notdone = 1.0 - dones.to(values.dtype)
    next_values = torch.cat([values[1:], last_value.unsqueeze(0)], dim=0)  # [T, B]
    deltas = rewards + gamma * notdone * next_values - values
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(last_value)
    for t in reversed(range(T)):
        running = deltas[t] + gamma * lam * notdone[t] * running
        advantages[t] = running
    return advantages, advantages + values


class VTraceReturns(NamedTuple):
    """vs: V-trace value targets [T, B]; pg_advantages: rho_t-weighted advantages for the
    policy gradient [T, B]; rhos: the UNCLIPPED importance ratios pi/mu [T, B] (for logging)."""

    vs: torch.Tensor
    pg_advantages: torch.Tensor
    rhos: torch.Tensor


@torch.no_grad()
def vtrace(
    behaviour_logp: torch.Tensor,
    target_logp: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    discounts: torch.Tensor,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
    lam: float = 1.0,
) -> VTraceReturns:
    """V-trace targets, computed backwards with the recursion of the IMPALA paper (remark 1).

    behaviour_logp, target_logp: [T, B] log-probabilities of the taken actions under the
    acting policy mu and the learner's policy pi; rewards, values, discounts: [T, B];
    bootstrap_value: [B], V(x_T).

        rho_t   = min(rho_bar, pi_t / mu_t),   c_t = lam * min(c_bar, pi_t / mu_t)
        delta_t = rho_t (r_t + discount_t V(x_{t+1}) - V(x_t))
        v_t - V(x_t) = delta_t + discount_t c_t (v_{t+1} - V(x_{t+1}))     (v_T = V(x_T))
        pg_advantage_t = rho_t (r_t + discount_t v_{t+1} - V(x_t))

    Returns VTraceReturns(vs, pg_advantages, rhos) with rhos the unclipped ratios.
    """
    if rho_bar <= 0 or c_bar <= 0:
        raise ValueError(f"rho_bar and c_bar must be positive, got {rho_bar}, {c_bar}")
    ratios = torch.exp(target_logp - behaviour_logp)
    clipped_rhos = torch.clamp(ratios, max=rho_bar)
    cs = lam * torch.clamp(ratios, max=c_bar)
    next_values = torch.cat([values[1:], bootstrap_value.unsqueeze(0)], dim=0)  # [T, B]
    deltas = clipped_rhos * (rewards + discounts * next_values - values)

    vs_minus_v = torch.zeros_like(values)
    acc = torch.zeros_like(bootstrap_value)
    for t in reversed(range(values.shape[0])):
        acc = deltas[t] + discounts[t] * cs[t] * acc
        vs_minus_v[t] = acc
    vs = vs_minus_v + values

    next_vs = torch.cat([vs[1:], bootstrap_value.unsqueeze(0)], dim=0)  # [T, B]
    pg_advantages = clipped_rhos * (rewards + discounts * next_vs - values)
    return VTraceReturns(vs=vs, pg_advantages=pg_advantages, rhos=ratios)
