"""Game names, aliases, level splits and normalized scores.

Everything here is pure Python (no ProcGen import), so it is cheap to import from the
command-line scripts and from the tests.

- ``GAMES``: the 16 ProcGen games, in the ProcGen paper's alphabetical order.
- ``SYNTHETIC_TASKS``: the two small tasks of :mod:`envs.synthetic`.
- ``ALIASES``: ``all`` (the 16 games), ``paper6`` (the SRWM paper's multi-task set) and
  ``memory4`` (the games of ProcGen's "memory" distribution used by the paper).
- ``resolve_games(spec)``: a name, a comma list, a list, or an alias -> a list of distinct names.
- ``SPLITS``: named level ranges as ``(start_level, num_levels)``.
- ``DISTRIBUTION_MODES``: ProcGen's level distributions; ``SCORE_MODES``: the two of them with
  published score constants; ``score_mode(distribution_mode)``: the rule that picks the
  constants for any distribution mode (training metrics and evaluation both use it).
- ``normalized_score(game, episode_return, mode)``: ``(R - Rmin) / (Rmax - Rmin)`` with the
  ProcGen paper's constants (docs/SPEC.md, section 5); synthetic tasks use their documented
  ``(chance, optimal)`` returns instead of ``(Rmin, Rmax)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

GAMES: tuple[str, ...] = (
    "bigfish",
    "bossfight",
    "caveflyer",
    "chaser",
    "climber",
    "coinrun",
    "dodgeball",
    "fruitbot",
    "heist",
    "jumper",
    "leaper",
    "maze",
    "miner",
    "ninja",
    "plunder",
    "starpilot",
)

SYNTHETIC_TASKS: tuple[str, ...] = ("cue-recall", "switching-bandit")

ALIASES: dict[str, tuple[str, ...]] = {
    "all": GAMES,
    "paper6": ("bigfish", "fruitbot", "maze", "leaper", "plunder", "starpilot"),
    "memory4": ("dodgeball", "heist", "maze", "miner"),
}

SPLITS: dict[str, tuple[int, int]] = {
    "train": (0, 200),
    "test1": (1000, 200),
    "test2": (1200, 200),
    "test3": (1400, 200),
    "all": (0, 0),
}
"""Named level splits as ``(start_level, num_levels)``; ``num_levels == 0`` is the full
distribution (every level seed)."""

DistributionMode = Literal["easy", "hard", "extreme", "memory"]
DISTRIBUTION_MODES: tuple[str, ...] = get_args(DistributionMode)
"""ProcGen's level distributions (``distribution_mode`` of ``ProcgenGym3Env``)."""

# (Rmin, Rmax) per game and distribution mode, from the ProcGen paper (docs/SPEC.md,
# section 5).
SCORE_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "easy": {
        "bigfish": (1.0, 40.0),
        "bossfight": (0.5, 13.0),
        "caveflyer": (3.5, 12.0),
        "chaser": (0.5, 13.0),
        "climber": (2.0, 12.6),
        "coinrun": (5.0, 10.0),
        "dodgeball": (1.5, 19.0),
        "fruitbot": (-1.5, 32.4),
        "heist": (3.5, 10.0),
        "jumper": (1.0, 10.0),
        "leaper": (1.5, 10.0),
        "maze": (5.0, 10.0),
        "miner": (1.5, 13.0),
        "ninja": (3.5, 10.0),
        "plunder": (4.5, 30.0),
        "starpilot": (2.5, 64.0),
    },
    "hard": {
        "bigfish": (0.0, 40.0),
        "bossfight": (0.5, 13.0),
        "caveflyer": (2.0, 13.4),
        "chaser": (0.5, 14.2),
        "climber": (1.0, 12.6),
        "coinrun": (5.0, 10.0),
        "dodgeball": (1.5, 19.0),
        "fruitbot": (-0.5, 27.2),
        "heist": (2.0, 10.0),
        "jumper": (1.0, 10.0),
        "leaper": (1.5, 10.0),
        "maze": (4.0, 10.0),
        "miner": (1.5, 20.0),
        "ninja": (2.0, 10.0),
        "plunder": (3.0, 30.0),
        "starpilot": (1.5, 35.0),
    },
}


SCORE_MODES: tuple[str, ...] = tuple(SCORE_RANGES)
"""The distribution modes with published (Rmin, Rmax) constants: easy, hard."""


