"""Statistics of a stream evaluation (continual adaptation): pure functions of an episode table.

Every row is one episode an agent played in a stream (envs/stream.py): its slot, its index in
the slot's stream, its game, its segment (the run of same-game episodes it belongs to; a
switch of game starts the next segment) and ``since_switch`` (0 = the first episode of the
game after the switch), its return and normalized score, and the mode it was played in:
``carried`` (the agent's state as its state-reset policy carries it) or ``fresh`` (the same,
plus a reset of the state at every switch).

Definitions (k = ``early``, m = ``steady``, 1 <= k <= m):

- **Curve** of a game: for each j, the mean normalized score of the episodes with
  ``since_switch == j`` in segments that follow a switch, over every slot and segment, with a
  Student t 95% interval (``mean +- t(0.975, n-1) * sd / sqrt(n)``). The first segment of each
  slot follows no switch (it starts the stream) and is left out of the curves and of ``early``.
  The "all games" curve pools the episodes of every game.
- **Early** return: the mean over the episodes with ``since_switch < k`` after a switch.
- **Steady state**: the mean over the game's episodes with ``since_switch >= m``, in any
  segment (the stream's first included): what the agent reaches once it has played m episodes
  of the game in a row.
- **Adaptation gap** = steady - early: what a switch costs in the first k episodes (0: none;
  positive: the agent does worse right after a switch). Its 95% interval is Welch's (the two
  sets of episodes are treated as independent samples).
- **Carried - fresh**: the early return of the carried mode minus the fresh one's, paired by
  (slot, episode index): both modes play the same stream, so a pair is the same episode of
  the same game on the same level, played with and without the state carried through the
  switch. The 95% interval is the paired t interval.

Episodes of one slot are not independent (the state carries from one to the next), and the
intervals treat them as if they were: read them as the evaluation noise of these levels, not
as a test. Undefined values (no episodes, or one: no interval) are NaN.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
MODES: tuple[str, ...] = ("carried", "fresh")
ALL_GAMES = "all games"


@dataclass(frozen=True)
class StreamEpisode:
    """One row of the episode table."""

    mode: str
    slot: int
    index: int
    """0-based index of the episode in its slot's stream."""
    game: str
    segment: int
    """0 = the slot's first segment (no switch before it)."""
    since_switch: int
    ret: float
    score: float
    """Normalized return."""
    block: int = 0
    length: int = 0
    level_seed: int | None = None

    @property
    def after_switch(self) -> bool:
        return self.segment > 0


@dataclass(frozen=True)
class Interval:
    """Mean of n values and its 95% interval (NaN where undefined)."""

    n: int
    mean: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float | int | None]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Gap:
    """Early, steady and their difference for one game (or all games) in one mode."""

    early: Interval
    steady: Interval
    gap: Interval
    """steady - early, with Welch's interval; its n is early's n + steady's n."""

    def to_dict(self) -> dict[str, dict]:
        return {"early": self.early.to_dict(), "steady": self.steady.to_dict(),
                "gap": self.gap.to_dict()}


def t_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean and Student t interval ``mean +- t((1+c)/2, n-1) * sd(ddof=1) / sqrt(n)``."""
    x = np.asarray(list(values), dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Interval(n, mean, math.nan, math.nan)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Interval(n, mean, mean - half, mean + half)


def welch_difference(a: Sequence[float], b: Sequence[float],
                     confidence: float = CONFIDENCE) -> Interval:
    """mean(a) - mean(b) with Welch's t interval (Welch-Satterthwaite degrees of freedom)."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = int(x.size + y.size)
    if x.size == 0 or y.size == 0:
        return Interval(n, math.nan, math.nan, math.nan)
    diff = float(x.mean() - y.mean())
    if x.size < 2 or y.size < 2:
        return Interval(n, diff, math.nan, math.nan)
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(vx + vy)
    if se == 0.0:
        return Interval(n, diff, diff, diff)
    df = (vx + vy) ** 2 / (vx ** 2 / (x.size - 1) + vy ** 2 / (y.size - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, df) * se)
    return Interval(n, diff, diff - half, diff + half)


