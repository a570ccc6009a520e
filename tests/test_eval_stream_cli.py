"""eval_rl.py --stream end to end (continual adaptation): tiny random agents on a synthetic
stream and on a short ProcGen stream write the table, the plot and the data files; both modes
play the identical stream; bad stream input exits 2 in one line."""

from __future__ import annotations

import csv
import json
from collections import defaultdict

import pytest

from agents.evaluation.cli import main
from tests.evaluation.helpers import make_run

SYNTHETIC = "cue-recall:2,switching-bandit:3"


@pytest.fixture(scope="module")
def srwm_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("stream_runs") / "srwm", core="srwm")


def _episodes(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_synthetic_stream_two_agents_writes_table_plot_and_data(srwm_run, tmp_path):
    out = tmp_path / "o"
    lstm = make_run(tmp_path / "lstm", core="lstm", state_reset="episode")
    assert main([str(srwm_run), str(lstm), "--stream", SYNTHETIC,
                 "--episodes", "10", "--num-envs", "3", "--out", str(out)]) == 0
    for name in ("results.json", "results.csv", "curve.csv", "episodes.csv", "comparison.md",
                 "adaptation_test1.png"):
        assert (out / name).stat().st_size > 0, name
    md = (out / "comparison.md").read_text()
    for agent in ("srwm", "lstm"):
        for game in ("cue-recall", "switching-bandit", "**all games**"):
            assert f"| {agent} | {game} |" in md
    doc = json.loads((out / "results.json").read_text())
    assert doc["format"] == "srwm-procgen-stream/1"
    settings = doc["agents"][1]["settings"]
    assert settings["episodes_per_slot"] == 10 and settings["state_reset"] == "episode"
    assert (settings["early"], settings["steady"]) == (1, 1)  # shortest block 2 -> m = 1
    rows = _episodes(out / "episodes.csv")
    by = defaultdict(list)
    for r in rows:
        by[(r["agent"], r["mode"], int(r["slot"]))].append(r)
    assert len(by) == 2 * 2 * 3
    expected = (["cue-recall"] * 2 + ["switching-bandit"] * 3) * 2
    for key, eps in by.items():
        assert [int(r["episode_index"]) for r in eps] == list(range(10)), key
        assert [r["game"] for r in eps] == expected, key
        assert [r["length"] for r in eps] == [
            "6" if g == "cue-recall" else "2" for g in expected], key
    # both modes (and both agents) play the identical stream: same games and levels per episode
    for agent in ("srwm", "lstm"):
        for slot in range(3):
            carried = [(r["game"], r["level_seed"]) for r in by[(agent, "carried", slot)]]
            assert carried == [(r["game"], r["level_seed"]) for r in by[(agent, "fresh", slot)]]
            assert carried == [(r["game"], r["level_seed"]) for r in by[("srwm", "carried", slot)]]
    # the episode-reset agent: the fresh baseline is the same agent by construction
    lstm = {(r["slot"], r["episode_index"], r["mode"]): r["return"] for r in rows
            if r["agent"] == "lstm"}
    assert all(lstm[(s, i, "carried")] == lstm[(s, i, "fresh")] for s, i, _ in lstm)


def test_procgen_stream_on_unseen_levels(tmp_path):
    out = tmp_path / "o"
    run = make_run(tmp_path / "pg", core="srwm", games="starpilot,bossfight")
    assert main([str(run), "--stream", "starpilot:1,bossfight:1", "--episodes", "2",
                 "--num-envs", "2", "--split", "test1", "--out", str(out)]) == 0
    rows = _episodes(out / "episodes.csv")
    assert len(rows) == 2 * 2 * 2
    assert all(1000 <= int(r["level_seed"]) < 1200 for r in rows)
    assert [r["game"] for r in rows if r["mode"] == "carried" and r["slot"] == "0"] == [
        "starpilot", "bossfight"]
    assert (out / "adaptation_test1.png").exists()
    assert "| pg | starpilot |" in (out / "comparison.md").read_text()


def _one_error_line(capsys, *needles):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("eval_rl.py: error: "), err
    for n in needles:
        assert n in err[0], (n, err[0])


@pytest.mark.parametrize("argv,needles", [
    (["--stream", "bigfsh:3"], ["unknown game 'bigfsh'", "starpilot"]),
    (["--stream", "cue-recall:0"], ["episodes must be >= 1, got 0"]),
    (["--stream", "cue-recall:-1"], ["episodes must be >= 1, got -1"]),
    (["--stream", "cue-recall"], ["'cue-recall' is not game:episodes"]),
    (["--stream", "cue-recall:2;switching-bandit:2"], ["is not game:episodes"]),
    (["--stream", "bigfish:2,cue-recall:2"], ["different action spaces", "bigfish 15",
                                              "cue-recall 2"]),
    (["--stream", "bigfish:2,starpilot:2"], ["has 2 actions", "has 15"]),
    (["--stream", SYNTHETIC, "--games", "cue-recall"], ["--games cannot be combined"]),
    (["--stream", SYNTHETIC, "--no-stream-repeat", "--episodes", "6"],
     ["more than one pass", "5 episodes per slot"]),
    (["--stream", SYNTHETIC, "--adapt-early", "2", "--adapt-steady", "1"],
     ["1 <= --adapt-early <= --adapt-steady"]),
    (["--stream", SYNTHETIC, "--adapt-steady", "3"], ["--adapt-steady 3", "longest run", "3"]),
    (["--stream", SYNTHETIC, "--stream-order", "shuffled"], ["shuffled"]),
    (["--adapt-early", "2"], ["--adapt-early needs --stream"]),
    (["--stream", "cue-recall:3,cue-recall:2"], ["one game only"]),
    (["--stream", SYNTHETIC, "--episodes", "2"], ["ends before the stream's first switch"]),
    (["--stream", SYNTHETIC, "--video", "x.mp4"], ["--video cannot be combined"]),
])
def test_bad_stream_input_exits_2_in_one_line(srwm_run, capsys, argv, needles):
    assert main([str(srwm_run), *argv]) == 2
    _one_error_line(capsys, *needles)
