"""ActorCritic, ModelConfig and state helpers."""

import json
import subprocess
import sys

import pytest
import torch

from policies import CORES, ActorCritic, ModelConfig, build_actor_critic
from policies.state import (
    cat_state,
    detach_state,
    index_state,
    map_state,
    reset_state,
    zeros_like_state,
)

TINY = dict(hidden_size=16, num_heads=2, head_size=8, ff_size=32, lstm_size=16,
            cnn_channels=(4, 8, 8), cnn_out=32)


@pytest.mark.parametrize("name", sorted(CORES))
def test_forward_and_act_shapes(name):
    torch.manual_seed(0)
    model = build_actor_critic(ModelConfig(core=name, **TINY), num_actions=5)
    assert isinstance(model, ActorCritic)
    T, B = 3, 2
    obs = torch.randint(0, 256, (T, B, 64, 64, 3), dtype=torch.uint8)
    reward = torch.tensor([[0.0, 5.0], [-3.0, 0.5], [1.0, 0.0]])
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[0] = True
    state = model.initial_state(B)
    logits, value, new_state = model(obs, reward, starts, state)
    assert logits.shape == (T, B, 5) and logits.dtype == torch.float32
    assert value.shape == (T, B) and value.dtype == torch.float32
    assert [s.shape for s in new_state] == [s.shape for s in state]
    logits.sum().backward()  # differentiable end to end

    with torch.no_grad():
        action, logprob, v, s1 = model.act(obs[0], reward[0], starts[0], state)
        g_action, g_logprob, g_v, _ = model.act(obs[0], reward[0], starts[0], state, greedy=True)
        step_logits, step_value, _ = model(obs[:1], reward[:1], starts[:1], state)
    assert action.shape == (B,) and action.dtype == torch.int64
    assert logprob.shape == (B,) and v.shape == (B,)
    assert torch.equal(g_action, step_logits[0].argmax(-1))
    torch.testing.assert_close(g_v, step_value[0])
    torch.testing.assert_close(
        g_logprob, torch.log_softmax(step_logits[0], -1).gather(1, g_action[:, None])[:, 0]
    )
    assert all(not s.requires_grad for s in s1)
    assert isinstance(model.state_metrics(new_state), dict)


def test_reward_is_clipped():
    torch.manual_seed(0)
    model = build_actor_critic(ModelConfig(core="ff", **TINY), num_actions=3)
    obs = torch.zeros(1, 2, 64, 64, 3, dtype=torch.uint8)
    starts = torch.zeros(1, 2, dtype=torch.bool)
    a = model(obs, torch.tensor([[1.0, -1.0]]), starts, ())[0]
    b = model(obs, torch.tensor([[7.0, -9.0]]), starts, ())[0]
    assert torch.equal(a, b)


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="unknown core 'gru'.*deltanet.*srwm"):
        ModelConfig(core="gru")
    with pytest.raises(ValueError, match="hidden_size"):
        ModelConfig(hidden_size=100)
    with pytest.raises(ValueError, match="srwm_kernel"):
        ModelConfig(srwm_kernel="cuda")
    with pytest.raises(ValueError, match="unknown ModelConfig keys: bogus"):
        ModelConfig.from_dict({"bogus": 1})
    cfg = ModelConfig(core="lstm", cnn_channels=(4, 8, 8), srwm_detach_every_step=True)
    back = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.cnn_channels == (4, 8, 8)


def test_import_does_not_load_triton():
    code = "import sys, policies; assert 'triton' not in sys.modules, 'triton imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_state_helpers():
    a = (torch.ones(3, 2), torch.arange(6.0).view(3, 2))
    assert [s.shape for s in index_state(a, torch.tensor([0, 2]))] == [(2, 2), (2, 2)]
    assert [s.shape for s in cat_state([a, a])] == [(6, 2), (6, 2)]
    assert all(torch.count_nonzero(s) == 0 for s in zeros_like_state(a))
    r = reset_state(a, torch.tensor([False, True, False]))
    assert torch.equal(r[1], torch.tensor([[0.0, 1.0], [0.0, 0.0], [4.0, 5.0]]))
    assert map_state(lambda s: s * 2, ()) == ()
    g = (torch.ones(2, requires_grad=True) * 2,)
    assert not detach_state(g)[0].requires_grad
