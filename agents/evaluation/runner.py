"""Playing evaluation episodes: a vectorised env, one policy, a fixed number of episodes per game.

How episodes are counted (no bias towards short episodes)
---------------------------------------------------------
Taking "the first N episodes that finish" of a game would over-represent short episodes: while
a long episode is still running in one env, other envs finish several short ones and fill the
quota. Instead every env gets a quota fixed BEFORE play starts: the E envs of a game split the
N episodes as evenly as possible (env j of the game, in env order, gets
``N // E + (1 if j < N % E else 0)``), and each env counts exactly its first ``quota`` episodes,
however long they are. Play goes on until every env has filled its quota. The counted episodes
per game are then exactly N, and which episodes count does not depend on their lengths.

An env that has filled its quota keeps stepping (a vectorised env steps all its envs) with
action 0, but the policy is not run for it (its core state is frozen), so finished envs cost
only env time. Envs shown in a video keep playing with the policy while the video records.

The state lifetime follows the agent's training (``never``: carried across episodes;
``episode``: zeroed at every episode start; ``span``: zeroed every ``unroll`` steps), through
the same mask function that the training rollout uses (``agents.rollout.episode_start_mask``),
and the reward input follows the rollout too: the previous step's raw reward, also at the first
observation of an episode (the previous episode's last reward, as in training and TorchBeast).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from agents.rollout import STATE_RESETS, episode_start_mask
from policies.state import State, index_state


@dataclass
class Episode:
    """One counted episode."""

    game: str
    env: int
    """Index of the env in the vectorised env."""
    index: int
    """0-based index of the episode in its env's continuous stream of episodes."""
    ret: float
    length: int
    level_seed: int | None


@dataclass
class PlayResult:
    """Everything one evaluation run collected."""

    episodes: list[Episode]
    metrics: list[dict[str, float]] = field(default_factory=list)
    """Rows ``{"step": t, "env0/<name>": ..., "<name>": ...}``: state metrics of env 0's
    carried state and the mean over the envs still playing, every ``metrics_every`` steps."""
    episode_ends_env0: list[int] = field(default_factory=list)
    """Steps at which env 0's episodes ended (for marking the metric plot)."""
    steps: int = 0
    """Vectorised steps taken."""
    env_steps: int = 0
    """Env steps in which the policy acted (steps x envs still playing)."""
    seconds: float = 0.0
    complete: bool = True
    """False when play stopped at max_steps before every quota was filled."""
    finished_episodes: int = 0
    """Every episode that ended, counted or not."""


def episode_quotas(num_envs: int, episodes: int) -> list[int]:
    """Split ``episodes`` over ``num_envs`` envs as evenly as possible, earlier envs first."""
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    base, extra = divmod(episodes, num_envs)
    return [base + (1 if j < extra else 0) for j in range(num_envs)]


def env_quotas(env_games: list[str], episodes_per_game: int) -> np.ndarray:
    """Per-env quotas [N] so that each game gets exactly ``episodes_per_game`` episodes."""
    quotas = np.zeros(len(env_games), dtype=np.int64)
    for game in dict.fromkeys(env_games):
        idx = [i for i, g in enumerate(env_games) if g == game]
        quotas[idx] = episode_quotas(len(idx), episodes_per_game)
    return quotas


