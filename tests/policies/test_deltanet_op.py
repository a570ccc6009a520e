"""The DeltaNet op against docs/SPEC.md, section 2."""

import math

import numpy as np
import torch

from policies.deltanet.ops import deltanet_naive


def reference_deltanet(q, k, v, beta, state, episode_start):
    """Independent float64 DeltaNet with per-element loops (numpy in, numpy out)."""
    T, B, H, d = q.shape
    out = np.zeros((T, B, H, d))
    final = np.zeros_like(state)

    def phi(u):
        p = [(a if a > 0 else math.exp(a) - 1.0) + 1.0 for a in u]
        return [a / sum(p) for a in p]

    for b in range(B):
        for h in range(H):
            f = state[b, h].tolist()
            for t in range(T):
                if episode_start[t, b]:
                    f = [[0.0] * d for _ in range(d)]
                kk, qq = phi(k[t, b, h]), phi(q[t, b, h])
                for i in range(d):
                    vbar_i = sum(f[i][j] * kk[j] for j in range(d))
                    for j in range(d):
                        f[i][j] += beta[t, b, h] * (v[t, b, h, i] - vbar_i) * kk[j]
                out[t, b, h] = [sum(f[i][j] * qq[j] for j in range(d)) for i in range(d)]
            final[b, h] = f
    return out, final


def random_inputs(T, B, H, d, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(T, B, H, d, generator=g, dtype=torch.float64) for _ in range(3))
    beta = torch.rand(T, B, H, generator=g, dtype=torch.float64)
    state = torch.randn(B, H, d, d, generator=g, dtype=torch.float64)
    starts = torch.rand(T, B, generator=g) < 0.25
    return q, k, v, beta, state, starts


def test_matches_reference():
    for T, B, H, d, seed in [(1, 1, 1, 2, 0), (7, 3, 2, 3, 1), (11, 2, 1, 5, 2)]:
        q, k, v, beta, state, starts = random_inputs(T, B, H, d, seed)
        o, f = deltanet_naive(q, k, v, beta, state, starts)
        o_ref, f_ref = reference_deltanet(*(a.numpy() for a in (q, k, v, beta, state, starts)))
        np.testing.assert_allclose(o.numpy(), o_ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(f.numpy(), f_ref, rtol=1e-9, atol=1e-12)


def test_hand_step():
    """d = 2, F = 0, k = q = 0 -> phi = [1/2, 1/2], beta = 1/2, v = [2, 4]:
    F = 1/2 [2, 4] [1/2, 1/2]^T = [[1/2, 1/2], [1, 1]]; o = F phi(q) = [1/2, 1]."""
    z = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
    v = torch.tensor([2.0, 4.0], dtype=torch.float64).view(1, 1, 1, 2)
    o, f = deltanet_naive(z, z, v, torch.full((1, 1, 1), 0.5, dtype=torch.float64))
    torch.testing.assert_close(o[0, 0, 0], torch.tensor([0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(f[0, 0], torch.tensor([[0.5, 0.5], [1, 1]], dtype=torch.float64))


def test_gradcheck():
    q, k, v, beta, state, _ = random_inputs(4, 2, 2, 3, seed=3)
    starts = torch.zeros(4, 2, dtype=torch.bool)
    starts[2, 0] = True
    inputs = tuple(a.requires_grad_() for a in (q, k, v, beta, state))
    assert torch.autograd.gradcheck(
        lambda *a: deltanet_naive(*a, episode_start=starts), inputs, eps=1e-6, atol=1e-7
    )
