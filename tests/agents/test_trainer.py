"""The training loop on a plain SB3 VecEnv: determinism, signals, resume, checkpoints, logs."""

from __future__ import annotations

import json
import os
import signal

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from agents import checkpoint as ckpt
from agents.config import ConfigError, TrainConfig
from agents.trainer import dry_run, train
from envs.adapter import as_training_env
from policies import ModelConfig


class TinyGame(gym.Env):
    """A plain gymnasium env (no game names, no episode infos): uint8 [64, 64, 3] frames of one
    random colour; reward 1 when the action matches the colour index; episodes of 5 steps."""

    observation_space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    action_space = gym.spaces.Discrete(3)

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.t, self.cue = 0, 0

    def _obs(self) -> np.ndarray:
        self.cue = int(self.rng.integers(3))
        return np.full((64, 64, 3), 80 * self.cue, np.uint8)

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == self.cue)
        self.t += 1
        return self._obs(), reward, self.t >= 5, False, {}


def make_vec_env(n: int = 4, seed: int = 0) -> DummyVecEnv:
    return DummyVecEnv([lambda i=i: TinyGame(seed * 100 + i) for i in range(n)])


def tiny_cfg(run_dir, algo: str = "ppo", core: str = "srwm", **kw) -> TrainConfig:
    model = ModelConfig(core=core, cnn_channels=(4, 4, 4), cnn_out=16, hidden_size=8,
                        num_heads=2, head_size=4, ff_size=16, lstm_size=8, num_layers=1)
    cfg = TrainConfig(algo=algo, total_steps=kw.pop("total_steps", 128), unroll=8,
                      run_dir=str(run_dir), device="cpu", model=model, **kw)
    cfg.ppo.num_minibatches = 2
    cfg.ppo.epochs = 2
    return cfg


def params(run_dir) -> dict[str, torch.Tensor]:
    return ckpt.load_agent(run_dir).policy.state_dict()


@pytest.mark.parametrize("algo", ["ppo", "vtrace"])
def test_same_seed_same_result(tmp_path, algo):
    results = []
    for name in ("a", "b"):
        train(tiny_cfg(tmp_path / name, algo, seed=7), env=make_vec_env(), progress=False)
        results.append(params(tmp_path / name))
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])
    train(tiny_cfg(tmp_path / "c", algo, seed=8), env=make_vec_env(), progress=False)
    other = params(tmp_path / "c")
    assert not all(torch.equal(results[0][k], other[k]) for k in other)


def test_plain_vec_env_is_wrapped_and_logged(tmp_path):
    env = make_vec_env()
    assert as_training_env(env).env_games == ["env"] * 4
    result = train(tiny_cfg(tmp_path / "run", log_every=2), env=env, progress=False)
    assert result.global_step == 128 and result.updates == 4 and result.interrupted is None
    assert result.episodes >= 4 * (128 // 4 // 5) - 4
    assert 0.0 <= result.recent_return <= 5.0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["games"] == ["env"] and saved["num_envs"] == 4
    assert TrainConfig.from_dict(saved).num_updates == 4

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("charts/episodic_return", "charts/episodic_return/env", "charts/sps",
                "charts/episode_length", "charts/learning_rate", "losses/policy",
                "losses/approx_kl", "core/srwm_l0_mod_norm"):
        assert tag in tags, (tag, sorted(tags))
    assert [e.step for e in acc.Scalars("charts/sps")] == [64, 128]


def test_sigterm_saves_and_stops_after_the_current_update(tmp_path):
    def on_update(step, metrics):
        if step == 64:
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    result = train(tiny_cfg(tmp_path / "run", total_steps=1024), env=make_vec_env(),
                   progress=False, on_update=on_update)
    assert signal.getsignal(signal.SIGTERM) == previous
    assert result.interrupted == "SIGTERM" and result.global_step == 64
    assert ckpt.find_latest_checkpoint(tmp_path / "run").name == "ckpt_000000000064.pt"


def test_resume_continues_counters_and_learner(tmp_path):
    run = tmp_path / "run"
    cfg = tiny_cfg(run, algo="vtrace")
    train(cfg, env=make_vec_env(), progress=False)
    first = ckpt.load_checkpoint(run)
    cfg.total_steps = 256
    steps = []
    result = train(cfg, env=make_vec_env(seed=1), resume_from=run, progress=False,
                   on_update=lambda s, m: steps.append(s))
    assert steps == [160, 192, 224, 256] and result.updates == 8
    last = ckpt.load_checkpoint(run)
    assert last["learner"]["updates"] == first["learner"]["updates"] + 4
    assert json.loads((run / "config.json").read_text())["total_steps"] == 256


def test_periodic_checkpoints_keep_last_k(tmp_path):
    cfg = tiny_cfg(tmp_path / "run", total_steps=192, checkpoint_every_steps=64,
                   keep_checkpoints=2)
    train(cfg, env=make_vec_env(), progress=False)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path / "run")]
    assert names == ["ckpt_000000000128.pt", "ckpt_000000000192.pt"]


