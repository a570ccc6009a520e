"""Checkpoints: atomic writes, keep-last-k, safe loading, one-line errors, load_agent."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import checkpoint as ckpt
from agents.checkpoint import CheckpointError, LoadedAgent, load_agent
from agents.config import TrainConfig
from policies import ModelConfig, build_actor_critic


def tiny_config(run_dir: Path, core: str = "srwm") -> TrainConfig:
    model = ModelConfig(core=core, cnn_channels=(4, 8, 8), cnn_out=16, hidden_size=8,
                        num_heads=2, head_size=4, ff_size=16, lstm_size=8, num_layers=1)
    cfg = TrainConfig(games=["bigfish", "starpilot"], num_envs=4, unroll=8, total_steps=64,
                      run_dir=str(run_dir), model=model)
    cfg.ppo.num_minibatches = 2
    return cfg.resolved()


def payload(cfg: TrainConfig, step: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    policy = build_actor_critic(cfg.model, 15)
    return {"config": cfg.to_dict(), "model": policy.state_dict(), "learner": {},
            "global_step": step, "update": step // 32, "rng": ckpt.rng_state(),
            "num_actions": 15}


def one_line(err: Exception) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


def test_save_load_round_trip_and_layout(tmp_path):
    cfg = tiny_config(tmp_path)
    path = ckpt.save_checkpoint(tmp_path, payload(cfg, 128))
    assert path == tmp_path / "checkpoints" / "ckpt_000000000128.pt"
    assert ckpt.find_latest_checkpoint(tmp_path) == path
    loaded = ckpt.load_checkpoint(tmp_path)
    assert loaded["global_step"] == 128 and loaded["format_version"] == ckpt.FORMAT_VERSION
    assert TrainConfig.from_dict(loaded["config"]) == cfg
    # weights_only-safe: the file loads with the safe unpickler and nothing else
    torch.load(path, weights_only=True)


def test_keep_last_k_and_latest(tmp_path):
    cfg = tiny_config(tmp_path)
    for step in (32, 64, 96, 128, 160):
        ckpt.save_checkpoint(tmp_path, payload(cfg, step), keep=2)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["ckpt_000000000128.pt", "ckpt_000000000160.pt"]
    assert ckpt.find_latest_checkpoint(tmp_path).name == "ckpt_000000000160.pt"


def test_interrupted_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path)
    first = ckpt.save_checkpoint(tmp_path, payload(cfg, 32))
    before = first.read_bytes()

    def killed(fd):
        raise KeyboardInterrupt  # the process dies while the new file is being synced

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, payload(cfg, 64, seed=1), keep=1)
    monkeypatch.undo()
    assert ckpt.find_latest_checkpoint(tmp_path) == first
    assert first.read_bytes() == before
    assert ckpt.load_checkpoint(tmp_path)["global_step"] == 32
    assert list((tmp_path / "checkpoints").glob("*.tmp")) == []  # cleaned up on the way out


def test_leftover_temp_file_of_a_killed_process_is_ignored(tmp_path):
    """A SIGKILL in the middle of a write leaves a truncated temp file: it is never taken for a
    checkpoint, and the next save removes it."""
    cfg = tiny_config(tmp_path)
    first = ckpt.save_checkpoint(tmp_path, payload(cfg, 32))
    tmp = tmp_path / "checkpoints" / ".ckpt_000000000064.pt.abcd.tmp"
    tmp.write_bytes(first.read_bytes()[:100])
    assert ckpt.find_latest_checkpoint(tmp_path) == first
    ckpt.save_checkpoint(tmp_path, payload(cfg, 96))
    assert not tmp.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_checkpoint_is_a_one_line_error(tmp_path, damage):
    cfg = tiny_config(tmp_path)
    path = ckpt.save_checkpoint(tmp_path, payload(cfg, 32))
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(4096),
                      "empty": b""}[damage])
    with pytest.raises(CheckpointError) as e:
        load_agent(tmp_path)
    assert "corrupt" in one_line(e.value) and path.name in str(e.value)


def test_wrong_format_and_missing(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    other = tmp_path / "checkpoints" / "ckpt_000000000001.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="wrong format"):
        ckpt.load_checkpoint(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_agent(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_agent(tmp_path / "no_run_dir")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_agent(empty)


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_untrusted_pickle_is_refused_without_running_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    buf = io.BytesIO()
    torch.save({"format": ckpt.FORMAT, "x": _Boom()}, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError) as e:
        ckpt.load_checkpoint(path)
    one_line(e.value)
    assert not (tmp_path / "PWNED").exists()


def test_gpu_checkpoint_loads_on_cpu(tmp_path, monkeypatch):
    """Write a checkpoint whose tensors are tagged as CUDA storages (what a GPU run writes),
    then load it on this machine: map_location puts everything on the CPU."""
    cfg = tiny_config(tmp_path)
    p = payload(cfg, 32)
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    path = ckpt.save_checkpoint(tmp_path, p)
    monkeypatch.undo()
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError):
            torch.load(path, weights_only=True)  # without map_location it would fail
    agent = load_agent(tmp_path, device="cpu")
    assert all(t.device.type == "cpu" for t in agent.policy.state_dict().values())


@pytest.mark.parametrize("core", ["srwm", "lstm"])
def test_load_agent_gives_identical_outputs(tmp_path, core):
    cfg = tiny_config(tmp_path, core)
    torch.manual_seed(3)
    policy = build_actor_critic(cfg.model, 15).eval()
    p = payload(cfg, 64)
    p["model"] = policy.state_dict()
    ckpt.save_checkpoint(tmp_path, p)
    agent = load_agent(tmp_path)
    assert isinstance(agent, LoadedAgent)
    assert agent.global_step == 64 and agent.config == cfg and not agent.policy.training
    assert agent.path == ckpt.find_latest_checkpoint(tmp_path)
    g = torch.Generator().manual_seed(0)
    obs = torch.randint(0, 256, (5, 3, 64, 64, 3), dtype=torch.uint8, generator=g)
    reward = torch.randn(5, 3, generator=g)
    start = torch.zeros(5, 3, dtype=torch.bool)
    start[0] = True
    with torch.no_grad():
        a = policy(obs, reward, start, policy.initial_state(3))
        b = agent.policy(obs, reward, start, agent.policy.initial_state(3))
    for x, y in zip(a[:2], b[:2], strict=True):
        assert torch.equal(x, y)


def test_architecture_mismatch_and_unknown_core(tmp_path):
    cfg = tiny_config(tmp_path)
    p = payload(cfg, 32)
    bigger = tiny_config(tmp_path)
    bigger.model = ModelConfig(**{**cfg.model.to_dict(), "ff_size": 32,
                                  "cnn_channels": cfg.model.cnn_channels})
    p["config"] = bigger.to_dict()  # weights of ff_size 16 under a config saying 32
    ckpt.save_checkpoint(tmp_path, p)
    with pytest.raises(CheckpointError) as e:
        load_agent(tmp_path)
    assert "architecture" in one_line(e.value) and "shape mismatch" in str(e.value)

    other = tmp_path / "other"
    p = payload(cfg, 32)
    p["config"]["model"]["core"] = "transformer-xl"
    ckpt.save_checkpoint(other, p)
    with pytest.raises(CheckpointError) as e:
        load_agent(other)
    assert "transformer-xl" in one_line(e.value)


def test_rng_state_round_trip():
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    state = ckpt.rng_state()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b


def test_atomic_write_json(tmp_path):
    path = ckpt.atomic_write_json(tmp_path / "sub" / "config.json", {"a": [1, 2]})
    assert path.read_text().strip().startswith("{")
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]
