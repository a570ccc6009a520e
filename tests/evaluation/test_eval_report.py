"""Reports, plots, videos and learning curves from hand-made results (no env, no policy)."""

import csv
import io
import json
import math

import numpy as np
import pytest

from agents.evaluation import curves, plots
from agents.evaluation.report import AgentResult, SplitResult, comparison_markdown, write_results
from agents.evaluation.runner import Episode, PlayResult
from agents.evaluation.scoring import aggregate, score_game
from agents.evaluation.video import VideoWriter, count_frames, tile_frames


def _agent(name, returns_by_game):
    norms = {g: (lambda r: r / 10.0) for g in returns_by_game}
    episodes = [Episode(g, env=0, index=i, ret=r, length=5, level_seed=i)
                for g, rs in returns_by_game.items() for i, r in enumerate(rs)]
    split = SplitResult(
        split="test1", start_level=1000, num_levels=200, distribution_mode="easy",
        games={g: score_game(g, rs, norms[g], seed=0, n_resamples=50)
               for g, rs in returns_by_game.items()},
        aggregate=aggregate(returns_by_game, norms, seed=0, n_resamples=50),
        play=PlayResult(episodes=episodes, metrics=[{"step": 0.0, "m": 1.0}]))
    return AgentResult(name=name, checkpoint=f"/x/{name}.pt", global_step=10, core="srwm",
                       trained={}, settings={}, splits={"test1": split})


def test_comparison_marks_the_best_of_each_row_and_ties():
    a = _agent("a", {"g1": [1.0, 3.0], "g2": [5.0, 5.0]})
    b = _agent("b", {"g1": [4.0, 4.0], "g2": [5.0, 5.0]})
    md = comparison_markdown([a, b])
    row = {}  # the first table (normalized scores); the second has the mean returns
    for line in md.splitlines():
        if line.startswith("| g"):
            row.setdefault(line.split("|")[1].strip(), line)
    assert "| g1 | 0.200 [" in md and "**0.400** [0.400, 0.400]" in row["g1"]
    assert row["g2"].count("**0.500**") == 2  # a tie: both bold
    assert "| **mean** | 0.350 [" in md and "**0.450**" in md
    assert "| g1 | 2.00 (1.00) | **4.00** (0.00) |" in md


def test_result_files(tmp_path):
    a = _agent("a", {"g1": [1.0, 3.0], "g2": [7.0]})  # one episode: no SE, no CI
    b = _agent("b", {"g1": [4.0, 4.0], "g2": [5.0, 5.0]})
    written = write_results(tmp_path, [a, b], {"command": "x"})
    assert {p.name for p in written} == {"results.json", "results.csv", "episodes.csv",
                                         "comparison.md"}
    doc = json.loads((tmp_path / "results.json").read_text())  # strict JSON: NaN -> null
    g2 = doc["agents"][0]["splits"]["test1"]["games"]["g2"]
    assert g2["se_return"] is None and g2["normalized"] == pytest.approx(0.7)
    by_index = doc["agents"][0]["splits"]["test1"]["return_by_episode_index"]
    assert by_index["g1"] == [{"index": 0, "mean_return": 1.0, "envs": 1},
                              {"index": 1, "mean_return": 3.0, "envs": 1}]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
    assert [r["game"] for r in rows[:4]] == ["g1", "g2", "aggregate:mean", "aggregate:iqm"]
    assert float(rows[2]["normalized_score"]) == pytest.approx((0.2 + 0.7) / 2)
    assert rows[2]["mean_return"] == ""
    assert len((tmp_path / "episodes.csv").read_text().splitlines()) == 1 + 3 + 4


def test_plots_are_written(tmp_path):
    a = _agent("a", {"g1": [1.0, 3.0], "g2": [5.0, 5.0]})
    b = _agent("b", {"g1": [4.0, 4.0], "g2": [5.0, 5.0]})
    for path in (
        plots.score_bars([a, b], "test1", tmp_path / "bars.png"),
        plots.episode_index_plot(a.splits["test1"].play.episodes,
                                 {"g1": lambda r: r, "g2": lambda r: r}, tmp_path / "ep.png", "t"),
        plots.state_metrics_plot([{"step": 0.0, "x": 1.0, "env0/x": 1.0}], [0], "srwm",
                                 tmp_path / "m.png", "t"),
        plots.state_metrics_plot([{"step": 0.0}], [], "ff", tmp_path / "none.png", "t"),
    ):
        assert path.read_bytes()[:4] == b"\x89PNG"


def test_tiles_and_video_frame_counts(tmp_path):
    frames = np.zeros((5, 64, 64, 3), np.uint8)
    frames[1] = 255
    img = tile_frames(frames, scale=2, gap=2)
    assert img.shape == (2 * 128 + 2, 3 * 128 + 2 * 2, 3)  # 3 columns, 2 rows
    assert (img[:128, 130:258] == 255).all() and (img[:128, :128] == 0).all()
    for name in ("v.mp4", "v.gif"):
        w = VideoWriter(tmp_path / name, [0, 1, 2], max_steps=9, scale=1)
        for t in range(12):
            more = w.add(np.full((4, 64, 64, 3), t * 20, np.uint8), t)
            assert more == (t < 8)
        w.close()
        assert w.frames == 9 and count_frames(tmp_path / name) == 9
    with pytest.raises(ValueError, match="avi"):
        VideoWriter(tmp_path / "v.avi", [0], max_steps=1)


def test_learning_curves_from_tensorboard_logs(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    runs = []
    for k in range(2):
        run = tmp_path / f"run{k}"
        w = SummaryWriter(str(run / "tb"))
        for step in range(0, 500, 100):
            w.add_scalar("charts/episodic_return/bigfish", step / 100 + k, step)
            w.add_scalar("charts/episodic_return/maze", 5.0, step)
            w.add_scalar("charts/normalized_score", step / 1000, step)
        w.close()
        runs.append(run)
    s = curves.read_scalars(runs[1])
    steps, vals = s["charts/episodic_return/bigfish"]
    assert steps.tolist() == [0, 100, 200, 300, 400] and vals.tolist() == [1, 2, 3, 4, 5]
    written = curves.plot_learning_curves(runs, tmp_path / "out")
    assert [p.name for p in written] == ["learning_curves_games.png", "learning_curves_score.png"]
    assert curves.smooth(np.array([1.0, 1.0, 1.0]), 0.9).tolist() == [1.0, 1.0, 1.0]
    assert math.isclose(curves.smooth(np.array([0.0, 10.0]), 0.5)[1], 5 / 0.75)


def test_fresh_and_warm_by_episode_index():
    from agents.evaluation.report import fresh_and_warm
    from agents.evaluation.runner import Episode

    eps = [Episode("a", env, i, float(10 * env + i), 5, None) for env in range(2) for i in range(4)]
    eps.append(Episode("b", 0, 0, 3.0, 5, None))
    out = fresh_and_warm(eps, 2)
    # game a: index 0 returns 0 and 10; index >= 2: 2, 3, 12, 13
    assert out["a"] == {"fresh_mean_return": 5.0, "fresh_episodes": 2, "warmup": 2,
                        "warm_mean_return": 7.5, "warm_episodes": 4}
    assert out["b"]["fresh_mean_return"] == 3.0 and out["b"]["warm_mean_return"] is None
