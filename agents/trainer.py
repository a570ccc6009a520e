"""The training loop: collect a segment, update the learner, log, checkpoint; resume; signals.

Entry point for any environment (issue 4, item 8)::

    from agents.config import TrainConfig
    from agents.trainer import train
    result = train(TrainConfig(algo="ppo", num_envs=8, unroll=32, total_steps=100_000,
                               run_dir="runs/mine"), env=my_vec_env)

`env` may be any Stable-Baselines3 `VecEnv` with uint8 [64, 64, 3] observations and a
`Discrete` action space. Envs of this package (`envs.make_env`) carry `env_games`; a plain
VecEnv is wrapped by `as_training_env`, which names every env's game "env" and reports
finished episodes itself when the env does not. Without `env`, `train` builds
`envs.make_env(cfg.games, cfg.num_envs, ...)`.

Stopping and resuming:

- SIGINT (Ctrl-C) or SIGTERM: the current collect + update finishes, a checkpoint is saved and
  `train` returns with `result.interrupted` = "SIGINT" / "SIGTERM" (train_rl.py then exits 130
  / 143, the shell conventions for those signals). A second Ctrl-C aborts at once (the last
  completed checkpoint stays intact: writes are atomic).
- `train(cfg, resume_from=run_dir_or_checkpoint)`: model, learner (optimizer, lr schedule,
  reward normaliser), step and update counters and RNG states are restored; the env is
  restarted fresh (new episodes, reseeded with seed + global_step so that the level sequence
  does not repeat the first run's) and the core state starts from zeros. TensorBoard points
  after the checkpoint's step (written before a kill) are purged.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ckpt
from .config import TrainConfig
from .errors import ConfigError, one_line
from .metrics import EpisodeStats, Progress, ScalarWriter


@dataclass
class TrainResult:
    """What a training run ended with."""

    run_dir: Path
    global_step: int
    """Env steps done in total (including those before a resume)."""
    updates: int
    """Updates done in total."""
    checkpoint: Path | None
    """The last checkpoint written."""
    interrupted: str | None
    """"SIGINT" / "SIGTERM" when stopped by a signal, else None."""
    episodes: int
    """Episodes finished during this call."""
    recent_return: float | None
    """Mean over games of the mean return of each game's last 100 episodes."""
    recent_score: float | None
    """The same as a normalized score (None where games have no score range)."""
    elapsed_s: float
    """Seconds of this call."""
    sps: float
    """Env steps per second of this call (collect + update + logging)."""


