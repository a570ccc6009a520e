"""Vectorised environments: multi-game ProcGen and two synthetic tasks, one VecEnv interface.

Public API (docs/INTERFACES.md)::

    from envs import (GAMES, SYNTHETIC_TASKS, resolve_games, SPLITS, normalized_score,
                      make_env, make_procgen_env)

Every env is an SB3 ``VecEnv`` with ``observation_space = Box(0, 255, (64, 64, 3), uint8)``,
``action_space = Discrete(n)``, ``env_games`` (env i -> game) and ``games`` (distinct games).
Importing this package does not import ProcGen (that happens when a ProcGen env is built).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envs.adapter import GameNamingVecEnv, as_training_env
from envs.base import GameVecEnv
from envs.games import (
    ALIASES,
    DISTRIBUTION_MODES,
    GAMES,
    SCORE_MODES,
    SCORE_RANGES,
    SPLITS,
    SYNTHETIC_TASKS,
    normalized_score,
    resolve_games,
    score_mode,
    score_range,
)
from envs.procgen_env import ProcgenVecEnv, make_procgen_env, validate_level_args
from envs.synthetic import make_synthetic_env, reference_returns

__all__ = [
    "ALIASES",
    "DISTRIBUTION_MODES",
    "GAMES",
    "GameNamingVecEnv",
    "SCORE_MODES",
    "SCORE_RANGES",
    "SPLITS",
    "SYNTHETIC_TASKS",
    "GameVecEnv",
    "ProcgenVecEnv",
    "as_training_env",
    "make_env",
    "make_procgen_env",
    "make_synthetic_env",
    "normalized_score",
    "reference_returns",
    "resolve_games",
    "score_mode",
    "score_range",
]


def make_env(
    games: str | Sequence[str],
    num_envs: int,
    *,
    distribution_mode: str = "easy",
    num_levels: int = 200,
    start_level: int = 0,
    seed: int = 0,
    **task_kwargs: Any,
) -> GameVecEnv:
    """Build the vectorised env for ``games``: ProcGen games or ONE synthetic task.

    Args:
        games: anything :func:`resolve_games` accepts.
        num_envs: number of parallel envs (a multiple of the number of ProcGen games).
        distribution_mode, num_levels, start_level: ProcGen's level arguments; validated for
            synthetic tasks too, but otherwise ignored by them (their ``level_seed`` is the
            env's episode index).
        seed: the same seed gives the same levels and observations.
        **task_kwargs: synthetic task parameters (``num_cues``, ``delay`` / ``num_arms``,
            ``block``) or extra ``ProcgenGym3Env`` arguments (e.g. ``num_threads``).

    Raises:
        ValueError: every input a user can get wrong, with the bad value and valid choices.
    """
    names = resolve_games(games)
    if names[0] in SYNTHETIC_TASKS:
        validate_level_args(distribution_mode, num_levels, start_level)
        return make_synthetic_env(names[0], num_envs, seed=seed, **task_kwargs)
    return make_procgen_env(names, num_envs, distribution_mode=distribution_mode,
                            num_levels=num_levels, start_level=start_level, seed=seed,
                            **task_kwargs)