def _of(episodes: Iterable[StreamEpisode], mode: str, game: str) -> list[StreamEpisode]:
    return [e for e in episodes if e.mode == mode and (game == ALL_GAMES or e.game == game)]


def curve(episodes: Iterable[StreamEpisode], mode: str, game: str = ALL_GAMES
          ) -> list[tuple[int, Interval]]:
    """[(j, Interval of the scores at since_switch == j after a switch)], j ascending."""
    by: dict[int, list[float]] = defaultdict(list)
    for e in _of(episodes, mode, game):
        if e.after_switch:
            by[e.since_switch].append(e.score)
    return [(j, t_interval(by[j])) for j in sorted(by)]


def adaptation_gap(episodes: Iterable[StreamEpisode], mode: str, game: str = ALL_GAMES, *,
                   early: int, steady: int) -> Gap:
    """Early (first ``early`` episodes after a switch), steady (``since_switch >= steady``,
    any segment) and the gap steady - early, for one mode and game (see the module doc)."""
    check_windows(early, steady)
    rows = _of(episodes, mode, game)
    first = [e.score for e in rows if e.after_switch and e.since_switch < early]
    later = [e.score for e in rows if e.since_switch >= steady]
    return Gap(early=t_interval(first), steady=t_interval(later),
               gap=welch_difference(later, first))


def carried_minus_fresh(episodes: Iterable[StreamEpisode], game: str = ALL_GAMES, *,
                        early: int) -> Interval:
    """Paired (by slot and episode index) carried - fresh scores over the first ``early``
    episodes after a switch, with the paired t interval."""
    rows = list(episodes)
    fresh = {(e.slot, e.index): e for e in _of(rows, "fresh", game)}
    diffs = []
    for e in _of(rows, "carried", game):
        f = fresh.get((e.slot, e.index))
        if f is None or not e.after_switch or e.since_switch >= early:
            continue
        if f.game != e.game:
            raise ValueError(f"carried and fresh episodes ({e.slot}, {e.index}) are of different "
                             f"games ({e.game}, {f.game}): not the same stream")
        diffs.append(e.score - f.score)
    return t_interval(diffs)


def check_windows(early: int, steady: int) -> None:
    if not (isinstance(early, int) and isinstance(steady, int)) or early < 1 or steady < early:
        raise ValueError(f"need 1 <= early <= steady, got early={early!r}, steady={steady!r}")


@dataclass
class GameSummary:
    """Everything the report shows for one agent and one game (or all games)."""

    game: str
    carried: Gap
    fresh: Gap
    carried_minus_fresh: Interval
    curve: dict[str, list[tuple[int, Interval]]]
    """mode -> curve."""

    def to_dict(self) -> dict:
        return {
            "game": self.game, "carried": self.carried.to_dict(), "fresh": self.fresh.to_dict(),
            "carried_minus_fresh_early": self.carried_minus_fresh.to_dict(),
            "curve": {m: [{"since_switch": j, **iv.to_dict()} for j, iv in c]
                      for m, c in self.curve.items()},
        }


def summarize(episodes: Sequence[StreamEpisode], games: Sequence[str], *, early: int,
              steady: int) -> list[GameSummary]:
    """One GameSummary per game, then one for all games pooled."""
    check_windows(early, steady)
    out = []
    for g in [*games, ALL_GAMES]:
        out.append(GameSummary(
            game=g,
            carried=adaptation_gap(episodes, "carried", g, early=early, steady=steady),
            fresh=adaptation_gap(episodes, "fresh", g, early=early, steady=steady),
            carried_minus_fresh=carried_minus_fresh(episodes, g, early=early),
            curve={m: curve(episodes, m, g) for m in MODES},
        ))
    return out


def default_windows(min_block: int, early: int | None = None, steady: int | None = None
                    ) -> tuple[int, int]:
    """k = 1 and m = max(k, shortest block // 2) unless given: the first episode after a
    switch against the second half of a block."""
    k = 1 if early is None else early
    m = max(k, min_block // 2) if steady is None else steady
    return k, m
