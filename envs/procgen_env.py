"""ProcGen as one SB3 VecEnv, with native multi-game mixing.

``make_procgen_env(["bigfish", "maze"], 64)`` builds ONE ``procgen.ProcgenGym3Env`` with
``env_name="bigfish,maze"``; ProcGen itself runs env n on game ``n mod G`` (G = number of
games), so ``num_envs`` must be a multiple of G. The wrapper:

- converts gym3's (reward, obs, first) protocol to SB3's ``(obs, rewards, dones, infos)``:
  after ``act`` at step t, gym3's ``first[i]`` says that the returned obs starts a new
  episode, i.e. the episode of env i ended at step t, and its reward is the reward of that
  last step. So ``dones = first`` and the obs is already the next episode's first obs (SB3's
  auto-reset semantics) with no copying or bookkeeping per env.
- reads the level seeds straight from ProcGen's info buffers: ``level_seed`` is the level
  of the returned obs; on the first step of a new episode ``prev_level_seed`` still holds the
  level of the episode that just ended, which goes into ``info["episode"]["level_seed"]``.
- has no ``info["terminal_observation"]``: ProcGen resets inside C++ and never exposes the
  last frame of a finished episode. SB3's learners only use it for truncated episodes,
  which ProcGen does not report either (its time limits end episodes as ordinary dones).

``reset()``: ProcGen cannot restart episodes on demand. The first ``reset()`` returns the
first observations; a later ``reset()`` returns the current observations and leaves the
episodes (and their running statistics) going. Re-creating a ProcGen env leaks memory in the
C++ library, so build one env and reuse it; ``close()`` frees it.

``seed(s)``: ProcGen's levels are fixed by the constructor's ``seed`` (``rand_seed``); a later
``seed()`` cannot change them. It returns the construction seed and warns if asked for
another one.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from envs.base import GameVecEnv
from envs.games import DISTRIBUTION_MODES, GAMES, SYNTHETIC_TASKS, resolve_games

NUM_ACTIONS = 15
# ProcGen aborts the whole process (a C++ assertion) for a game outside these sets.
MODE_GAMES: dict[str, tuple[str, ...]] = {
    "memory": ("caveflyer", "dodgeball", "heist", "jumper", "maze", "miner"),
    "extreme": ("chaser", "dodgeball", "leaper", "starpilot"),
}


def _import_procgen_env() -> type:
    """Import ``procgen.ProcgenGym3Env`` without gym's deprecation banner on stderr.

    ``import procgen`` imports gym 0.26, which prints a notice to stderr at import time; the
    notice is the only thing written there, so it is captured and dropped. Real import errors
    still raise.
    """
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        from procgen import ProcgenGym3Env
    return ProcgenGym3Env


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def validate_level_args(distribution_mode: str, num_levels: int, start_level: int) -> None:
    """Raise ValueError naming the bad value and the valid choices / range."""
    if distribution_mode not in DISTRIBUTION_MODES:
        raise ValueError(
            f"unknown distribution_mode {distribution_mode!r}; "
            f"valid: {', '.join(DISTRIBUTION_MODES)}"
        )
    if not _is_int(num_levels) or num_levels < 0:
        raise ValueError(
            f"num_levels must be an integer >= 0 (0 = every level), got {num_levels!r}"
        )
    if not _is_int(start_level) or start_level < 0:
        raise ValueError(f"start_level must be an integer >= 0, got {start_level!r}")


def validate_mode_games(distribution_mode: str, games: Sequence[str]) -> None:
    """Raise ValueError for a game that ProcGen does not offer in ``distribution_mode``."""
    allowed = MODE_GAMES.get(distribution_mode)
    if allowed is None:
        return
    bad = [g for g in games if g not in allowed]
    if bad:
        raise ValueError(
            f"distribution_mode {distribution_mode!r} does not support {', '.join(bad)}; "
            f"games with {distribution_mode!r}: {', '.join(allowed)}"
        )


def validate_num_envs(num_envs: int, num_games: int, games: Sequence[str]) -> None:
    """Raise ValueError unless num_envs is a positive multiple of the number of games."""
    if not _is_int(num_envs) or num_envs < 1:
        raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    if num_envs % num_games != 0:
        lower = num_envs - num_envs % num_games
        choices = " or ".join(str(n) for n in (lower, lower + num_games) if n > 0)
        raise ValueError(
            f"num_envs={num_envs} is not a multiple of the number of games ({num_games}: "
            f"{', '.join(games)}); env i plays game i mod {num_games}, so use e.g. {choices}"
        )


class ProcgenVecEnv(GameVecEnv):
    """ProcGen games in one C++ vectorised env, behind SB3's VecEnv interface.

    Spaces: ``observation_space = Box(0, 255, (64, 64, 3), uint8)``, ``action_space =
    Discrete(15)``. ``step(actions int [N])`` returns ``obs uint8 [N, 64, 64, 3]``,
    ``rewards float32 [N]``, ``dones bool [N]`` and the infos described in
    :mod:`envs.base`. Build it with :func:`make_procgen_env`.
    """

    def __init__(
        self,
        games: Sequence[str],
        num_envs: int,
        distribution_mode: str = "easy",
        num_levels: int = 200,
        start_level: int = 0,
        seed: int = 0,
        **procgen_kwargs: Any,
    ) -> None:
        games = list(games)
        validate_num_envs(num_envs, len(games), games)
        validate_level_args(distribution_mode, num_levels, start_level)
        validate_mode_games(distribution_mode, games)
        procgen_env_cls = _import_procgen_env()
        self.distribution_mode = distribution_mode
        self.num_levels = int(num_levels)
        self.start_level = int(start_level)
        self._seed = int(seed)
        self._env = procgen_env_cls(
            num=int(num_envs),
            env_name=",".join(games),
            distribution_mode=distribution_mode,
            num_levels=self.num_levels,
            start_level=self.start_level,
            rand_seed=self._seed,
            **procgen_kwargs,
        )
        env_games = [games[i % len(games)] for i in range(num_envs)]
        super().__init__(env_games, games, NUM_ACTIONS)
        # ProcGen's info buffers (filled by every observe()); fall back to get_info() if a
        # different gym3 version hides them.
        info_buffers = getattr(self._env, "_info", None)
        needed = {"level_seed", "prev_level_seed"}
        if isinstance(info_buffers, dict) and needed <= set(info_buffers):
            self._info_buffers: dict[str, np.ndarray] | None = info_buffers
        else:
            self._info_buffers = None
        # ProcGen fills its first observations and infos on worker threads; observe() waits
        # for them (reading the info buffers before that can return stale seeds).
        self._env.observe()
        self._reset_infos(self._level_seeds()[0])

    @property
    def procgen_env(self) -> Any:
        """The wrapped ``procgen.ProcgenGym3Env`` (for benchmarks and debugging)."""
        return self._env

    def _level_seeds(self) -> tuple[np.ndarray, np.ndarray]:
        """(level_seed, prev_level_seed), int [N] each, as of the last observe()."""
        if self._info_buffers is not None:
            return (self._info_buffers["level_seed"].copy(),
                    self._info_buffers["prev_level_seed"].copy())
        info = self._env.get_info()
        return (np.array([d["level_seed"] for d in info], np.int64),
                np.array([d["prev_level_seed"] for d in info], np.int64))

    def reset(self) -> np.ndarray:
        """The current observations, uint8 [N, 64, 64, 3] (see the module docstring)."""
        _, ob, _ = self._env.observe()
        self._reset_infos(self._level_seeds()[0])
        return ob["rgb"]

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                   np.ndarray, np.ndarray]:
        self._env.act(actions.astype(np.int32, copy=False))
        rewards, ob, first = self._env.observe()
        level_seeds, prev_level_seeds = self._level_seeds()
        rewards = rewards.astype(np.float32, copy=False)
        return ob["rgb"], rewards, first, level_seeds, prev_level_seeds

    def save_state(self) -> list[bytes]:
        """ProcGen's own snapshot of every env (game, level and random generators)."""
        return list(self._env.callmethod("get_state"))

    def restore_state(self, states: list[bytes]) -> np.ndarray:
        """Put every env back to a ``save_state()`` snapshot; the running episodes' statistics
        restart from zero (save at an episode start to keep them whole). Returns the obs."""
        self._env.callmethod("set_state", list(states))
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        return self.reset()

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        if seed is not None and int(seed) != self._seed:
            warnings.warn(
                f"ProcGen levels are fixed by the seed given at construction ({self._seed}); "
                f"seed({seed}) has no effect. Build a new env (once) for another seed.",
                stacklevel=2,
            )
        return [self._seed for _ in range(self.num_envs)]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._env.close()


