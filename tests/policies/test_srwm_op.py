"""The SRWM op against docs/SPEC.md, section 1: by hand, an independent reference, gradcheck."""

import math

import numpy as np
import pytest
import torch

from policies.srwm import ops as srwm_ops
from policies.srwm.ops import srwm, srwm_naive


def reference_srwm(x, w0, state, episode_start, decay=1.0):
    """Independent float64 SRWM: numpy, explicit row blocks, per-element loops. With decay,
    W <- W0 + decay (W - W0) before every step (after its reset).

    x [T, B, H, d], w0 [H, 3d+4, d], state [B, H, 3d+4, d], episode_start [T, B] (numpy).
    """
    T, B, H, d = x.shape
    y = np.zeros((T, B, H, d))
    final = np.zeros_like(state)

    def softmax(v):
        e = [math.exp(a - max(v)) for a in v]
        return [a / sum(e) for a in e]

    def sigmoid(a):
        return 1.0 / (1.0 + math.exp(-a))

    def matvec(m, v):
        return [sum(m[i][j] * v[j] for j in range(len(v))) for i in range(len(m))]

    for b in range(B):
        for h in range(H):
            w = (w0[h] + state[b, h]).tolist()
            for t in range(T):
                if episode_start[t, b]:
                    w = w0[h].tolist()
                w = (w0[h] + decay * (np.array(w) - w0[h])).tolist()
                wy, wq, wk, wb = w[:d], w[d : 2 * d], w[2 * d : 3 * d], w[3 * d :]
                xt = softmax(list(x[t, b, h]))
                y[t, b, h] = matvec(wy, xt)
                q = softmax(matvec(wq, xt))
                k = softmax(matvec(wk, xt))
                rates = [sigmoid(a) for a in matvec(wb, xt)]
                new_blocks = []
                for block, rate in zip((wy, wq, wk, wb), rates, strict=True):
                    vq = matvec(block, q)
                    vk = matvec(block, k)
                    new_blocks.append(
                        [
                            [block[i][j] + rate * (vq[i] - vk[i]) * k[j] for j in range(d)]
                            for i in range(len(block))
                        ]
                    )
                w = new_blocks[0] + new_blocks[1] + new_blocks[2] + new_blocks[3]
            final[b, h] = np.array(w) - w0[h]
    return y, final


def random_inputs(T, B, H, d, seed, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, H, d, generator=g, dtype=dtype) * 2.0
    w0 = torch.randn(H, 3 * d + 4, d, generator=g, dtype=dtype) * d**-0.5 * scale
    state = torch.randn(B, H, 3 * d + 4, d, generator=g, dtype=dtype) * 0.3
    episode_start = torch.rand(T, B, generator=g) < 0.25
    return x, w0, state, episode_start


