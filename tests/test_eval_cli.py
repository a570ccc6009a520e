"""eval_rl.py end to end: two tiny agents trained by train_rl.py (one PPO update each on the
cue-recall task), evaluated, compared, plotted and filmed; determinism; bad input; the overlap
warning. The tiny runs are trained once per test session (shared by the xdist workers)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents.evaluation.cli import levels_overlap, main
from agents.evaluation.video import count_frames
from tests.evaluation.helpers import make_run

ROOT = Path(__file__).resolve().parents[1]

TINY_FLAGS = [
    "--games", "cue-recall", "--total-steps", "128", "--num-envs", "8", "--unroll", "16",
    "--num-minibatches", "2", "--hidden-size", "8", "--num-layers", "1", "--num-heads", "2",
    "--head-size", "4", "--ff-size", "8", "--lstm-size", "8", "--cnn-channels", "4",
    "--cnn-out", "8", "--device", "cpu", "--no-progress",
]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "eval_rl.py"), *map(str, args)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)


def _train(runs: list[tuple[Path, list[str]]]) -> None:
    procs = [subprocess.Popen([sys.executable, str(ROOT / "train_rl.py"), *TINY_FLAGS, *extra,
                               "--run-dir", str(d)], cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for d, extra in runs]
    for p, (d, _) in zip(procs, runs, strict=True):
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
        assert list((d / "checkpoints").glob("ckpt_*.pt")), out


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny trained runs: an SRWM agent carrying its state, an LSTM agent resetting it.

    Trained once per test session: under pytest-xdist the workers share a directory keyed by
    the run's id and take a file lock, so the second worker reuses the first one's runs."""
    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    base = (tmp_path_factory.getbasetemp().parent / f"eval_cli_{uid}" if uid
            else tmp_path_factory.mktemp("trained"))
    base.mkdir(parents=True, exist_ok=True)
    runs = [(base / "srwm_run", ["--core", "srwm", "--seed", "1"]),
            (base / "lstm_run", ["--core", "lstm", "--seed", "2", "--state-reset", "episode"])]
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (base / ".done").exists():
            _train(runs)
            (base / ".done").write_text("ok")
    return runs[0][0], runs[1][0]


def _without_timing(doc):
    doc = json.loads(json.dumps(doc))
    doc.pop("date_utc"), doc.pop("command")
    for a in doc["agents"]:
        for s in a["splits"].values():
            s.pop("seconds")
    return doc


def test_must_show_one_run_writes_results_naming_each_game(trained_runs, tmp_path):
    run, _ = trained_runs
    out = tmp_path / "out"
    r = _eval(run, "--split", "test1", "--episodes", "2", "--out", out)
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "results.json").read_text())
    (agent,) = doc["agents"]
    assert agent["core"] == "srwm" and agent["settings"]["state_reset"] == "never"
    games = agent["splits"]["test1"]["games"]
    assert list(games) == ["cue-recall"]
    assert games["cue-recall"]["episodes"] == 2
    assert isinstance(games["cue-recall"]["normalized"], float)
    assert "| cue-recall | 2 |" in r.stdout  # the Markdown table on the terminal
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("agent,checkpoint") and len(csv_lines) == 1 + 1 + 2
    assert len((out / "episodes.csv").read_text().splitlines()) == 1 + 2
    for name in ("episode_index.png", "state_metrics.png", "state_metrics.csv"):
        assert (out / run.name / "test1" / name).stat().st_size > 0
    assert (out / "scores_test1.png").read_bytes()[:4] == b"\x89PNG"


def test_two_runs_give_a_comparison_table_plots_and_videos(trained_runs, tmp_path):
    a, b = trained_runs
    out = tmp_path / "cmp"
    r = _eval(a, b, "--episodes", "3", "--split", "test1,test2", "--out", out,
              "--video", tmp_path / "v.mp4", "--video-steps", "5", "--bootstrap-resamples", "200")
    assert r.returncode == 0, r.stderr
    md = (out / "comparison.md").read_text()
    assert "| game | srwm_run | lstm_run |" in md
    assert "## test1" in md and "## test2" in md and "**" in md
    assert md in r.stdout
    for split in ("test1", "test2"):
        assert (out / f"scores_{split}.png").read_bytes()[:4] == b"\x89PNG"
    doc = json.loads((out / "results.json").read_text())
    assert [x["name"] for x in doc["agents"]] == ["srwm_run", "lstm_run"]
    for agent, video in zip(doc["agents"], ("v_srwm_run.mp4", "v_lstm_run.mp4"), strict=True):
        steps = agent["splits"]["test1"]["steps"]
        assert count_frames(tmp_path / video) == min(5, steps)


def test_video_gif_and_frame_count(trained_runs, tmp_path):
    run, _ = trained_runs
    rc = main([str(run), "--episodes", "16", "--out", str(tmp_path / "o"), "--video",
               str(tmp_path / "v.gif"), "--video-steps", "7", "--bootstrap-resamples", "10"])
    assert rc == 0
    assert count_frames(tmp_path / "v.gif") == 7


def test_same_checkpoint_and_seed_give_identical_results(trained_runs, tmp_path):
    run, _ = trained_runs
    docs = []
    for k in range(2):
        out = tmp_path / f"o{k}"
        assert main([str(run), "--episodes", "5", "--sample", "--seed", "3", "--out", str(out),
                     "--bootstrap-resamples", "300"]) == 0
        docs.append(_without_timing(json.loads((out / "results.json").read_text())))
        assert (out / "episodes.csv").exists()
    assert docs[0] == docs[1]
    assert (tmp_path / "o0" / "episodes.csv").read_text() == (
        tmp_path / "o1" / "episodes.csv").read_text()


