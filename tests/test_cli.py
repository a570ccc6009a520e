"""train_rl.py end to end: tiny ProcGen runs and their resume (subprocesses), every preset
(dry runs), and every bad input -> one line on stderr, exit 2, nothing overwritten."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import train_rl
from agents import checkpoint as ckpt
from agents import cli as train_cli
from agents.config import PRESETS

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ["--hidden-size", "8", "--num-heads", "2", "--head-size", "4", "--num-layers", "1",
              "--ff-size", "16", "--lstm-size", "16", "--cnn-channels", "4,8,8",
              "--cnn-out", "16", "--device", "cpu"]
RUN = ["--games", "bigfish,starpilot", "--total-steps", "1024", "--num-envs", "4",
       "--unroll", "16", "--num-minibatches", "2", *TINY_MODEL]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "train_rl.py"), *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(stderr: str, *needles: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("train_rl.py: error: "), stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def snapshot(path: Path) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(path.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("core,algo", [("srwm", "ppo"), ("lstm", "vtrace")])
def test_tiny_run_then_resume(tmp_path, core, algo):
    run = tmp_path / "run"
    done = cli(*RUN, "--core", core, "--algo", algo, "--run-dir", run)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert ckpt.find_latest_checkpoint(run).name == "ckpt_000000001024.pt"
    assert (run / "config.json").is_file()

    more = cli("--resume", run, "--total-steps", "2048", "--no-progress")
    assert more.returncode == 0, more.stderr
    assert "at step 2,048" in more.stderr
    agent = ckpt.load_agent(run)
    assert agent.global_step == 2048
    assert agent.config.algo == algo and agent.config.model.core == core
    assert agent.config.total_steps == 2048


def test_unknown_game_exits_2_naming_it(tmp_path):
    out = cli("--games", "bigfish,nosuchgame", "--run-dir", tmp_path / "r", "--dry-run")
    assert out.returncode == 2
    assert_one_line_error(out.stderr, "nosuchgame", "bigfish", "paper6")
    assert not (tmp_path / "r").exists()


def run_main(capsys, *args: str) -> tuple[int, str]:
    try:
        code = train_rl.main([str(a) for a in args])
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    return code, capsys.readouterr().err


def test_options_of_the_learner_a_run_does_not_use_are_named_in_a_warning(tmp_path, capsys):
    """They are saved with the config but change nothing: said in one warning line (not an
    error: one option list may serve runs of both learners), and only for the other learner."""
    base = ["--games", "bigfish", "--num-envs", "32", "--dry-run", "--run-dir", tmp_path / "r"]
    code, err = run_main(capsys, *base, "--vtrace.target-kl", "0.05", "--batch-size", "8",
                         "--ppo.clip", "0.1")
    assert code == 0, err
    warned = [line for line in err.splitlines() if "warning" in line]
    assert len(warned) == 1, err
    for needle in ("--vtrace.target-kl, --batch-size are V-trace options", "--algo is ppo"):
        assert needle in warned[0], (needle, warned[0])
    assert "--ppo.clip" not in warned[0]
    code, err = run_main(capsys, "--preset", "memory", "--ppo.epochs", "2", *base[4:])
    assert code == 0 and "--ppo.epochs is a PPO option" in err and "--algo is vtrace" in err
    code, err = run_main(capsys, *base, "--algo", "vtrace", "--vtrace.target-kl", "0.05")
    assert code == 0 and "warning" not in err, err


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_is_accepted(tmp_path, capsys, preset):
    code, err = run_main(capsys, "--preset", preset, "--dry-run", "--run-dir", tmp_path / "r")
    assert code == 0, err
    cfg = train_cli.config_from_args(["--preset", preset, "--total-steps", "1000"]).resolved()
    assert cfg.total_steps == 1000  # a flag given with a preset overrides it
    assert cfg.preset == preset and cfg.model.core == "srwm"
    for key, value in PRESETS[preset].items():
        if key not in ("games", "total_steps", "model.core"):
            target = cfg
            for part in key.split(".")[:-1]:
                target = getattr(target, part)
            assert getattr(target, key.split(".")[-1]) == value, key
    assert len(cfg.games) >= 1 and cfg.num_envs % len(cfg.games) == 0
    assert not (tmp_path / "r").exists()


def test_dry_run_of_the_main_job(tmp_path, capsys):
    code = train_rl.main(["--games", "all", "--dry-run", "--run-dir", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert code == 0
    for line in ("algo: ppo", "core: srwm", "num_envs: 64", "unroll: 256",
                 "steps_per_update: 16384"):
        assert line in out.splitlines(), out
    assert len(out.split("games: ")[1].splitlines()[0].split(",")) == 16


BAD_INPUTS = {
    "core": (["--core", "nosuchcore"], ["nosuchcore", "srwm", "lstm"]),
    "algo": (["--algo", "a2c"], ["a2c", "ppo", "vtrace"]),
    "preset": (["--preset", "paper"], ["paper", "paper-multitask"]),
    "state_reset": (["--state-reset", "sometimes"], ["sometimes", "never"]),
    "num_envs": (["--games", "bigfish,starpilot", "--num-envs", "3"], ["num_envs 3", "2"]),
    "minibatches": (["--games", "bigfish", "--num-envs", "4", "--num-minibatches", "3"],
                    ["num_minibatches 3", "1, 2, 4"]),
    "vtrace_batch": (["--games", "bigfish", "--algo", "vtrace", "--num-envs", "48"],
                     ["batch_size 32", "48"]),
    "total_steps": (["--total-steps", "0"], ["total_steps", "0"]),
    "steps_format": (["--total-steps", "lots"], ["lots"]),
    "distribution": (["--distribution-mode", "impossible"], ["impossible", "easy"]),
    "device": (["--device", "tpu"], ["tpu", "cpu"]),
    "head_sizes": (["--hidden-size", "10", "--num-heads", "3"], ["hidden_size"]),
    "threads": (["--threads", "0"], ["--threads", "0"]),
    "vtrace_epochs": (["--algo", "vtrace", "--games", "bigfish", "--num-envs", "32",
                       "--vtrace-epochs", "0"], ["epochs", "0"]),
    "srwm_qk_init_scale": (["--srwm-qk-init-scale", "-1"], ["srwm_qk_init_scale", "-1"]),
    "srwm_input_scale": (["--srwm-input-scale", "0"], ["srwm_input_scale", "0"]),
    "ppo_lag_weight_cap": (["--ppo.lag-weight-cap", "0"], ["lag_weight_cap", "0"]),
    "vtrace_lr": (["--algo", "vtrace", "--games", "bigfish", "--num-envs", "32",
                   "--vtrace.lr", "0"], ["V-trace lr", "0"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    args, needles = BAD_INPUTS[case]
    code, err = run_main(capsys, *args, "--run-dir", tmp_path / "r", "--dry-run")
    assert code == 2
    assert_one_line_error(err, *needles)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("case", ["ppo_lag_weight_cap", "vtrace_lr"])
def test_a_bad_learner_setting_stops_before_the_run_dir_exists(tmp_path, capsys, case):
    """The learners' own checks run in the config's validation, not when the learner is
    built: no run dir is left behind (not even an empty one)."""
    args, needles = BAD_INPUTS[case]
    code, err = run_main(capsys, *args, "--run-dir", tmp_path / "r")
    assert code == 2
    assert_one_line_error(err, *needles)
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A run dir with one checkpoint, written through the public checkpoint API."""
    from agents.config import TrainConfig
    from policies import ModelConfig, build_actor_critic

    run = tmp_path_factory.mktemp("finished")
    model = ModelConfig(core="lstm", cnn_channels=(4, 8, 8), cnn_out=16, hidden_size=8,
                        num_heads=2, head_size=4, ff_size=16, lstm_size=16, num_layers=1)
    cfg = TrainConfig(games=["bigfish"], num_envs=2, unroll=8, total_steps=16,
                      run_dir=str(run), model=model)
    cfg.ppo.num_minibatches = 1
    cfg = cfg.resolved()
    ckpt.atomic_write_json(run / "config.json", cfg.to_dict())
    policy = build_actor_critic(cfg.model, 15)
    ckpt.save_checkpoint(run, {"config": cfg.to_dict(), "model": policy.state_dict(),
                               "learner": {}, "global_step": 16, "update": 1,
                               "rng": ckpt.rng_state(), "num_actions": 15})
    return run


