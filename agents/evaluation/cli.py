"""The command line of eval_rl.py: evaluate checkpoints, or draw learning curves (``plot``).

    python eval_rl.py RUN_DIR_OR_CHECKPOINT [MORE ...] [options]     # evaluate
    python eval_rl.py plot RUN_DIR [MORE ...] --out DIR              # learning curves

The first word ``plot`` selects the plot mode; a run dir literally named ``plot`` is evaluated
as ``./plot``. Errors a user can cause print one line on stderr and exit with code 2. The
options are the fields of `EvalOptions` / `PlotOptions` (their docstrings are the help; tyro
builds the command line through agents.cli.parse, as for train_rl.py).
"""

from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import tyro

from agents.errors import UsageError, run_main
from agents.rollout import StateReset
from envs.games import DistributionMode
from envs.stream import StreamOrder

DEFAULT_EPISODES = 200
DEFAULT_ENVS_PER_GAME = 8


def _arg(default_text: str, **kwargs: Any) -> Any:
    """tyro field settings with the default described in words."""
    return tyro.conf.arg(help_behavior_hint=default_text, **kwargs)


@dataclass
class EvalOptions:
    """Evaluate trained agents on ProcGen level splits: per-game returns, normalized scores with
    bootstrap 95% CIs, comparison tables, plots, video. Use `eval_rl.py plot RUN ...` for
    learning curves from TensorBoard logs."""

    agents: Annotated[list[str], tyro.conf.Positional, _arg(
        "(required)", metavar="RUN_DIR_OR_CHECKPOINT")]
    """Run dirs (their latest checkpoint) or checkpoint files."""
    split: Annotated[list[str], tyro.conf.UseAppendAction, _arg(
        "(default: test1)", metavar="NAME")] = field(default_factory=list)
    """Level split(s): train, test1, test2, test3, all; repeat the option or give a comma
    list."""
    start_level: Annotated[int | None, _arg("(default: 0)")] = None
    """First level of a custom level range (instead of --split)."""
    num_levels: Annotated[int | None, _arg("(default: 200)")] = None
    """Number of levels of a custom range, 0 = all levels."""
    games: Annotated[str | None, _arg("(default: the games the agent trained on)")] = None
    """Games to evaluate: names, comma list, alias (paper6, memory4, all) or a synthetic
    task."""
    episodes: Annotated[int | None, _arg(
        "(default: 200 per game; with --stream one pass of the schedule per slot)")] = None
    """Episodes per game (200, as published); with --stream, episodes per env slot in total
    (each slot counts its first N episodes of the stream)."""
    warmup_episodes: int = 4
    """Besides the mean over all episodes, report each game's return of every env's first
    episode (from a fresh zero state) and its mean after this many warm-up episodes (episode
    index >= K in each env's stream, the state carried as the run's state reset says)."""
    sample: tyro.conf.FlagCreatePairsOff[bool] = False
    """Sample actions from the policy (default: greedy argmax)."""
    state_reset: Annotated[StateReset | None, _arg("(default: as trained)")] = None
    """State lifetime: never | episode | span (span resets every `unroll` steps of the trained
    config)."""
    distribution_mode: Annotated[DistributionMode | None, _arg("(default: as trained)")] = None
    """ProcGen distribution mode."""
    seed: int = 0
    """Seeds the levels, the action sampling and the bootstrap."""
    num_envs: Annotated[int | None, _arg("(default: 8 per game, at most --episodes per game)")
                        ] = None
    """Parallel envs in total, a multiple of the number of games."""
    device: str = "auto"
    """Torch device: auto | cpu | cuda | cuda:N."""
    threads: Annotated[int | None, _arg("(default: torch's choice)")] = None
    """Torch CPU threads."""
    out: Annotated[str | None, _arg("(default: runs/eval/<UTC time>, which git ignores)")
                   ] = None
    """Output directory for results.json/.csv, tables and plots."""
    bootstrap_resamples: int = 9999
    """Bootstrap resamples for the 95% CIs."""
    metrics_every: int = 1
    """Log the core's state metrics every k steps (0 = never)."""
    video: Annotated[str | None, tyro.conf.arg(metavar="PATH")] = None
    """Write a video of the agent playing (.mp4, .mkv, .mov or .gif); with several agents, PATH
    gets a _<agent> suffix per agent."""
    video_steps: int = 300
    """Steps (= frames) to record at most."""
    video_envs: Annotated[int | None, _arg("(default: one per game, at least 4, at most 16)")
                          ] = None
    """Envs tiled in the video."""
    video_scale: int = 4
    """Nearest-neighbour upscaling of the 64x64 frames."""
    video_fps: int = 15
    """Frames per second."""
    stream: Annotated[str | None, _arg("(default: off)", metavar="GAME:EPISODES,...")] = None
    """Continual adaptation: every env slot plays this schedule of blocks (e.g.
    bigfish:20,starpilot:20), switching game at an episode end without telling the agent;
    reports return by episodes since the switch, with the state carried and with it reset at
    every switch."""
    stream_repeat: bool = True
    """Cycle the stream's blocks until --episodes (off: one pass at most)."""
    stream_order: StreamOrder = "fixed"
    """Block order: fixed (as given) or random (a permutation per slot and pass)."""
    stream_seed: Annotated[int | None, _arg("(default: --seed)")] = None
    """Seeds the random block orders."""
    adapt_early: Annotated[int | None, _arg("(default: 1)", metavar="K")] = None
    """Early window: the first K episodes of a game after a switch."""
    adapt_steady: Annotated[int | None, _arg("(default: max(K, shortest block // 2))",
                                             metavar="M")] = None
    """Steady state: episodes >= M since the switch."""
    group_by: Annotated[str | None, _arg("(default: core, for group dirs)", metavar="KEY")
                        ] = None
    """Compare groups of runs: group the runs (of group dirs made by train_rl.py --core a,b
    --seeds ..., or run dirs) by this config key (core, seed, algo, or dotted such as
    model.hidden_size, ppo.lr) and report per group mean, median, IQM and optimality gap with
    bootstrap CIs over runs, and the probability of improvement between groups."""


