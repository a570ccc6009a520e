"""Outputs of a stream evaluation (``eval_rl.py RUN --stream SPEC``): the comparison table
(comparison.md), results.json, results.csv (one row per agent x split x game x mode),
curve.csv (the return-vs-episodes-since-switch numbers), episodes.csv (every counted episode)
and adaptation_<split>.png (one panel per game and one for all games; one colour per agent,
carried solid, fresh dashed)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .report import _atomic_write, _csv_value, _table, fmt, fmt_ci
from .stream import ALL_GAMES, MODES, GameSummary, Interval, StreamEpisode

FORMAT = "srwm-procgen-stream/1"
CURVE_COLUMNS = 20
"""At most this many episodes-since-switch columns in comparison.md's curve table."""


@dataclass
class StreamSplitResult:
    """One agent on one split's stream, in both modes."""

    split: str
    start_level: int
    num_levels: int
    distribution_mode: str
    summaries: list[GameSummary]
    episodes: list[StreamEpisode]
    steps: dict[str, int] = field(default_factory=dict)
    """mode -> vectorised steps played."""
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self, game: str) -> GameSummary:
        return next(s for s in self.summaries if s.game == game)

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "start_level": self.start_level,
                "num_levels": self.num_levels, "distribution_mode": self.distribution_mode,
                "games": {s.game: s.to_dict() for s in self.summaries},
                "steps": self.steps,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}


@dataclass
class StreamAgentResult:
    name: str
    checkpoint: str
    global_step: int
    core: str
    trained: dict[str, Any]
    settings: dict[str, Any]
    splits: dict[str, StreamSplitResult] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "checkpoint": self.checkpoint,
                "global_step": self.global_step, "core": self.core, "trained": self.trained,
                "settings": self.settings,
                "splits": {k: v.to_dict() for k, v in self.splits.items()}}


def _iv(iv: Interval, digits: int = 3) -> str:
    text = fmt(iv.mean, digits)
    ci = fmt_ci((iv.low, iv.high), digits)
    return text if ci == "n/a" else f"{text} {ci}"


def gap_table(agents: list[StreamAgentResult], split: str) -> str:
    """Rows agent x game (and all games): early, steady and gap of both modes, and the paired
    carried - fresh difference of the early episodes."""
    header = ["agent", "game", "early (carried)", "steady (carried)", "gap (carried)",
              "early (fresh)", "steady (fresh)", "gap (fresh)", "carried - fresh (early)"]
    rows = []
    for a in agents:
        s = a.splits.get(split)
        if s is None:
            continue
        for g in s.summaries:
            name = f"**{g.game}**" if g.game == ALL_GAMES else g.game
            rows.append([a.name, name, _iv(g.carried.early), _iv(g.carried.steady),
                         _iv(g.carried.gap), _iv(g.fresh.early), _iv(g.fresh.steady),
                         _iv(g.fresh.gap), _iv(g.carried_minus_fresh)])
    return _table(header, rows)


def curve_table(agents: list[StreamAgentResult], split: str) -> str:
    """All games pooled: mean normalized score by episodes since the switch, per agent and
    mode (the numbers behind the plot's last panel)."""
    js: list[int] = sorted({j for a in agents if split in a.splits
                            for m in MODES
                            for j, _ in a.splits[split].summary(ALL_GAMES).curve[m]})
    js = js[:CURVE_COLUMNS]
    rows = []
    for a in agents:
        s = a.splits.get(split)
        if s is None:
            continue
        for m in MODES:
            by = dict(s.summary(ALL_GAMES).curve[m])
            rows.append([a.name, m, *[fmt(by[j].mean) if j in by else "n/a" for j in js]])
    return _table(["agent", "mode", *[str(j) for j in js]], rows)


def comparison_markdown(agents: list[StreamAgentResult], meta: dict[str, Any]) -> str:
    first = agents[0].settings
    k, m = first["early"], first["steady"]
    parts = ["# Continual adaptation", ""]
    passes = "repeated" if first["repeat"] else "one pass"
    parts.append(f"Stream `{first['stream']}` ({passes}, {first['order']} order), "
                 f"{first['episodes_per_slot']} episodes per slot, {first['num_envs']} slots, "
                 f"seed {first['seed']}. Command: `{meta.get('command', '')}`.")
    parts.append("")
    for a in agents:
        parts.append(f"- `{a.name}`: {a.checkpoint} (core {a.core}, step {a.global_step:,}, "
                     f"state reset {a.settings['state_reset']})")
    parts += ["", (f"Normalized return [95% CI]. early: the first {k} episode(s) of a game "
                   f"after a switch; steady: episodes >= {m} since the switch; gap = steady - "
                   "early; carried: the agent's state as its state reset carries it; fresh: "
                   "the state also reset at every switch; carried - fresh: paired by slot and "
                   "episode (same levels). The definitions are in "
                   "agents/evaluation/stream.py.")]
    splits = list(dict.fromkeys(s for a in agents for s in a.splits))
    for split in splits:
        s0 = next(a.splits[split] for a in agents if split in a.splits)
        parts += ["", f"## {split} (levels {s0.start_level}+{s0.num_levels}, "
                      f"{s0.distribution_mode})", "", gap_table(agents, split), "",
                  "Mean normalized return by episodes since the switch (all games):", "",
                  curve_table(agents, split)]
    return "\n".join(parts) + "\n"


CSV_FIELDS = ["agent", "checkpoint", "core", "split", "game", "mode", "early", "steady",
              "early_n", "early_mean", "early_ci_low", "early_ci_high", "steady_n",
              "steady_mean", "steady_ci_low", "steady_ci_high", "gap", "gap_ci_low",
              "gap_ci_high", "carried_minus_fresh_early", "cmf_ci_low", "cmf_ci_high", "cmf_n"]


