"""One run over several processes (GPUs, machines) with torch.distributed, launched by torchrun.

    torchrun --nproc-per-node 2 train_rl.py --games bigfish,starpilot --num-envs 8 ...
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
        train_rl.py ...

A process started by torchrun finds RANK, WORLD_SIZE and LOCAL_RANK in its environment
(`world_from_env`). Without them (a plain `python train_rl.py`), or with WORLD_SIZE = 1, nothing
here is initialised and the run is the ordinary single-process run, bit for bit.

Data parallel, the semantics (the same for PPO and V-trace):

- `--num-envs` is the TOTAL over all ranks, as are `ppo.num_minibatches` (minibatches per
  epoch) and `vtrace.batch_size` (sequences per optimizer step). Rank r steps num_envs / W
  envs; one update consumes num_envs * unroll env steps in total, exactly as a single process
  with the same config. A config therefore means the same run whatever the world size, and the
  run can be resumed with another one. Each rank's share must be a multiple of the number of
  games (env n of a rank plays game n mod G, so every rank keeps the game mix), of
  `ppo.num_minibatches` (PPO) and the V-trace batch must split evenly over the ranks
  (`check_config`, one line and exit 2 on every rank before any env starts).
- Every optimizer step: each rank computes the gradient of its share of the minibatch (PPO:
  num_envs / (num_minibatches * W) sequences of its own rollout; V-trace: batch_size / W), the
  flattened gradients are all-reduced (PPO: averaged, its loss is a mean; V-trace: summed, its
  loss is a sum over the batch), then every rank clips the same global norm and takes the same
  optimizer step, so the parameters stay bitwise equal on every rank. PPO's advantage
  normalisation uses the mean and std of the whole distributed minibatch (`mean_std`), and the
  reward normaliser sees the rewards of all envs of all ranks (`normalize_rewards`: one
  all-gather per update; every rank keeps the same normaliser over all num_envs envs). With one
  minibatch (PPO num_minibatches = 1, V-trace batch_size >= num_envs) an update on W ranks is
  the update of one process on the W rollouts side by side (up to float summation order); with
  several minibatches each global minibatch takes the same number of sequences from every rank
  (the draw differs from one process's draw, its distribution does not).
- Why an explicit all-reduce and not DistributedDataParallel: the learner replays whole env
  sequences through a recurrent core, one forward/backward per minibatch, and clips the global
  gradient norm afterwards. DDP's bucketed overlap helps little with models of this size (a
  few million parameters: one all-reduce of a few MB), it needs find_unused_parameters for
  cores with unused parameters, and it hides where the averaging happens. One flat all-reduce
  in `Learner._optimizer_step` (agents/learners.py) is a few lines, covers both learners and
  every core (the fused SRWM kernel included: only gradients travel) and keeps the
  single-process path untouched.

Around the loop:

- Rank 0 alone writes the run dir (config.json, TensorBoard, checkpoints, progress); the run
  dir check and creation run on rank 0 and their outcome is shared (`agree`), so a bad run dir
  stops every rank. config.json and every checkpoint record `world_size`.
- Episode statistics are gathered from every rank after each update; the logged losses are the
  mean over ranks; SPS counts the env steps of all ranks.
- RNG: rank 0 keeps the seed's streams (`seed`), rank r > 0 seeds python, numpy and torch with
  `rank_seed(seed, r)`; env seeds and the state-lifetime draws are derived the same way. Every
  checkpoint holds every rank's RNG states (`rng_ranks`).
- Resume. Same world size: every rank restores its own RNG streams. Another world size: model,
  optimizer, LR schedule, counters and the reward normaliser carry over unchanged (none of them
  depends on W); rank 0 restores its streams, the other ranks start fresh streams from
  `rank_seed(seed + global_step, r)`. The envs restart (as on any resume) and the core states
  start from zeros. Resume reads the run dir on every rank: on several machines it must be on a
  shared filesystem.
- Faults: SIGINT / SIGTERM (torchrun forwards them to every worker) are agreed on after every
  update (`agree_stop`), so every rank leaves the loop after the same update, rank 0 writes the
  checkpoint and the ranks exit 130 / 143. A rank that dies or raises: the others fail in their
  next collective (the connection drops, or the collective timeout, `SRWM_DIST_TIMEOUT_S`,
  default 300 s, passes) and exit 1 with one line naming their rank; torchrun stops the rest
  and reports the first failed rank.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from .errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from .config import TrainConfig
    from .learners import Learner

TIMEOUT_ENV = "SRWM_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 300.0
_SIGNALS = {0: None, 2: "SIGINT", 15: "SIGTERM"}


@dataclass(frozen=True)
class World:
    """Where this process stands in the job: rank, world size, rank on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = World()


