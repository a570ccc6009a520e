"""Every core in CORES: step-by-step equals sequence, resets, state carry, parameter counts."""

import pytest
import torch

from policies import CORES, ModelConfig, build_actor_critic, build_core
from policies.state import map_state

SMALL = dict(hidden_size=16, num_layers=2, num_heads=2, head_size=8, ff_size=32, lstm_size=12,
             cnn_channels=(4, 8, 8), cnn_out=32, srwm_kernel="naive")
IN = 9


def make_core(name, **overrides):
    torch.manual_seed(0)
    return build_core(ModelConfig(core=name, **{**SMALL, **overrides}), IN).double()


def random_state(core, batch_size, seed):
    g = torch.Generator().manual_seed(seed)
    return map_state(lambda s: torch.randn(s.shape, generator=g, dtype=s.dtype) * 0.5,
                     core.initial_state(batch_size))


def test_registry_holds_the_paper_cores():
    assert {"srwm", "deltanet", "lstm", "ff", "fake-sr"} <= set(CORES)


@pytest.mark.parametrize("name", sorted(CORES))
def test_step_by_step_equals_sequence(name):
    core = make_core(name)
    T, B = 9, 3
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, IN, generator=g, dtype=torch.float64)
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[0, 1] = True
    starts[3, 0] = True
    starts[5, 2] = True
    starts[6, 0] = True
    state0 = random_state(core, B, seed=2)
    out, final = core(x, state0, starts)
    assert out.shape == (T, B, core.output_size)
    state, outs = state0, []
    for t in range(T):
        o, state = core(x[t : t + 1], state, starts[t : t + 1])
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs), out, rtol=1e-10, atol=1e-12)
    assert len(state) == len(final)
    for a, b in zip(state, final, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CORES))
def test_two_calls_equal_one_call(name):
    core = make_core(name)
    T, B = 8, 2
    x = torch.randn(T, B, IN, dtype=torch.float64)
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[4, 1] = True
    state0 = random_state(core, B, seed=3)
    out, final = core(x, state0, starts)
    out_a, mid = core(x[:5], state0, starts[:5])
    out_b, end = core(x[5:], mid, starts[5:])
    torch.testing.assert_close(torch.cat([out_a, out_b]), out, rtol=1e-10, atol=1e-12)
    for a, b in zip(end, final, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CORES))
def test_reset_equals_fresh_state(name):
    """A reset before step 0 erases any carried state exactly (W back to W0)."""
    core = make_core(name)
    x = torch.randn(5, 3, IN, dtype=torch.float64)
    starts = torch.zeros(5, 3, dtype=torch.bool)
    starts[0] = True
    out_reset, s_reset = core(x, random_state(core, 3, seed=4), starts)
    out_fresh, s_fresh = core(x, core.initial_state(3), None)
    assert torch.equal(out_reset, out_fresh)
    for a, b in zip(s_reset, s_fresh, strict=True):
        assert torch.equal(a, b)
    if len(s_reset):  # and the state matters when not reset
        out_carry, _ = core(x, random_state(core, 3, seed=4), None)
        assert not torch.allclose(out_carry, out_fresh)


@pytest.mark.parametrize("name", sorted(CORES))
def test_state_contract(name):
    core = make_core(name)
    state = core.initial_state(4, dtype=torch.float32)
    assert isinstance(state, tuple)
    for s in state:
        assert s.shape[0] == 4 and s.dtype == torch.float32 and torch.count_nonzero(s) == 0
    metrics = core.state_metrics(random_state(core, 4, seed=5))
    assert all(isinstance(v, float) for v in metrics.values())
    expected = {
        "srwm": {"srwm_l0_mod_norm", "srwm_l1_mod_norm"},
        "deltanet": {"deltanet_l0_fast_norm", "deltanet_l1_fast_norm"},
        "lstm": {"lstm_cell_norm"},
    }.get(name, set())
    assert set(metrics) == expected


def test_srwm_mod_norm_value():
    core = make_core("srwm")
    s = torch.zeros(core.initial_state(2)[0].shape, dtype=torch.float64)
    s[0, 0, 0, 0] = 3.0
    s[0, 0, 1, 0] = 4.0  # one head of one entry has norm 5; 4 (batch, head) pairs
    metrics = core.state_metrics((s, torch.zeros_like(s)))
    assert metrics == {"srwm_l0_mod_norm": 1.25, "srwm_l1_mod_norm": 0.0}


def test_srwm_gradients_through_the_core_into_w0_blocks():
    core = make_core("srwm")
    x = torch.randn(6, 2, IN, dtype=torch.float64)
    out, _ = core(x, core.initial_state(2), None)
    out[1:].sum().backward()
    d = SMALL["head_size"]
    for layer in core.memories:
        for rows in (slice(d, 2 * d), slice(2 * d, 3 * d), slice(3 * d, None)):
            assert layer.w0.grad[:, rows].abs().sum() > 0


def cnn_params(channels, cnn_out):
    total, c_in, size = 0, 3, 64
    for c in channels:
        total += c_in * c * 9 + c  # stage conv
        total += 4 * (c * c * 9 + c)  # two residual blocks of two convs
        c_in, size = c, (size + 1) // 2
    return total + c_in * size * size * cnn_out + cnn_out


def core_params(name, D, hidden=128, L=2, H=8, d=16, ff=512, lstm=256):
    if name == "lstm":
        return 4 * lstm * (D + lstm) + 8 * lstm
    stack = D * hidden + hidden + L * (2 * hidden + hidden * ff + ff + ff * hidden + hidden)
    memory = {
        "srwm": H * (3 * d + 4) * d + hidden * hidden,
        "fake-sr": H * d * d + hidden * hidden,
        "deltanet": 2 * hidden + hidden * H * (3 * d + 1) + hidden * hidden,
        "ff": 0,
    }[name]
    return stack + L * memory


@pytest.mark.parametrize("name", sorted(CORES))
def test_parameter_counts_at_paper_size(name):
    model = build_actor_critic(ModelConfig(core=name), num_actions=15)
    count = sum(p.numel() for p in model.parameters())
    core_count = sum(p.numel() for p in model.core.parameters())
    out = model.core.output_size
    expected_core = core_params(name, 257)
    expected = cnn_params((16, 32, 32), 256) + expected_core + out * 15 + 15 + out + 1
    print(f"{name}: core {core_count:,} params, ActorCritic {count:,} params")
    assert core_count == expected_core
    assert count == expected