def make_procgen_env(
    games: str | Sequence[str],
    num_envs: int,
    distribution_mode: str = "easy",
    num_levels: int = 200,
    start_level: int = 0,
    seed: int = 0,
    **procgen_kwargs: Any,
) -> ProcgenVecEnv:
    """Build one vectorised ProcGen env mixing ``games`` natively.

    Args:
        games: anything :func:`envs.resolve_games` accepts that names ProcGen games.
        num_envs: number of parallel envs N, a multiple of the number of games G; env i plays
            game ``i mod G`` (``env.env_games[i]``).
        distribution_mode: "easy", "hard", "extreme" or "memory".
        num_levels: number of distinct levels (0 = the full distribution).
        start_level: first level seed; levels are ``start_level .. start_level+num_levels-1``.
        seed: ProcGen's ``rand_seed``; the same seed gives the same levels and observations.
        **procgen_kwargs: passed to ``ProcgenGym3Env`` (e.g. ``num_threads``,
            ``use_sequential_levels``, ``paint_vel_info``).

    Raises:
        ValueError: unknown game, a synthetic task name, bad level arguments, or num_envs not
            a positive multiple of the number of games.
    """
    names = resolve_games(games)
    synthetic = [n for n in names if n in SYNTHETIC_TASKS]
    if synthetic:
        raise ValueError(
            f"make_procgen_env got synthetic task {synthetic[0]!r}; use envs.make_env for it "
            f"(ProcGen games: {', '.join(GAMES)})"
        )
    return ProcgenVecEnv(names, num_envs, distribution_mode, num_levels, start_level, seed,
                         **procgen_kwargs)