def test_state_reset_override_and_custom_levels(trained_runs, tmp_path):
    run, _ = trained_runs
    ckpt = sorted((run / "checkpoints").glob("ckpt_*.pt"))[-1]  # a checkpoint file this time
    out = tmp_path / "o"
    assert main([str(ckpt), "--episodes", "2", "--state-reset", "span", "--start-level", "5000",
                 "--num-levels", "10", "--out", str(out), "--bootstrap-resamples", "10"]) == 0
    doc = json.loads((out / "results.json").read_text())
    agent = doc["agents"][0]
    assert agent["name"] == "srwm_run@128" and agent["checkpoint"] == str(ckpt)
    assert agent["settings"]["state_reset"] == "span"
    assert agent["trained"]["state_reset"] == "never"
    split = agent["splits"]["levels5000+10"]
    assert (split["start_level"], split["num_levels"]) == (5000, 10)


def test_plot_mode_draws_learning_curves(trained_runs, tmp_path):
    a, b = trained_runs
    assert main(["plot", str(a), str(b), "--out", str(tmp_path)]) == 0
    for name in ("learning_curves_games.png", "learning_curves_score.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------- bad input
def _one_error_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("eval_rl.py: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in "\n".join(err)
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_a_missing_run_exits_2_in_one_line(tmp_path):
    r = _eval(tmp_path / "no_such_run", "--episodes", "2")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no_such_run" in lines[0] and "does not exist" in lines[0]


def test_a_corrupt_checkpoint_exits_2(tmp_path):
    bad = tmp_path / "ckpt_000000000001.pt"
    bad.write_bytes(b"this is not a checkpoint")
    r = _eval(bad)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "corrupt" in r.stderr and str(bad) in r.stderr


@pytest.fixture(scope="module")
def random_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("rand") / "rand_run")


def test_unknown_core_in_a_checkpoint_exits_2(random_run, tmp_path, capsys):
    ckpt = next((random_run / "checkpoints").glob("*.pt"))
    payload = torch.load(ckpt, weights_only=True)
    payload["config"]["model"]["core"] = "transformer"
    bad = tmp_path / "ckpt_000000000002.pt"
    torch.save(payload, bad)
    assert main([str(bad)]) == 2
    _one_error_line(capsys, "transformer", "srwm", "lstm")


@pytest.mark.parametrize("argv, needles", [
    (["--games", "pacman"], ["pacman", "bigfish", "paper6"]),
    (["--split", "test9"], ["test9", "test1", "test3"]),
    (["--episodes", "0"], ["--episodes", "0"]),
    (["--state-reset", "sometimes"], ["sometimes", "never", "episode", "span"]),
    (["--video", "v.avi"], ["v.avi", ".mp4", ".gif"]),
    (["--split", "test1", "--start-level", "3"], ["--split", "--start-level"]),
    (["--num-levels", "-1"], ["--num-levels", "-1"]),
    (["--games", "bigfish,maze", "--num-envs", "3"], ["3", "multiple"]),
    (["--device", "tpu"], ["tpu", "cpu"]),
    (["--episodes", "two"], ["--episodes", "two"]),
])
def test_bad_options_exit_2_in_one_line(random_run, capsys, argv, needles):
    assert main([str(random_run), *argv]) == 2
    _one_error_line(capsys, *needles)


def test_plot_mode_bad_run_exits_2(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    _one_error_line(capsys, "nothing", "does not exist")
    assert main(["plot", str(tmp_path)]) == 2
    _one_error_line(capsys, "no TensorBoard log")


# ---------------------------------------------------------------------- level overlap
def test_levels_overlap():
    assert levels_overlap(0, 200, 0, 200)
    assert levels_overlap(150, 100, 0, 200)
    assert not levels_overlap(1000, 200, 0, 200)
    assert not levels_overlap(200, 10, 0, 200)
    assert levels_overlap(1000, 0, 0, 200)  # all levels
    assert levels_overlap(5000, 10, 0, 0)  # trained on all levels


def test_overlapping_levels_print_a_warning_not_an_error(tmp_path_factory, capsys):
    run = make_run(tmp_path_factory.mktemp("pg") / "bigfish_run", games="bigfish",
                   start_level=1000, num_levels=50)
    out = tmp_path_factory.mktemp("pg_out")
    args = ["--episodes", "1", "--out", str(out), "--bootstrap-resamples", "10",
            "--metrics-every", "0"]
    assert main([str(run), "--start-level", "1040", "--num-levels", "3", *args]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "[1040, 1043)" in warnings[0] and "[1000, 1050)" in warnings[0]
    assert main([str(run), "--start-level", "1050", "--num-levels", "3", *args]) == 0
    assert "warning:" not in capsys.readouterr().err


@pytest.mark.parametrize("core", ["ff", "deltanet"])
def test_cores_without_self_modification_are_evaluated_and_said_so(tmp_path, core):
    run = make_run(tmp_path / f"{core}_run", core=core)
    out = tmp_path / "o"
    assert main([str(run), "--episodes", "2", "--out", str(out),
                 "--bootstrap-resamples", "10"]) == 0
    metrics = (out / f"{core}_run" / "test1" / "state_metrics.csv").read_text().splitlines()
    if core == "ff":  # no state at all: only the step column
        assert metrics[0] == "step"
    else:
        assert "deltanet_l0_fast_norm" in metrics[0]
    assert (out / f"{core}_run" / "test1" / "state_metrics.png").read_bytes()[:4] == b"\x89PNG"
