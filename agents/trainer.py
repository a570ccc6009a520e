"""The training loop: collect a segment, update the learner, log, checkpoint; until done.

Entry point for any environment::

    from agents.config import TrainConfig
    from agents.trainer import train
    result = train(TrainConfig(algo="ppo", num_envs=8, unroll=32, total_steps=100_000,
                               run_dir="runs/mine"), env=my_vec_env)

`env` may be any Stable-Baselines3 `VecEnv` with uint8 [64, 64, 3] observations and a
`Discrete` action space; `envs.adapter.as_training_env` names a plain VecEnv's games "env" and
reports its finished episodes. Without `env`, `train` builds `envs.make_env(cfg.games,
cfg.num_envs, ...)`.

This module is the loop and its setup only. The pieces live elsewhere: the device, seeds and
signal handling in agents/runtime.py, the run dir checks in agents/run_dir.py, the
checkpoint payload in agents/checkpoint.py, the env adapter in envs/adapter.py, the update
in agents/learners.py.

    train(cfg)  =  _setup (resolve config, run dir, env, policy, learner, restore)
                -> Trainer(...).run(): while not done: collect -> update -> log -> checkpoint

Pipelines (`cfg.pipeline`, resolved against the device: auto = async on CUDA, sync on a CPU):
`sync` runs the loop above strictly in turn (a RolloutCollector; bitwise reproducible);
`async` (agents/pipeline.py) builds `env_groups` envs, an actor thread that collects the next
segment while the learner updates (parameters at most `max_policy_lag` updates old, logged as
charts/policy_lag), and turns an exception in an env group, the actor or the learner into
RunFailed (one line) after saving a checkpoint. The choices are printed at the start.

Stopping and resuming:

- SIGINT (Ctrl-C) or SIGTERM: the current collect + update finishes (async: an update in
  progress finishes; a segment still being collected is dropped), a checkpoint is saved and
  `train` returns with `result.interrupted` = "SIGINT" / "SIGTERM" (train_rl.py then exits 130
  / 143, the shell conventions for those signals). A second Ctrl-C aborts at once (the last
  completed checkpoint stays intact: writes are atomic).
- `train(cfg, resume_from=run_dir_or_checkpoint)`: model, learner (optimizer, lr schedule,
  reward normaliser), step and update counters and RNG states are restored; the env is
  restarted fresh (new episodes, reseeded with seed + global_step so that the level sequence
  does not repeat the first run's) and the core state starts from zeros. TensorBoard points
  after the checkpoint's step (written before a kill) are purged; the checkpoint's own step
  stays. A run dir resumes from its newest intact checkpoint (agents.checkpoint); one with a
  config.json but no checkpoint yet starts again from step 0.

Faults: the memory the run needs is checked before the env is built (agents/resources.py).
A checkpoint is written only when the parameters are finite and one act step on the current
observations gives finite logits (else DivergedError, one line, the last good checkpoint
kept); an env whose core state is non-finite after a segment has it zeroed and counted
(`core/state_resets_nonfinite`). Non-finite updates are skipped in agents/learners.py.

Under torchrun (agents/distributed.py) the same loop runs on every rank with its share of the
envs; the hooks here: `_setup` checks the split and starts the process group (rank 0 owns the
run dir), `train` attaches the learner (gradient all-reduce) and seeds the rank, the loop
agrees on stopping and on time-based checkpoints after every update, `_collect_and_update`
counts every rank's steps and episodes, `_log` averages the metrics over the ranks, `_save`
gathers every rank's RNG state and only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import checkpoint as ckpt
from . import distributed
from .config import TrainConfig
from .errors import ConfigError, RunFailed, one_line
from .learners import DivergedError, Learner
from .metrics import EpisodeStats, Progress, ScalarWriter
from .pipeline import (
    AsyncPipeline,
    GroupedCollector,
    default_env_groups,
    default_procgen_threads,
    resolve_pipeline,
)
from .resources import check_memory
from .rollout import RolloutCollector
from .run_dir import CONFIG_FILE, TB_DIR, check_new_run_dir, is_restartable, prepare_new_run_dir
from .runtime import env_seed, resolve_device, seed_everything, stop_on_signals

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv

    from policies import ActorCritic

OnUpdate = Callable[[int, dict[str, float]], None]
"""Called after every update with (global_step, metrics)."""


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


@dataclass
class _Setup:
    """A run before its loop: the resolved config, the env, the device, the checkpoint."""

    cfg: TrainConfig
    env: VecEnv
    own_env: bool
    """The env was built here (and is closed here)."""
    device: torch.device
    payload: dict[str, Any] | None
    """The checkpoint resumed from, or None."""
    world: distributed.World = distributed.SINGLE
    sync: distributed.Sync | None = None
    """The collectives of a torch.distributed run (None: a single process)."""
    pipeline: str = "sync"
    """The resolved pipeline: sync | async."""
    groups: list[Any] | None = None
    """Async: the env groups (their envs in order are the run's envs); None for sync."""
    procgen_threads: int = 0
    """ProcGen threads per env (group) used (0: ProcGen's default)."""

    def close_envs(self) -> None:
        if self.own_env:
            for env in self.groups or [self.env]:
                env.close()

    def describe(self) -> str:
        """One line: the pipeline, env groups, ProcGen threads, lag bound (printed at start
        as `train: pipeline: ...`; dry_run's "pipeline")."""
        cfg = self.cfg
        how = f"auto on {self.device.type}" if cfg.pipeline == "auto" else "chosen"
        line = f"{self.pipeline} ({how})"
        if self.pipeline == "async":
            groups = self.groups or [self.env]
            line += (f"; env groups: {len(groups)} x {groups[0].num_envs} envs; max policy "
                     f"lag: {cfg.max_policy_lag}")
        if _is_procgen(cfg):
            line += (f"; procgen threads: {self.procgen_threads or 'ProcGen default'}"
                     + (" per group" if self.pipeline == "async" else ""))
        return line + f"; {os.cpu_count()} CPU cores"


# ---------------------------------------------------------------------- setup
def build_env(cfg: TrainConfig, global_step: int = 0,
              world: distributed.World = distributed.SINGLE, *, num_envs: int | None = None,
              seed_offset: int = 0, procgen_threads: int | None = None) -> VecEnv:
    """envs.make_env for a resolved config (ValueError from envs -> ConfigError); under
    torch.distributed this rank's share of the envs, with the rank's seed. `num_envs` /
    `seed_offset` build one env group of the async pipeline; `procgen_threads` (default:
    cfg.procgen_threads; 0 = ProcGen's default) sets ProcGen's num_threads."""
    from envs import make_env

    kwargs = dict(cfg.task_kwargs)
    threads = cfg.procgen_threads if procgen_threads is None else procgen_threads
    if threads and _is_procgen(cfg):
        kwargs.setdefault("num_threads", int(threads))
    seed = (env_seed(distributed.rank_seed(cfg.seed, world.rank), global_step)
            + seed_offset) % (2**31 - 1)
    try:
        return make_env(cfg.games,
                        distributed.local_num_envs(cfg, world) if num_envs is None else num_envs,
                        distribution_mode=cfg.distribution_mode, num_levels=cfg.num_levels,
                        start_level=cfg.start_level, seed=seed, **kwargs)
    except ValueError as e:
        raise ConfigError(one_line(e)) from None


GROUP_SEED_STRIDE = 1_000_003
"""Env group g of the async pipeline is seeded with the run's env seed + g * this."""


def build_env_groups(cfg: TrainConfig, global_step: int, groups: int,
                     procgen_threads: int) -> list[VecEnv]:
    """The async pipeline's `groups` envs of num_envs / groups each (group 0 = build_env's
    seed; env i of group g is env g * n + i of the run, playing game i mod G as before)."""
    out: list[VecEnv] = []
    try:
        for g in range(groups):
            out.append(build_env(cfg, global_step, num_envs=cfg.num_envs // groups,
                                 seed_offset=g * GROUP_SEED_STRIDE,
                                 procgen_threads=procgen_threads))
    except BaseException:
        for env in out:
            env.close()
        raise
    return out


def _is_procgen(cfg: TrainConfig) -> bool:
    from envs import SYNTHETIC_TASKS

    return bool(cfg.games) and cfg.games[0] not in SYNTHETIC_TASKS and cfg.games != ["env"]


def _training_env(env: Any) -> VecEnv:
    from envs.adapter import as_training_env

    try:
        return as_training_env(env)
    except ValueError as e:
        raise ConfigError(one_line(e)) from None


def _bind_env(cfg: TrainConfig, env: VecEnv) -> TrainConfig:
    """Resolve cfg against a caller-supplied env: games and num_envs come from the env."""
    env = _training_env(env)
    cfg = TrainConfig.from_dict(cfg.to_dict())
    cfg.games = list(getattr(env, "games", None) or dict.fromkeys(env.env_games))
    if cfg.num_envs is None:
        cfg.num_envs = int(env.num_envs)
    elif int(cfg.num_envs) != int(env.num_envs):
        raise ConfigError(f"num_envs {cfg.num_envs} does not match the env's {env.num_envs}")
    return cfg.resolved(check_games=False)


def build_policy_and_learner(cfg: TrainConfig, num_actions: int, device: torch.device
                             ) -> tuple[ActorCritic, Learner]:
    """Policy (on device) and learner for a resolved config."""
    from policies import build_actor_critic

    from .learners import make_learner

    policy = build_actor_critic(cfg.model, num_actions).to(device)
    try:
        learner = make_learner(cfg.algo, policy, num_envs=cfg.num_envs, unroll=cfg.unroll,
                               total_steps=cfg.total_steps, device=device, ppo_cfg=cfg.ppo,
                               vtrace_cfg=cfg.vtrace)
    except ValueError as e:
        raise ConfigError(one_line(e)) from None
    return policy, learner


def _setup(cfg: TrainConfig, env: VecEnv | None, resume_from: str | os.PathLike | None,
           create_run_dir: bool, world: distributed.World = distributed.SINGLE) -> _Setup:
    """Resolve the config, check the run dir, read the checkpoint, build or wrap the env.
    Under torch.distributed (world): check the split over the ranks, start the process
    group; rank 0 checks and creates the run dir and every rank learns the outcome."""
    own_env = env is None
    if world.distributed and not own_env:
        raise ConfigError("a caller-supplied env cannot be used under torch.distributed; "
                          "let train() build each rank's envs from the config")
    cfg = cfg.resolved() if own_env else _bind_env(cfg, env)
    if cfg.run_dir is None:
        raise ConfigError("run_dir is not set")
    distributed.check_config(cfg, world)
    device = distributed.rank_device(resolve_device(cfg.device), world)
    check_memory(distributed.local_config(cfg, world), device, own_env)
    if world.distributed and cfg.pipeline == "async":
        raise ConfigError("pipeline async is not supported under torch.distributed yet "
                          "(valid there: sync, auto = sync)")
    pipeline = "sync" if world.distributed else resolve_pipeline(cfg.pipeline, device)
    if pipeline == "async" and cfg.algo == "vtrace" and cfg.vtrace.actor_lag:
        raise ConfigError("vtrace.actor_lag 1 emulates a lag in the sync pipeline; with "
                          "pipeline async use max_policy_lag (valid actor_lag there: 0)")
    if pipeline == "async" and not own_env and cfg.env_groups > 1:
        raise ConfigError(f"env_groups {cfg.env_groups} needs the envs built by train(); "
                          f"a supplied env is one group (valid: 0, 1)")
    payload = None
    if resume_from is not None:
        if not is_restartable(resume_from):  # else: a run dir without checkpoint, from step 0
            payload = ckpt.load_checkpoint(resume_from, map_location="cpu")
        if not Path(cfg.run_dir).is_dir():
            raise ConfigError(f"run dir {cfg.run_dir!r} does not exist")
    sync = distributed.start(world, device)
    try:
        error = None
        if resume_from is None and world.is_main:
            try:
                if create_run_dir:
                    prepare_new_run_dir(cfg.run_dir)
                else:
                    check_new_run_dir(cfg.run_dir)
            except ConfigError as e:
                if sync is None:
                    raise
                error = str(e)
        if sync is not None:
            sync.agree(error)
        global_step = int(payload["global_step"]) if payload else 0
        if pipeline == "sync":
            env = build_env(cfg, global_step, world) if own_env else _training_env(env)
            return _Setup(cfg, env, own_env, device, payload, world, sync,
                          procgen_threads=cfg.procgen_threads)
        if not own_env:
            env = _training_env(env)
            return _Setup(cfg, env, own_env, device, payload, pipeline="async", groups=[env])
        groups = cfg.env_groups or default_env_groups(cfg.num_envs, len(cfg.games))
        threads = cfg.procgen_threads or (default_procgen_threads(groups) if _is_procgen(cfg)
                                          else 0)
        envs = build_env_groups(cfg, global_step, groups, threads)
        return _Setup(cfg, envs[0], own_env, device, payload, pipeline="async", groups=envs,
                      procgen_threads=threads)
    except BaseException:
        distributed.stop(sync)
        raise


def dry_run(cfg: TrainConfig, env: VecEnv | None = None, *,
            resume_from: str | os.PathLike | None = None) -> dict[str, Any]:
    """Resolve and check everything train() would (config, run dir, env, model, learner,
    checkpoint) without writing anything; returns a summary."""
    s = _setup(cfg, env, resume_from, create_run_dir=False)
    cfg, payload = s.cfg, s.payload
    try:  # under torchrun: would the config split over the ranks? (no process group here)
        distributed.check_config(cfg, distributed.world_from_env())
    except ConfigError:
        if s.own_env:
            s.env.close()
        raise
    try:
        policy, learner = build_policy_and_learner(cfg, int(s.env.action_space.n), s.device)
        if payload is not None:
            ckpt.restore(policy, learner, payload)
    finally:
        s.close_envs()
    return {
        "run_dir": cfg.run_dir, "preset": cfg.preset, "games": ",".join(cfg.games),
        "algo": cfg.algo, "core": cfg.model.core, "state_reset": cfg.state_reset,
        "num_envs": cfg.num_envs, "unroll": cfg.unroll, "steps_per_update": cfg.steps_per_update,
        "total_steps": cfg.total_steps, "num_updates": cfg.num_updates,
        "resume_from": payload["path"] if payload else None,
        "start_step": int(payload["global_step"]) if payload else 0,
        "distribution_mode": cfg.distribution_mode, "num_levels": cfg.num_levels,
        "start_level": cfg.start_level, "device": str(s.device), "pipeline": s.describe(),
        "parameters": sum(p.numel() for p in policy.parameters()),
    }


def train(cfg: TrainConfig, env: VecEnv | None = None, *,
          resume_from: str | os.PathLike | None = None, progress: bool = True,
          on_update: OnUpdate | None = None) -> TrainResult:
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
    t_start = time.perf_counter()
    world = distributed.world_from_env()
    seed_everything(cfg.seed)
    s = _setup(cfg, env, resume_from, create_run_dir=True, world=world)
    cfg, payload = s.cfg, s.payload
    try:
        seed_everything(cfg.seed)
        policy, learner = build_policy_and_learner(cfg, int(s.env.action_space.n), s.device)
        if payload is not None:
            ckpt.restore(policy, learner, payload)
            ckpt.set_rng_state(payload["rng"])
        if s.sync is not None:
            distributed.attach(learner, s.sync)
            distributed.seed_rank(world, cfg.seed, payload)
        if world.is_main:
            ckpt.atomic_write_json(Path(cfg.run_dir) / CONFIG_FILE,
                                   {**cfg.to_dict(), "world_size": world.world_size})
        if progress and world.is_main:
            print(f"train: pipeline: {s.describe()}", file=sys.stderr, flush=True)
        lifetime_seed = env_seed(distributed.rank_seed(cfg.seed, world.rank),
                                 int(payload["global_step"]) if payload else 0) + 1
        pipeline = None
        if s.pipeline == "sync":
            collector: RolloutCollector | GroupedCollector = RolloutCollector(
                s.env, learner.acting_policy, cfg.unroll, cfg.state_reset, s.device,
                state_lifetime=cfg.state_lifetime, lifetime_seed=lifetime_seed)
        else:
            # the actor thread samples from a generator of its own (seeded like the lifetime
            # draws): the learner's draws from the global one then do not depend on timing
            collector = GroupedCollector(s.groups or [s.env], policy, cfg.unroll,
                                         cfg.state_reset, s.device,
                                         state_lifetime=cfg.state_lifetime,
                                         lifetime_seed=lifetime_seed,
                                         sample_seed=lifetime_seed + 1)
            pipeline = AsyncPipeline(collector, policy, cfg.max_policy_lag)
        trainer = Trainer(cfg, policy, learner, collector, num_actions=int(s.env.action_space.n),
                          global_step=int(payload["global_step"]) if payload else 0,
                          update=int(payload.get("update", 0)) if payload else 0,
                          elapsed_before=float(payload.get("elapsed_s", 0.0)) if payload else 0.0,
                          t_start=t_start, progress=progress and world.is_main,
                          on_update=on_update, sync=s.sync, pipeline=pipeline)
        return trainer.run()
    finally:
        s.close_envs()
        distributed.stop(s.sync)


# ---------------------------------------------------------------------- the loop
class Trainer:
    """collect -> update -> log -> checkpoint, until total_steps or a signal.

    One call site each: `_collect` (the rollout), `learner.update`, `_log`, `_save`.
    With `pipeline` (an AsyncPipeline) the rollouts come from its actor thread instead of
    `collector.collect()`.
    """

    def __init__(self, cfg: TrainConfig, policy: ActorCritic, learner: Learner,
                 collector: RolloutCollector | GroupedCollector, *, num_actions: int,
                 global_step: int = 0, update: int = 0, elapsed_before: float = 0.0,
                 t_start: float | None = None, progress: bool = True,
                 on_update: OnUpdate | None = None, sync: distributed.Sync | None = None,
                 pipeline: AsyncPipeline | None = None) -> None:
        from envs import score_mode

        self.cfg, self.policy, self.learner, self.collector = cfg, policy, learner, collector
        self.pipeline = pipeline
        self.num_actions = int(num_actions)
        self.run_dir = Path(cfg.run_dir)
        self.global_step, self.update = int(global_step), int(update)
        self.elapsed_before = float(elapsed_before)
        self.t_start = time.perf_counter() if t_start is None else t_start
        self.progress, self.on_update = progress, on_update
        self.sync = sync
        """torch.distributed collectives (None: one process); only rank 0 writes files."""
        self.world = sync.world if sync is not None else distributed.SINGLE
        self.stats = EpisodeStats(cfg.games, score_mode(cfg.distribution_mode), cfg.task_kwargs)
        self.state_resets_nonfinite = 0
        self._probe: Any = None

    def run(self) -> TrainResult:
        cfg = self.cfg
        # on resume, drop the points logged after the checkpoint's step (keep its own step)
        resumed = self.global_step > 0 or (self.run_dir / TB_DIR).exists()
        writer: Any = (ScalarWriter(self.run_dir / TB_DIR,
                                    purge_step=self.global_step + 1 if resumed else None)
                       if self.world.is_main else _NoWriter())
        bar = Progress(cfg.total_steps, self.global_step, enabled=self.progress)
        if self.global_step == 0:
            writer.text("config", "```\n" + json.dumps(cfg.to_dict(), indent=2) + "\n```")
        step0, t_loop = self.global_step, time.perf_counter()
        self._window: dict[str, list[float]] = {}
        self._t_window, self._steps_window = time.perf_counter(), 0
        self._last_path: Path | None = None
        self._last_ckpt_step = self.global_step
        interrupted = None
        failure: RunFailed | None = None
        try:
            with stop_on_signals() as stop:
                if self.pipeline is not None:
                    self.pipeline.start()
                try:
                    self._loop(stop, bar, writer)
                except RunFailed as e:
                    failure = e
                last_path, last_ckpt_step = self._last_path, self._last_ckpt_step
                if self.pipeline is not None:
                    self.pipeline.close()  # no thread outlives the loop
                interrupted = stop["signal"] if self.sync is None else self._agreed
                if interrupted is not None and failure is None:
                    bar.write(f"received {interrupted}: saving a checkpoint at step "
                              f"{self.global_step}")
                if last_ckpt_step != self.global_step or last_path is None:
                    last_path = self._save()
        except DivergedError as e:
            raise DivergedError(f"{e}; {self._kept()}") from None
        finally:
            if self.pipeline is not None:
                self.pipeline.close()
            writer.flush()
            writer.close()
            bar.update(self.global_step, self.stats.recent_mean_return(),
                       self.stats.recent_mean_score(), force_line=True)
            bar.close()
        if failure is not None:
            raise RunFailed(f"{failure}; checkpoint of step {self.global_step}: {last_path}"
                            ) from failure
        elapsed = time.perf_counter() - self.t_start
        loop_s = time.perf_counter() - t_loop
        return TrainResult(
            run_dir=self.run_dir, global_step=self.global_step, updates=self.update,
            checkpoint=last_path, interrupted=interrupted, episodes=self.stats.total_episodes,
            recent_return=self.stats.recent_mean_return(),
            recent_score=self.stats.recent_mean_score(), elapsed_s=elapsed,
            sps=(self.global_step - step0) / loop_s if loop_s > 0 else 0.0,
        )

    def _loop(self, stop: dict[str, str | None], bar: Progress, writer: ScalarWriter) -> None:
        """Updates until total_steps or a signal, with the periodic checkpoints (the last one
        written is kept in self._last_path / self._last_ckpt_step)."""
        cfg = self.cfg
        self._last_path, self._last_ckpt_step = None, self.global_step
        last_ckpt_time = time.monotonic()
        next_ckpt_step = _next_multiple(self.global_step, cfg.checkpoint_every_steps)
        self._agreed: str | None = None  # the signal every rank acts on (distributed)
        while self.global_step < cfg.total_steps and (
                stop["signal"] if self.sync is None else self._agreed) is None:
            metrics = self._collect_and_update(lambda: stop["signal"] is not None)
            if metrics is None:  # async: a signal came while waiting for a segment
                break
            self._log(metrics, writer)
            bar.update(self.global_step, self.stats.recent_mean_return(),
                       self.stats.recent_mean_score())
            if self.on_update is not None:
                self.on_update(self.global_step, metrics)
            due_steps = (cfg.checkpoint_every_steps
                         and self.global_step >= next_ckpt_step)
            due_time = (cfg.checkpoint_every_minutes
                        and time.monotonic() - last_ckpt_time
                        >= 60.0 * cfg.checkpoint_every_minutes)
            if self.sync is not None:  # every rank stops / saves after the same update
                self._agreed, due_time = self.sync.agree_stop(stop["signal"], bool(due_time))
            if (due_steps or due_time) and self.global_step < cfg.total_steps:
                self._last_path = self._save()
                self._last_ckpt_step, last_ckpt_time = self.global_step, time.monotonic()
                next_ckpt_step = _next_multiple(self.global_step, cfg.checkpoint_every_steps)

    def _collect_and_update(self, should_stop: Callable[[], bool] | None = None
                            ) -> dict[str, float] | None:
        """One segment and one update; counts steps and episodes; returns the metrics (None:
        the async pipeline was asked to stop while waiting for a segment)."""
        if self.pipeline is not None:
            return self._next_and_update(should_stop)
        t0 = time.perf_counter()
        try:
            rollout = self.collector.collect()
        except ValueError:  # e.g. Categorical refusing NaN logits: say why, in one line
            problem = _poisoned_policy(self.policy, self._probe)
            if problem:
                raise DivergedError(f"training diverged at step {self.global_step}: "
                                    f"{problem}") from None
            raise
        self._reset_nonfinite_state(rollout)
        t1 = time.perf_counter()
        metrics = dict(self.learner.update(rollout))
        t2 = time.perf_counter()
        steps, episodes = int(rollout.env_steps), rollout.episodes
        if self.sync is not None:  # every rank's steps and episodes
            steps *= self.world.world_size
            episodes = [ep for part in self.sync.gather_objects(episodes) for ep in part]
        self.global_step += steps
        self.update += 1
        self._steps_window += steps
        self.stats.add(episodes)
        metrics["charts/time_collect_s"] = t1 - t0
        metrics["charts/time_update_s"] = t2 - t1
        metrics["core/state_resets_nonfinite"] = float(self.state_resets_nonfinite)
        return metrics

    def _next_and_update(self, should_stop: Callable[[], bool] | None = None
                         ) -> dict[str, float] | None:
        """The async pipeline's turn: the next segment from the actor thread, the update, the
        new parameters handed back to the actor; the lag and the actor's timing logged."""
        assert self.pipeline is not None
        t0 = time.perf_counter()
        got = self.pipeline.next_rollout(should_stop)
        if got is None:
            return None
        rollout, lag, timing = got
        self._probe = rollout.bootstrap  # what the checkpoint guard acts on
        t1 = time.perf_counter()
        try:
            metrics = dict(self.learner.update(rollout))
        except DivergedError:
            raise  # the finite-value guard's own one-line report (Trainer.run)
        except Exception as e:
            raise RunFailed(f"learner failed at update {self.update + 1}: "
                            f"{type(e).__name__}: {one_line(e)}") from e
        self.pipeline.publish()
        t2 = time.perf_counter()
        self.global_step += int(rollout.env_steps)
        self.update += 1
        self._steps_window += int(rollout.env_steps)
        self.stats.add(rollout.episodes)
        metrics["charts/policy_lag"] = float(lag)
        metrics["charts/time_wait_s"] = t1 - t0
        metrics["charts/time_update_s"] = t2 - t1
        metrics["charts/time_collect_s"] = timing.total_s
        metrics["charts/time_act_s"] = timing.act_s
        metrics["charts/time_env_wait_s"] = timing.env_wait_s
        metrics["charts/time_param_wait_s"] = timing.param_wait_s
        metrics["core/state_resets_nonfinite"] = float(self.collector.nonfinite_resets)
        return metrics

    def _reset_nonfinite_state(self, rollout: Any) -> None:
        """Zero (and count) the core state of every env whose state holds a NaN / inf, in the
        collector (the next segment) and in the segment's bootstrap."""
        from policies.state import reset_state

        self._probe = rollout.bootstrap  # what the checkpoint guard acts on
        state = rollout.bootstrap.state
        bad = [~torch.isfinite(s).reshape(s.shape[0], -1).all(dim=1) for s in state]
        if not bad:
            return
        bad_envs = torch.stack(bad).any(dim=0)
        n = int(bad_envs.sum())
        if n:
            self.state_resets_nonfinite += n
            rollout.bootstrap.state = self.collector._state = reset_state(state, bad_envs)

    def _log(self, metrics: dict[str, float], writer: ScalarWriter) -> None:
        """Average the metrics over the updates since the last write; write every log_every
        updates and after the last one."""
        for k, v in metrics.items():
            self._window.setdefault(k, []).append(float(v))
        if self.update % self.cfg.log_every == 0 or self.global_step >= self.cfg.total_steps:
            dt = time.perf_counter() - self._t_window
            scalars = {k: sum(v) / len(v) for k, v in self._window.items()}
            if self.sync is not None:
                scalars = self.sync.mean_scalars(scalars)
            scalars["charts/sps"] = self._steps_window / dt if dt > 0 else 0.0
            scalars["charts/updates"] = float(self.update)
            scalars.update(self.stats.pop_scalars())
            writer.scalars(scalars, self.global_step)
            self._window, self._t_window, self._steps_window = {}, time.perf_counter(), 0

    def _save(self) -> Path:
        problem = self._poisoned()
        if problem:
            raise DivergedError(f"not writing a checkpoint at step {self.global_step}: "
                                f"{problem}")
        elapsed = self.elapsed_before + time.perf_counter() - self.t_start
        rngs = self.sync.gather_objects(ckpt.rng_state()) if self.sync is not None else None
        if not self.world.is_main:
            self.sync.barrier()  # type: ignore[union-attr]
            return ckpt.checkpoint_path(self.run_dir, self.global_step)
        payload = ckpt.build_payload(self.cfg, self.policy, self.learner,
                                     global_step=self.global_step, update=self.update,
                                     elapsed_s=elapsed, num_actions=self.num_actions,
                                     episodes=self.stats.total_episodes,
                                     world_size=self.world.world_size)
        if rngs is not None:
            payload["rng_ranks"] = rngs
        path = ckpt.save_checkpoint(self.run_dir, payload, keep=self.cfg.keep_checkpoints)
        if self.sync is not None:
            self.sync.barrier()
        return path

    def _poisoned(self) -> str | None:
        return _poisoned_policy(self.policy, self._probe)

    def _kept(self) -> str:
        """Which checkpoint a stopped run leaves behind, for its last line."""
        if ckpt.list_checkpoints(self.run_dir):
            try:
                good = ckpt.load_newest_valid(self.run_dir, warn=lambda message: None)
                return f"the last good checkpoint {good['path']!r} is kept"
            except ckpt.CheckpointError:
                pass
        return ("no good checkpoint was written (--resume restarts from step 0 with the same "
                "config; a new run with a lower --lr needs another --run-dir)")


class _NoWriter:
    """The TensorBoard writer of ranks > 0: writes nothing."""

    def scalars(self, values: Any, step: int) -> None: ...

    def text(self, tag: str, text: str, step: int = 0) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _poisoned_policy(policy: torch.nn.Module, probe: Any) -> str | None:
    """Why the policy must not be saved (non-finite parameters, or non-finite logits of one act
    step on the stored observations `probe`, a rollout Bootstrap), or None."""
    bad = ckpt.nonfinite_tensors(policy.state_dict())
    if bad:
        return f"{len(bad)} parameter tensors are not finite (e.g. {bad[0]})"
    if probe is None:
        return None
    with torch.no_grad():
        logits, value, _ = policy(probe.obs.unsqueeze(0), probe.reward_in.unsqueeze(0),
                                  probe.episode_start.unsqueeze(0), probe.state)
    if not (bool(torch.isfinite(logits).all()) and bool(torch.isfinite(value).all())):
        return "the parameters are finite but a probe act step gives non-finite logits / values"
    return None


def _next_multiple(step: int, every: int) -> int:
    if not every:
        return math.inf  # type: ignore[return-value]
    return (step // every + 1) * every