def score_mode(distribution_mode: str) -> str:
    """The constants that normalise scores of a run in ``distribution_mode``: its own for easy
    and hard; ``hard`` for memory and extreme, which have no published constants (their levels
    are at least as hard as ``hard``'s). One rule for training metrics and evaluation."""
    return distribution_mode if distribution_mode in SCORE_MODES else "hard"


def _valid_names_message() -> str:
    return (
        f"valid games: {', '.join(GAMES)}; synthetic tasks: {', '.join(SYNTHETIC_TASKS)}; "
        f"aliases: {', '.join(ALIASES)}"
    )


def resolve_games(spec: str | Sequence[str]) -> list[str]:
    """Turn a game specification into a list of distinct game (or synthetic task) names.

    Args:
        spec: a name (``"maze"``), a comma list (``"maze, bigfish"``), an alias (``"all"``,
            ``"paper6"``, ``"memory4"``), a synthetic task name (``"cue-recall"``), or a
            sequence of any of these. Case and surrounding whitespace are ignored.

    Returns:
        The names in order of first appearance, duplicates removed (``"maze,paper6"`` ->
        ``["maze", "bigfish", "fruitbot", "leaper", "plunder", "starpilot"]``).

    Raises:
        ValueError: an unknown name (the message names it and lists the valid names and
            aliases), an empty specification, or synthetic tasks mixed with ProcGen games
            (or two synthetic tasks together: they have different action spaces).
    """
    if isinstance(spec, str):
        parts = spec.split(",")
    elif isinstance(spec, Sequence):
        parts = []
        for item in spec:
            if not isinstance(item, str):
                raise ValueError(
                    f"game specification must contain strings, got {item!r}; "
                    + _valid_names_message()
                )
            parts.extend(item.split(","))
    else:
        raise ValueError(
            f"game specification must be a string or a list of strings, got {spec!r}; "
            + _valid_names_message()
        )

    names: list[str] = []
    for raw in parts:
        name = raw.strip().lower()
        if not name:
            continue
        if name in ALIASES:
            expanded: Sequence[str] = ALIASES[name]
        elif name in GAMES or name in SYNTHETIC_TASKS:
            expanded = (name,)
        else:
            raise ValueError(f"unknown game {raw.strip()!r}; " + _valid_names_message())
        for game in expanded:
            if game not in names:
                names.append(game)

    if not names:
        raise ValueError(f"empty game specification {spec!r}; " + _valid_names_message())
    synthetic = [n for n in names if n in SYNTHETIC_TASKS]
    if synthetic and len(names) > 1:
        raise ValueError(
            f"a synthetic task ({', '.join(synthetic)}) cannot be mixed with other games or "
            f"tasks, got {', '.join(names)}; use one synthetic task on its own"
        )
    return names


def score_range(game: str, mode: str = "easy", task_kwargs: Mapping[str, Any] | None = None
                ) -> tuple[float, float]:
    """The ``(low, high)`` returns that map to normalized scores 0 and 1.

    ProcGen games: ``(Rmin, Rmax)`` of the ProcGen paper for ``mode`` ("easy" or "hard").
    Synthetic tasks: their documented ``(chance, optimal)`` per-episode returns (see
    :mod:`envs.synthetic`), for the task parameters in ``task_kwargs`` (defaults if None);
    ``mode`` is ignored for them.

    Raises:
        ValueError: unknown game or unknown mode.
    """
    if game in SYNTHETIC_TASKS:
        from envs.synthetic import reference_returns

        ref = reference_returns(game, **dict(task_kwargs or {}))
        return ref["chance"], ref["optimal"]
    if mode not in SCORE_RANGES:
        raise ValueError(
            f"unknown mode {mode!r} for normalized scores; valid modes: {', '.join(SCORE_RANGES)}"
        )
    if game not in SCORE_RANGES[mode]:
        raise ValueError(f"unknown game {game!r}; " + _valid_names_message())
    return SCORE_RANGES[mode][game]


def normalized_score(
    game: str,
    episode_return: float,
    mode: str = "easy",
    *,
    task_kwargs: Mapping[str, Any] | None = None,
) -> float:
    """``(R - low) / (high - low)`` for one game, with ``(low, high)`` from :func:`score_range`.

    Args:
        game: a ProcGen game or a synthetic task name.
        episode_return: an episode return (or a mean of returns; the map is affine).
        mode: "easy" or "hard" (ProcGen constants); ignored for synthetic tasks.
        task_kwargs: parameters of a synthetic task if not its defaults.

    Raises:
        ValueError: unknown game or mode.
    """
    low, high = score_range(game, mode, task_kwargs)
    return (float(episode_return) - low) / (high - low)