def test_existing_run_dir_without_resume(finished_run, capsys):
    before = snapshot(finished_run)
    code, err = run_main(capsys, "--games", "bigfish", "--run-dir", finished_run)
    assert code == 2
    assert_one_line_error(err, str(finished_run), "--resume")
    assert snapshot(finished_run) == before


def test_unwritable_run_dir(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, err = run_main(capsys, "--games", "bigfish", "--run-dir", blocker / "run")
    assert code == 2
    assert_one_line_error(err, str(blocker))


def test_resume_without_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run_main(capsys, "--resume", tmp_path / "empty")
    assert code == 2
    assert_one_line_error(err, "no checkpoint", str(tmp_path / "empty"))
    code, err = run_main(capsys, "--resume", tmp_path / "missing")
    assert code == 2
    assert_one_line_error(err, "does not exist")


def test_resume_may_not_change_the_architecture(finished_run, capsys):
    before = snapshot(finished_run)
    code, err = run_main(capsys, "--resume", finished_run, "--core", "srwm")
    assert code == 2
    assert_one_line_error(err, "--core", "--total-steps")
    assert snapshot(finished_run) == before


def test_resume_of_a_corrupt_checkpoint(tmp_path, finished_run, capsys):
    run = tmp_path / "copy"
    (run / "checkpoints").mkdir(parents=True)
    latest = ckpt.find_latest_checkpoint(finished_run)
    bad = run / "checkpoints" / latest.name
    bad.write_bytes(latest.read_bytes()[:300])
    before = snapshot(run)
    code, err = run_main(capsys, "--resume", run, "--total-steps", "32")
    assert code == 2
    assert_one_line_error(err, "corrupt", latest.name)
    assert snapshot(run) == before


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        train_rl.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for action in train_cli.train_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.option_strings
    for flag in ("--games", "--core", "--algo", "--state-reset", "--total-steps", "--num-envs",
                 "--unroll", "--num-minibatches", "--seed", "--device", "--run-dir", "--resume",
                 "--distribution-mode", "--num-levels", "--start-level", "--preset", "--lr",
                 "--hidden-size", "--cnn-channels", "--srwm-kernel", "--detach-every-step"):
        assert flag in text


def test_step_counts_parse():
    assert train_cli.parse_steps("25M") == 25_000_000
    assert train_cli.parse_steps("1e6") == 1_000_000
    assert train_cli.parse_steps("300_000_000") == 300_000_000
    assert train_cli.parse_steps("1.5k") == 1500


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
    import signal
    import time

    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = ["--games", "bigfish", "--total-steps", "1M", "--num-envs", "2", "--unroll", "8",
            "--num-minibatches", "1", "--no-progress", "--run-dir", str(run), *TINY_MODEL]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train_rl.py"), *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "config.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)  # config.json is written right before the training loop starts
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "stopped by SIGINT" in err and "Traceback" not in err
    agent = ckpt.load_agent(run)
    assert agent.global_step > 0 and agent.global_step % 16 == 0

    again = cli("--resume", run, "--total-steps", str(agent.global_step), "--no-progress")
    assert again.returncode == 0 and "nothing to do" in again.stderr
    assert ckpt.list_checkpoints(run) == [agent.path]


