"""Fault injection on tiny runs: SIGKILL at several moments (also half-way through a checkpoint
write), corrupt checkpoints, NaN losses, poisoned parameters, non-finite core states, bad
outputs, bad numbers, too much memory, TensorBoard after a resume.

The hooks used here are environment variables read by the library for these tests only
(agents.checkpoint.FAULT_KILL_IN_WRITE, agents.learners.FAULT_NAN_LOSS); they are no options.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agents import checkpoint as ckpt
from agents.checkpoint import FAULT_KILL_IN_WRITE
from agents.cli import parse_train_args
from agents.errors import CheckpointError, ConfigError, UsageError
from agents.learners import FAULT_NAN_LOSS, MAX_CONSECUTIVE_SKIPS, DivergedError
from agents.trainer import dry_run, train
from tests.agents.test_trainer import make_vec_env, tiny_cfg
from tests.evaluation.helpers import make_run

ROOT = Path(__file__).resolve().parents[1]
SPU = 32  # env steps per update of tiny_cfg (4 envs x unroll 8)

TINY_FLAGS = [
    "--games", "cue-recall", "--num-envs", "8", "--unroll", "16", "--num-minibatches", "2",
    "--hidden-size", "8", "--num-layers", "1", "--num-heads", "2", "--head-size", "4",
    "--ff-size", "8", "--lstm-size", "8", "--cnn-channels", "4", "--cnn-out", "8",
    "--device", "cpu", "--no-progress", "--checkpoint-every-steps", "128",
    "--keep-checkpoints", "100", "--threads", "1",
]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def _train_cmd(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "train_rl.py"), *args]


def _all_checkpoints_load(run: Path) -> list[int]:
    steps = []
    for path in ckpt.list_checkpoints(run):
        steps.append(int(ckpt.load_checkpoint(path)["global_step"]))
    return steps


# ---------------------------------------------------------------------- SIGKILL
def test_sigkill_mid_run_and_mid_checkpoint_write_then_resume(tmp_path):
    """Three kills: half-way through the first checkpoint write (a run dir with a config and
    no checkpoint: it restarts from step 0), half-way through a later write, and at a random
    moment of the run. Each time the resume succeeds and every checkpoint loads."""
    run = tmp_path / "run"
    # 1. killed inside the first checkpoint write
    r = subprocess.run(_train_cmd(*TINY_FLAGS, "--total-steps", "512", "--run-dir", str(run)),
                       cwd=ROOT, env=_env(**{FAULT_KILL_IN_WRITE: "1"}), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert (run / "config.json").is_file() and ckpt.list_checkpoints(run) == []
    assert list((run / "checkpoints").glob(".ckpt_*.tmp"))  # the half-written temp file
    # a new run may not take the dir, and says to resume it (no circle) ...
    with pytest.raises(ConfigError, match="no checkpoint yet: use --resume"):
        dry_run(parse_train_args([*TINY_FLAGS, "--run-dir", str(run)]).config)
    # ... and the resume starts it again from step 0; this time killed in its 3rd write
    request = parse_train_args(["--resume", str(run)])
    assert request.start_step == 0
    r = subprocess.run(_train_cmd("--resume", str(run), "--no-progress"), cwd=ROOT,
                       env=_env(**{FAULT_KILL_IN_WRITE: "3"}), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert _all_checkpoints_load(run) == [128, 256]
    # 2. killed at a moment of the run (after its next checkpoint appeared)
    p = subprocess.Popen(_train_cmd("--resume", str(run), "--no-progress", "--total-steps",
                                    "100000"), cwd=ROOT, env=_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(ckpt.list_checkpoints(run)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    steps = _all_checkpoints_load(run)
    assert len(steps) >= 3 and steps[:2] == [128, 256]
    # 3. the resume completes; every checkpoint loads
    r = subprocess.run(_train_cmd("--resume", str(run), "--no-progress", "--total-steps",
                                  str(steps[-1] + 256)), cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    final = _all_checkpoints_load(run)
    assert final[-1] == steps[-1] + 256 and final == sorted(set(final))


# ---------------------------------------------------------------------- corrupt checkpoints
def _damage(path: Path, kind: str) -> None:
    data = path.read_bytes()
    path.write_bytes({
        "truncated": data[: len(data) // 2],
        "zeroed": bytes(len(data)),
        "bitflip": bytes([data[0] ^ 0xFF]) + data[1:],
        "empty": b"",
    }[kind])


@pytest.mark.parametrize("kind", ["truncated", "zeroed", "bitflip", "empty"])
def test_a_corrupt_newest_checkpoint_falls_back_to_an_intact_one(tmp_path, kind, capsys):
    run = tmp_path / "run"
    cfg = tiny_cfg(run, total_steps=3 * SPU, checkpoint_every_steps=SPU, keep_checkpoints=5)
    train(cfg, env=make_vec_env(), progress=False)
    newest = ckpt.list_checkpoints(run)[-1]
    _damage(newest, kind)
    capsys.readouterr()
    payload = ckpt.load_checkpoint(run)
    assert payload["global_step"] == 2 * SPU
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: skipped checkpoint")
    assert newest.name in err[0] and "ckpt_000000000064.pt" in err[0] and "corrupt" in err[0]
    # the command line resumes from the intact one; eval loads it; the bad file is kept
    request = parse_train_args(["--resume", str(run)])
    assert request.start_step == 2 * SPU and request.resume_from.name == "ckpt_000000000064.pt"
    assert ckpt.load_agent(run).global_step == 2 * SPU
    with pytest.raises(CheckpointError) as e:  # the file itself, asked for by name
        ckpt.load_agent(newest)
    assert str(e.value).endswith("the newest intact checkpoint of that run is "
                                 "ckpt_000000000064.pt")
    cfg.total_steps = 4 * SPU
    result = train(cfg, env=make_vec_env(), resume_from=run, progress=False)
    assert result.global_step == 4 * SPU and newest.exists()


def test_no_intact_checkpoint_is_one_whole_line(tmp_path):
    run = tmp_path / "run"
    train(tiny_cfg(run, total_steps=2 * SPU, checkpoint_every_steps=SPU), env=make_vec_env(),
          progress=False)
    for path, kind in zip(ckpt.list_checkpoints(run), ["truncated", "empty"], strict=True):
        _damage(path, kind)
    with pytest.raises(CheckpointError) as e:
        parse_train_args(["--resume", str(run)])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("no intact checkpoint in")
    assert "ckpt_000000000032.pt (is corrupt: truncated" in msg
    assert "ckpt_000000000064.pt (is corrupt: empty (0 bytes))" in msg


# ---------------------------------------------------------------------- non-finite values
def test_nan_loss_is_skipped_and_counted(tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_NAN_LOSS, "1,2,5")
    skipped = []
    result = train(tiny_cfg(tmp_path / "run", total_steps=4 * SPU), env=make_vec_env(),
                   progress=False,
                   on_update=lambda s, m: skipped.append(m["losses/skipped_updates"]))
    # 4 updates x 2 epochs x 2 minibatches = 16 optimizer steps; steps 1, 2 (update 1) and
    # 5 (update 2) were skipped
    assert skipped == [2.0, 1.0, 0.0, 0.0] and result.global_step == 4 * SPU
    state = ckpt.load_agent(tmp_path / "run").policy.state_dict()
    assert all(torch.isfinite(v).all() for v in state.values())


def test_consecutive_nan_losses_stop_the_run_keeping_the_last_good_checkpoint(tmp_path,
                                                                            monkeypatch):
    run = tmp_path / "run"
    # updates 1-2 are fine (checkpoint at step 64), then every step from the 9th is NaN: updates
    # 3-4 change nothing (their checkpoint at 128 is still good), update 5 makes 10 in a row
    monkeypatch.setenv(FAULT_NAN_LOSS, ",".join(str(k) for k in range(8, 200)))
    with pytest.raises(DivergedError) as e:
        train(tiny_cfg(run, total_steps=20 * SPU, checkpoint_every_steps=2 * SPU),
              env=make_vec_env(), progress=False)
    msg = str(e.value)
    assert f"{MAX_CONSECUTIVE_SKIPS} optimizer steps in a row" in msg
    assert "(update 5)" in msg and "ckpt_000000000128.pt' is kept" in msg and "\n" not in msg
    assert _all_checkpoints_load(run) == [64, 128]


@pytest.mark.parametrize("algo, lr", [("ppo", 1e30), ("ppo", 100.0), ("vtrace", 1e6)])
def test_a_learning_rate_far_too_high_stops_in_one_line(tmp_path, algo, lr):
    """Formerly a long traceback from Categorical (or a poisoned V-trace checkpoint)."""
    cfg = tiny_cfg(tmp_path / "run", algo=algo, total_steps=8 * SPU,
                   checkpoint_every_steps=2 * SPU)
    (cfg.ppo if algo == "ppo" else cfg.vtrace).lr = lr
    with pytest.raises(DivergedError) as e:
        train(cfg, env=make_vec_env(), progress=False)
    msg = str(e.value)
    assert msg.startswith("training diverged") and "\n" not in msg
    assert "no good checkpoint was written" in msg
    assert ckpt.list_checkpoints(tmp_path / "run") == []


@pytest.mark.parametrize("poison, at_step", [("nan", 4 * SPU), ("huge", 4 * SPU),
                                             ("nan", 3 * SPU), ("huge", 3 * SPU)])
def test_a_poisoned_checkpoint_is_never_written(tmp_path, poison, at_step):
    """NaN parameters, or finite ones so large that an act step overflows, right before a
    checkpoint is due (step 128) or before the next segment (step 96): no checkpoint is
    written, the run stops with one line, the good one (step 64) is kept."""
    run = tmp_path / "run"

    def on_update(step, metrics):
        if step == at_step:
            policy = holder["policy"]
            with torch.no_grad():
                for p in policy.encoder.parameters():
                    p.fill_(float("nan") if poison == "nan" else 1e20)

    holder = {}
    import agents.trainer as trainer_mod

    original = trainer_mod.build_policy_and_learner

    def spy(*args, **kwargs):
        policy, learner = original(*args, **kwargs)
        holder["policy"] = policy
        return policy, learner

    trainer_mod.build_policy_and_learner = spy
    try:
        with pytest.raises(DivergedError) as e:
            train(tiny_cfg(run, total_steps=8 * SPU, checkpoint_every_steps=2 * SPU),
                  env=make_vec_env(), progress=False, on_update=on_update)
    finally:
        trainer_mod.build_policy_and_learner = original
    msg = str(e.value)
    assert msg.startswith("not writing a checkpoint at step 128" if at_step == 4 * SPU
                          else "training diverged at step 96")
    assert "ckpt_000000000064.pt' is kept" in msg
    assert ("not finite" if poison == "nan" else "probe act step") in msg
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["ckpt_000000000064.pt"]
    assert _all_checkpoints_load(run) == [64]


def test_a_nonfinite_core_state_is_reset_and_counted(tmp_path, monkeypatch):
    from agents.rollout import RolloutCollector

    original = RolloutCollector.collect
    calls = {"n": 0}

    def collect(self):
        rollout = original(self)
        calls["n"] += 1
        if calls["n"] == 2:  # poison env 1's state after the second segment
            state = tuple(s.clone() for s in rollout.bootstrap.state)
            state[0][1] = float("nan")
            rollout.bootstrap.state = self._state = state
        return rollout

    monkeypatch.setattr(RolloutCollector, "collect", collect)
    resets = []
    train(tiny_cfg(tmp_path / "run", core="lstm", total_steps=4 * SPU), env=make_vec_env(),
          progress=False, on_update=lambda s, m: resets.append(m["core/state_resets_nonfinite"]))
    assert resets == [0.0, 1.0, 1.0, 1.0]
    assert _all_checkpoints_load(tmp_path / "run") == [4 * SPU]


def test_nonfinite_scalars_are_logged_as_counts(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from agents.metrics import ScalarWriter

    w = ScalarWriter(tmp_path)
    w.scalars({"losses/policy": float("nan"), "losses/value": 1.0}, 1)
    w.scalars({"losses/policy": float("inf"), "losses/value": 2.0}, 2)
    w.scalars({"losses/policy": 0.5, "losses/value": 3.0}, 3)
    w.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("nonfinite/losses/policy")] == [(1, 1.0),
                                                                                   (2, 2.0)]
    assert [e.step for e in acc.Scalars("losses/policy")] == [3]


@pytest.mark.parametrize("argv, needles", [
    (["--lr", "inf"], ["--lr", "inf", "positive finite"]),
    (["--lr", "nan"], ["--lr", "nan"]),
    (["--ppo.lr", "nan"], ["ppo.lr", "nan", "finite"]),
    (["--algo", "vtrace", "--vtrace.max-grad-norm", "inf"], ["vtrace.max_grad_norm", "inf"]),
    (["--state-lifetime", "nan"], ["state_lifetime", "nan"]),
])
def test_nonfinite_numbers_are_refused_up_front(tmp_path, argv, needles):
    with pytest.raises((ConfigError, UsageError)) as e:
        request = parse_train_args([*TINY_FLAGS, "--run-dir", str(tmp_path / "r"), *argv])
        dry_run(request.config)
    for needle in needles:
        assert needle in str(e.value)
    assert not (tmp_path / "r").exists()


def test_too_many_envs_is_one_line_before_allocating(tmp_path):
    r = subprocess.run(_train_cmd("--games", "coinrun", "--num-envs", "1000000000",
                                  "--run-dir", str(tmp_path / "r"), "--no-progress"),
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--num-envs 1000000000" in lines[0]
    assert "TiB" in lines[0] and "available" in lines[0]
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------- outputs of eval
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("faults") / "run")


@pytest.fixture
def no_playing(monkeypatch):
    """Fail the test if eval plays anything."""
    import agents.evaluation.cli as eval_cli

    def play(*args, **kwargs):
        raise AssertionError("an episode was played")

    monkeypatch.setattr(eval_cli, "evaluate_split", play)


def _one_error(capsys, *needles: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eval_rl.py: error:"), err
    for needle in needles:
        assert needle in err[0], err[0]


def test_eval_bad_outputs_fail_before_any_episode(tiny_run, tmp_path, capsys, no_playing):
    from agents.evaluation.cli import main

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main([str(tiny_run), "--out", str(a_file)]) == 2
    _one_error(capsys, "--out", "a_file", "not a directory")
    assert main([str(tiny_run), "--out", str(a_file / "sub")]) == 2
    _one_error(capsys, "--out", "cannot be written")
    assert main([str(tiny_run), "--out", str(tmp_path / "o"), "--video",
                 str(a_file / "v.mp4")]) == 2
    _one_error(capsys, "--video", "cannot be written")
    (tmp_path / "v.mp4").mkdir()
    assert main([str(tiny_run), "--out", str(tmp_path / "o"), "--video",
                 str(tmp_path / "v.mp4")]) == 2
    _one_error(capsys, "--video", "is a directory")
    assert a_file.read_text() == "x" and not (tmp_path / "o").exists()


def test_eval_warns_once_for_games_the_agent_never_trained_on(tmp_path, capsys, monkeypatch):
    import agents.evaluation.cli as eval_cli

    run = make_run(tmp_path / "bigfish_run", games="bigfish")

    class Played(Exception):
        pass

    def play(*args, **kwargs):
        raise Played

    monkeypatch.setattr(eval_cli, "evaluate_split", play)
    with pytest.raises(Played):
        eval_cli.main([str(run), "--games", "bigfish,starpilot,coinrun", "--out",
                       str(tmp_path / "o")])
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warnings) == 1, warnings
    assert "starpilot, coinrun not among the games it trained on (bigfish)" in warnings[0]


# ---------------------------------------------------------------------- TensorBoard on resume
def test_tensorboard_steps_after_a_resume_are_complete_and_unique(tmp_path):
    """A run logs steps 1..4 (x SPU) with a checkpoint at 2; the checkpoint at 4 is lost (as
    after a kill); the resume to 6 leaves every step exactly once, the checkpoint's included."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    cfg = tiny_cfg(run, total_steps=4 * SPU, checkpoint_every_steps=2 * SPU)
    train(cfg, env=make_vec_env(), progress=False)
    ckpt.list_checkpoints(run)[-1].unlink()
    cfg.total_steps = 6 * SPU
    train(cfg, env=make_vec_env(), resume_from=run, progress=False)
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    for tag in ("charts/updates", "losses/policy"):
        assert [e.step for e in acc.Scalars(tag)] == [k * SPU for k in range(1, 7)], tag
    assert [e.value for e in acc.Scalars("charts/updates")] == [1, 2, 3, 4, 5, 6]