def world_from_env(environ: Mapping[str, str] | None = None) -> World:
    """The World that torchrun's RANK / WORLD_SIZE / LOCAL_RANK describe (SINGLE without
    them). ConfigError for values that do not make sense."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return SINGLE
    try:
        size = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError(f"torch.distributed environment is not numeric: WORLD_SIZE="
                          f"{env.get('WORLD_SIZE')!r} RANK={env.get('RANK')!r} LOCAL_RANK="
                          f"{env.get('LOCAL_RANK')!r}") from None
    if size < 1 or not 0 <= rank < size or local < 0:
        raise ConfigError(f"torch.distributed environment is inconsistent: WORLD_SIZE={size} "
                          f"RANK={rank} LOCAL_RANK={local} (valid: 0 <= RANK < WORLD_SIZE)")
    return World(rank, size, local) if size > 1 else SINGLE


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s streams: `seed` itself on rank 0."""
    return int(seed + rank * 1_000_003) % (2**31 - 1) if rank else int(seed)


def timeout_s() -> float:
    """The collective timeout (SRWM_DIST_TIMEOUT_S, default 300 s)."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds")
    return value


def check_config(cfg: TrainConfig, world: World) -> None:
    """ConfigError (one line) unless the resolved cfg splits over world.world_size ranks."""
    if not world.distributed:
        return
    w, n, games = world.world_size, int(cfg.num_envs), len(cfg.games)
    per = n // w
    unit = w * _lcm_hint(cfg, w)
    hint = (f"(--num-envs is the total over the {w} ranks; each rank needs a multiple of "
            f"{_lcm_hint(cfg, w)}: valid totals are multiples of {unit}, e.g. "
            f"{unit * max(1, -(-n // unit))})")
    if n % w:
        raise ConfigError(f"num_envs {n} does not split over {w} ranks {hint}")
    if per % games:
        raise ConfigError(f"num_envs {n} gives {per} envs per rank, not a multiple of the "
                          f"{games} games {hint}")
    if cfg.algo == "ppo" and per % int(cfg.ppo.num_minibatches):
        raise ConfigError(f"num_envs {n} gives {per} envs per rank, which num_minibatches "
                          f"{cfg.ppo.num_minibatches} does not divide {hint}")
    if cfg.algo == "vtrace":
        batch = min(int(cfg.vtrace.batch_size), n)
        if batch % w:
            raise ConfigError(f"V-trace batch of {batch} sequences does not split over {w} "
                              f"ranks; use a --batch-size that is a multiple of {w}")


def _lcm_hint(cfg: TrainConfig, w: int) -> int:
    import math

    split = int(cfg.ppo.num_minibatches) if cfg.algo == "ppo" else 1
    return math.lcm(len(cfg.games), split)


def local_config(cfg: TrainConfig, world: World) -> TrainConfig:
    """cfg itself for one process; else a copy with this rank's num_envs (for the memory
    check of the rank's own envs and buffer)."""
    if not world.distributed:
        return cfg
    from .config import TrainConfig

    return TrainConfig.from_dict({**cfg.to_dict(), "num_envs": local_num_envs(cfg, world)})


def local_num_envs(cfg: TrainConfig, world: World) -> int:
    """The envs this rank steps."""
    return int(cfg.num_envs) // world.world_size


def rank_device(device: torch.device, world: World) -> torch.device:
    """cuda (or cuda:0) under torchrun -> cuda:LOCAL_RANK; anything else unchanged."""
    if world.distributed and device.type == "cuda" and (device.index or 0) == 0:
        index = world.local_rank
        if index >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {index} has no GPU (this machine has "
                              f"{torch.cuda.device_count()}); start at most that many "
                              f"processes per node")
        return torch.device("cuda", index)
    return device