@dataclass
class PlotOptions:
    """Learning curves from runs' TensorBoard logs (RUN_DIR/tb) to PNG: episodic return per
    game and the normalized score aggregate, against env steps."""

    runs: Annotated[list[str], tyro.conf.Positional, _arg("(required)", metavar="RUN_DIR")]
    """Run dirs (or their tb/ dirs)."""
    out: Annotated[str | None, _arg("(default: runs/eval/<UTC time>_curves)")] = None
    """Output directory."""
    smoothing: float = 0.6
    """TensorBoard-style EMA weight in [0, 1) (0 = raw)."""


def parse_eval_args(argv: list[str]) -> EvalOptions:
    from agents.cli import parse

    args = parse(EvalOptions, argv, prog="eval_rl.py", description=_doc(EvalOptions))
    if not args.agents:
        raise UsageError("give at least one RUN_DIR_OR_CHECKPOINT (see --help)")
    return args


def parse_plot_args(argv: list[str]) -> PlotOptions:
    from agents.cli import parse

    args = parse(PlotOptions, argv, prog="eval_rl.py plot",
                 description=_doc(PlotOptions))
    if not args.runs:
        raise UsageError("give at least one RUN_DIR (see --help)")
    return args


def _doc(cls: type) -> str:
    return " ".join((cls.__doc__ or "").split())