def play(
    policy,
    env,
    *,
    episodes_per_game: int | None = None,
    episodes_per_env: int | None = None,
    reset_at_switch: bool = False,
    greedy: bool = True,
    state_reset: str = "never",
    unroll: int = 1,
    device: torch.device | str = "cpu",
    seed: int = 0,
    metrics_every: int = 1,
    on_frame: Callable[[np.ndarray, int], bool] | None = None,
    video_envs: list[int] | None = None,
    progress: Callable[[int], None] | None = None,
    max_steps: int | None = None,
) -> PlayResult:
    """Play until every game has ``episodes_per_game`` counted episodes (or, with
    ``episodes_per_env``, until every env has that many: a stream env, whose envs each play
    every game of the stream).

    policy: an ActorCritic (``act``, ``initial_state``, ``state_metrics``).
    env: a VecEnv with ``env_games``; it is reset here (seed it when you make it). An
    episode's game is the one its ``info["episode"]`` names (else ``env_games[i]``).
    reset_at_switch: also zero the state at the first observation of a new game, i.e. after a
    step whose info has ``switched`` (envs.stream; the fresh-state baseline).
    on_frame(obs [N, 64, 64, 3] uint8, step) -> keep_recording: called with the observations
    before every step while it returns True.
    progress(n): called with the number of newly counted episodes.
    max_steps: stop after this many vectorised steps even if quotas are unfilled (then
    ``result.complete`` is False; for benchmarks).
    """
    if state_reset not in STATE_RESETS:
        raise ValueError(f"unknown state_reset {state_reset!r}; valid: {', '.join(STATE_RESETS)}")
    if (episodes_per_game is None) == (episodes_per_env is None):
        raise ValueError("give exactly one of episodes_per_game and episodes_per_env")
    name, per = (("episodes_per_game", episodes_per_game) if episodes_per_env is None
                 else ("episodes_per_env", episodes_per_env))
    if per < 1:
        raise ValueError(f"{name} must be >= 1, got {per}")
    device = torch.device(device)
    env_games = list(env.env_games)
    n = len(env_games)
    if episodes_per_env is not None:
        quotas = np.full(n, episodes_per_env, dtype=np.int64)
    else:
        quotas = env_quotas(env_games, episodes_per_game)
    finished = np.zeros(n, dtype=np.int64)
    returns = np.zeros(n, dtype=np.float64)
    lengths = np.zeros(n, dtype=np.int64)
    recording = on_frame is not None
    video_set = np.zeros(n, dtype=bool)
    if recording:
        video_set[list(range(n)) if video_envs is None else video_envs] = True

    torch.manual_seed(seed)
    obs = env.reset()
    state: State = policy.initial_state(n, device=device)
    reward = torch.zeros(n, device=device)
    prev_done = torch.ones(n, dtype=torch.bool)
    switched = torch.zeros(n, dtype=torch.bool)
    result = PlayResult(episodes=[])
    t0 = time.perf_counter()
    step = 0
    with torch.inference_mode():
        while (finished < quotas).any():
            if max_steps is not None and step >= max_steps:
                result.complete = False
                break
            if recording:
                recording = bool(on_frame(np.asarray(obs), step))
            playing = finished < quotas
            run = playing | (video_set if recording else False)
            idx = torch.as_tensor(np.flatnonzero(run), device=device)
            starts = episode_start_mask(prev_done, step % max(unroll, 1), state_reset)
            if reset_at_switch:
                starts = starts | switched
            obs_t = torch.as_tensor(np.asarray(obs), device=device)
            sub_state = index_state(state, idx)
            action_sub, _, _, new_sub = policy.act(
                obs_t[idx], reward[idx], starts.to(device)[idx], sub_state, greedy=greedy
            )
            state = tuple(s.index_copy(0, idx, ns) for s, ns in zip(state, new_sub, strict=True))
            if metrics_every > 0 and step % metrics_every == 0:
                row = {"step": float(step), **policy.state_metrics(new_sub)}
                if run[0]:
                    first = torch.zeros(1, dtype=torch.long, device=device)
                    env0 = policy.state_metrics(index_state(state, first))
                    row.update({f"env0/{k}": v for k, v in env0.items()})
                result.metrics.append(row)
            actions = np.zeros(n, dtype=np.int64)
            actions[run] = action_sub.cpu().numpy()
            obs, rew, done, infos = env.step(actions)
            rew = np.asarray(rew, dtype=np.float64)
            done = np.asarray(done, dtype=bool)
            returns += rew
            lengths += 1
            result.env_steps += int(run.sum())
            new_counted = 0
            for i in np.flatnonzero(done):
                info = infos[i] if infos is not None else {}
                ep = info.get("episode") or {}
                if i == 0 and run[0]:
                    result.episode_ends_env0.append(step)
                if finished[i] < quotas[i]:
                    result.episodes.append(
                        Episode(
                            game=str(ep.get("game", env_games[i])),
                            env=int(i),
                            index=int(finished[i]),
                            ret=float(ep.get("r", returns[i])),
                            length=int(ep.get("l", lengths[i])),
                            level_seed=_int_or_none(ep.get("level_seed", info.get("level_seed"))),
                        )
                    )
                    new_counted += 1
                finished[i] += 1
                result.finished_episodes += 1
                returns[i] = 0.0
                lengths[i] = 0
            if progress is not None and new_counted:
                progress(new_counted)
            reward = torch.as_tensor(rew, dtype=torch.float32, device=device)
            prev_done = torch.as_tensor(done)
            if reset_at_switch:
                switched = torch.as_tensor(
                    [bool(d and infos[i].get("switched", False)) for i, d in enumerate(done)])
            step += 1
    result.steps = step
    result.seconds = time.perf_counter() - t0
    result.episodes.sort(key=lambda e: (e.env, e.index))
    return result


def _int_or_none(v) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None