# ---------------------------------------------------------------------- small helpers
def resolve_device(device: str) -> torch.device:
    """auto -> cuda when available, else cpu; a CUDA device without CUDA -> ConfigError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available here; "
                              f"valid: auto, cpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} does not exist; valid: cuda:0 .. "
                              f"cuda:{torch.cuda.device_count() - 1}")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def env_seed(seed: int, global_step: int) -> int:
    """Seed of the env: cfg.seed for a fresh run, seed + global_step after a resume."""
    return int(seed + global_step) % (2**31 - 1)


def check_new_run_dir(run_dir: str | os.PathLike) -> Path:
    """ConfigError unless run_dir is new (or empty) and can be created; changes nothing."""
    path = Path(run_dir)
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"run dir {str(path)!r} exists and is not a directory; "
                              f"pick another --run-dir")
        if any(path.iterdir()):
            raise ConfigError(f"run dir {str(path)!r} exists and is not empty; use --resume "
                              f"{path} to continue it, or pick another --run-dir")
        parent = path
    else:
        parent = path.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise ConfigError(f"run dir {str(path)!r} cannot be created: {str(parent)!r} is not "
                              f"a directory")
    try:  # a real probe (os.access is always True for root): make and remove a temp dir
        os.rmdir(tempfile.mkdtemp(prefix=".probe_", dir=parent))
    except OSError as e:
        raise ConfigError(f"run dir {str(path)!r} is not writable ({e.strerror or e} in "
                          f"{str(parent)!r})") from None
    return path


def prepare_new_run_dir(run_dir: str | os.PathLike) -> Path:
    """Create run_dir for a fresh run; ConfigError if it is not empty or not writable.

    Nothing existing is modified when this raises.
    """
    path = check_new_run_dir(run_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"run dir {str(path)!r} is not writable ({e.strerror or e})") from None
    return path


def check_env(env: Any) -> None:
    """ConfigError unless env is a VecEnv with uint8 [64, 64, 3] obs and Discrete actions."""
    from gymnasium import spaces

    from envs.base import OBS_SHAPE

    obs_space, act_space = getattr(env, "observation_space", None), getattr(env, "action_space",
                                                                            None)
    if not hasattr(env, "num_envs") or obs_space is None or act_space is None:
        raise ConfigError(f"env {type(env).__name__} is not a VecEnv (needs num_envs, "
                          f"observation_space, action_space)")
    if tuple(getattr(obs_space, "shape", ()) or ()) != OBS_SHAPE or \
            np.dtype(getattr(obs_space, "dtype", None)) != np.uint8:
        raise ConfigError(f"env observations must be uint8 {list(OBS_SHAPE)}, got "
                          f"{getattr(obs_space, 'dtype', '?')} {getattr(obs_space, 'shape', '?')}")
    if not (isinstance(act_space, spaces.Discrete) or type(act_space).__name__ == "Discrete"):
        raise ConfigError(f"env actions must be Discrete, got {act_space}")


def as_training_env(env: Any) -> Any:
    """`env` itself when it carries `env_games`; else a wrapper that names every env's game
    "env" and reports finished episodes ({r, l, game, level_seed}) in the infos."""
    check_env(env)
    if getattr(env, "env_games", None) is not None:
        return env
    return _GameNamingVecEnv(env)


def _make_game_naming_cls() -> type:
    from stable_baselines3.common.vec_env import VecEnvWrapper

    class GameNamingVecEnv(VecEnvWrapper):
        """Adds env_games / games ("env") and per-episode statistics to a plain VecEnv."""

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

    return GameNamingVecEnv


def _GameNamingVecEnv(env: Any) -> Any:  # noqa: N802 (a lazily built class)
    return _make_game_naming_cls()(env)


def _safe(obj: Any) -> Any:
    """Make learner state weights_only-safe: numpy arrays -> tensors, numpy scalars -> python."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        seq = [_safe(v) for v in obj]
        return seq if isinstance(obj, list) else tuple(seq)
    return obj


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[dict[str, str | None]]:
    """Turn the first SIGINT / SIGTERM into a request to stop after the current update; a
    second SIGINT aborts at once. Only in the main thread (signals cannot be caught elsewhere)."""
    flag: dict[str, str | None] = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        flag["signal"] = name
        signal.signal(signal.SIGINT, abort)

    def abort(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    for s in previous:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ---------------------------------------------------------------------- the loop
def build_env(cfg: TrainConfig, global_step: int = 0) -> Any:
    """envs.make_env for a resolved config (ValueError from envs -> ConfigError)."""
    from envs import make_env

    try:
        return make_env(cfg.games, cfg.num_envs, distribution_mode=cfg.distribution_mode,
                        num_levels=cfg.num_levels, start_level=cfg.start_level,
                        seed=env_seed(cfg.seed, global_step), **cfg.task_kwargs)
    except ValueError as e:
        raise ConfigError(one_line(e)) from None


def _bind_env(cfg: TrainConfig, env: Any) -> TrainConfig:
    """Resolve cfg against a caller-supplied env: games and num_envs come from the env."""
    env = as_training_env(env)
    cfg = TrainConfig.from_dict(cfg.to_dict())
    cfg.games = list(getattr(env, "games", None) or dict.fromkeys(env.env_games))
    if cfg.num_envs is None:
        cfg.num_envs = int(env.num_envs)
    elif int(cfg.num_envs) != int(env.num_envs):
        raise ConfigError(f"num_envs {cfg.num_envs} does not match the env's {env.num_envs}")
    return cfg.resolved(check_games=False)


def _build(cfg: TrainConfig, env: Any, device: torch.device) -> tuple[Any, Any]:
    """Policy (on device) and learner for a resolved config and an env."""
    from policies import build_actor_critic

    from .learners import make_learner

    policy = build_actor_critic(cfg.model, int(env.action_space.n)).to(device)
    try:
        learner = make_learner(cfg.algo, policy, num_envs=cfg.num_envs, unroll=cfg.unroll,
                               total_steps=cfg.total_steps, device=device, ppo_cfg=cfg.ppo,
                               vtrace_cfg=cfg.vtrace)
    except ValueError as e:
        raise ConfigError(one_line(e)) from None
    return policy, learner


def _restore(policy: Any, learner: Any, payload: dict[str, Any], device: torch.device) -> None:
    ckpt.load_model_state(policy, payload["model"], payload["path"])
    _load_learner(learner, payload, device)


def _start(cfg: TrainConfig, env: Any, resume_from: Any, create_run_dir: bool
           ) -> tuple[TrainConfig, Any, bool, dict[str, Any] | None, torch.device]:
    """Resolve the config, check the run dir, read the checkpoint, build or wrap the env."""
    own_env = env is None
    cfg = cfg.resolved() if own_env else _bind_env(cfg, env)
    if cfg.run_dir is None:
        raise ConfigError("run_dir is not set")
    device = resolve_device(cfg.device)
    payload = None
    if resume_from is not None:
        payload = ckpt.load_checkpoint(resume_from, map_location="cpu")
        if not Path(cfg.run_dir).is_dir():
            raise ConfigError(f"run dir {cfg.run_dir!r} does not exist")
    elif create_run_dir:
        prepare_new_run_dir(cfg.run_dir)
    else:
        check_new_run_dir(cfg.run_dir)
    global_step = int(payload["global_step"]) if payload else 0
    env = build_env(cfg, global_step) if own_env else as_training_env(env)
    return cfg, env, own_env, payload, device


def dry_run(cfg: TrainConfig, env: Any = None, *, resume_from: str | os.PathLike | None = None
            ) -> dict[str, Any]:
    """Resolve and check everything train() would (config, run dir, env, model, learner,
    checkpoint) without writing anything; returns a summary."""
    cfg, env, own_env, payload, device = _start(cfg, env, resume_from, create_run_dir=False)
    try:
        policy, learner = _build(cfg, env, device)
        if payload is not None:
            _restore(policy, learner, payload, device)
    finally:
        if own_env:
            env.close()
    return {
        "run_dir": cfg.run_dir, "preset": cfg.preset, "games": ",".join(cfg.games),
        "algo": cfg.algo, "core": cfg.model.core, "state_reset": cfg.state_reset,
        "num_envs": cfg.num_envs, "unroll": cfg.unroll, "steps_per_update": cfg.steps_per_update,
        "total_steps": cfg.total_steps, "num_updates": cfg.num_updates,
        "resume_from": payload["path"] if payload else None,
        "start_step": int(payload["global_step"]) if payload else 0,
        "distribution_mode": cfg.distribution_mode, "num_levels": cfg.num_levels,
        "start_level": cfg.start_level, "device": str(device),
        "parameters": sum(p.numel() for p in policy.parameters()),
    }


def train(cfg: TrainConfig, env: Any = None, *, resume_from: str | os.PathLike | None = None,
          progress: bool = True, on_update: Callable[[int, dict[str, float]], None] | None = None
          ) -> TrainResult:
    """Train `cfg` (or continue the run at `resume_from`) and return a TrainResult.

    Args:
        cfg: the run's config (resolved here). On resume: the checkpoint's config, with only
            total_steps / device / checkpoint and logging options changed.
        env: optional SB3 VecEnv to train on instead of `envs.make_env(cfg...)` (not closed
            here; an env built here is closed at the end).
        resume_from: a run dir (its latest checkpoint) or a checkpoint file.
        progress: show the progress bar / lines on stderr.
        on_update: called after every update with (global_step, metrics) (tests, notebooks).

    Raises:
        ConfigError: bad config or run dir. CheckpointError: bad checkpoint to resume from.
    """
    from .rollout import RolloutCollector

    t_start = time.perf_counter()
    seed_everything(cfg.seed)
    cfg, env, own_env, payload, device = _start(cfg, env, resume_from, create_run_dir=True)
    try:
        seed_everything(cfg.seed)
        policy, learner = _build(cfg, env, device)
        if payload is not None:
            _restore(policy, learner, payload, device)
            ckpt.set_rng_state(payload["rng"])
        run_dir = Path(cfg.run_dir)
        ckpt.atomic_write_json(run_dir / "config.json", cfg.to_dict())
        collector = RolloutCollector(env, learner.acting_policy, cfg.unroll, cfg.state_reset,
                                     device)
        global_step = int(payload["global_step"]) if payload else 0
        update = int(payload.get("update", 0)) if payload else 0
        elapsed_before = float(payload.get("elapsed_s", 0.0)) if payload else 0.0
        return _loop(cfg, env, policy, learner, collector, run_dir, global_step, update,
                     elapsed_before, t_start, progress, on_update)
    finally:
        if own_env:
            env.close()


def _load_learner(learner: Any, payload: dict[str, Any], device: torch.device) -> None:
    state = payload.get("learner")
    if state is None:
        raise ckpt.CheckpointError(f"checkpoint {payload['path']!r} has no learner state "
                                   f"(wrong format)")
    try:
        learner.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise ckpt.CheckpointError(f"checkpoint {payload['path']!r}: learner state does not fit "
                                   f"the {learner.algo} learner ({one_line(e)[:200]})"
                                   ) from None


def _checkpoint_payload(cfg: TrainConfig, policy: torch.nn.Module, learner: Any,
                        global_step: int, update: int, elapsed_s: float, num_actions: int,
                        episodes: int) -> dict[str, Any]:
    return {
        "config": cfg.to_dict(),
        "model": policy.state_dict(),
        "learner": _safe(learner.state_dict()),
        "global_step": int(global_step),
        "update": int(update),
        "rng": ckpt.rng_state(),
        "wall_time": time.time(),
        "elapsed_s": float(elapsed_s),
        "num_actions": int(num_actions),
        "torch_version": str(torch.__version__),
        "extra": {"episodes": int(episodes)},
    }


def _loop(cfg: TrainConfig, env: Any, policy: torch.nn.Module, learner: Any, collector: Any,
          run_dir: Path, global_step: int, update: int, elapsed_before: float, t_start: float,
          progress: bool, on_update: Callable[[int, dict[str, float]], None] | None
          ) -> TrainResult:
    """collect -> update -> log -> checkpoint, until total_steps or a signal."""
    from envs import score_mode

    stats = EpisodeStats(cfg.games, score_mode(cfg.distribution_mode), cfg.task_kwargs)
    writer = ScalarWriter(run_dir / "tb", purge_step=global_step if global_step else None)
    bar = Progress(cfg.total_steps, global_step, enabled=progress)
    if global_step == 0:
        writer.text("config", "```\n" + _json(cfg.to_dict()) + "\n```")
    step0, t_loop = global_step, time.perf_counter()
    last_ckpt_step, last_ckpt_time = global_step, time.monotonic()
    next_ckpt_step = _next_multiple(global_step, cfg.checkpoint_every_steps)
    window: dict[str, list[float]] = {}
    t_window, steps_window = time.perf_counter(), 0
    last_path: Path | None = None
    num_actions = int(env.action_space.n)

    def save() -> Path:
        elapsed = elapsed_before + time.perf_counter() - t_start
        payload = _checkpoint_payload(cfg, policy, learner, global_step, update, elapsed,
                                      num_actions, stats.total_episodes)
        return ckpt.save_checkpoint(run_dir, payload, keep=cfg.keep_checkpoints)

    interrupted = None
    try:
        with _stop_on_signals() as stop:
            while global_step < cfg.total_steps and stop["signal"] is None:
                t0 = time.perf_counter()
                rollout = collector.collect()
                t1 = time.perf_counter()
                metrics = dict(learner.update(rollout))
                t2 = time.perf_counter()
                global_step += int(rollout.env_steps)
                update += 1
                steps_window += int(rollout.env_steps)
                stats.add(rollout.episodes)
                metrics["charts/time_collect_s"] = t1 - t0
                metrics["charts/time_update_s"] = t2 - t1
                for k, v in metrics.items():
                    window.setdefault(k, []).append(float(v))
                if update % cfg.log_every == 0 or global_step >= cfg.total_steps:
                    dt = time.perf_counter() - t_window
                    scalars = {k: sum(v) / len(v) for k, v in window.items()}
                    scalars["charts/sps"] = steps_window / dt if dt > 0 else 0.0
                    scalars["charts/updates"] = float(update)
                    scalars.update(stats.pop_scalars())
                    writer.scalars(scalars, global_step)
                    window, t_window, steps_window = {}, time.perf_counter(), 0
                bar.update(global_step, stats.recent_mean_return(), stats.recent_mean_score())
                if on_update is not None:
                    on_update(global_step, metrics)
                due_steps = cfg.checkpoint_every_steps and global_step >= next_ckpt_step
                due_time = (cfg.checkpoint_every_minutes
                            and time.monotonic() - last_ckpt_time
                            >= 60.0 * cfg.checkpoint_every_minutes)
                if (due_steps or due_time) and global_step < cfg.total_steps:
                    last_path = save()
                    last_ckpt_step, last_ckpt_time = global_step, time.monotonic()
                    next_ckpt_step = _next_multiple(global_step, cfg.checkpoint_every_steps)
            interrupted = stop["signal"]
            if interrupted is not None:
                bar.write(f"received {interrupted}: saving a checkpoint at step {global_step}")
            if last_ckpt_step != global_step or last_path is None:
                last_path = save()
    finally:
        writer.flush()
        writer.close()
        bar.update(global_step, stats.recent_mean_return(), stats.recent_mean_score(),
                   force_line=True)
        bar.close()
    elapsed = time.perf_counter() - t_start
    loop_s = time.perf_counter() - t_loop
    return TrainResult(
        run_dir=run_dir, global_step=global_step, updates=update, checkpoint=last_path,
        interrupted=interrupted, episodes=stats.total_episodes,
        recent_return=stats.recent_mean_return(), recent_score=stats.recent_mean_score(),
        elapsed_s=elapsed, sps=(global_step - step0) / loop_s if loop_s > 0 else 0.0,
    )


def _next_multiple(step: int, every: int) -> int:
    if not every:
        return math.inf  # type: ignore[return-value]
    return (step // every + 1) * every


def _json(d: dict[str, Any]) -> str:
    import json

    return json.dumps(d, indent=2)
