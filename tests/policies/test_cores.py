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
        # + the LayerNorm before the heads (srwm_pre_ln, on by default): gain and bias
        "srwm": H * (3 * d + 4) * d + hidden * hidden + 2 * hidden,
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


def test_srwm_init_options_change_only_their_blocks():
    """srwm_qk_init_scale scales the q and k row blocks of W0 and srwm_beta_init shifts the
    rate rows; the y rows are untouched. Same seed: compare block by block."""
    from policies.srwm import SRWMLayer

    H, d = 4, 16
    torch.manual_seed(0)
    ref = SRWMLayer(H, d).w0.detach()
    torch.manual_seed(0)
    opt = SRWMLayer(H, d, qk_init_scale=4.0, beta_init=-1.5).w0.detach()
    torch.testing.assert_close(opt[:, :d], ref[:, :d], rtol=0, atol=0)
    torch.testing.assert_close(opt[:, d:3 * d], 4.0 * ref[:, d:3 * d])
    torch.testing.assert_close(opt[:, 3 * d:], ref[:, 3 * d:] - 1.5)


def test_srwm_beta_init_is_an_exact_offset_on_the_rate_logits():
    """x_t = softmax(.) sums to 1, so adding c to every entry of the rate rows adds exactly c to
    the rates' logits: the first step's rates are sigmoid(logit + c)."""
    from policies.srwm.ops import srwm_naive

    H, d, B = 2, 8, 3
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, B, H, d, generator=g, dtype=torch.float64)
    w0 = torch.randn(H, 3 * d + 4, d, generator=g, dtype=torch.float64) / d**0.5
    shifted = w0.clone()
    shifted[:, 3 * d:] += 0.7
    xs = torch.softmax(x[0], dim=-1)
    logits = torch.einsum("hrc,bhc->bhr", w0[:, 3 * d:], xs)
    logits_shifted = torch.einsum("hrc,bhc->bhr", shifted[:, 3 * d:], xs)
    torch.testing.assert_close(logits_shifted, logits + 0.7)
    # and the op sees the shift through its updates: the final states differ
    _, s0 = srwm_naive(x, w0)
    _, s1 = srwm_naive(x, shifted)
    assert not torch.allclose(s0, s1)


def test_srwm_pre_ln_normalises_the_head_input():
    """With srwm_pre_ln the op sees LayerNorm(h): scaling h by a constant leaves the layer's
    SRWM output unchanged (up to LayerNorm's eps), while without it the output changes."""
    from policies.srwm import SRWMLayer

    T, B, H, d = 3, 2, 2, 8
    h = torch.randn(T, B, H * d, dtype=torch.float64)
    for pre_ln, same in ((True, True), (False, False)):
        torch.manual_seed(0)
        layer = SRWMLayer(H, d, pre_ln=pre_ln, kernel="naive").double()
        out1, s1 = layer(h, None, None)
        out2, s2 = layer(5.0 * h, None, None)
        # out = h + proj(y): remove the residual to compare the memory's contribution
        y1, y2 = out1 - h, out2 - 5.0 * h
        assert torch.allclose(y1, y2, atol=1e-4) == same
        assert torch.allclose(s1, s2, atol=1e-4) == same


def test_srwm_options_in_model_config():
    cfg = ModelConfig(core="srwm", srwm_pre_ln=True, srwm_qk_init_scale=4.0, srwm_beta_init=-1)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    core = build_core(cfg, 257)
    assert all(m.norm is not None for m in core.memories)
    with pytest.raises(ValueError, match="srwm_qk_init_scale"):
        ModelConfig(core="srwm", srwm_qk_init_scale=0)


def test_srwm_state_bound_scales_only_what_exceeds_it():
    from policies.srwm.layer import bound_norm

    g = torch.Generator().manual_seed(0)
    state = torch.randn(3, 2, 28, 8, generator=g, dtype=torch.float64)
    state[0, 1] *= 100.0  # one matrix far above the bound, the rest below it
    norms = torch.linalg.vector_norm(state.flatten(2), dim=-1)
    bound = float(norms[0, 1]) / 10
    assert (norms.flatten().sort().values[-2] < bound).item()
    out = bound_norm(state, bound)
    out_norms = torch.linalg.vector_norm(out.flatten(2), dim=-1)
    assert out_norms[0, 1].item() == pytest.approx(bound, rel=1e-12)
    # the scaled matrix keeps its direction; the others are bitwise unchanged
    assert torch.allclose(out[0, 1] / bound, state[0, 1] / norms[0, 1], rtol=1e-12)
    keep = torch.ones(3, 2, dtype=torch.bool)
    keep[0, 1] = False
    assert torch.equal(out[keep], state[keep])


def test_srwm_carried_state_stays_within_its_bound():
    """Without decay and with large inputs the modification grows past any small bound; with
    srwm_state_max_norm the state carried from call to call never exceeds it, and a bound that
    is never reached changes nothing (bitwise)."""
    from policies.srwm import SRWMLayer

    T, B, H, d, calls, bound = 10, 4, 2, 8, 20, 2.0
    g = torch.Generator().manual_seed(1)
    hs = [torch.randn(T, B, H * d, generator=g, dtype=torch.float64) * 5 for _ in range(calls)]

    def carry(max_norm):
        torch.manual_seed(0)
        layer = SRWMLayer(H, d, kernel="naive", state_max_norm=max_norm).double()
        state, outs, norms = None, [], []
        for h in hs:
            out, state = layer(h, state, None)
            outs.append(out)
            norms.append(torch.linalg.vector_norm(state.flatten(2), dim=-1).max().item())
        return outs, norms

    _, free = carry(0.0)
    assert max(free) > 2 * bound  # the test case does grow past the bound unbounded
    _, bounded = carry(bound)
    assert max(bounded) <= bound * (1 + 1e-12)
    outs_big, _ = carry(1e9)
    outs_free, _ = carry(0.0)
    assert all(torch.equal(a, b) for a, b in zip(outs_big, outs_free, strict=True))
