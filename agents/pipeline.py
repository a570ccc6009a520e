"""The async training pipeline: env groups stepped in threads, collection beside the update.

`--pipeline async` (the default on CUDA) replaces the trainer's strict collect -> update turn
with two overlaps, both built on Python threads (ProcGen steps in its own C++ threads and
releases the GIL while it does; torch releases it inside its kernels):

1. Double-buffered sampling (`GroupedCollector`). The envs are split into `env_groups`
   VecEnvs of equal size. Each group's `env.step` runs on its own worker thread; while group
   g steps, the policy acts on group g+1. One segment (`unroll` steps of every env) is
   assembled into the same `Rollout` as the sync `RolloutCollector` returns, envs in order
   (group 0's first). The state bookkeeping is the sync collector's, step for step: the
   reset mask from `episode_start_mask` plus the state-lifetime resets (one uniform per env
   per step from the collector's own generator, drawn for all envs in the same order), the
   reward input, the carried detached core state, the bootstrap. With one group and the
   same env it gives exactly the sync collector's rollouts (tests/agents/test_pipeline.py
   checks both with a counting core).

2. The learner's update overlapped with collection (`AsyncPipeline`). An actor thread
   collects segment k with a private copy of the policy whose parameters are those after
   update v; segment k is consumed by update k, so its lag is k - v. The schedule is fixed:
   segment k is collected with the parameters of update max(0, k - max_policy_lag), waiting
   for them if the learner is behind, so the lag is exactly min(k, max_policy_lag) however
   fast either side runs (0: collection waits for every update, only the env groups overlap;
   1: the next segment is collected while the learner updates on this one). Taking the newest
   parameters instead would lower the lag now and then, at the price of a run that depends
   on thread timing. The learner publishes a copy of its parameters after every update. The
   lag each update sees is returned with its rollout and logged as `charts/policy_lag` (the
   importance ratio pi/mu is `losses/importance_ratio`).

Reproducibility. The actor samples its actions from the collector's own generator
(`sample_seed`), the learner draws from torch's global one, the env groups are stepped and
assembled in a fixed order and the lag schedule does not depend on timing: two async runs
with the same config and seed give the same parameters, bit for bit, on the same machine and
thread count (tests/agents/test_pipeline.py checks it with the learner slowed down in one).
They differ from a sync run (the lag, and the actions' random stream). A resumed run seeds the
actor's generator afresh, like the lifetime draws and the envs, from the seed and the step it
resumes at: it continues the interrupted run, but not bit for bit.

Failures and stopping. An exception in an env group or the actor thread is carried to the
learner thread, which raises `RunFailed` with one line naming where it happened; the trainer
saves a checkpoint, closes the pipeline (the actor and env threads are joined: none is left
running) and re-raises. `close()` asks the actor to stop at its next step (a segment in
progress is dropped; only consumed segments count as env steps).

Acting step. Observations are uploaded once per group and step as uint8 (from a pinned
buffer with non_blocking on CUDA); the actions come back in one device-to-host copy per
group and step.
"""

from __future__ import annotations

import copy
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from policies.state import State, cat_state, detach_state, index_state

from .errors import RunFailed, one_line
from .rollout import Bootstrap, Rollout, check_state_reset, episode_start_mask, policy_device


def resolve_pipeline(pipeline: str, device: torch.device) -> str:
    """auto -> async on CUDA, sync elsewhere; sync / async unchanged."""
    if pipeline == "auto":
        return "async" if device.type == "cuda" else "sync"
    return pipeline


