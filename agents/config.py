"""TrainConfig: everything one training run needs, validated and resolved in one place.

The config saved in a run dir (`config.json`) and inside every checkpoint is always a
*resolved* config (`TrainConfig.resolved()`): games expanded to names, `num_envs` and
`unroll` filled in, preset applied. Nothing here parses arguments or touches a device.

Algorithm-dependent defaults (used when the field is left at None):

- `unroll`: PPO 256, V-trace 50 (docs/SPEC.md, section 4).
- `num_envs`: PPO 64, V-trace 32 (the paper's batch of 32 sequences; one V-trace update
  takes the [unroll, num_envs] segment in optimizer steps of `vtrace.batch_size` = 32 whole
  sequences). The default is rounded UP to the nearest multiple of the number of games
  (ProcGen runs env n on game n mod G) and of the split size (PPO: `num_minibatches`, split
  by env; V-trace: `vtrace.batch_size`). E.g. paper6: PPO lcm(6, 8) = 24 -> 72 envs,
  V-trace lcm(6, 32) = 96 envs (3 optimizer steps of 32 sequences per segment); all 16
  games, memory4 or one game -> 64 (PPO) / 32 (V-trace). An explicit `num_envs` is never
  changed, only validated.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from envs.games import DISTRIBUTION_MODES, DistributionMode
from policies.config import CORE_NAMES, ModelConfig

from .errors import ConfigError, one_line
from .learners import ALGOS, Algo, planned_updates
from .ppo import PPOConfig, check_ppo_config
from .rollout import STATE_RESETS, StateReset
from .runtime import DEVICES_HELP, valid_device
from .vtrace import VTraceConfig, check_vtrace_config

StepCount = Annotated[int, "a count of env steps"]
"""An int field that counts env steps; the command line also reads 25M, 1e6, 1.5k, 300_000_000."""

DEFAULT_NUM_ENVS = {"ppo": 64, "vtrace": 32}
DEFAULT_UNROLL = {"ppo": 256, "vtrace": 50}


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's multi-task experiment (docs/SPEC.md, section 4): 6 games, easy, 200 levels,
    # IMPALA / V-trace, 300M steps in total.
    "paper-multitask": {
        "games": "paper6", "algo": "vtrace", "model.core": "srwm",
        "total_steps": 300_000_000, "distribution_mode": "easy", "num_levels": 200,
        "start_level": 0,
    },
    # Single-game experts: 50M steps each, same learner as the multi-task run.
    "expert-bigfish": {
        "games": "bigfish", "algo": "vtrace", "model.core": "srwm",
        "total_steps": 50_000_000, "distribution_mode": "easy", "num_levels": 200,
        "start_level": 0,
    },
    "expert-starpilot": {
        "games": "starpilot", "algo": "vtrace", "model.core": "srwm",
        "total_steps": 50_000_000, "distribution_mode": "easy", "num_levels": 200,
        "start_level": 0,
    },
    # Reset-every-span ablation (docs/SPEC.md, section 3): the multi-task run, state_reset=span.
    "ablation-span": {
        "games": "paper6", "algo": "vtrace", "model.core": "srwm", "state_reset": "span",
        "total_steps": 300_000_000, "distribution_mode": "easy", "num_levels": 200,
        "start_level": 0,
    },
    # The synthetic memory tasks on a CPU in minutes: a tiny agent, 16 envs, unroll 12, and one
    # learner setting for every core (the learning tests and the study in benchmarks/RESULTS.md,
    # "SRWM learnability", use exactly these). PPO: lr 2e-3 annealed to 0 over the run, 4
    # minibatches (a constant 2e-3 made even the LSTM lose cue-recall again). V-trace: Adam and
    # 3 passes over every segment, batches of 4 sequences (with RMSprop and one pass the SRWM
    # never left chance), lr 1e-3 annealed (at 2e-3 the bandit agents fell back to chance late
    # in some runs), PPO's clipped surrogate on V-trace's advantages (APPO, clip 0.2) with
    # normalised advantages (the same scores on the default cue-recall and the bandit, the
    # lstm's cue-recall 5 / 5 instead of 3 / 5, every srwm run off chance on the harder
    # cue-recall: RESULTS.md, rounds 12b-13b). Pick the task with --games cue-recall /
    # switching-bandit.
    "memory-tiny": {
        "games": "cue-recall", "algo": "ppo", "model.core": "srwm", "total_steps": 40_000,
        "num_envs": 16, "unroll": 12, "state_reset": "never",
        "model.cnn_channels": (4, 8, 8), "model.cnn_out": 32, "model.hidden_size": 32,
        "model.num_heads": 2, "model.head_size": 16, "model.ff_size": 64, "model.lstm_size": 32,
        "ppo.lr": 2e-3, "ppo.num_minibatches": 4, "ppo.anneal_lr": True,
        "vtrace.lr": 1e-3, "vtrace.anneal_lr": True, "vtrace.optimizer": "adam",
        "vtrace.epochs": 3, "vtrace.batch_size": 4, "vtrace.policy_clip": 0.2,
        "vtrace.normalize_advantages": True,
    },
    # Memory mode: memory4, distribution "memory", 500 levels. The paper gives no step budget for
    # it; we use the multi-task budget (300M) -- our choice, override with --total-steps.
    "memory": {
        "games": "memory4", "algo": "vtrace", "model.core": "srwm",
        "total_steps": 300_000_000, "distribution_mode": "memory", "num_levels": 500,
        "start_level": 0,
    },
}

# Named sets of SRWM settings (`--srwm-profile NAME`, applied before the other options given,
# after a preset). "default": this project's defaults (the dataclass defaults, chosen by the
# study in benchmarks/RESULTS.md, "SRWM learnability"; policies/srwm/README.md explains them).
# "published": the paper's agent as its public code runs it: the init of docs/SPEC.md,
# section 1, the state detached after every step (no gradient through the self-modification)
# and reset at every episode start. "spec": the same init and op, with gradients through the
# whole unroll and this project's state lifetime.
_SPEC_SRWM: dict[str, Any] = {
    "model.srwm_pre_ln": False, "model.srwm_qk_init_scale": 1.0, "model.srwm_input_scale": 1.0,
    "model.srwm_beta_init": 0.0, "model.srwm_state_decay": 1.0, "model.srwm_w0_scale": 1.0,
    "model.srwm_state_max_norm": 0.0,
    "model.srwm_detach_every_step": False,
}
SRWM_PROFILES: dict[str, dict[str, Any]] = {
    "default": {f"model.{f.name}": f.default for f in dataclasses.fields(ModelConfig)
                if f"model.{f.name}" in _SPEC_SRWM},
    "published": {**_SPEC_SRWM, "model.srwm_detach_every_step": True, "state_reset": "episode",
                  "state_lifetime": 0.0},
    "spec": dict(_SPEC_SRWM),
}
SRWMProfile = Literal["default", "published", "spec"]
Pipeline = Literal["auto", "sync", "async"]
PIPELINES: tuple[str, ...] = ("auto", "sync", "async")


RUN_INFO_KEYS = ("world_size",)
"""Keys that config.json holds next to the config: facts of the run (world_size: processes of
the torch.distributed job that started it), not settings."""


@dataclass
class TrainConfig:
    """One training run. Leave `num_envs` / `unroll` at None for the algorithm's default."""

    games: list[str] = field(default_factory=lambda: ["all"])
    """Games to train on at once: names, or aliases (`all`, `paper6`, `memory4`) or one
    synthetic task; resolved to a list of names by `envs.resolve_games`."""

    algo: Algo = "ppo"
    """Learner: `ppo` (recurrent PPO, the Procgen paper's setup) or `vtrace` (IMPALA-style)."""

    state_reset: StateReset = "never"
    """State lifetime: `never` carries the core state across episodes, `episode` resets it at
    every episode start, `span` also resets it at the start of every unroll segment."""

    state_lifetime: float = 4.0
    """Mean number of episodes a carried core state lives: at every episode end the state is
    reset with probability 1/state_lifetime (geometric lifetimes), so the agent meets fresh
    starts as well as long carries. 0: no lifetime (only state_reset resets). Default 4
    (measured: benchmarks/RESULTS.md, "SRWM learnability")."""

    total_steps: StepCount = 25_000_000
    """Environment steps to train for (all envs together); the run stops at the first update
    that reaches it, so the final count is a multiple of num_envs * unroll."""

    num_envs: int | None = None
    """Parallel environments (= sequences per update). None: the algorithm's default (see the
    module docstring), rounded up to a multiple of the number of games."""

    unroll: int | None = None
    """Steps per env per rollout segment (the truncated-BPTT span). None: PPO 256, V-trace 50."""

    seed: int = 0
    """Seeds python, numpy, torch and the environments."""

    device: str = "auto"
    """Torch device: auto (CUDA when present, else CPU) | cpu | cuda | cuda:N."""

    run_dir: str | None = None
    """Where config.json, checkpoints/ and tb/ go; must be new or empty. None: the CLI picks
    runs/<timestamp>_<games>_<core>_<algo>."""

    distribution_mode: DistributionMode = "easy"
    """ProcGen distribution mode: easy | hard | extreme | memory."""

    num_levels: int = 200
    """Number of training levels (0 = the full, unbounded level distribution)."""

    start_level: int = 0
    """First level seed of the training levels."""

    task_kwargs: dict[str, Any] = field(default_factory=dict)
    """Parameters of a synthetic task, passed to envs.make_env (command line: delay=8
    num_cues=2, or a JSON object)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The network (encoder, core, heads); see policies.config.ModelConfig."""

    ppo: PPOConfig = field(default_factory=PPOConfig)
    """PPO hyper-parameters (used when algo == ppo); num_minibatches lives here."""

    vtrace: VTraceConfig = field(default_factory=VTraceConfig)
    """V-trace / IMPALA hyper-parameters (used when algo == vtrace)."""

    checkpoint_every_steps: StepCount = 5_000_000
    """Save a checkpoint every this many env steps (0 disables step-based checkpoints)."""

    checkpoint_every_minutes: float = 30.0
    """Also save one when this many minutes passed since the last (0 disables)."""

    keep_checkpoints: int = 3
    """Keep only the newest k checkpoint files (k >= 1)."""

    log_every: int = 1
    """Write TensorBoard scalars every this many updates."""

    pipeline: Pipeline = "auto"
    """Training loop: sync (collect, then update, strictly in turn; bitwise reproducible) |
    async (agents/pipeline.py: the env groups step in their own threads while the policy acts
    on the other group, and the next segment is collected while the learner updates, with
    parameters at most max_policy_lag updates old) | auto (async on CUDA, sync on a CPU)."""

    max_policy_lag: int = 1
    """Async pipeline: the most updates the acting parameters may lag the learner's (0: the
    collection of a segment waits for the previous update; PPO allows 0 or 1). Logged as
    charts/policy_lag."""

    env_groups: int = 0
    """Async pipeline: split the envs into this many groups, stepped in turn while the policy
    acts on another (double-buffered sampling). 0: auto (2 when the envs split evenly by
    game, else 1; printed at the start). Must divide num_envs into multiples of the games."""

    procgen_threads: int = 0
    """ProcGen worker threads per env (group). 0: ProcGen's own default with the sync
    pipeline, CPU cores / env groups with the async one (printed at the start)."""

    srwm_profile: SRWMProfile = "default"
    """A named set of SRWM settings applied before the other options given (agents.config.
    SRWM_PROFILES): default (this project's), published (the paper's code: docs/SPEC.md
    init, state detached every step and reset every episode), spec (docs/SPEC.md init with
    gradients through the unroll). Options given with it override it."""

    preset: str | None = None
    """Start from this named preset (agents.config.PRESETS; options given with it override
    it). Kept in the saved config as a record of where the run started."""

    # ------------------------------------------------------------------ derived values
    @property
    def num_minibatches(self) -> int:
        """PPO minibatches per epoch (stored in `ppo.num_minibatches`; one source of truth)."""
        return int(self.ppo.num_minibatches)

    @num_minibatches.setter
    def num_minibatches(self, value: int) -> None:
        self.ppo.num_minibatches = int(value)

    @property
    def steps_per_update(self) -> int:
        """Env steps consumed by one update: num_envs * unroll."""
        self._require_resolved()
        return int(self.num_envs) * int(self.unroll)

    @property
    def num_updates(self) -> int:
        """Updates needed to reach total_steps (the last one may overshoot it); the same rule
        (agents.learners.planned_updates) sets the length of the LR schedules."""
        return planned_updates(self.total_steps, self.steps_per_update)

    def _require_resolved(self) -> None:
        if self.num_envs is None or self.unroll is None:
            raise ConfigError("config is not resolved (num_envs / unroll unset); call resolved()")

    # ------------------------------------------------------------------ resolution
    def resolved(self, *, check_games: bool = True) -> TrainConfig:
        """A validated copy with games expanded and algorithm defaults filled in.

        The ONE place derived values are computed. `check_games=False` keeps `games` as given
        (used when training on a caller-supplied VecEnv).
        """
        cfg = TrainConfig.from_dict(self.to_dict())
        if cfg.algo not in ALGOS:
            raise ConfigError(f"unknown algo {cfg.algo!r}; valid: {', '.join(ALGOS)}")
        if check_games:
            from envs import resolve_games

            try:
                cfg.games = list(resolve_games(cfg.games))
            except ValueError as e:
                raise ConfigError(one_line(e)) from None
        if cfg.unroll is None:
            cfg.unroll = DEFAULT_UNROLL[cfg.algo]
        if cfg.num_envs is None:
            step = len(cfg.games) if cfg.games else 1
            split = cfg.num_minibatches if cfg.algo == "ppo" else cfg.vtrace.batch_size
            step = math.lcm(step, max(1, int(split)))
            base = DEFAULT_NUM_ENVS[cfg.algo]
            cfg.num_envs = step * math.ceil(base / step)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ConfigError (one line, naming the bad value and what is valid) on bad input."""
        def bad(msg: str) -> None:
            raise ConfigError(msg)

        for name, value in _numbers(self):
            if not math.isfinite(value):
                bad(f"{name} must be a finite number, got {value}")
        if self.srwm_profile not in SRWM_PROFILES:
            bad(f"unknown srwm_profile {self.srwm_profile!r}; valid: {', '.join(SRWM_PROFILES)}")
        if self.preset is not None and self.preset not in PRESETS:
            bad(f"unknown preset {self.preset!r}; valid: {', '.join(PRESETS)}")
        if self.algo not in ALGOS:
            bad(f"unknown algo {self.algo!r}; valid: {', '.join(ALGOS)}")
        if not (self.state_lifetime == 0 or self.state_lifetime >= 1):
            bad(f"state_lifetime must be 0 (no lifetime) or >= 1 episode, got "
                f"{self.state_lifetime}")
        if self.state_reset not in STATE_RESETS:
            bad(f"unknown state_reset {self.state_reset!r}; valid: {', '.join(STATE_RESETS)}")
        if self.distribution_mode not in DISTRIBUTION_MODES:
            bad(f"unknown distribution_mode {self.distribution_mode!r}; valid: "
                f"{', '.join(DISTRIBUTION_MODES)}")
        if self.model.core not in CORE_NAMES:
            bad(f"unknown core {self.model.core!r}; valid: {', '.join(sorted(CORE_NAMES))}")
        if not self.games:
            bad("no games given; valid: a game name, a comma list, all, paper6, memory4")
        if self.total_steps < 1:
            bad(f"total_steps must be >= 1, got {self.total_steps}")
        self._require_resolved()
        if self.num_envs < 1:
            bad(f"num_envs must be >= 1, got {self.num_envs}")
        if self.unroll < 1:
            bad(f"unroll must be >= 1, got {self.unroll}")
        n_games = len(self.games)
        if self.num_envs % n_games:
            lo = n_games * max(1, self.num_envs // n_games)
            bad(f"num_envs {self.num_envs} is not a multiple of the number of games "
                f"({n_games}: {','.join(self.games)}); try {lo} or {lo + n_games}")
        if self.algo == "ppo":
            mb = self.num_minibatches
            if mb < 1 or self.num_envs % mb:
                divisors = [d for d in range(1, self.num_envs + 1) if self.num_envs % d == 0]
                bad(f"num_minibatches {mb} does not divide num_envs {self.num_envs} (PPO splits "
                    f"minibatches by env); valid: {', '.join(map(str, divisors))}")
        if self.algo == "vtrace":
            bs = int(self.vtrace.batch_size)
            if bs < 1 or self.num_envs % min(bs, self.num_envs):
                divisors = [d for d in range(1, self.num_envs + 1) if self.num_envs % d == 0]
                bad(f"V-trace batch_size {bs} does not divide num_envs {self.num_envs} (whole "
                    f"sequences per optimizer step); valid: {', '.join(map(str, divisors))} "
                    f"or >= {self.num_envs}")
        try:  # the learner's own checks, here so that they come before any run dir exists
            if self.algo == "ppo":
                check_ppo_config(self.ppo, self.num_envs)
            else:
                check_vtrace_config(self.vtrace, self.num_envs)
        except ValueError as e:
            bad(one_line(e))
        if self.pipeline not in PIPELINES:
            bad(f"unknown pipeline {self.pipeline!r}; valid: {', '.join(PIPELINES)}")
        if self.max_policy_lag < 0:
            bad(f"max_policy_lag must be >= 0, got {self.max_policy_lag}")
        if self.algo == "ppo" and self.max_policy_lag > 1:
            bad(f"max_policy_lag {self.max_policy_lag} is not supported with PPO (its clipped "
                f"ratio assumes near on-policy data); valid: 0, 1")
        if self.env_groups < 0:
            bad(f"env_groups must be >= 0 (0 = auto), got {self.env_groups}")
        if self.env_groups > 0:
            g = self.env_groups
            if self.num_envs % g or (self.num_envs // g) % n_games:
                ok = [d for d in range(1, self.num_envs + 1)
                      if self.num_envs % d == 0 and (self.num_envs // d) % n_games == 0]
                bad(f"env_groups {g} does not split num_envs {self.num_envs} into groups of "
                    f"whole multiples of the {n_games} game(s); valid: "
                    f"{', '.join(map(str, ok))} (or 0 = auto)")
        if self.procgen_threads < 0:
            bad(f"procgen_threads must be >= 0 (0 = auto), got {self.procgen_threads}")
        if self.num_levels < 0:
            bad(f"num_levels must be >= 0 (0 = unbounded), got {self.num_levels}")
        if self.start_level < 0:
            bad(f"start_level must be >= 0, got {self.start_level}")
        if not valid_device(self.device):
            bad(f"unknown device {self.device!r}; valid: {DEVICES_HELP}")
        if self.checkpoint_every_steps < 0 or self.checkpoint_every_minutes < 0:
            bad("checkpoint_every_steps / checkpoint_every_minutes must be >= 0 (0 disables)")
        if self.keep_checkpoints < 1:
            bad(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.log_every < 1:
            bad(f"log_every must be >= 1, got {self.log_every}")

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (nested dicts for model / ppo / vtrace)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "model":
                value = value.to_dict()
            elif f.name in ("ppo", "vtrace"):
                value = _plain(dataclasses.asdict(value))
            elif isinstance(value, (list, tuple)):
                value = list(value)
            elif isinstance(value, dict):
                value = _plain(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of to_dict. Unknown keys (also nested ones) raise ConfigError naming them;
        the run facts of config.json (`RUN_INFO_KEYS`: world_size) are ignored."""
        if not isinstance(d, dict):
            raise ConfigError(f"config must be a dict, got {type(d).__name__}")
        d = {k: v for k, v in d.items() if k not in RUN_INFO_KEYS}
        _check_keys("TrainConfig", d, cls)
        kwargs = dict(d)
        if "games" in kwargs:
            g = kwargs["games"]
            kwargs["games"] = [s for s in g.split(",") if s] if isinstance(g, str) else list(g)
        try:
            if "model" in kwargs:
                m = kwargs["model"]
                kwargs["model"] = m if isinstance(m, ModelConfig) else ModelConfig.from_dict(m)
            for name, sub in (("ppo", PPOConfig), ("vtrace", VTraceConfig)):
                if name in kwargs and not isinstance(kwargs[name], sub):
                    _check_keys(f"{name} config", kwargs[name], sub)
                    kwargs[name] = _build_dataclass(sub, kwargs[name])
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(one_line(e)) from None
        return cls(**kwargs)

    # ------------------------------------------------------------------ presets / overrides
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """A config from a named preset with `overrides` (dotted keys allowed) applied on top."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
        cfg = cls(preset=name)
        cfg.apply_overrides(PRESETS[name])
        cfg.apply_overrides(overrides)
        return cfg

    def apply_overrides(self, overrides: dict[str, Any]) -> None:
        """Set fields from {"field" or "model.field" / "ppo.field" / "vtrace.field": value}.
        An "srwm_profile" among them is applied first, the other keys on top of it."""
        overrides = dict(overrides)
        if "srwm_profile" in overrides:
            name = overrides.pop("srwm_profile")
            if name not in SRWM_PROFILES:
                raise ConfigError(f"unknown srwm_profile {name!r}; valid: "
                                  f"{', '.join(SRWM_PROFILES)}")
            overrides = {**SRWM_PROFILES[name], "srwm_profile": name, **overrides}
        for key, value in overrides.items():
            target: Any = self
            parts = key.split(".")
            for part in parts[:-1]:
                if not hasattr(target, part):
                    raise ConfigError(f"unknown config key {key!r}")
                target = getattr(target, part)
            leaf = parts[-1]
            names = {f.name for f in dataclasses.fields(target)}
            if leaf not in names:
                raise ConfigError(f"unknown config key {key!r}; valid: {', '.join(sorted(names))}")
            if key == "games" and isinstance(value, str):
                value = [s for s in value.split(",") if s]
            setattr(target, leaf, value)
        # ModelConfig validates in __post_init__: rebuild it so overrides are checked too.
        try:
            self.model = ModelConfig.from_dict(self.model.to_dict())
        except ValueError as e:
            raise ConfigError(one_line(e)) from None


def _numbers(cfg: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted name, value) of every float field of cfg and its nested configs."""
    out: list[tuple[str, float]] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out += _numbers(value, f"{prefix}{f.name}.")
        elif isinstance(value, float):
            out.append((prefix + f.name, value))
    return out


def set_learning_rate(cfg: TrainConfig, lr: float) -> None:
    """Set the (initial) learning rate of the learner `cfg.algo` uses."""
    (cfg.ppo if cfg.algo == "ppo" else cfg.vtrace).lr = float(lr)


def _check_keys(what: str, d: Any, cls: type) -> None:
    if not isinstance(d, dict):
        raise ConfigError(f"{what} must be a dict, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown {what} keys: {', '.join(unknown)}; valid keys: "
                          f"{', '.join(sorted(known))}")


def _build_dataclass(cls: type, d: dict[str, Any]) -> Any:
    """Build a dataclass from a JSON dict, turning lists back into tuples where the default
    value is a tuple."""
    kwargs = {}
    defaults = cls()
    for k, v in d.items():
        if isinstance(v, list) and isinstance(getattr(defaults, k, None), tuple):
            v = tuple(v)
        kwargs[k] = v
    return cls(**kwargs)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
