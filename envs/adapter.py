"""Any SB3 VecEnv as a training env: check its spaces, and give it game names and episodes.

The trainer (agents.trainer) needs of an env what the envs of this package provide
(docs/INTERFACES.md): uint8 [64, 64, 3] observations, Discrete actions, `env_games` (env i ->
game) and finished episodes reported in the infos. `as_training_env(env)` returns an env of
this package unchanged and wraps any other VecEnv in `GameNamingVecEnv`, which names every
env's game "env" and reports episodes itself where the env does not.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
from gymnasium import spaces

from envs.base import OBS_SHAPE

with contextlib.redirect_stderr(io.StringIO()):  # gym's import banner (see envs/base.py)
    from stable_baselines3.common.vec_env import VecEnvWrapper


def check_env(env: Any) -> None:
    """ValueError unless env is a VecEnv with uint8 [64, 64, 3] obs and Discrete actions."""
    obs_space = getattr(env, "observation_space", None)
    act_space = getattr(env, "action_space", None)
    if not hasattr(env, "num_envs") or obs_space is None or act_space is None:
        raise ValueError(f"env {type(env).__name__} is not a VecEnv (needs num_envs, "
                         f"observation_space, action_space)")
    if tuple(getattr(obs_space, "shape", ()) or ()) != OBS_SHAPE or \
            np.dtype(getattr(obs_space, "dtype", None)) != np.uint8:
        raise ValueError(f"env observations must be uint8 {list(OBS_SHAPE)}, got "
                         f"{getattr(obs_space, 'dtype', '?')} {getattr(obs_space, 'shape', '?')}")
    if not (isinstance(act_space, spaces.Discrete) or type(act_space).__name__ == "Discrete"):
        raise ValueError(f"env actions must be Discrete, got {act_space}")


def as_training_env(env: Any) -> Any:
    """`env` itself when it carries `env_games`; else `GameNamingVecEnv(env)`. ValueError when
    its spaces do not fit (see `check_env`)."""
    check_env(env)
    if getattr(env, "env_games", None) is not None:
        return env
    return GameNamingVecEnv(env)


class GameNamingVecEnv(VecEnvWrapper):
    """Adds env_games / games ("env") and per-episode statistics ({r, l, game, level_seed} in
    the infos of the step that ends an episode) to a plain VecEnv."""

    def __init__(self, venv: Any) -> None:
        super().__init__(venv)
        self.env_games = ["env"] * self.num_envs
        self.games = ["env"]
        self._ret = np.zeros(self.num_envs, np.float64)
        self._len = np.zeros(self.num_envs, np.int64)
        self._episodes = np.zeros(self.num_envs, np.int64)

    def reset(self) -> Any:
        self._ret[:] = 0.0
        self._len[:] = 0
        return self.venv.reset()

    def step_wait(self) -> Any:
        obs, rewards, dones, infos = self.venv.step_wait()
        self._ret += np.asarray(rewards, np.float64)
        self._len += 1
        infos = [dict(i) for i in infos]
        for i, info in enumerate(infos):
            info.setdefault("game", "env")
            info.setdefault("level_seed", int(self._episodes[i]))
            if dones[i]:
                ep = dict(info.get("episode") or {})
                ep.setdefault("r", float(self._ret[i]))
                ep.setdefault("l", int(self._len[i]))
                ep["game"] = "env"
                ep.setdefault("level_seed", int(self._episodes[i]))
                info["episode"] = ep
                self._ret[i], self._len[i] = 0.0, 0
                self._episodes[i] += 1
        return obs, rewards, dones, infos
