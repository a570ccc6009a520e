"""Training-time metrics: episode statistics per game, TensorBoard scalars, progress display.

Metric names follow docs/DESIGN.md, convention 6: `charts/` (episodic_return, normalized_score,
episode_length, sps), `losses/` (the learner's, already namespaced), `core/`.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO


class EpisodeStats:
    """Finished episodes, per game: a window since the last TensorBoard write and a recent
    window (last `recent` episodes per game) for the progress display."""

    def __init__(self, games: Iterable[str], score_mode: str | None,
                 task_kwargs: Mapping[str, Any] | None = None, recent: int = 100) -> None:
        self.games = list(dict.fromkeys(games))
        self.score_mode = score_mode
        self.task_kwargs = dict(task_kwargs or {})
        self.total_episodes = 0
        self._since_log: dict[str, list[tuple[float, int]]] = {g: [] for g in self.games}
        self._recent: dict[str, deque[float]] = {g: deque(maxlen=recent) for g in self.games}
        self._scorable: dict[str, bool] = {}

    def add(self, episodes: Iterable[Mapping[str, Any]]) -> None:
        """Record finished episodes ({r, l, game, ...}); a missing game counts as "env"."""
        for ep in episodes:
            game = str(ep.get("game", "env"))
            if game not in self._since_log:
                self.games.append(game)
                self._since_log[game] = []
                self._recent[game] = deque(maxlen=next(iter(self._recent.values())).maxlen
                                           if self._recent else 100)
            r, length = float(ep["r"]), int(ep["l"])
            self._since_log[game].append((r, length))
            self._recent[game].append(r)
            self.total_episodes += 1

    def normalized(self, game: str, value: float) -> float | None:
        """Normalized score of a return, or None where the game has no score range."""
        if self.score_mode is None or self._scorable.get(game) is False:
            return None
        try:
            from envs import normalized_score

            out = normalized_score(game, value, self.score_mode, task_kwargs=self.task_kwargs)
        except (ValueError, TypeError, ImportError):
            self._scorable[game] = False
            return None
        self._scorable[game] = True
        return out

    def recent_mean_return(self) -> float | None:
        """Mean over games of each game's recent mean return (None before any episode)."""
        means = [sum(d) / len(d) for d in self._recent.values() if d]
        return sum(means) / len(means) if means else None

    def recent_mean_score(self) -> float | None:
        """Mean over games of the normalized recent mean return (None if not scorable)."""
        scores = [self.normalized(g, sum(d) / len(d)) for g, d in self._recent.items() if d]
        scores = [s for s in scores if s is not None]
        return sum(scores) / len(scores) if scores else None

    def pop_scalars(self) -> dict[str, float]:
        """Scalars of the episodes since the last call (per game and aggregated), then clear.

        Aggregates: `charts/episodic_return` = mean over ALL episodes of the window;
        `charts/normalized_score` = mean over games (with episodes) of each game's mean score.
        """
        out: dict[str, float] = {}
        all_r: list[float] = []
        all_l: list[int] = []
        scores: list[float] = []
        for game, eps in self._since_log.items():
            if not eps:
                continue
            rs = [r for r, _ in eps]
            mean_r = sum(rs) / len(rs)
            out[f"charts/episodic_return/{game}"] = mean_r
            out[f"charts/episode_length/{game}"] = sum(n for _, n in eps) / len(eps)
            score = self.normalized(game, mean_r)
            if score is not None:
                out[f"charts/normalized_score/{game}"] = score
                scores.append(score)
            all_r.extend(rs)
            all_l.extend(n for _, n in eps)
            eps.clear()
        if all_r:
            out["charts/episodic_return"] = sum(all_r) / len(all_r)
            out["charts/episode_length"] = sum(all_l) / len(all_l)
            out["charts/episodes"] = float(len(all_r))
        if scores:
            out["charts/normalized_score"] = sum(scores) / len(scores)
        return out


class ScalarWriter:
    """TensorBoard SummaryWriter into run_dir/tb. purge_step: points at steps >= purge_step
    already in the log are dropped (on resume: the checkpoint's step + 1, so that the
    checkpoint's own points stay and those a killed run wrote after it go)."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
        self.nonfinite: dict[str, int] = {}
        """Per key: how many of its values were NaN or inf (this writer's lifetime)."""

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """Write finite values as they are; a NaN / inf value of KEY is counted and the count
        written as `nonfinite/KEY` (so that a NaN loss shows as a rising count, not a gap)."""
        for key, value in values.items():
            v = float(value)
            if math.isfinite(v):
                self._writer.add_scalar(key, v, step)
            else:
                self.nonfinite[key] = self.nonfinite.get(key, 0) + 1
                self._writer.add_scalar(f"nonfinite/{key}", float(self.nonfinite[key]), step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self._writer.add_text(tag, text, step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def format_count(n: float) -> str:
    """1234 -> 1.2k, 3.4e6 -> 3.4M."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(seconds)
    h, m = divmod(s, 3600)
    m, s = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """Steps, SPS, recent return and ETA: a tqdm bar on a terminal, plain lines otherwise.

    Plain lines (CI logs, `nohup`) are written at most every `line_every_s` seconds and at the
    end, to `stream` (stderr by default).
    """

    def __init__(self, total: int, initial: int = 0, *, enabled: bool = True,
                 stream: TextIO | None = None, line_every_s: float = 30.0) -> None:
        self.total, self.step = int(total), int(initial)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.line_every_s = line_every_s
        self._t0 = time.perf_counter()
        self._step0 = self.step
        self._last_line = -math.inf
        self._bar = None
        if enabled and _is_tty(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.step, unit="step", unit_scale=True,
                             dynamic_ncols=True, file=self.stream, smoothing=0.1)

    def sps(self) -> float:
        dt = time.perf_counter() - self._t0
        return (self.step - self._step0) / dt if dt > 0 else 0.0

    def update(self, step: int, recent_return: float | None, recent_score: float | None,
               force_line: bool = False) -> None:
        delta, self.step = step - self.step, int(step)
        if not self.enabled:
            return
        ret = "-" if recent_return is None else f"{recent_return:.2f}"
        if self._bar is not None:
            post = {"ret": ret}
            if recent_score is not None:
                post["score"] = f"{recent_score:.3f}"
            self._bar.set_postfix(post, refresh=False)
            self._bar.update(max(0, delta))
            return
        now = time.perf_counter()
        if force_line or now - self._last_line >= self.line_every_s:
            self._last_line = now
            sps = self.sps()
            eta = (self.total - self.step) / sps if sps > 0 else math.inf
            pct = 100.0 * self.step / max(1, self.total)
            line = (f"step {format_count(self.step)}/{format_count(self.total)} ({pct:.1f}%) | "
                    f"{format_count(sps)} SPS | return {ret}")
            if recent_score is not None:
                line += f" | score {recent_score:.3f}"
            line += f" | ETA {format_duration(eta)}"
            print(line, file=self.stream, flush=True)

    def write(self, message: str) -> None:
        """A message that does not break the bar."""
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        elif self.enabled:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
