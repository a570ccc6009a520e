"""Results of an evaluation as data, Markdown tables, results.json, results.csv and
episodes.csv, and the comparison table of several agents (best value in bold)."""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .runner import Episode, PlayResult
from .scoring import AggregateScore, GameScore


@dataclass
class SplitResult:
    """One agent on one level split."""

    split: str
    start_level: int
    num_levels: int
    distribution_mode: str
    games: dict[str, GameScore]
    aggregate: AggregateScore
    play: PlayResult
    overlaps_training: bool = False
    warmup: int = 4
    """K of `fresh_and_warm`."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "start_level": self.start_level,
            "num_levels": self.num_levels,
            "distribution_mode": self.distribution_mode,
            "overlaps_training_levels": self.overlaps_training,
            "games": {g: s.to_dict() for g, s in self.games.items()},
            "aggregate": self.aggregate.to_dict(),
            "return_by_episode_index": return_by_episode_index(self.play.episodes),
            "fresh_and_warm": fresh_and_warm(self.play.episodes, self.warmup),
            "steps": self.play.steps,
            "env_steps": self.play.env_steps,
            "seconds": round(self.play.seconds, 3),
        }


@dataclass
class AgentResult:
    """One agent (one checkpoint) on one or more splits."""

    name: str
    checkpoint: str
    global_step: int
    core: str
    trained: dict[str, Any]
    """What the agent was trained on: games, distribution_mode, start_level, num_levels,
    state_reset, unroll."""
    settings: dict[str, Any]
    """How it was evaluated: games, episodes, greedy, state_reset, seed, num_envs, device."""
    splits: dict[str, SplitResult] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "checkpoint": self.checkpoint,
            "global_step": self.global_step,
            "core": self.core,
            "trained": self.trained,
            "settings": self.settings,
            "splits": {k: v.to_dict() for k, v in self.splits.items()},
        }


def return_by_episode_index(episodes: list[Episode]) -> dict[str, list[dict[str, float]]]:
    """Per game: for each index in the envs' episode streams, the mean return over the envs
    and how many envs reached that index (the numbers behind episode_index.png)."""
    by: dict[str, dict[int, list[float]]] = {}
    for e in episodes:
        by.setdefault(e.game, {}).setdefault(e.index, []).append(e.ret)
    return {g: [{"index": i, "mean_return": sum(v) / len(v), "envs": len(v)}
                for i, v in sorted(d.items())] for g, d in by.items()}


def fresh_and_warm(episodes: list[Episode], k: int) -> dict[str, dict[str, float | int | None]]:
    """Per game: the mean return of every env's first episode (index 0: the agent starts from a
    zero state) and the mean over episodes with index >= k (after k warm-up episodes), with
    their counts. None where no episode qualifies."""
    out: dict[str, dict[str, float | int | None]] = {}
    for game in dict.fromkeys(e.game for e in episodes):
        first = [e.ret for e in episodes if e.game == game and e.index == 0]
        warm = [e.ret for e in episodes if e.game == game and e.index >= k]
        out[game] = {"fresh_mean_return": sum(first) / len(first) if first else None,
                     "fresh_episodes": len(first), "warmup": k,
                     "warm_mean_return": sum(warm) / len(warm) if warm else None,
                     "warm_episodes": len(warm)}
    return out


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def fmt_ci(ci, digits: int = 3) -> str:
    lo, hi = ci
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "n/a"
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def agent_table(agent: AgentResult, split: SplitResult) -> str:
    """Markdown table of one agent on one split: per game and the two aggregates."""
    title = (
        f"### {agent.name} - {split.split} (levels {split.start_level}+{split.num_levels}, "
        f"{split.distribution_mode}; step {agent.global_step:,})"
    )
    rows = []
    fw = fresh_and_warm(split.play.episodes, split.warmup)
    for g, s in split.games.items():
        f = fw.get(g, {})
        rows.append([
            g, str(s.episodes), fmt(s.mean_return, 2), fmt(s.se_return, 2),
            fmt_ci(s.return_ci, 2), fmt(s.normalized), fmt_ci(s.normalized_ci),
            fmt(f.get("fresh_mean_return"), 2), fmt(f.get("warm_mean_return"), 2),
        ])
    a = split.aggregate
    rows.append(["**mean (normalized)**", "", "", "", "", fmt(a.mean), fmt_ci(a.mean_ci), "", ""])
    rows.append(["**IQM (normalized)**", "", "", "", "", fmt(a.iqm), fmt_ci(a.iqm_ci), "", ""])
    header = ["game", "episodes", "mean return", "SE", "95% CI (return)", "normalized",
              "95% CI (normalized)", "first episode (fresh state)",
              f"episodes >= {split.warmup} (after warm-up)"]
    return title + "\n\n" + _table(header, rows)


def _best(values: list[float | None]) -> set[int]:
    finite = [(i, v) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if len(finite) < 2:
        return set()
    top = max(v for _, v in finite)
    return {i for i, v in finite if v == top}


def _cells(values, cis, digits) -> list[str]:
    best = _best(values)
    out = []
    for i, (v, ci) in enumerate(zip(values, cis, strict=True)):
        text = fmt(v, digits)
        if i in best:
            text = f"**{text}**"
        ci_text = fmt_ci(ci, digits) if ci is not None else "n/a"
        out.append(text + (f" {ci_text}" if ci_text != "n/a" else ""))
    return out


def comparison_markdown(agents: list[AgentResult]) -> str:
    """One section per split: normalized scores (with 95% CIs) and mean returns (with SEs) of
    every agent side by side; rows are games and the aggregates; the best value of a row in
    bold (ties all bold)."""
    names = [a.name for a in agents]
    splits = list(dict.fromkeys(s for a in agents for s in a.splits))
    parts = ["# Comparison", ""]
    for a in agents:
        parts.append(f"- `{a.name}`: {a.checkpoint} (core {a.core}, step {a.global_step:,})")
    parts.append("")
    parts.append("Normalized score [bootstrap 95% CI]; mean return (standard error). "
                 "Best of each row in bold.")
    for split in splits:
        present = [a.splits.get(split) for a in agents]
        first = next(p for p in present if p is not None)
        games = list(dict.fromkeys(g for p in present if p for g in p.games))
        parts += ["", f"## {split} (levels {first.start_level}+{first.num_levels}, "
                      f"{first.distribution_mode})", ""]
        game_sets = {tuple(p.games) for p in present if p is not None}
        if len(game_sets) > 1:
            parts += ["Note: the agents were evaluated on different games; their aggregates "
                      "are not comparable.", ""]
        rows = []
        for g in games:
            vals = [p.games[g].normalized if p and g in p.games else None for p in present]
            cis = [p.games[g].normalized_ci if p and g in p.games else (None, None)
                   for p in present]
            rows.append([g, *_cells(vals, cis, 3)])
        for label, key in (("**mean**", "mean"), ("**IQM**", "iqm")):
            vals = [getattr(p.aggregate, key) if p else None for p in present]
            cis = [getattr(p.aggregate, key + "_ci") if p else (None, None) for p in present]
            rows.append([label, *_cells(vals, cis, 3)])
        parts += ["Normalized score:", "", _table(["game", *names], rows), ""]
        rows = []
        for g in games:
            vals = [p.games[g].mean_return if p and g in p.games else None for p in present]
            best = _best(vals)
            cells = []
            for i, p in enumerate(present):
                if p is None or g not in p.games:
                    cells.append("n/a")
                    continue
                t = fmt(vals[i], 2)
                se = fmt(p.games[g].se_return, 2)
                cells.append((f"**{t}**" if i in best else t) + f" ({se})")
            rows.append([g, *cells])
        parts += ["Mean return (SE):", "", _table(["game", *names], rows)]
    return "\n".join(parts) + "\n"


CSV_FIELDS = [
    "agent", "checkpoint", "global_step", "core", "split", "start_level", "num_levels",
    "distribution_mode", "game", "episodes", "mean_return", "se_return", "return_ci_low",
    "return_ci_high", "normalized_score", "normalized_se", "normalized_ci_low",
    "normalized_ci_high",
]


def csv_rows(agents: list[AgentResult]) -> list[dict[str, Any]]:
    """One row per agent x split x game, plus rows ``aggregate:mean`` and ``aggregate:iqm``
    (return columns empty there)."""
    rows = []
    for a in agents:
        for s in a.splits.values():
            base = {
                "agent": a.name, "checkpoint": a.checkpoint, "global_step": a.global_step,
                "core": a.core, "split": s.split, "start_level": s.start_level,
                "num_levels": s.num_levels, "distribution_mode": s.distribution_mode,
            }
            for g, gs in s.games.items():
                rows.append({
                    **base, "game": g, "episodes": gs.episodes,
                    "mean_return": gs.mean_return, "se_return": gs.se_return,
                    "return_ci_low": gs.return_ci[0], "return_ci_high": gs.return_ci[1],
                    "normalized_score": gs.normalized, "normalized_se": gs.normalized_se,
                    "normalized_ci_low": gs.normalized_ci[0],
                    "normalized_ci_high": gs.normalized_ci[1],
                })
            n = sum(gs.episodes for gs in s.games.values())
            for key in ("mean", "iqm"):
                ci = getattr(s.aggregate, key + "_ci")
                rows.append({
                    **base, "game": f"aggregate:{key}", "episodes": n,
                    "normalized_score": getattr(s.aggregate, key),
                    "normalized_ci_low": ci[0], "normalized_ci_high": ci[1],
                })
    return rows


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual mode
        with os.fdopen(fd, "w", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _csv_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return ""
    return v


def write_results(out: Path, agents: list[AgentResult], meta: dict[str, Any]) -> list[Path]:
    """Write results.json, results.csv and episodes.csv (and comparison.md with >= 2 agents)."""
    out = Path(out)
    written = []
    doc = {"format": "srwm-procgen-eval/1", **meta, "agents": [a.to_dict() for a in agents]}
    _atomic_write(out / "results.json", lambda f: json.dump(doc, f, indent=2, allow_nan=False))
    written.append(out / "results.json")

    def write_csv(f, fields, rows):
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: _csv_value(r.get(k, "")) for k in fields})

    _atomic_write(out / "results.csv", lambda f: write_csv(f, CSV_FIELDS, csv_rows(agents)))
    written.append(out / "results.csv")
    ep_fields = ["agent", "split", "game", "env", "episode_index", "return", "length",
                 "level_seed"]
    ep_rows = [
        {"agent": a.name, "split": s.split, **_episode_row(e)}
        for a in agents for s in a.splits.values() for e in s.play.episodes
    ]
    _atomic_write(out / "episodes.csv", lambda f: write_csv(f, ep_fields, ep_rows))
    written.append(out / "episodes.csv")
    if len(agents) >= 2:
        md = comparison_markdown(agents)
        _atomic_write(out / "comparison.md", lambda f: f.write(md))
        written.append(out / "comparison.md")
    return written


def _episode_row(e: Episode) -> dict[str, Any]:
    return {"game": e.game, "env": e.env, "episode_index": e.index, "return": e.ret,
            "length": e.length, "level_seed": "" if e.level_seed is None else e.level_seed}
