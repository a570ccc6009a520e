"""``eval_rl.py RUN [RUN ...] --stream SPEC``: play every agent on a stream whose game changes
without warning (envs/stream.py), twice, and report how it adapts (agents/evaluation/stream.py).

- **carried**: the agent's state lives as its state reset says (the run's ``state_reset``, or
  ``--state-reset``): ``never`` carries it through every episode end and every switch;
  ``episode`` zeroes it at every episode start (so at every switch too); ``span`` also every
  ``unroll`` steps. A run's ``state_lifetime`` (random resets at episode ends) is a training
  device and is not applied: evaluation carries the state deterministically.
- **fresh**: the same, plus a reset at the first observation of every new game: the baseline
  that measures what the carried state brings to a switch. (For ``episode`` the two are the
  same by construction.)

Both modes play the identical stream: one stream env per split and distribution mode, built
once and rewound (``StreamVecEnv.rewind``) before every play, so every agent and both modes
meet the same games, in the same order, on the same levels. ``--episodes`` is the number of
episodes every slot counts (default: one pass of the schedule); each slot counts its first
``--episodes`` episodes, so every slot covers the same part of the schedule whatever the
episodes' lengths.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from agents.errors import UsageError

from .stream import StreamEpisode, check_windows, default_windows, summarize
from .stream_report import (
    StreamAgentResult,
    StreamSplitResult,
    adaptation_plot,
    gap_table,
    write_stream_results,
)


def _schedule(args):
    from envs.stream import StreamSchedule, check_action_spaces

    try:
        schedule = StreamSchedule(args.stream, repeat=args.stream_repeat,
                                  order=args.stream_order,
                                  order_seed=args.seed if args.stream_seed is None
                                  else args.stream_seed)
        n_actions = check_action_spaces(schedule.blocks)
    except ValueError as e:
        raise UsageError(f"--stream: {e}") from None
    return schedule, n_actions


def check_stream_args(args) -> tuple[Any, int, int, int, int]:
    """Validate the stream options (before anything is loaded or played).

    Returns (schedule, actions, episodes per slot, early k, steady m)."""
    if args.games is not None:
        raise UsageError("--games cannot be combined with --stream (the stream names the games)")
    if args.video is not None:
        raise UsageError("--video cannot be combined with --stream (streams are not filmed)")
    schedule, n_actions = _schedule(args)
    if len(schedule.games) < 2:
        raise UsageError(f"--stream {args.stream!r} has one game only, so it never switches; "
                         "give blocks of at least two games (e.g. bigfish:20,starpilot:20)")
    episodes = schedule.episodes_per_pass if args.episodes is None else args.episodes
    if episodes < 1:
        raise UsageError(f"--episodes must be >= 1, got {episodes}")
    if not schedule.repeat and episodes > schedule.episodes_per_pass:
        raise UsageError(f"--episodes {episodes} is more than one pass of the stream "
                         f"({schedule.episodes_per_pass} episodes per slot) with "
                         "--no-stream-repeat; drop --no-stream-repeat or give --episodes <= "
                         f"{schedule.episodes_per_pass}")
    k, m = default_windows(schedule.min_block, args.adapt_early, args.adapt_steady)
    try:
        check_windows(k, m)
    except ValueError:
        raise UsageError(f"need 1 <= --adapt-early <= --adapt-steady, got --adapt-early {k} "
                         f"--adapt-steady {m}") from None
    if args.num_envs is not None and args.num_envs < 1:
        raise UsageError(f"--num-envs must be >= 1, got {args.num_envs}")
    from .cli import DEFAULT_ENVS_PER_GAME, _warn

    slots = args.num_envs or DEFAULT_ENVS_PER_GAME
    counted = [schedule.position(i, e) for i in range(slots) for e in range(episodes)]
    if not any(p.after_switch for p in counted):
        first = schedule.position(0, 0)
        raise UsageError(f"--episodes {episodes} ends before the stream's first switch (slot 0 "
                         f"plays {first.game} for its first {episodes} episodes); give more "
                         "--episodes")
    longest = max(p.since_switch + 1 for p in counted)
    if m >= longest:
        msg = (f"no counted episode is {m} or more episodes after a switch (the longest run "
               f"of one game is {longest} episodes)")
        if args.adapt_steady is not None:
            raise UsageError(f"--adapt-steady {m}: {msg}; give --adapt-steady < {longest}")
        _warn(f"{msg}: the steady state and the gap are n/a; use longer blocks")
    return schedule, n_actions, episodes, k, m


def run_stream_eval(args, argv: list[str]) -> int:
    from agents.checkpoint import load_agent
    from agents.runtime import resolve_device
    from envs import SCORE_MODES, SYNTHETIC_TASKS, normalized_score, score_mode
    from envs.stream import make_stream_env

    from .cli import (
        DEFAULT_ENVS_PER_GAME,
        _default_out,
        _levels,
        _num_actions,
        _progress,
        _warn,
        agent_names,
        levels_overlap,
        resolve_splits,
    )
    from .runner import play

    schedule, n_actions, episodes, k, m = check_stream_args(args)
    if args.bootstrap_resamples < 0:
        raise UsageError(f"--bootstrap-resamples must be >= 0, got {args.bootstrap_resamples}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    splits = resolve_splits(args)
    device = resolve_device(args.device)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    num_envs = args.num_envs or DEFAULT_ENVS_PER_GAME
    names = agent_names(args.agents)
    loaded = [load_agent(path, device=device) for path in args.agents]
    for name, agent in zip(names, loaded, strict=True):
        policy_actions = _num_actions(agent.policy)
        if policy_actions is not None and policy_actions != n_actions:
            raise UsageError(f"agent {name!r} has {policy_actions} actions but the stream "
                             f"{args.stream!r} has {n_actions}; stream games with "
                             f"{policy_actions} actions")
    synthetic = all(g in SYNTHETIC_TASKS for g in schedule.games)

    envs: dict[tuple[str, str], Any] = {}

    def stream_env(split: str, start: int, num: int, dist: str):
        key = (split, dist)
        if key not in envs:
            try:
                envs[key] = make_stream_env(schedule, num_envs, distribution_mode=dist,
                                            num_levels=num, start_level=start, seed=args.seed)
            except ValueError as e:
                raise UsageError(f"--stream: {e}") from None
        return envs[key]

    out = Path(args.out or _default_out())
    results: list[StreamAgentResult] = []
    try:
        # build every env first: a distribution mode that lacks a game fails in seconds
        for agent in loaded:
            dist = args.distribution_mode or agent.config.distribution_mode
            for split, start, num in splits:
                stream_env(split, start, num, dist)
        for name, agent in zip(names, loaded, strict=True):
            cfg = agent.config
            state_reset = args.state_reset or cfg.state_reset
            dist = args.distribution_mode or cfg.distribution_mode
            mode = score_mode(dist)

            def normalize(game: str, ret: float, mode: str = mode) -> float:
                return normalized_score(game, ret, mode)

            if dist not in SCORE_MODES and not synthetic:
                _warn(f"no normalization constants for distribution mode {dist!r}; normalized "
                      f"scores use the {mode!r} constants")
            result = StreamAgentResult(
                name=name, checkpoint=str(agent.path), global_step=int(agent.global_step),
                core=cfg.model.core,
                trained={"games": list(cfg.games), "distribution_mode": cfg.distribution_mode,
                         "start_level": cfg.start_level, "num_levels": cfg.num_levels,
                         "state_reset": cfg.state_reset, "unroll": cfg.unroll,
                         "algo": cfg.algo,
                         "state_lifetime": float(getattr(cfg, "state_lifetime", 0.0))},
                settings={"stream": args.stream, **schedule.describe(),
                          "episodes_per_slot": episodes, "num_envs": num_envs,
                          "early": k, "steady": m, "greedy": not args.sample,
                          "state_reset": state_reset, "state_lifetime_applied": False,
                          "distribution_mode": dist, "score_mode": mode, "seed": args.seed,
                          "device": str(device)},
            )
            for split, start, num in splits:
                if not synthetic and levels_overlap(start, num, cfg.start_level, cfg.num_levels):
                    _warn(f"{name}: evaluation levels {_levels(start, num)} ({split}) overlap "
                          f"its training levels {_levels(cfg.start_level, cfg.num_levels)}")
                env = stream_env(split, start, num, dist)
                rows: list[StreamEpisode] = []
                steps: dict[str, int] = {}
                seconds: dict[str, float] = {}
                for play_mode in ("carried", "fresh"):
                    env.rewind()
                    bar = _progress(num_envs * episodes, f"{name} {split} {play_mode}")
                    try:
                        played = play(agent.policy, env, episodes_per_env=episodes,
                                      reset_at_switch=play_mode == "fresh",
                                      greedy=not args.sample, state_reset=state_reset,
                                      unroll=int(cfg.unroll or 1), device=device,
                                      seed=args.seed, metrics_every=0,
                                      progress=bar.update if bar else None)
                    finally:
                        if bar:
                            bar.close()
                    steps[play_mode] = played.steps
                    seconds[play_mode] = played.seconds
                    rows += episode_rows(played.episodes, schedule, play_mode, normalize)
                res = StreamSplitResult(
                    split=split, start_level=start, num_levels=num, distribution_mode=dist,
                    summaries=summarize(rows, schedule.games, early=k, steady=m),
                    episodes=rows, steps=steps, seconds=seconds)
                result.splits[split] = res
                print(f"### {name} - {split} (levels {start}+{num}, {dist}; stream "
                      f"{args.stream}, {episodes} episodes x {num_envs} slots)\n\n"
                      f"{gap_table([result], split)}\n", flush=True)
            results.append(result)
    finally:
        for env in envs.values():
            env.close()

    meta = {"command": "eval_rl.py " + " ".join(argv),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    written = write_stream_results(out, results, meta)
    for split, _, _ in splits:
        written.append(adaptation_plot(results, split, out / f"adaptation_{split}.png"))
    if len(results) > 1:
        print((out / "comparison.md").read_text(), flush=True)
    print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


def episode_rows(episodes, schedule, mode: str, normalize) -> list[StreamEpisode]:
    """The runner's counted episodes as rows of the stream table; each episode's game is
    checked against the schedule (a mismatch is a bug, not a user error)."""
    rows = []
    for e in episodes:
        pos = schedule.position(e.env, e.index)
        if pos.game != e.game:
            raise RuntimeError(f"slot {e.env} episode {e.index} was {e.game} but the schedule "
                               f"says {pos.game}")
        rows.append(StreamEpisode(mode=mode, slot=e.env, index=e.index, game=e.game,
                                  segment=pos.segment, since_switch=pos.since_switch,
                                  ret=e.ret, score=float(normalize(e.game, e.ret)),
                                  block=pos.block, length=e.length, level_seed=e.level_seed))
    return rows