def csv_rows(agents: list[StreamAgentResult]) -> list[dict[str, Any]]:
    rows = []
    for a in agents:
        k, m = a.settings["early"], a.settings["steady"]
        for s in a.splits.values():
            for g in s.summaries:
                for mode in MODES:
                    gap = getattr(g, mode)
                    cmf = g.carried_minus_fresh
                    rows.append({
                        "agent": a.name, "checkpoint": a.checkpoint, "core": a.core,
                        "split": s.split, "game": g.game, "mode": mode, "early": k,
                        "steady": m, "early_n": gap.early.n, "early_mean": gap.early.mean,
                        "early_ci_low": gap.early.low, "early_ci_high": gap.early.high,
                        "steady_n": gap.steady.n, "steady_mean": gap.steady.mean,
                        "steady_ci_low": gap.steady.low, "steady_ci_high": gap.steady.high,
                        "gap": gap.gap.mean, "gap_ci_low": gap.gap.low,
                        "gap_ci_high": gap.gap.high,
                        "carried_minus_fresh_early": cmf.mean, "cmf_ci_low": cmf.low,
                        "cmf_ci_high": cmf.high, "cmf_n": cmf.n,
                    })
    return rows


def _write_csv(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    def write(f):
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: _csv_value(r.get(k, "")) for k in fields})

    _atomic_write(path, write)


def write_stream_results(out: Path, agents: list[StreamAgentResult], meta: dict[str, Any]
                         ) -> list[Path]:
    """results.json, results.csv, curve.csv, episodes.csv and comparison.md in ``out``."""
    out = Path(out)
    doc = {"format": FORMAT, **meta, "agents": [a.to_dict() for a in agents]}
    _atomic_write(out / "results.json", lambda f: json.dump(doc, f, indent=2, allow_nan=False))
    _write_csv(out / "results.csv", CSV_FIELDS, csv_rows(agents))
    curve_fields = ["agent", "split", "game", "mode", "since_switch", "n", "mean", "ci_low",
                    "ci_high"]
    curve_rows = [
        {"agent": a.name, "split": s.split, "game": g.game, "mode": mode, "since_switch": j,
         "n": iv.n, "mean": iv.mean, "ci_low": iv.low, "ci_high": iv.high}
        for a in agents for s in a.splits.values() for g in s.summaries
        for mode in MODES for j, iv in g.curve[mode]
    ]
    _write_csv(out / "curve.csv", curve_fields, curve_rows)
    ep_fields = ["agent", "split", "mode", "slot", "episode_index", "game", "block", "segment",
                 "since_switch", "after_switch", "return", "normalized", "length", "level_seed"]
    ep_rows = [
        {"agent": a.name, "split": s.split, "mode": e.mode, "slot": e.slot,
         "episode_index": e.index, "game": e.game, "block": e.block, "segment": e.segment,
         "since_switch": e.since_switch, "after_switch": int(e.after_switch), "return": e.ret,
         "normalized": e.score, "length": e.length,
         "level_seed": "" if e.level_seed is None else e.level_seed}
        for a in agents for s in a.splits.values() for e in s.episodes
    ]
    _write_csv(out / "episodes.csv", ep_fields, ep_rows)
    md = comparison_markdown(agents, meta)
    _atomic_write(out / "comparison.md", lambda f: f.write(md))
    return [out / n for n in ("results.json", "results.csv", "curve.csv", "episodes.csv",
                              "comparison.md")]


def adaptation_plot(agents: list[StreamAgentResult], split: str, path: Path) -> Path:
    """Normalized return against episodes since the switch: one panel per game and one for all
    games pooled; one colour per agent, carried solid with its 95% band, fresh dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [a for a in agents if split in a.splits]
    games = [g.game for g in present[0].splits[split].summaries]
    cols = min(4, len(games))
    rows = math.ceil(len(games) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.0 * rows), squeeze=False)
    k, m = present[0].settings["early"], present[0].settings["steady"]
    for ax, game in zip(axes.flat, games, strict=False):
        for c, a in enumerate(present):
            g = a.splits[split].summary(game)
            for mode, style in (("carried", "-"), ("fresh", "--")):
                pts = g.curve[mode]
                if not pts:
                    continue
                x = [j for j, _ in pts]
                y = [iv.mean for _, iv in pts]
                ax.plot(x, y, ls=style, marker="o", ms=3, color=f"C{c}",
                        label=f"{a.name} ({mode})")
                if mode == "carried":
                    lo = [iv.low if math.isfinite(iv.low) else iv.mean for _, iv in pts]
                    hi = [iv.high if math.isfinite(iv.high) else iv.mean for _, iv in pts]
                    ax.fill_between(x, lo, hi, color=f"C{c}", alpha=0.15, lw=0)
        ax.axvspan(-0.5, k - 0.5, color="grey", alpha=0.12, lw=0)
        ax.axvline(m - 0.5, color="grey", lw=0.8, ls=":")
        ax.set_title(game, fontsize=9, fontweight="bold" if game == ALL_GAMES else None)
        ax.set_xlabel("episodes since the switch", fontsize=8)
        ax.set_ylabel("normalized return", fontsize=8)
    for ax in list(axes.flat)[len(games):]:
        ax.axis("off")
    handles, labels = axes.flat[len(games) - 1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=min(4, len(labels) or 1),
               bbox_to_anchor=(0.5, -0.02 - 0.03 * math.ceil(len(labels) / 4)))
    s0 = present[0].splits[split]
    fig.suptitle(f"{split}: levels {s0.start_level}+{s0.num_levels} ({s0.distribution_mode}). "
                 f"Shaded: the first {k} episode(s) after a switch; dotted: steady state from "
                 f"episode {m}; band: 95% CI (carried)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