def default_env_groups(num_envs: int, num_games: int) -> int:
    """2 when num_envs splits into two halves of whole multiples of the games, else 1."""
    return 2 if num_envs % 2 == 0 and (num_envs // 2) % max(1, num_games) == 0 else 1


def default_procgen_threads(env_groups: int, cpu_count: int | None = None) -> int:
    """ProcGen threads per group for the async pipeline: the cores shared by the groups."""
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return max(1, cores // max(1, env_groups))


class EnvGroupError(RuntimeError):
    """An env group's step raised (the original exception is the cause)."""


def _step_group(g: _Group, actions: np.ndarray) -> Any:
    try:
        return g.env.step(actions)
    except Exception as e:
        raise EnvGroupError(f"env group of envs {g.lo}..{g.hi - 1}: {type(e).__name__}: "
                            f"{one_line(e)}") from e


class _Stopped(Exception):
    """Raised inside collect() when the pipeline is closing."""


@dataclass
class _Group:
    env: Any
    lo: int
    hi: int
    obs: torch.Tensor | None = None
    reward_in: torch.Tensor | None = None
    prev_done: torch.Tensor | None = None
    lifetime_reset: torch.Tensor | None = None
    state: State | None = None
    pending: Future | None = None
    pinned: torch.Tensor | None = None


@dataclass
class CollectTiming:
    """Seconds of one segment in the actor thread."""

    act_s: float = 0.0
    """Policy forward and sampling, action download included."""
    env_wait_s: float = 0.0
    """Blocked waiting for an env group's step (env time not hidden behind acting)."""
    total_s: float = 0.0
    param_wait_s: float = 0.0
    """Waiting for the learner before the segment could start (the lag bound)."""
    extra: dict[str, float] = field(default_factory=dict)


class GroupedCollector:
    """`RolloutCollector` over several VecEnvs (env groups), double-buffered.

    Same arguments as `RolloutCollector`, with `envs` a list of VecEnvs whose envs, in order,
    are the B envs of the rollout, and `sample_seed`: when given, actions are sampled from a
    generator of this collector's own (None: torch's global one, as the sync collector).
    `collect(should_stop)` returns one Rollout of `unroll` steps; `should_stop()` is polled
    every step (raises `_Stopped`).
    """

    def __init__(self, envs: Sequence[Any], policy: torch.nn.Module, unroll: int,
                 state_reset: str = "never", device: torch.device | str | None = None,
                 greedy: bool = False, state_lifetime: float = 0.0,
                 lifetime_seed: int = 0, sample_seed: int | None = None) -> None:
        if int(unroll) < 1:
            raise ValueError(f"unroll must be >= 1, got {unroll}")
        if not (state_lifetime == 0 or state_lifetime >= 1):
            raise ValueError(f"state_lifetime must be 0 (no lifetime) or >= 1 episode, got "
                             f"{state_lifetime}")
        if not envs:
            raise ValueError("no env groups given")
        self.state_lifetime = float(state_lifetime)
        self._lifetime_rng = np.random.default_rng(int(lifetime_seed))
        self.envs = list(envs)
        self.policy = policy
        self.unroll = int(unroll)
        self.state_reset = check_state_reset(state_reset)
        self.greedy = bool(greedy)
        self.device = torch.device(device) if device is not None else policy_device(policy)
        self._sample_gen: torch.Generator | None = None
        if sample_seed is not None:
            self._sample_gen = torch.Generator(device=self.device)
            self._sample_gen.manual_seed(int(sample_seed))
        self.groups: list[_Group] = []
        lo = 0
        for env in self.envs:
            n = int(env.num_envs)
            self.groups.append(_Group(env, lo, lo + n))
            lo += n
        self.num_envs = lo
        self._pool = ThreadPoolExecutor(max_workers=len(self.groups),
                                        thread_name_prefix="env-group")
        self.timing = CollectTiming()
        self.nonfinite_resets = 0
        """Envs whose carried state was zeroed for holding a NaN / inf (all segments)."""
        self.reset()

    # ------------------------------------------------------------------ setup
    def reset(self) -> None:
        """Reset every group; zero state and reward input; the next obs start episodes."""
        state = detach_state(self.policy.initial_state(self.num_envs, device=self.device))
        for g in self.groups:
            n = g.hi - g.lo
            g.obs = self._upload(g, g.env.reset())
            g.reward_in = torch.zeros(n, device=self.device)
            g.prev_done = torch.ones(n, dtype=torch.bool, device=self.device)
            g.lifetime_reset = torch.zeros(n, dtype=torch.bool, device=self.device)
            g.state = index_state(state, slice(g.lo, g.hi))

    def close(self) -> None:
        """Wait for any env step in flight and stop the worker threads."""
        for g in self.groups:
            if g.pending is not None:
                try:
                    g.pending.result()
                except Exception:  # noqa: BLE001 - already reported by collect()
                    pass
                g.pending = None
        self._pool.shutdown(wait=True)

    def _reset_nonfinite(self, state: State) -> State:
        """Zero (and count in `nonfinite_resets`) the carried state of every env whose state
        holds a NaN / inf, as the sync trainer does between segments."""
        from policies.state import reset_state

        if not state:
            return state
        bad = torch.stack([~torch.isfinite(s).reshape(s.shape[0], -1).all(dim=1)
                           for s in state]).any(dim=0)
        n = int(bad.sum())
        if not n:
            return state
        self.nonfinite_resets += n
        return reset_state(state, bad)

    def _upload(self, g: _Group, array: Any) -> torch.Tensor:
        """uint8 obs -> device: once, from a pinned buffer with non_blocking on CUDA (the
        buffer is reused only after the step's action download, which waits for the copy)."""
        host = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type != "cuda":
            return host.to(self.device)
        if g.pinned is None or g.pinned.shape != host.shape:
            g.pinned = torch.empty(host.shape, dtype=host.dtype, pin_memory=True)
        g.pinned.copy_(host)
        return g.pinned.to(self.device, non_blocking=True)

    def _to_tensor(self, array: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array), device=self.device)

    # ------------------------------------------------------------------ one segment
    @torch.no_grad()
    def collect(self, should_stop: Callable[[], bool] | None = None) -> Rollout:
        """`unroll` steps of every group; carries everything to the next call."""
        T, B, dev = self.unroll, self.num_envs, self.device
        t_start = time.perf_counter()
        timing = CollectTiming()
        init_state = cat_state([g.state for g in self.groups])
        obs = torch.empty((T, B, *self.groups[0].obs.shape[1:]), dtype=self.groups[0].obs.dtype,
                          device=dev)
        rewards_in = torch.empty(T, B, device=dev)
        actions = torch.empty(T, B, dtype=torch.long, device=dev)
        rewards = torch.empty(T, B, device=dev)
        dones = torch.empty(T, B, dtype=torch.bool, device=dev)
        starts = torch.empty(T, B, dtype=torch.bool, device=dev)
        logprobs = torch.empty(T, B, device=dev)
        values = torch.empty(T, B, device=dev)
        episodes: list[dict[str, Any]] = []
        draws: dict[int, torch.Tensor] = {}

        def lifetime_draw(t: int) -> torch.Tensor:
            # one uniform per env per step, for all envs at once, in step order (as the sync
            # collector draws them)
            if t not in draws:
                draw = self._lifetime_rng.random(B) < 1.0 / self.state_lifetime
                draws.clear()
                draws[t] = torch.as_tensor(draw, device=dev)
            return draws[t]

        def begin(g: _Group, t: int) -> None:
            t0 = time.perf_counter()
            sl = slice(g.lo, g.hi)
            start = episode_start_mask(g.prev_done, t, self.state_reset) | g.lifetime_reset
            obs[t, sl] = g.obs
            rewards_in[t, sl] = g.reward_in
            starts[t, sl] = start
            action, logp, value, g.state = self.policy.act(g.obs, g.reward_in, start, g.state,
                                                           greedy=self.greedy,
                                                           generator=self._sample_gen)
            actions[t, sl], logprobs[t, sl], values[t, sl] = action, logp, value
            host_actions = action.cpu().numpy()
            timing.act_s += time.perf_counter() - t0
            g.pending = self._pool.submit(_step_group, g, host_actions)

        def finish(g: _Group, t: int) -> None:
            t0 = time.perf_counter()
            pending, g.pending = g.pending, None
            next_obs, reward, done, infos = pending.result()
            timing.env_wait_s += time.perf_counter() - t0
            sl = slice(g.lo, g.hi)
            rewards[t, sl] = self._to_tensor(reward).to(rewards.dtype)
            dones[t, sl] = self._to_tensor(done).to(torch.bool)
            for info in infos:
                if "episode" in info:
                    episodes.append(dict(info["episode"]))
            g.obs = self._upload(g, next_obs)
            g.prev_done = dones[t, sl].clone()
            if self.state_lifetime > 0:
                g.lifetime_reset = g.prev_done & lifetime_draw(t)[sl]
            g.reward_in = rewards[t, sl].clone()

        try:
            for t in range(T):
                if should_stop is not None and should_stop():
                    raise _Stopped
                for g in self.groups:
                    if t > 0:
                        finish(g, t - 1)
                    begin(g, t)
            for g in self.groups:
                finish(g, T - 1)
        finally:  # never leave an env step running past this call
            for g in self.groups:
                if g.pending is not None:
                    try:
                        g.pending.result()
                    finally:
                        g.pending = None
        for g in self.groups:
            g.state = self._reset_nonfinite(detach_state(g.state))
        final_state = cat_state([g.state for g in self.groups])
        start0 = torch.cat([episode_start_mask(g.prev_done, 0, self.state_reset)
                            | g.lifetime_reset for g in self.groups])
        bootstrap = Bootstrap(obs=torch.cat([g.obs for g in self.groups]),
                              reward_in=torch.cat([g.reward_in for g in self.groups]),
                              episode_start=start0, state=final_state)
        timing.total_s = time.perf_counter() - t_start
        self.timing = timing
        return Rollout(
            obs=obs, rewards_in=rewards_in, actions=actions, rewards=rewards, dones=dones,
            episode_start=starts, logprobs=logprobs, values=values, init_state=init_state,
            bootstrap=bootstrap, episodes=episodes, env_steps=T * B,
        )


_FAILED = object()


class AsyncPipeline:
    """An actor thread that fills a queue with segments collected with lagged parameters.

    `policy` is the learner's (trained) policy; the actor acts with `acting_policy` (a private
    copy made here when not given). Use: `start()`, then per update `next_rollout()` ->
    update -> `publish()`; `close()` at the end (also after a failure).
    """

    def __init__(self, collector: GroupedCollector, policy: torch.nn.Module,
                 max_policy_lag: int = 1, acting_policy: torch.nn.Module | None = None) -> None:
        if int(max_policy_lag) < 0:
            raise ValueError(f"max_policy_lag must be >= 0, got {max_policy_lag}")
        self.collector = collector
        self.policy = policy
        self.max_policy_lag = int(max_policy_lag)
        self.acting_policy = acting_policy or copy.deepcopy(policy)
        self.acting_policy.load_state_dict(policy.state_dict())
        collector.policy = self.acting_policy
        self._snapshots: dict[int, list[torch.Tensor]] = {}
        """Published parameters by version, kept until the actor has loaded them."""
        self._version = 0
        """Updates published (in this call)."""
        self._acting_version = 0
        self._cond = threading.Condition()
        self._queue: queue.Queue = queue.Queue(maxsize=self.max_policy_lag + 1)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._error_where = ""
        self._thread = threading.Thread(target=self._actor, name="actor", daemon=True)
        self.max_lag_seen = 0

    # ------------------------------------------------------------------ actor thread
    def start(self) -> None:
        self._thread.start()

    def _load(self, version: int) -> None:
        """Act with the parameters of update `version` (already published); drop older ones."""
        with self._cond:
            if version != self._acting_version:
                with torch.no_grad():
                    for dst, src in zip(self.acting_policy.state_dict().values(),
                                        self._snapshots[version], strict=True):
                        dst.copy_(src)
                self._acting_version = version
            for v in [v for v in self._snapshots if v <= version]:
                del self._snapshots[v]

    def _actor(self) -> None:
        k = 0
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                version = max(0, k - self.max_policy_lag)
                with self._cond:
                    self._cond.wait_for(lambda v=version: self._stop.is_set()
                                        or self._version >= v)
                if self._stop.is_set():
                    break
                self._load(version)
                waited = time.perf_counter() - t0
                rollout = self.collector.collect(self._stop.is_set)
                timing = self.collector.timing
                timing.param_wait_s = waited
                if not self._put((rollout, version, timing)):
                    break
                k += 1
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - carried to the learner thread
            self._error = e
            self._error_where = "" if isinstance(e, EnvGroupError) else "actor thread: "
            try:
                self._queue.put_nowait(_FAILED)
            except queue.Full:
                pass  # next_rollout finds self._error once the queue is drained

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    # ------------------------------------------------------------------ learner side
    def next_rollout(self, should_stop: Callable[[], bool] | None = None
                     ) -> tuple[Rollout, int, CollectTiming] | None:
        """The next segment, its policy lag (updates) and the actor's timing of it; None when
        `should_stop()` turns true while waiting (a signal: stop without the segment); raises
        RunFailed when the actor or an env group failed."""
        while True:
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                if self._error is not None or not self._thread.is_alive():
                    self._raise_failure()
                if should_stop is not None and should_stop():
                    return None
                continue
            if item is _FAILED:
                self._raise_failure()
            rollout, version, timing = item
            lag = self._version - version
            assert 0 <= lag <= self.max_policy_lag, (lag, self.max_policy_lag)
            self.max_lag_seen = max(self.max_lag_seen, lag)
            rollout.policy_lag = lag  # what PPO's lag_correction acts on
            return rollout, lag, timing

    def _raise_failure(self) -> None:
        e = self._error
        if e is None:
            raise RunFailed("the actor thread stopped without a segment")
        what = one_line(e) if isinstance(e, EnvGroupError) else f"{type(e).__name__}: {one_line(e)}"
        raise RunFailed(f"{self._error_where}{what}") from e

    def publish(self) -> None:
        """After an update: hand the new parameters to the actor (a copy, kept until the
        actor loads it: at most max_policy_lag + 1 copies are held at once)."""
        with self._cond, torch.no_grad():
            self._version += 1
            self._snapshots[self._version] = [t.detach().clone()
                                              for t in self.policy.state_dict().values()]
            self._cond.notify_all()

    def close(self, timeout: float = 60.0) -> None:
        """Stop the actor (a segment in progress is dropped), join it and the env threads."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        while True:  # unblock a put
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread.is_alive() or self._thread.ident is not None:
            self._thread.join(timeout)
        self.collector.close()

    @property
    def threads_alive(self) -> list[str]:
        """Names of this pipeline's threads still running (for tests)."""
        alive = [self._thread.name] if self._thread.is_alive() else []
        alive += [t.name for t in threading.enumerate() if t.name.startswith("env-group")
                  and t.is_alive() and t in getattr(self.collector._pool, "_threads", ())]
        return alive