# ---------------------------------------------------------------------- the process group
PROG = ["train_rl.py"]
"""The program name that failure lines start with (set by `guard_rank`)."""


class CollectiveError(RuntimeError):
    """A collective failed (another rank died, raised or hung); already reported."""


def _report(world: World, message: str) -> None:
    """Print the one line of a failed rank at once (SIGTERM, which torchrun sends when it sees
    the first rank fail, is ignored from here on so that the line gets out)."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass
    print(f"{PROG[0]}: error on rank {world.rank} of {world.world_size}: {message}",
          file=sys.stderr, flush=True)


def _collective(fn: Any) -> Any:
    """Report a failed collective in one line naming this rank, then raise CollectiveError."""

    @functools.wraps(fn)
    def wrapper(self: Sync, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except CollectiveError:
            raise
        except RuntimeError as e:
            from .errors import one_line

            msg = (f"a collective failed ({fn.__name__}): another rank died, raised or hung "
                   f"(see its log); {type(e).__name__}: {one_line(e)[:300]}")
            _report(self.world, msg)
            raise CollectiveError(msg) from e

    return wrapper


class Sync:
    """The collectives a distributed run uses; one instance per process (`start`)."""

    def __init__(self, world: World, device: torch.device) -> None:
        self.world = world
        self.device = device  # where collective tensors live (cuda for nccl, cpu for gloo)

    # -------------------------------------------------------------- the update
    @_collective
    @torch.no_grad()
    def all_reduce_grads(self, params: Iterable[torch.nn.Parameter], reduction: str,
                         finite: bool = True) -> bool:
        """Sum the gradients over ranks (reduction "sum") or average them ("mean"), in place,
        as one flat tensor. `finite`: this rank's loss was finite; returns whether every
        rank's was (the flag travels as one more element of the same all-reduce)."""
        grads = [p.grad for p in params if p.grad is not None]
        flag = torch.tensor([0.0 if finite else 1.0], device=self.device)
        flat = torch.cat([g.reshape(-1).to(self.device) for g in grads] + [flag])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        all_finite = bool(flat[-1] == 0)
        if reduction == "mean":
            flat.div_(self.world.world_size)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        return all_finite

    @_collective
    @torch.no_grad()
    def mean_std(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (unbiased) std of the union of every rank's x (std 0 for one element)."""
        x64 = x.detach().to(self.device, torch.float64)
        t = torch.stack([x64.sum(), (x64 * x64).sum(),
                         torch.tensor(float(x64.numel()), dtype=torch.float64,
                                      device=self.device)])
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        s, ss, n = t[0], t[1], t[2]
        mean = s / n
        var = ((ss - n * mean * mean) / (n - 1).clamp_min(1.0)).clamp_min(0.0)  # 1 element: 0
        return mean.to(x.device, x.dtype), var.sqrt().to(x.device, x.dtype)

    @_collective
    @torch.no_grad()
    def mean_scalar(self, value: float) -> float:
        """The mean of one number over the ranks (every rank must call it)."""
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t[0]) / self.world.world_size

    @torch.no_grad()
    def normalize_rewards(self, normalizer: Any, rewards: torch.Tensor, dones: torch.Tensor
                          ) -> torch.Tensor:
        """Run the (all-env) reward normaliser over every rank's rewards side by side (rank
        order) and return this rank's columns."""
        parts_r = self.all_gather(rewards)
        parts_d = self.all_gather(dones.to(torch.uint8))
        full = normalizer(torch.cat(parts_r, dim=1), torch.cat(parts_d, dim=1).bool())
        b = rewards.shape[1]
        r = self.world.rank
        return full[:, r * b:(r + 1) * b].to(rewards.device)

    @_collective
    def all_gather(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.detach().to(self.device).contiguous()
        out = [torch.empty_like(x) for _ in range(self.world.world_size)]
        dist.all_gather(out, x)
        return out

    @_collective
    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank."""
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                buf = t.detach().to(self.device).clone()
                dist.broadcast(buf, src=0)
                t.copy_(buf.to(t.device))

    # -------------------------------------------------------------- the loop
    @_collective
    def agree_stop(self, signal_name: str | None, due_time: bool) -> tuple[str | None, bool]:
        """(the signal any rank received, whether any rank's checkpoint clock is due)."""
        code = {v: k for k, v in _SIGNALS.items()}.get(signal_name, 15)
        t = torch.tensor([code, int(bool(due_time))], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return _SIGNALS.get(int(t[0]), "SIGTERM"), bool(t[1])

    @_collective
    def gather_objects(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world.world_size
        dist.all_gather_object(out, obj)
        return out

    def mean_scalars(self, scalars: Mapping[str, float]) -> dict[str, float]:
        """Each key's mean over the ranks that have it."""
        sums: dict[str, list[float]] = {}
        for d in self.gather_objects(dict(scalars)):
            for k, v in d.items():
                sums.setdefault(k, []).append(float(v))
        return {k: sum(v) / len(v) for k, v in sums.items()}

    def agree(self, error: str | None) -> None:
        """Raise ConfigError on every rank if any rank has an error message."""
        errors = self.gather_objects(error)
        for rank, msg in enumerate(errors):
            if msg is not None:
                raise ConfigError(msg if rank == 0 else f"rank {rank}: {msg}")

    @_collective
    def barrier(self) -> None:
        dist.barrier()


def start(world: World, device: torch.device) -> Sync | None:
    """Initialise the process group (nccl on CUDA, gloo otherwise) with the collective
    timeout; None (nothing initialised) for a single process."""
    if not world.distributed:
        return None
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s()))
    if dist.get_world_size() != world.world_size or dist.get_rank() != world.rank:
        raise ConfigError(f"process group (rank {dist.get_rank()} of {dist.get_world_size()}) "
                          f"does not match RANK {world.rank} / WORLD_SIZE {world.world_size}")
    return Sync(world, device if backend == "nccl" else torch.device("cpu"))


def stop(sync: Sync | None) -> None:
    """Destroy the process group started by `start`."""
    if sync is not None and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------- learner and RNG
def attach(learner: Learner, sync: Sync) -> None:
    """Make `learner` a data-parallel learner: its minibatch becomes this rank's share and its
    optimizer steps all-reduce the gradients; rank 0's parameters are copied to every rank."""
    w = sync.world.world_size
    if learner.minibatch_size % w:
        raise ConfigError(f"minibatch of {learner.minibatch_size} sequences does not split "
                          f"over {w} ranks")
    learner.minibatch_size //= w
    learner.sync = sync
    sync.broadcast_module(learner.policy)
    sync_acting = getattr(learner, "sync_acting_policy", None)
    if sync_acting is not None:
        sync_acting()


def seed_rank(world: World, seed: int, payload: Mapping[str, Any] | None) -> None:
    """Give this rank its own RNG streams: a fresh run seeds rank r > 0 from rank_seed; a
    resume restores the rank's saved streams when the world size is the same, else (r > 0)
    seeds from rank_seed(seed + global_step, r). Rank 0 keeps what train() set."""
    from .checkpoint import set_rng_state
    from .runtime import seed_everything

    if payload is not None:
        saved = payload.get("rng_ranks")
        if saved is not None and len(saved) == world.world_size:
            set_rng_state(saved[world.rank])
            return
    if world.rank == 0:
        return
    step = int(payload["global_step"]) if payload is not None else 0
    seed_everything(rank_seed(seed + step, world.rank))


def guard_rank(prog: str, main: Any) -> int:
    """Run `main()`; under torch.distributed an unexpected error (a failed collective, a crash)
    prints one line naming this rank (before the traceback) and returns 1. A single process
    runs `main()` unguarded."""
    world = world_from_env()
    if not world.distributed:
        return main()
    from .errors import UserError, one_line

    PROG[0] = prog
    try:
        return main()
    except (UserError, KeyboardInterrupt):
        raise
    except CollectiveError:
        return 1  # reported where it failed
    except Exception as e:
        import traceback

        _report(world, f"{type(e).__name__}: {one_line(e)[:300]}")
        traceback.print_exc()
        return 1