def test_existing_run_dir_is_not_overwritten(tmp_path):
    run = tmp_path / "run"
    train(tiny_cfg(run), env=make_vec_env(), progress=False)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    with pytest.raises(ConfigError, match="not empty"):
        train(tiny_cfg(run), env=make_vec_env(), progress=False)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


def test_dry_run_writes_nothing(tmp_path):
    summary = dry_run(tiny_cfg(tmp_path / "run"), env=make_vec_env())
    assert summary["steps_per_update"] == 32 and summary["num_updates"] == 4
    assert not (tmp_path / "run").exists()


def test_env_with_wrong_observations_is_rejected(tmp_path):
    class Small(TinyGame):
        observation_space = gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)

    env = DummyVecEnv([lambda: Small(0)] * 2)
    with pytest.raises(ConfigError, match="uint8"):
        train(tiny_cfg(tmp_path / "run"), env=env, progress=False)


def test_episode_stats_per_game_and_aggregate():
    from agents.metrics import EpisodeStats

    stats = EpisodeStats(["bigfish", "starpilot"], "easy")
    stats.add([{"r": 1.0, "l": 10, "game": "bigfish"}, {"r": 40.0, "l": 30, "game": "bigfish"},
               {"r": 2.5, "l": 20, "game": "starpilot"}])
    out = stats.pop_scalars()
    assert out["charts/episodic_return/bigfish"] == 20.5
    assert out["charts/normalized_score/bigfish"] == pytest.approx(0.5)
    assert out["charts/normalized_score/starpilot"] == pytest.approx(0.0)
    assert out["charts/normalized_score"] == pytest.approx(0.25)  # mean over games
    assert out["charts/episodic_return"] == pytest.approx(43.5 / 3)  # mean over episodes
    assert out["charts/episode_length"] == 20
    assert stats.pop_scalars() == {}  # the window was cleared; the recent window was not
    assert stats.recent_mean_return() == pytest.approx((20.5 + 2.5) / 2)


def test_progress_lines_without_a_terminal():
    import io

    from agents.metrics import Progress

    stream = io.StringIO()
    bar = Progress(1000, 0, stream=stream, line_every_s=0)
    bar.update(500, 1.5, 0.25)
    bar.close()
    line = stream.getvalue().strip()
    assert line.startswith("step 500/1.0k (50.0%)") and "SPS" in line and "ETA" in line
    assert "return 1.50" in line and "score 0.250" in line


def test_same_seed_same_result_on_a_synthetic_task_built_from_the_config(tmp_path):
    results = []
    for name in ("a", "b"):
        cfg = tiny_cfg(tmp_path / name, games=["cue-recall"], num_envs=4, total_steps=64,
                       seed=3)
        result = train(cfg, progress=False)
        assert result.global_step == 64
        results.append(params(tmp_path / name))
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["games"] == ["cue-recall"]


def test_config_json_round_trip_and_unknown_keys():
    cfg = TrainConfig(games=["paper6"], algo="vtrace", seed=5).resolved()
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.model.cnn_channels == (16, 32, 32)
    with pytest.raises(ConfigError, match="unknown TrainConfig keys: colour"):
        TrainConfig.from_dict({**cfg.to_dict(), "colour": 1})
    with pytest.raises(ConfigError, match="unknown ppo config keys: epochz"):
        TrainConfig.from_dict({**cfg.to_dict(), "ppo": {"epochz": 3}})
    with pytest.raises(ConfigError, match="unknown ModelConfig keys: depth"):
        TrainConfig.from_dict({**cfg.to_dict(), "model": {"depth": 3}})


@pytest.mark.parametrize("games,algo,envs,unroll", [
    ("all", "ppo", 64, 256), ("paper6", "ppo", 72, 256), ("paper6", "vtrace", 96, 50),
    ("memory4", "vtrace", 32, 50), ("bigfish", "vtrace", 32, 50)])
def test_algorithm_dependent_defaults(games, algo, envs, unroll):
    cfg = TrainConfig(games=[games], algo=algo).resolved()
    assert (cfg.num_envs, cfg.unroll) == (envs, unroll)
    assert cfg.steps_per_update == envs * unroll


def test_preset_with_overrides():
    cfg = TrainConfig.from_preset("expert-bigfish", **{"model.core": "lstm"}).resolved()
    assert cfg.games == ["bigfish"] and cfg.total_steps == 50_000_000
    assert cfg.model.core == "lstm" and cfg.algo == "vtrace"
    cfg.num_minibatches = 4
    assert cfg.ppo.num_minibatches == 4
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        TrainConfig.from_preset("nope")
