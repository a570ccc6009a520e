"""GAE against a hand-computed case; V-trace against a slow ground truth in the paper's notation."""

from __future__ import annotations

import pytest
import torch

from agents.returns import gae, vtrace


def test_gae_hand_computed_with_done_in_the_middle():
    # T = 4, B = 1, gamma = 0.9, lambda = 0.8 (gamma * lambda = 0.72); the episode ends at t = 1.
    rewards = torch.tensor([[1.0], [0.0], [2.0], [1.0]])
    values = torch.tensor([[0.5], [1.0], [0.2], [0.4]])
    dones = torch.tensor([[False], [True], [False], [False]])
    last_value = torch.tensor([2.0])
    # delta_3 = 1 + 0.9 * 2.0 - 0.4 = 2.4
    # delta_2 = 2 + 0.9 * 0.4 - 0.2 = 2.16
    # delta_1 = 0 + 0 (done: no bootstrap) - 1.0 = -1.0
    # delta_0 = 1 + 0.9 * 1.0 - 0.5 = 1.4
    # A_3 = 2.4;  A_2 = 2.16 + 0.72 * 2.4 = 3.888;  A_1 = -1.0 (done cuts the trace)
    # A_0 = 1.4 + 0.72 * (-1.0) = 0.68
    expected_adv = torch.tensor([[0.68], [-1.0], [3.888], [2.4]])
    expected_ret = expected_adv + values  # [1.18, 0.0, 4.088, 2.8]
    adv, ret = gae(rewards, values, dones, last_value, gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, expected_adv)
    torch.testing.assert_close(ret, expected_ret)
    torch.testing.assert_close(ret[:, 0], torch.tensor([1.18, 0.0, 4.088, 2.8]))


def test_gae_columns_are_independent():
    g = torch.Generator().manual_seed(0)
    T, B = 7, 3
    rewards = torch.randn(T, B, generator=g)
    values = torch.randn(T, B, generator=g)
    dones = torch.rand(T, B, generator=g) < 0.3
    last = torch.randn(B, generator=g)
    adv, ret = gae(rewards, values, dones, last, 0.99, 0.95)
    for b in range(B):
        a1, r1 = gae(rewards[:, b:b + 1], values[:, b:b + 1], dones[:, b:b + 1], last[b:b + 1],
                     0.99, 0.95)
        torch.testing.assert_close(adv[:, b:b + 1], a1)
        torch.testing.assert_close(ret[:, b:b + 1], r1)


def slow_vtrace(mu_logp, pi_logp, rewards, values, bootstrap, discounts, rho_bar, c_bar, lam):
    """IMPALA eq. (1), written with explicit sums over t and products of c's, one column at a time.

    v_s = V(x_s) + sum_{t=s}^{s+n-1} (prod_{i=s}^{t-1} gamma_i) (prod_{i=s}^{t-1} c_i) delta_t V
    delta_t V = rho_t (r_t + gamma_t V(x_{t+1}) - V(x_t)),  rho_t = min(rho_bar, pi_t / mu_t),
    c_i = lam * min(c_bar, pi_i / mu_i),  gamma_t = discounts[t]; n = T - s, V(x_T) = bootstrap.
    Policy-gradient advantage: rho_s (r_s + gamma_s v_{s+1} - V(x_s)), v_T = V(x_T).
    """
    T, B = rewards.shape
    vs = torch.zeros(T, B, dtype=torch.float64)
    adv = torch.zeros(T, B, dtype=torch.float64)
    for b in range(B):
        V = [float(values[t, b]) for t in range(T)] + [float(bootstrap[b])]
        ratio = [float(torch.exp(pi_logp[t, b] - mu_logp[t, b])) for t in range(T)]
        rho = [min(rho_bar, x) for x in ratio]
        c = [lam * min(c_bar, x) for x in ratio]
        r = [float(rewards[t, b]) for t in range(T)]
        gam = [float(discounts[t, b]) for t in range(T)]
        v = []
        for s in range(T):
            total = V[s]
            for t in range(s, T):
                disc = 1.0
                trace = 1.0
                for i in range(s, t):
                    disc *= gam[i]
                    trace *= c[i]
                delta = rho[t] * (r[t] + gam[t] * V[t + 1] - V[t])
                total += disc * trace * delta
            v.append(total)
        v.append(V[T])
        for s in range(T):
            vs[s, b] = v[s]
            adv[s, b] = rho[s] * (r[s] + gam[s] * v[s + 1] - V[s])
    return vs, adv


def _random_case(T, B, seed):
    g = torch.Generator().manual_seed(seed)
    mu = -torch.rand(T, B, generator=g, dtype=torch.float64) * 2.0
    # ratios from about e^-1.5 to e^1.5: well on both sides of every clip used below
    pi = mu + (torch.rand(T, B, generator=g, dtype=torch.float64) * 3.0 - 1.5)
    rewards = torch.randn(T, B, generator=g, dtype=torch.float64)
    values = torch.randn(T, B, generator=g, dtype=torch.float64)
    bootstrap = torch.randn(B, generator=g, dtype=torch.float64)
    dones = torch.rand(T, B, generator=g, dtype=torch.float64) < 0.2
    discounts = 0.9 * (~dones).to(torch.float64)
    return mu, pi, rewards, values, bootstrap, discounts


@pytest.mark.parametrize("T,B", [(1, 1), (6, 1), (9, 4)])
@pytest.mark.parametrize(
    "rho_bar,c_bar,lam", [(1.0, 1.0, 1.0), (0.7, 1.6, 1.0), (2.0, 0.5, 0.9), (1.3, 1.3, 0.8)]
)
def test_vtrace_matches_slow_ground_truth(T, B, rho_bar, c_bar, lam):
    mu, pi, rewards, values, bootstrap, discounts = _random_case(T, B, seed=T * 31 + B)
    ratios = torch.exp(pi - mu)
    if T * B > 4:  # the case really exercises both sides of both clips
        for bar in (rho_bar, c_bar):
            assert (ratios > bar).any() and (ratios < bar).any()
    out = vtrace(mu, pi, rewards, values, bootstrap, discounts, rho_bar=rho_bar, c_bar=c_bar,
                 lam=lam)
    vs_ref, adv_ref = slow_vtrace(mu, pi, rewards, values, bootstrap, discounts, rho_bar, c_bar,
                                  lam)
    torch.testing.assert_close(out.vs, vs_ref)
    torch.testing.assert_close(out.pg_advantages, adv_ref)
    torch.testing.assert_close(out.rhos, ratios)


def test_vtrace_on_policy_equals_n_step_return():
    """pi == mu, rho_bar = c_bar = lam = 1: v_s is the discounted return bootstrapped at T,
    the same as GAE with lambda = 1."""
    _, _, rewards, values, bootstrap, discounts = _random_case(8, 3, seed=5)
    logp = torch.full_like(rewards, -0.7)
    dones = discounts == 0
    out = vtrace(logp, logp, rewards, values, bootstrap, discounts)
    _, ret = gae(rewards, values, dones, bootstrap, gamma=0.9, lam=1.0)
    torch.testing.assert_close(out.vs, ret)
    torch.testing.assert_close(out.rhos, torch.ones_like(rewards))


def test_vtrace_produces_targets_without_gradient():
    mu, pi, rewards, values, bootstrap, discounts = _random_case(5, 2, seed=1)
    pi = pi.clone().requires_grad_(True)
    values = values.clone().requires_grad_(True)
    out = vtrace(mu, pi, rewards, values, bootstrap, discounts)
    assert not out.vs.requires_grad and not out.pg_advantages.requires_grad
