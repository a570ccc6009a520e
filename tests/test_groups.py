"""Groups of runs end to end (agents/groups.py, agents/evaluation/groups.py): train_rl.py
trains 2 cores x 2 seeds of tiny cue-recall runs as separate processes, one of them is
killed (reported in one line, the others go on), --resume of the group finishes only that
one, eval_rl.py on the group dir writes the group table whose numbers are the runs' own; and
every kind of bad input exits 2 with one line before anything starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import train_rl
from agents import checkpoint as ckpt
from agents.evaluation.cli import main as eval_main
from tests.evaluation.helpers import make_run

pytestmark = pytest.mark.xdist_group("groups")  # one worker trains the group once

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--games", "cue-recall", "--total-steps", "1024", "--num-envs", "8", "--unroll", "16",
        "--num-minibatches", "2", "--hidden-size", "8", "--num-layers", "1", "--num-heads", "2",
        "--head-size", "4", "--ff-size", "8", "--lstm-size", "8", "--cnn-channels", "4",
        "--cnn-out", "8", "--device", "cpu", "--checkpoint-every-steps", "256"]
MEMBERS = ["ff_s0", "ff_s1", "lstm_s0", "lstm_s1"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _script(name: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / name), *map(str, args)], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=timeout)


def _steps(run: Path) -> int:
    return int(ckpt.find_latest_checkpoint(run).stem.split("_")[1])


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    """Train the group; kill ff_s0 (SIGKILL) right after its first checkpoint."""
    g = tmp_path_factory.mktemp("grp") / "cmp"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train_rl.py"), *TINY, "--core",
                             "ff,lstm", "--seeds", "0,1", "--max-parallel", "2", "--run-dir",
                             str(g)], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    victim = g / "ff_s0"
    deadline = time.monotonic() + 240
    while not ckpt.list_checkpoints(victim) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    progress = json.loads((g / "logs" / "ff_s0.progress.json").read_text())
    os.kill(progress["pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    return g, proc.returncode, out, err


def test_group_trains_every_member_and_reports_the_killed_one_in_one_line(group):
    g, code, _, err = group
    assert code == 1, err  # a member failed
    manifest = json.loads((g / "group.json").read_text())
    assert [m["name"] for m in manifest["members"]] == MEMBERS
    assert manifest["cores"] == ["ff", "lstm"] and manifest["seeds"] == [0, 1]
    failed = [line for line in err.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "ff_s0" in failed[0] and "killed by SIGKILL" in failed[0], err
    assert "Traceback" not in err
    assert _steps(g / "ff_s0") < 1024
    for name in MEMBERS[1:]:  # the others went on, the waiting ones were started
        assert _steps(g / name) == 1024, err
        cfg = json.loads((g / name / "config.json").read_text())
        assert (cfg["model"]["core"], cfg["seed"]) == (name.split("_")[0], int(name[-1]))
    assert "1 failed" in err and "--resume" in err
    assert any(line.startswith(f"group {g}: ") and " SPS | ETA " in line
               for line in err.splitlines())


def test_resume_of_the_group_finishes_only_the_unfinished_run(group):
    g = group[0]
    before = {n: [(p.name, p.stat().st_mtime_ns) for p in ckpt.list_checkpoints(g / n)]
              for n in MEMBERS[1:]}
    done = _script("train_rl.py", "--resume", g, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert _steps(g / "ff_s0") == 1024
    assert {n: [(p.name, p.stat().st_mtime_ns) for p in ckpt.list_checkpoints(g / n)]
            for n in MEMBERS[1:]} == before
    assert "4/4 runs done" in done.stderr


def test_eval_of_the_group_reports_the_runs_own_numbers(group, tmp_path):
    g = group[0]
    if _steps(g / "ff_s0") < 1024:  # run alone: finish the killed member first
        assert _script("train_rl.py", "--resume", g).returncode == 0
    out = tmp_path / "eval"
    r = _script("eval_rl.py", g, "--split", "test1,test2", "--episodes", "4",
                "--bootstrap-resamples", "200", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "synthetic task without levels" in r.stderr  # splits do not apply: played once
    doc = json.loads((out / "group_results.json").read_text())
    assert doc["group_by"] == "model.core"
    assert doc["groups"] == {"ff": ["ff_s0", "ff_s1"], "lstm": ["lstm_s0", "lstm_s1"]}
    assert list(doc["splits"]) == ["task"]
    runs = {a["name"]: a["splits"]["task"]["games"]["cue-recall"]["normalized"]
            for a in json.loads((out / "runs" / "results.json").read_text())["agents"]}
    split = doc["splits"]["task"]["groups"]
    for grp, names in doc["groups"].items():
        own = [runs[n] for n in names]
        assert split[grp]["scores"] == [[v] for v in own]
        assert split[grp]["per_game"]["cue-recall"]["value"] == pytest.approx(sum(own) / 2)
        assert split[grp]["aggregates"]["mean"]["value"] == pytest.approx(sum(own) / 2)
        lo, hi = split[grp]["aggregates"]["mean"]["ci"]
        assert min(own) <= lo <= hi <= max(own)
    p_ff = split["ff"]["probability_of_improvement"]["lstm"]["value"]
    p_lstm = split["lstm"]["probability_of_improvement"]["ff"]["value"]
    assert p_ff + p_lstm == pytest.approx(1.0)
    md = (out / "group_table.md").read_text()
    assert "## task" in md and "Probability of improvement" in md and "IQM" in md
    assert md in r.stdout
    assert (out / "group_table.csv").read_text().startswith("split,kind,group,item,runs,")
    for png in ("group_scores_task.png", "learning_curves_groups.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def _train(capsys, *args) -> tuple[int, str]:
    code = train_rl.main([str(a) for a in args])
    return code, capsys.readouterr().err


def _one_line(err: str, prog: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("args,needles", [
    (["--core", "srwm,nosuch", "--seeds", "0,1"], ["nosuch", "srwm", "deltanet"]),
    (["--core", "srwm,lstm,srwm"], ["duplicate core", "srwm"]),
    (["--core", "srwm,lstm", "--seeds", "0,1,1"], ["duplicate seed 1"]),
    (["--seeds", "0,x"], ["invalid seed 'x'"]),
    (["--core", "srwm,lstm", "--seeds", "0,1", "--seed", "3"], ["--seeds", "--seed", "both"]),
    (["--core", "srwm,lstm", "--max-parallel", "0"], ["--max-parallel", "0"]),
    (["--core", "srwm,lstm", "--num-envs", "3", "--num-minibatches", "2"],
     ["num_minibatches 2"]),
    (["--core", "srwm", "--max-parallel", "2"], ["--max-parallel", "group"]),
])
def test_bad_group_input_is_one_line_and_exit_2(tmp_path, capsys, args, needles):
    code, err = _train(capsys, *TINY, *args, "--run-dir", tmp_path / "g")
    assert code == 2
    _one_line(err, "train_rl.py", *needles)
    assert not (tmp_path / "g").exists()


def test_a_used_group_dir_and_a_bad_resume_are_refused(tmp_path, capsys):
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    code, err = _train(capsys, *TINY, "--core", "ff,lstm", "--run-dir", used)
    assert code == 2
    _one_line(err, "train_rl.py", str(used), "--resume")
    assert [p.name for p in used.iterdir()] == ["notes.txt"]
    g = tmp_path / "g"
    g.mkdir()
    (g / "group.json").write_text(json.dumps({"format": "srwm-procgen-group/1",
                                              "members": []}))
    code, err = _train(capsys, "--resume", g, "--core", "srwm")
    assert code == 2
    _one_line(err, "train_rl.py", "--core", "--total-steps")


def test_one_seed_keeps_the_single_run_behaviour(tmp_path, capsys):
    from agents import cli
    from agents.groups import is_group_command

    assert not is_group_command(["--core", "srwm", "--seeds", "3"])
    assert cli.config_from_args(["--seeds", "3"]).seed == 3
    code = train_rl.main([*TINY, "--seeds", "3", "--run-dir", str(tmp_path / "r"),
                          "--dry-run"])
    assert code == 0 and "group" not in capsys.readouterr().err


def test_group_plan_in_a_dry_run_writes_nothing(tmp_path, capsys):
    code = train_rl.main([*TINY, "--core", "ff,lstm", "--seeds", "4,5", "--run-dir",
                          str(tmp_path / "g"), "--dry-run"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert [line.split(":")[0] for line in captured.out.splitlines()] == [
        "ff_s4", "ff_s5", "lstm_s4", "lstm_s5"]
    assert "at a time" in captured.err
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("change,needles", [
    ({"games": "switching-bandit"}, ["games", "cue-recall", "switching-bandit"]),
    ({"num_levels": 100}, ["training levels", "200", "100"]),
])
def test_eval_refuses_runs_that_cannot_be_compared(tmp_path, capsys, change, needles):
    make_run(tmp_path / "g" / "a", core="srwm")
    make_run(tmp_path / "g" / "b", core="lstm", **change)
    code = eval_main([str(tmp_path / "g"), "--episodes", "2", "--out", str(tmp_path / "e")])
    assert code == 2
    _one_line(capsys.readouterr().err, "eval_rl.py", *needles)
    assert not (tmp_path / "e").exists()


def test_eval_group_by_any_key_and_one_run_per_group_has_no_intervals(tmp_path, capsys):
    a = make_run(tmp_path / "a", core="srwm", seed=0)
    b = make_run(tmp_path / "b", core="srwm", seed=1)
    code = eval_main([str(a), str(b), "--group-by", "nosuch", "--out", str(tmp_path / "x")])
    assert code == 2
    _one_line(capsys.readouterr().err, "eval_rl.py", "nosuch", "core")
    out = tmp_path / "e"
    code = eval_main([str(a), str(b), "--group-by", "seed", "--episodes", "2",
                      "--bootstrap-resamples", "50", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads((out / "group_results.json").read_text())
    assert doc["group_by"] == "seed" and doc["groups"] == {"0": ["a"], "1": ["b"]}
    assert doc["single_run_groups"] == ["0", "1"]
    aggregates = doc["splits"]["task"]["groups"]["0"]["aggregates"]
    assert all(v["ci"] is None for v in aggregates.values())
    assert "no run-level confidence intervals" in (out / "group_table.md").read_text()