def _split_list(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


# ---------------------------------------------------------------------- helpers
def levels_overlap(a_start: int, a_num: int, b_start: int, b_num: int) -> bool:
    """Do level ranges [start, start+num) intersect? num = 0 means every level."""
    if a_num == 0 or b_num == 0:
        return True
    return a_start < b_start + b_num and b_start < a_start + a_num


def resolve_splits(args) -> list[tuple[str, int, int]]:
    """[(name, start_level, num_levels)] from --split or --start-level/--num-levels."""
    from envs import SPLITS

    splits = _split_list(args.split)
    custom = args.start_level is not None or args.num_levels is not None
    if custom and splits:
        raise UsageError("give either --split or --start-level/--num-levels, not both")
    if custom:
        start = 0 if args.start_level is None else args.start_level
        num = 200 if args.num_levels is None else args.num_levels
        if start < 0:
            raise UsageError(f"--start-level must be >= 0, got {start}")
        if num < 0:
            raise UsageError(f"--num-levels must be >= 0 (0 = all levels), got {num}")
        return [(f"levels{start}+{num if num else 'all'}", start, num)]
    out = []
    for name in splits or ["test1"]:
        if name not in SPLITS:
            raise UsageError(f"unknown split {name!r}; valid splits: {', '.join(SPLITS)} "
                             "(or use --start-level/--num-levels)")
        if name not in [s[0] for s in out]:
            out.append((name, *SPLITS[name]))
    return out


def agent_names(paths: list[str]) -> list[str]:
    """Short unique names: a run dir's name; for a checkpoint file inside RUN/checkpoints,
    RUN@<step>; else the file stem. Duplicates get -2, -3, ..."""
    names: list[str] = []
    for raw in paths:
        p = Path(raw)
        if p.suffix == ".pt":
            m = re.match(r"ckpt_0*(\d+)$", p.stem)
            if p.parent.name == "checkpoints" and m:
                name = f"{p.resolve().parent.parent.name}@{m.group(1)}"
            else:
                name = p.stem
        else:
            name = p.resolve().name or "run"
        name = re.sub(r"[^A-Za-z0-9_.@+-]", "_", name)
        base, k = name, 2
        while name in names:
            name = f"{base}-{k}"
            k += 1
        names.append(name)
    return names


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def _video_path(path: str, agent: str, several: bool) -> Path:
    p = Path(path)
    return p.with_name(f"{p.stem}_{agent}{p.suffix}") if several else p


# ---------------------------------------------------------------------- eval mode
def run_eval(argv: list[str]) -> int:
    args = parse_eval_args(argv)
    if args.out is not None:  # every mode writes there: check it before loading or playing
        from agents.resources import check_output_dir

        check_output_dir(args.out, "--out")
    if args.stream is not None:
        from .stream_run import run_stream_eval

        return run_stream_eval(args, argv)
    stream_only = [f for f in ("adapt_early", "adapt_steady", "stream_seed")
                   if getattr(args, f) is not None]
    if stream_only:
        raise UsageError(f"--{stream_only[0].replace('_', '-')} needs --stream")
    if args.episodes is None:
        args.episodes = DEFAULT_EPISODES
    check_eval_args(args)
    from .groups import is_group_eval

    if is_group_eval(args):
        from .groups import run_group_eval

        return run_group_eval(args, argv)
    splits = resolve_splits(args)
    from agents.runtime import resolve_device

    device = resolve_device(args.device)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    from agents.checkpoint import load_agent
    from agents.resources import check_output_dir

    out = check_output_dir(Path(args.out or _default_out()), "--out")
    names = agent_names(args.agents)
    loaded = [load_agent(path, device=device) for path in args.agents]
    results = evaluate_agents(args, names, loaded, splits, device, out)

    from .report import write_results

    meta = {"command": "eval_rl.py " + " ".join(argv),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    written = write_results(out, results, meta)
    from . import plots

    for split, _, _ in splits:
        written.append(plots.score_bars(results, split, out / f"scores_{split}.png"))
    if len(results) > 1:
        print((out / "comparison.md").read_text(), flush=True)
    print(f"wrote {', '.join(str(p) for p in written)} and per-agent plots under {out}/<agent>/",
          file=sys.stderr)
    return 0


def check_eval_args(args: EvalOptions) -> None:
    """UsageError (one line) for option values that cannot work, before anything loads."""
    if args.episodes < 1:
        raise UsageError(f"--episodes must be >= 1, got {args.episodes}")
    if args.num_envs is not None and args.num_envs < 1:
        raise UsageError(f"--num-envs must be >= 1, got {args.num_envs}")
    if args.bootstrap_resamples < 0:
        raise UsageError(f"--bootstrap-resamples must be >= 0, got {args.bootstrap_resamples}")
    if args.metrics_every < 0:
        raise UsageError(f"--metrics-every must be >= 0, got {args.metrics_every}")
    if args.video is not None:
        from .video import VIDEO_EXTENSIONS

        if Path(args.video).suffix.lower() not in VIDEO_EXTENSIONS:
            raise UsageError(f"--video {args.video!r}: unsupported extension; valid: "
                             f"{', '.join(VIDEO_EXTENSIONS)}")
        for name in ("video_steps", "video_scale", "video_fps"):
            if getattr(args, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, "
                                 f"got {getattr(args, name)}")
        if args.video_envs is not None and args.video_envs < 1:
            raise UsageError(f"--video-envs must be >= 1, got {args.video_envs}")
        from agents.resources import check_output_file

        check_output_file(args.video, "--video")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if args.warmup_episodes < 1:
        raise UsageError(f"--warmup-episodes must be >= 1, got {args.warmup_episodes}")


def evaluate_agents(args: EvalOptions, names: list[str], loaded: list, splits, device,
                    out: Path, *, quiet: bool = False) -> list:
    """Play every loaded agent on every split (checked against its games first) and return
    their AgentResults; per-agent plots go to out/<agent>/<split>/. quiet: one line per agent
    and split instead of its table."""
    from envs import SCORE_MODES, SYNTHETIC_TASKS, resolve_games, score_mode

    if args.games is not None:
        try:
            games_override = resolve_games(args.games)
        except ValueError as e:
            raise UsageError(f"--games: {e}") from None

    from .report import AgentResult, agent_table

    results: list[AgentResult] = []
    # Check every agent against its games before playing anything (fail in seconds, not
    # after the first agent's evaluation).
    plans = []
    for name, agent in zip(names, loaded, strict=True):
        cfg = agent.config
        try:
            games = games_override if args.games is not None else resolve_games(cfg.games)
        except ValueError as e:
            raise UsageError(f"checkpoint {str(agent.path)!r}: {e}") from None
        untrained = [g for g in games if g not in cfg.games]
        if untrained:
            _warn(f"{name}: {', '.join(untrained)} not among the games it trained on "
                  f"({', '.join(cfg.games)}); its scores there measure transfer")
        num_envs = _num_envs(args, games)
        # a synthetic task is played with the parameters it was trained with
        task_kwargs = dict(cfg.task_kwargs) if games == list(cfg.games) else {}
        env_actions = _env_num_actions(games, task_kwargs)
        policy_actions = _num_actions(agent.policy)
        if policy_actions is not None and env_actions != policy_actions:
            raise UsageError(f"agent {name!r} has {policy_actions} actions but "
                             f"{', '.join(games)} has {env_actions}; evaluate it on games with "
                             f"{policy_actions} actions")
        plans.append((name, agent, games, num_envs, task_kwargs))

    for i, (name, agent, games, num_envs, task_kwargs) in enumerate(plans):
        cfg = agent.config
        state_reset = args.state_reset or cfg.state_reset
        dist = args.distribution_mode or cfg.distribution_mode
        synthetic = games[0] in SYNTHETIC_TASKS
        result = AgentResult(
            name=name, checkpoint=str(agent.path), global_step=int(agent.global_step),
            core=cfg.model.core,
            trained={"games": list(cfg.games), "distribution_mode": cfg.distribution_mode,
                     "start_level": cfg.start_level, "num_levels": cfg.num_levels,
                     "state_reset": cfg.state_reset, "unroll": cfg.unroll, "algo": cfg.algo},
            settings={"games": games, "episodes_per_game": args.episodes,
                      "greedy": not args.sample, "state_reset": state_reset,
                      "distribution_mode": dist, "score_mode": score_mode(dist),
                      "seed": args.seed, "num_envs": num_envs, "device": str(device),
                      "bootstrap_resamples": args.bootstrap_resamples},
        )
        if dist not in SCORE_MODES and not synthetic:
            _warn(f"no normalization constants for distribution mode {dist!r}; normalized "
                  f"scores use the {score_mode(dist)!r} constants")
        for k, (split, start, num) in enumerate(splits):
            if not synthetic and levels_overlap(start, num, cfg.start_level, cfg.num_levels):
                _warn(f"{name}: evaluation levels {_levels(start, num)} ({split}) overlap its "
                      f"training levels {_levels(cfg.start_level, cfg.num_levels)}")
            video = None
            if args.video is not None and k == 0:
                video = _video_path(args.video, name, len(loaded) > 1)
            res = evaluate_split(agent.policy, name, split, start, num, games=games,
                                 args=args, num_envs=num_envs, state_reset=state_reset,
                                 unroll=int(cfg.unroll or 1), dist=dist, device=device,
                                 core=cfg.model.core, out=out, video=video,
                                 task_kwargs=task_kwargs)
            result.splits[split] = res
            if quiet:
                print(f"eval_rl.py: [{i + 1}/{len(plans)}] {name} on {split}: mean normalized "
                      f"score {res.aggregate.mean:.3f} ({args.episodes} episodes per game, "
                      f"{res.play.seconds:.1f} s)", file=sys.stderr, flush=True)
            else:
                print(agent_table(result, res) + "\n", flush=True)
        results.append(result)
    return results


def _default_out(suffix: str = "") -> Path:
    return Path("runs") / "eval" / (time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + suffix)


def _levels(start: int, num: int) -> str:
    return f"[{start}, all)" if num == 0 else f"[{start}, {start + num})"


def _num_envs(args, games: list[str]) -> int:
    g = len(games)
    if args.num_envs is None:
        return g * min(DEFAULT_ENVS_PER_GAME, args.episodes)
    if args.num_envs % g:
        raise UsageError(f"--num-envs {args.num_envs} is not a multiple of the number of games "
                         f"({g}: {', '.join(games)}); valid e.g. {g}, {2 * g}, {4 * g}")
    return args.num_envs


def evaluate_split(policy, name, split, start, num, *, games, args, num_envs, state_reset,
                   unroll, dist, device, core, out: Path, video: Path | None,
                   task_kwargs: dict[str, Any] | None = None):
    """Play one agent on one split, score it and draw its per-agent plots (task_kwargs: the
    parameters of a synthetic task)."""
    task_kwargs = dict(task_kwargs or {})
    from envs import make_env, normalized_score, score_mode

    from . import plots
    from .report import SplitResult
    from .runner import play
    from .scoring import aggregate, score_game

    try:
        env = make_env(games, num_envs, distribution_mode=dist, num_levels=num,
                       start_level=start, seed=args.seed, **task_kwargs)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        n_actions = int(env.action_space.n)
        policy_actions = _num_actions(policy)
        if policy_actions is not None and n_actions != policy_actions:
            raise UsageError(f"agent {name!r} has {policy_actions} actions but "
                             f"{', '.join(games)} has {n_actions}; evaluate it on games with "
                             f"{policy_actions} actions")
        writer = None
        if video is not None:
            from .video import VideoWriter

            n_video = args.video_envs or min(16, max(len(games), 4))
            writer = VideoWriter(video, list(range(min(n_video, num_envs))),
                                 max_steps=args.video_steps, scale=args.video_scale,
                                 fps=args.video_fps)
        bar = _progress(len(games) * args.episodes, f"{name} {split}")
        try:
            played = play(policy, env, episodes_per_game=args.episodes, greedy=not args.sample,
                          state_reset=state_reset, unroll=unroll, device=device, seed=args.seed,
                          metrics_every=args.metrics_every, on_frame=writer,
                          video_envs=writer.env_indices if writer else None,
                          progress=bar.update if bar else None)
        finally:
            if bar:
                bar.close()
            if writer is not None:
                writer.close()
    finally:
        env.close()
    if writer is not None:
        print(f"wrote video {video} ({writer.frames} frames, {writer.codec})", file=sys.stderr)

    mode = score_mode(dist)

    def normalizer(g):
        return lambda r: normalized_score(g, r, mode, task_kwargs=task_kwargs or None)

    norms = {g: normalizer(g) for g in games}
    by_game = {g: [e.ret for e in played.episodes if e.game == g] for g in games}
    scores = {
        g: score_game(g, by_game[g], norms[g], seed=args.seed * 7919 + i,
                      n_resamples=args.bootstrap_resamples)
        for i, g in enumerate(games)
    }
    agg = aggregate(by_game, norms, seed=args.seed * 7919 + len(games),
                    n_resamples=args.bootstrap_resamples)
    res = SplitResult(split=split, start_level=start, num_levels=num, distribution_mode=dist,
                      games=scores, aggregate=agg, play=played, warmup=args.warmup_episodes)
    d = out / name / split
    carry = {"never": "state carried across episodes", "episode": "state reset every episode",
             "span": f"state reset every {unroll} steps and every episode"}[state_reset]
    plots.episode_index_plot(played.episodes, norms, d / "episode_index.png",
                             f"{name} ({core}) on {split}: return by episode index ({carry})")
    plots.state_metrics_plot(played.metrics, played.episode_ends_env0, core,
                             d / "state_metrics.png", f"{name} ({core}) on {split}")
    _write_metrics_csv(played.metrics, d / "state_metrics.csv")
    return res


def _env_num_actions(games: list[str], task_kwargs: dict[str, Any] | None = None) -> int:
    """Actions of the env for these games: 15 for ProcGen (docs/SPEC.md, section 6); a
    synthetic task is asked (a one-env instance is cheap)."""
    from envs import SYNTHETIC_TASKS, make_env

    if games[0] not in SYNTHETIC_TASKS:
        return 15
    env = make_env(games, 1, **(task_kwargs or {}))
    try:
        return int(env.action_space.n)
    finally:
        env.close()


def _num_actions(policy) -> int | None:
    head = getattr(getattr(policy, "heads", None), "policy", None)
    return int(head.out_features) if hasattr(head, "out_features") else None


def _write_metrics_csv(rows: list[dict[str, Any]], path: Path) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r)) or ["step"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v)
                        for k, v in r.items()})


def _progress(total: int, desc: str):
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="ep", file=sys.stderr, dynamic_ncols=True)


# ---------------------------------------------------------------------- plot mode
def run_plot(argv: list[str]) -> int:
    args = parse_plot_args(argv)
    if not 0.0 <= args.smoothing < 1.0:
        raise UsageError(f"--smoothing must be in [0, 1), got {args.smoothing}")
    from .curves import plot_learning_curves

    written = plot_learning_curves(args.runs, args.out or _default_out("_curves"),
                                   args.smoothing)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "plot":
        return run_main("eval_rl.py", lambda: run_plot(argv[1:]))
    return run_main("eval_rl.py", lambda: run_eval(argv))
