"""--srwm-profile: named sets of SRWM settings, applied before the other options given."""

from __future__ import annotations

import pytest

from agents.cli import config_from_args
from agents.config import SRWM_PROFILES, ConfigError, TrainConfig
from policies.config import ModelConfig


def test_default_profile_is_the_dataclass_defaults():
    model = ModelConfig()
    for key, value in SRWM_PROFILES["default"].items():
        assert getattr(model, key.split(".", 1)[1]) == value, key
    assert TrainConfig().srwm_profile == "default"


def test_published_profile_sets_the_papers_agent():
    cfg = config_from_args(["--games", "cue-recall", "--srwm-profile", "published"])
    m = cfg.model
    assert cfg.srwm_profile == "published"
    assert m.srwm_detach_every_step and cfg.state_reset == "episode" and cfg.state_lifetime == 0
    assert (m.srwm_pre_ln, m.srwm_qk_init_scale, m.srwm_input_scale, m.srwm_beta_init,
            m.srwm_state_decay, m.srwm_w0_scale, m.srwm_state_max_norm) == (
                False, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0)
    spec = config_from_args(["--games", "cue-recall", "--srwm-profile", "spec"])
    assert not spec.model.srwm_detach_every_step
    assert spec.state_reset == TrainConfig().state_reset


@pytest.mark.parametrize("order", ["profile first", "profile last"])
def test_options_given_override_the_profile_whatever_their_order(order):
    args = ["--srwm-profile", "published"]
    more = ["--srwm-qk-init-scale", "3", "--state-reset", "never"]
    cfg = config_from_args(["--games", "cue-recall", *(args + more if order == "profile first"
                                                       else more + args)])
    assert cfg.model.srwm_qk_init_scale == 3 and cfg.state_reset == "never"
    assert cfg.model.srwm_detach_every_step


def test_profile_with_a_preset_and_unknown_profile():
    cfg = TrainConfig.from_preset("paper-multitask", srwm_profile="published")
    assert cfg.preset == "paper-multitask" and cfg.model.srwm_detach_every_step
    assert cfg.games == ["paper6"] and cfg.algo == "vtrace"
    with pytest.raises(ConfigError, match="unknown srwm_profile 'nope'; valid: default"):
        TrainConfig().apply_overrides({"srwm_profile": "nope"})