def test_help_lists_every_config_field_with_its_docstring(capsys):
    """The command line is generated from the config dataclasses: every field (nested ones
    too) has a flag in --help, and its help is the field's docstring."""
    with pytest.raises(SystemExit):
        train_rl.main(["--help"])
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    flags = train_cli.config_flags()
    assert {"total_steps", "model.core", "ppo.clip", "vtrace.rho_bar", "task_kwargs"} <= set(flags)
    for path, names in flags.items():
        for name in names:
            assert name in text, (path, name)
    from agents.vtrace import VTraceConfig

    assert train_cli.field_docs(VTraceConfig)["rho_bar"] in text


def test_every_field_is_reachable_and_only_given_flags_apply():
    cfg = train_cli.config_from_args([
        "--preset", "memory", "--ppo.clip", "0.1", "--vtrace.rho-bar", "2", "--batch-size", "8",
        "--vtrace.no-anneal-lr", "--task-kwargs", "delay=8", "num_cues=3", "--cnn-channels",
        "4,8,8", "--detach-every-step", "--checkpoint-every-steps", "1.5M", "--lr", "1e-3"])
    assert (cfg.ppo.clip, cfg.vtrace.rho_bar, cfg.vtrace.batch_size) == (0.1, 2.0, 8)
    assert cfg.vtrace.anneal_lr is False and cfg.vtrace.lr == 1e-3  # memory's algo: vtrace
    assert cfg.task_kwargs == {"delay": 8, "num_cues": 3}
    assert cfg.model.cnn_channels == (4, 8, 8) and cfg.model.srwm_detach_every_step
    assert cfg.checkpoint_every_steps == 1_500_000
    assert cfg.distribution_mode == "memory" and cfg.num_levels == 500  # from the preset
    assert train_cli.config_from_args(["--task-kwargs", '{"delay": 4}']).task_kwargs == {
        "delay": 4}
    assert train_cli.config_from_args(["--hidden-size", "32", "--num-heads", "2"]
                                      ).model.head_size == 16