@pytest.mark.parametrize(
    "T,B,H,d,seed", [(1, 1, 1, 2, 0), (6, 3, 2, 3, 1), (9, 2, 3, 4, 2), (13, 1, 1, 5, 3)]
)
def test_matches_independent_reference(T, B, H, d, seed):
    x, w0, state, episode_start = random_inputs(T, B, H, d, seed, scale=3.0)
    episode_start[T // 2, 0] = True
    y, final = srwm_naive(x, w0, state, episode_start)
    y_ref, final_ref = reference_srwm(x.numpy(), w0.numpy(), state.numpy(),
                                      episode_start.numpy())
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(final.numpy(), final_ref, rtol=1e-9, atol=1e-12)
    assert np.abs(final_ref).max() > 1e-3  # the state really moved


@pytest.mark.parametrize("decay", [0.5, 0.97])
def test_state_decay_matches_independent_reference(decay):
    x, w0, state, episode_start = random_inputs(7, 2, 2, 3, seed=11, scale=3.0)
    y, final = srwm_naive(x, w0, state, episode_start, decay=decay)
    y_ref, final_ref = reference_srwm(x.numpy(), w0.numpy(), state.numpy(),
                                      episode_start.numpy(), decay=decay)
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(final.numpy(), final_ref, rtol=1e-9, atol=1e-12)
    y1, _ = srwm_naive(x, w0, state, episode_start)
    assert not torch.allclose(y, y1)  # the decay changes the outputs


def test_hand_computed_steps():
    """1 head, d = 2, x = 0 so that softmax(x) = [1/2, 1/2]; numbers chosen by hand:
    W_y = [[1, 2], [3, 4]]                -> y_1 = [1.5, 3.5]
    W_q = [[2 ln3, 0], [0, 0]]            -> q = softmax([ln3, 0]) = [3/4, 1/4]
    W_k = 0                               -> k = [1/2, 1/2]
    W_b = [[0,0],[2 ln3,0],[0,0],[-2 ln3,0]] -> b = [1/2, 3/4, 1/2, 1/4]
    v - vbar = W (q - k) = (W[:, 0] - W[:, 1]) / 4, and the update of row r is
    rate_r (W[r,0] - W[r,1]) / 4 * [1/2, 1/2]:
      W_y rows: 1/2 * (-1)/4 * 1/2 = -1/16 everywhere
      W_q row 0: 3/4 * 2 ln3/4 * 1/2 = 3 ln3 / 16; row 1: 0
      W_k: 0
      rate rows: 1/4 * (0, 2 ln3, 0, -2 ln3)/4 * 1/2 = (0, ln3/16, 0, -ln3/16)
    Step 2 reads W_y - 1/16: y_2 = [1.5 - 1/16, 3.5 - 1/16].
    """
    ln3 = math.log(3.0)
    w0 = torch.tensor(
        [[1, 2], [3, 4], [2 * ln3, 0], [0, 0], [0, 0], [0, 0],
         [0, 0], [2 * ln3, 0], [0, 0], [-2 * ln3, 0]],
        dtype=torch.float64,
    ).unsqueeze(0)
    x = torch.zeros(2, 1, 1, 2, dtype=torch.float64)
    y, final = srwm_naive(x, w0)
    expected_update = torch.tensor(
        [[-1 / 16] * 2, [-1 / 16] * 2, [3 * ln3 / 16] * 2, [0, 0], [0, 0], [0, 0],
         [0, 0], [ln3 / 16] * 2, [0, 0], [-ln3 / 16] * 2],
        dtype=torch.float64,
    )
    y1, after_one = srwm_naive(x[:1], w0)
    torch.testing.assert_close(y1[0, 0, 0], torch.tensor([1.5, 3.5], dtype=torch.float64))
    torch.testing.assert_close(after_one[0, 0], expected_update, rtol=0, atol=1e-15)
    torch.testing.assert_close(
        y[1, 0, 0], torch.tensor([1.5 - 1 / 16, 3.5 - 1 / 16], dtype=torch.float64)
    )


def test_gradcheck_with_state_and_resets():
    x, w0, state, _ = random_inputs(5, 2, 2, 3, seed=4)
    episode_start = torch.zeros(5, 2, dtype=torch.bool)
    episode_start[2, 1] = True
    inputs = (x.requires_grad_(), w0.requires_grad_(), state.requires_grad_())
    assert torch.autograd.gradcheck(
        lambda a, b, c: srwm_naive(a, b, c, episode_start), inputs, eps=1e-6, atol=1e-7
    )


def test_gradient_reaches_every_w0_block_through_later_steps():
    """A loss on steps t >= 1 reaches W0's q, k and rate blocks only through the updates."""
    T, B, H, d = 6, 2, 2, 4
    x, w0, _, _ = random_inputs(T, B, H, d, seed=5)
    grads = {}
    for detach in (False, True):
        w = w0.clone().requires_grad_()
        y, _ = srwm_naive(x, w, detach_every_step=detach)
        y[1:].pow(2).sum().backward()
        grads[detach] = w.grad
    blocks = {"y": slice(0, d), "q": slice(d, 2 * d), "k": slice(2 * d, 3 * d),
              "rates": slice(3 * d, None)}
    for name, rows in blocks.items():
        assert grads[False][:, rows].abs().min() > 0, name  # every entry gets gradient
    for name in ("q", "k", "rates"):
        assert torch.count_nonzero(grads[True][:, blocks[name]]) == 0, name
    assert grads[True][:, blocks["y"]].abs().sum() > 0


def test_loss_on_step_zero_gives_no_gradient_to_qk_rates():
    x, w0, _, _ = random_inputs(4, 2, 1, 3, seed=6)
    w = w0.clone().requires_grad_()
    y, _ = srwm_naive(x, w)
    y[0].sum().backward()
    assert torch.count_nonzero(w.grad[:, 3:]) == 0
    assert torch.count_nonzero(w.grad[:, :3]) > 0


def test_reset_gives_w0_behaviour_and_state_none_is_zeros():
    x, w0, state, _ = random_inputs(5, 3, 2, 3, seed=7)
    starts = torch.zeros(5, 3, dtype=torch.bool)
    starts[0] = True
    y_reset, s_reset = srwm_naive(x, w0, state, starts)
    y_fresh, s_fresh = srwm_naive(x, w0, None)
    assert torch.equal(y_reset, y_fresh) and torch.equal(s_reset, s_fresh)


def test_two_calls_equal_one_call_and_float32():
    x, w0, state, starts = random_inputs(8, 2, 2, 3, seed=8, dtype=torch.float32)
    y, s = srwm_naive(x, w0, state, starts)
    y_a, s_a = srwm_naive(x[:3], w0, state, starts[:3])
    y_b, s_b = srwm_naive(x[3:], w0, s_a, starts[3:])
    assert y.dtype == torch.float32
    torch.testing.assert_close(torch.cat([y_a, y_b]), y)
    torch.testing.assert_close(s_b, s)


def test_dispatch_on_cpu_uses_naive(monkeypatch):
    x, w0, state, starts = random_inputs(4, 2, 1, 3, seed=9)
    y, s = srwm(x, w0, state, starts)
    y_n, s_n = srwm_naive(x, w0, state, starts)
    assert torch.equal(y, y_n) and torch.equal(s, s_n)
    with pytest.raises(ValueError, match="unknown srwm kernel 'bogus'"):
        srwm(x, w0, kernel="bogus")
    monkeypatch.setattr(srwm_ops, "_load_fused", lambda: (None, ImportError("no triton")))
    with pytest.raises(RuntimeError, match="no triton"):
        srwm(x, w0, kernel="fused")
    with pytest.raises(ValueError, match="detach_every_step"):
        srwm(x, w0, kernel="fused", detach_every_step=True)


def test_auto_takes_fused_only_where_it_applies(monkeypatch):
    """kernel="auto" on CPU never calls the fused kernel, even when it imports."""

    def fail(*args, **kwargs):
        raise AssertionError("fused kernel called for CPU tensors")

    monkeypatch.setattr(srwm_ops, "_load_fused", lambda: (fail, None))
    x, w0, state, starts = random_inputs(3, 2, 1, 4, seed=10, dtype=torch.float32)
    y, _ = srwm(x, w0, state, starts, kernel="auto")
    assert torch.equal(y, srwm_naive(x, w0, state, starts)[0])
    assert not srwm_ops._fused_applies(x, detach_every_step=False)
