"""Shared base of every vectorised env in this package: game map and episode statistics.

Subclasses implement ``reset`` and ``_step(actions)``; this class turns the raw per-step arrays
into SB3's ``(obs, rewards, dones, infos)`` with the infos every consumer relies on
(docs/INTERFACES.md):

- ``infos[i]["game"]``: the game env i plays; ``infos[i]["level_seed"]``: the level (or task
  episode) of the observation returned for env i.
- when ``dones[i]``: ``infos[i]["episode"] = {"r": return, "l": length, "game", "level_seed"}``
  of the episode that just finished (its own level seed, not the next one's), exactly once.

The bookkeeping is vectorised numpy; the only per-env Python work is building the infos list.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

# SB3 imports the old `gym` package if it is installed (ProcGen needs it), and gym prints a
# deprecation banner on stderr at import. Only that banner is dropped; errors still raise.
with contextlib.redirect_stderr(io.StringIO()):
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

OBS_SHAPE: tuple[int, int, int] = (64, 64, 3)


class GameVecEnv(VecEnv):
    """A VecEnv whose env i plays ``env_games[i]``, with per-episode statistics.

    Attributes:
        env_games: list of length ``num_envs``; env i -> game name.
        games: the distinct games, in the order given to the constructor.
    """

    def __init__(self, env_games: Sequence[str], games: Sequence[str], num_actions: int) -> None:
        self.env_games: list[str] = list(env_games)
        self.games: list[str] = list(games)
        self.render_mode = None
        num_envs = len(self.env_games)
        super().__init__(
            num_envs,
            spaces.Box(0, 255, OBS_SHAPE, np.uint8),
            spaces.Discrete(num_actions),
        )
        self._episode_return = np.zeros(num_envs, np.float64)  # [N]
        self._episode_length = np.zeros(num_envs, np.int64)  # [N]
        self._actions: np.ndarray | None = None
        self.closed = False

    # ---- subclass hooks -------------------------------------------------------------------

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                   np.ndarray, np.ndarray]:
        """Advance every env by one step.

        Args:
            actions: int [N].

        Returns:
            obs uint8 [N, 64, 64, 3] (the next episode's first obs where done),
            rewards float32 [N], dones bool [N],
            level_seeds int [N] (level of each returned obs),
            finished_level_seeds int [N] (level of the episode that ended; read where done).
        """
        raise NotImplementedError

    # ---- VecEnv API ---------------------------------------------------------------------------

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(actions)")
        actions, self._actions = self._actions, None
        obs, rewards, dones, level_seeds, finished_seeds = self._step(actions)
        self._episode_return += rewards
        self._episode_length += 1
        infos: list[dict[str, Any]] = [
            {"game": g, "level_seed": s}
            for g, s in zip(self.env_games, level_seeds.tolist(), strict=True)
        ]
        if dones.any():
            done_idx = np.flatnonzero(dones)
            returns = self._episode_return[done_idx].tolist()
            lengths = self._episode_length[done_idx].tolist()
            seeds = finished_seeds[done_idx].tolist()
            for i, r, n, s in zip(done_idx.tolist(), returns, lengths, seeds, strict=True):
                infos[i]["episode"] = {
                    "r": r, "l": n, "game": self.env_games[i], "level_seed": s
                }
            self._episode_return[done_idx] = 0.0
            self._episode_length[done_idx] = 0
        return obs, rewards, dones, infos

    def _reset_infos(self, level_seeds: np.ndarray) -> None:
        self.reset_infos = [
            {"game": g, "level_seed": s}
            for g, s in zip(self.env_games, level_seeds.tolist(), strict=True)
        ]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Per-env attributes: ``game`` (the env's game) and ``render_mode`` (None).

        Anything else raises AttributeError (SB3's ``has_attr`` reads that as "absent").
        """
        idx = list(self._get_indices(indices))
        if attr_name == "game":
            return [self.env_games[i] for i in idx]
        if attr_name == "render_mode":
            return [None for _ in idx]
        raise AttributeError(
            f"{type(self).__name__} has no per-env attribute {attr_name!r}; "
            "per-env attributes: game, render_mode (all envs run inside one vectorised env)"
        )

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise NotImplementedError(
            f"{type(self).__name__} runs all envs in one vectorised env; per-env attributes "
            f"cannot be set (tried {attr_name!r})"
        )

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        raise NotImplementedError(
            f"{type(self).__name__} runs all envs in one vectorised env; there are no per-env "
            f"objects to call {method_name!r} on"
        )

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        """No gym wrapper sits inside: always False (SB3's evaluate_policy asks this)."""
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        raise NotImplementedError(f"{type(self).__name__} does not render; read the obs instead")
