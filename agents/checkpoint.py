"""Checkpoints: atomic save, keep-last-k, find the latest, load safely (weights_only).

A checkpoint is one `torch.save` file `checkpoints/ckpt_<global_step:012d>.pt` holding ONLY
plain containers (dict, list, tuple, str, int, float, bool, None) and tensors, so it is read
with `torch.load(weights_only=True)`: loading an untrusted checkpoint cannot run code.

Payload (format version 1):

    format            "srwm-procgen-checkpoint"
    format_version    1
    config            TrainConfig.to_dict() (resolved)
    model             ActorCritic.state_dict()
    learner           Learner.state_dict() (optimizer, lr schedule, reward normaliser, ...)
    global_step       env steps done
    update            updates done
    rng               {"python": tuple, "numpy": {...}, "torch": ByteTensor, "cuda": [ByteTensor]}
    wall_time         time.time() at save
    elapsed_s         training seconds so far (summed over resumes)
    num_actions       size of the action space (the checkpoint stores no env)
    extra             dict of small plain values (e.g. episode counters)

`build_payload` assembles it from a run's state (`weights_only_safe` turns the learner's numpy
values into tensors and plain numbers); `restore` loads a payload's model and learner state
back into a policy and learner.

Writes are atomic: a temp file in the same directory, flush + fsync, os.replace, then the
directory is fsynced. A write killed half-way leaves the previous checkpoints intact (and at
worst a `.tmp` file that is ignored and cleaned up by the next save).

Reading a run dir takes its newest checkpoint that loads and validates (format, version, keys,
finite parameters): a newer truncated, zeroed, damaged, empty or NaN one is named in one
`warning:` line and left in place (`load_newest_valid`). Corrupt-file messages are one whole
sentence that says what is wrong, not a cut library message.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import re
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .errors import CheckpointError, one_line

if TYPE_CHECKING:
    from .config import TrainConfig
    from .learners import Learner

FORMAT = "srwm-procgen-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
_NAME_RE = re.compile(r"^ckpt_(\d{12})\.pt$")
FAULT_KILL_IN_WRITE = "AGENTS_FAULT_KILL_IN_CHECKPOINT_WRITE"
"""Test hook (tests/test_faults.py only, not an option): when this environment variable is
N, the N-th checkpoint write of the process stops half-way with SIGKILL."""
_checkpoint_writes = 0


# ---------------------------------------------------------------------- atomic writes
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (temp file in the same dir, fsync, rename, fsync dir)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if os.environ.get(FAULT_KILL_IN_WRITE) and _NAME_RE.match(path.name):
                _die_half_way(f, data)  # test hook (tests/test_faults.py), not for users
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _die_half_way(f: Any, data: bytes) -> None:
    """The fault-injection hook: write half of a checkpoint to its temp file, then SIGKILL
    this process (as a kill or power loss in the middle of a write would)."""
    import signal

    global _checkpoint_writes
    _checkpoint_writes += 1
    if _checkpoint_writes < int(os.environ[FAULT_KILL_IN_WRITE]):
        return
    f.write(data[: len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON atomically."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as weights_only-safe values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": str(np_state[0]),
            "key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64).copy()),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what rng_state() returned (CUDA states only where CUDA is present)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["key"].numpy().astype(np.uint32), int(n["pos"]),
                         int(n["has_gauss"]), float(n["cached_gaussian"])))
    torch.set_rng_state(state["torch"].cpu())
    cuda = list(state.get("cuda") or [])
    if cuda and torch.cuda.is_available():
        n_dev = min(len(cuda), torch.cuda.device_count())
        for i in range(n_dev):
            torch.cuda.set_rng_state(cuda[i].cpu(), device=i)


# ---------------------------------------------------------------------- the payload
def build_payload(cfg: TrainConfig, policy: torch.nn.Module, learner: Learner, *,
                  global_step: int, update: int, elapsed_s: float, num_actions: int,
                  episodes: int) -> dict[str, Any]:
    """The payload of a checkpoint (see the module docstring) of a run in this state."""
    return {
        "config": cfg.to_dict(),
        "model": policy.state_dict(),
        "learner": weights_only_safe(learner.state_dict()),
        "global_step": int(global_step),
        "update": int(update),
        "rng": rng_state(),
        "wall_time": time.time(),
        "elapsed_s": float(elapsed_s),
        "num_actions": int(num_actions),
        "torch_version": str(torch.__version__),
        "extra": {"episodes": int(episodes)},
    }


def weights_only_safe(obj: Any) -> Any:
    """`obj` with numpy arrays as tensors and numpy scalars as python numbers, so that
    `torch.load(weights_only=True)` reads it."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: weights_only_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        seq = [weights_only_safe(v) for v in obj]
        return seq if isinstance(obj, list) else tuple(seq)
    return obj


def restore(policy: torch.nn.Module, learner: Learner, payload: Mapping[str, Any]) -> None:
    """Load a payload's model and learner state (CheckpointError, one line, if they do not fit
    this policy and learner)."""
    load_model_state(policy, payload["model"], payload["path"])
    state = payload.get("learner")
    if state is None:
        raise CheckpointError(f"checkpoint {payload['path']!r} has no learner state "
                              f"(wrong format)")
    try:
        learner.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"checkpoint {payload['path']!r}: learner state does not fit "
                              f"the {learner.algo} learner ({_short(e)})") from None


# ---------------------------------------------------------------------- save / find / load
def checkpoint_path(run_dir: str | os.PathLike, global_step: int) -> Path:
    """run_dir/checkpoints/ckpt_<global_step:012d>.pt"""
    return Path(run_dir) / CHECKPOINT_DIR / f"ckpt_{int(global_step):012d}.pt"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint files of a run dir, oldest (lowest step) first; temp files ignored."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir()
             if (m := _NAME_RE.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def find_latest_checkpoint(run_dir: str | os.PathLike) -> Path:
    """The checkpoint with the highest step in run_dir/checkpoints; CheckpointError if none."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise CheckpointError(f"run dir {str(run_dir)!r} does not exist")
    if not run_dir.is_dir():
        raise CheckpointError(f"{str(run_dir)!r} is not a directory")
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise CheckpointError(f"no checkpoint in {str(run_dir)!r} (expected "
                              f"{CHECKPOINT_DIR}/ckpt_<step>.pt files)")
    return ckpts[-1]


def save_checkpoint(run_dir: str | os.PathLike, payload: dict[str, Any],
                    keep: int | None = None) -> Path:
    """Atomically write `payload` (see module docstring) and keep only the newest `keep` files.

    `payload` must contain at least config, model, global_step; format fields are added.
    """
    payload = dict(payload)
    payload["format"] = FORMAT
    payload["format_version"] = FORMAT_VERSION
    payload.setdefault("wall_time", time.time())
    path = checkpoint_path(run_dir, payload["global_step"])
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())
    # clean up temp files of killed writes (not our own: it was renamed already)
    for tmp in path.parent.glob(".ckpt_*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass
    if keep is not None:
        prune_checkpoints(run_dir, keep)
    return path


def prune_checkpoints(run_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoints; returns the deleted paths."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    ckpts = list_checkpoints(run_dir)
    old = ckpts[:-keep]
    for p in old:
        p.unlink(missing_ok=True)
    if old:
        _fsync_dir(Path(run_dir) / CHECKPOINT_DIR)
    return old


def resolve_checkpoint_path(path_or_run_dir: str | os.PathLike) -> Path:
    """A checkpoint file as given, or the latest checkpoint of a run dir."""
    p = Path(path_or_run_dir)
    if p.is_dir():
        if (p / CHECKPOINT_DIR).is_dir() or not any(p.glob("*.pt")):
            return find_latest_checkpoint(p)
        raise CheckpointError(f"{str(p)!r} is a directory without {CHECKPOINT_DIR}/")
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    return p


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / CHECKPOINT_DIR).is_dir() or not any(path.glob("*.pt")))


def load_checkpoint(path_or_run_dir: str | os.PathLike, map_location: Any = "cpu"
                    ) -> dict[str, Any]:
    """Read and check a checkpoint (weights_only); tensors mapped to `map_location`.

    Given a run dir: its newest checkpoint that loads and validates (`load_newest_valid`);
    each newer one that does not is named in one warning line on stderr and left in place.
    Given a file: that file. Raises CheckpointError (one line) for a missing, unreadable,
    corrupt or foreign file, or a run dir without an intact checkpoint.
    """
    p = Path(path_or_run_dir)
    if _is_run_dir(p):
        return load_newest_valid(p, map_location)
    path = resolve_checkpoint_path(p)
    try:
        return _load_file(path, map_location)
    except CheckpointError as e:
        raise CheckpointError(f"{e}{_sibling_hint(path)}") from None


def _sibling_hint(path: Path) -> str:
    """For a bad checkpoint file inside a run dir: which intact one that run has, if any."""
    if path.parent.name != CHECKPOINT_DIR:
        return ""
    run_dir = path.parent.parent
    for other in reversed(list_checkpoints(run_dir)):
        if other.resolve() == path.resolve():
            continue
        try:
            _load_file(other, "cpu")
        except CheckpointError:
            continue
        return f"; the newest intact checkpoint of that run is {other.name}"
    return "; that run has no intact checkpoint"


def load_newest_valid(run_dir: str | os.PathLike, map_location: Any = "cpu",
                      warn: Any = None) -> dict[str, Any]:
    """The newest checkpoint of run_dir that loads and validates (`_load_file`). Every newer
    one that does not is named in one warning line (`warn`, default: stderr) and is never
    deleted. CheckpointError (one line) when no checkpoint exists or none is intact."""
    run_dir = Path(run_dir)
    ckpts = list_checkpoints(run_dir) if run_dir.is_dir() else []
    if not ckpts:
        find_latest_checkpoint(run_dir)  # raises the right "no checkpoint" error
    skipped: list[tuple[Path, str]] = []
    for path in reversed(ckpts):
        try:
            payload = _load_file(path, map_location)
        except CheckpointError as e:
            skipped.append((path, getattr(e, "reason", str(e))))
            continue
        for bad, reason in skipped:
            (warn or _warn)(f"skipped checkpoint {str(bad)!r}: {reason}; using the older "
                            f"{path.name} (the skipped file is kept)")
        return payload
    names = ", ".join(f"{p.name} ({r})" for p, r in skipped)
    raise CheckpointError(f"no intact checkpoint in {str(run_dir)!r}: {names}")


def _short(error: BaseException, limit: int = 120) -> str:
    """The first clause of an exception's message, whole words, at most `limit` characters."""
    text = one_line(error)
    for sep in (". ", "\t"):
        text = text.split(sep, 1)[0]
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return text or type(error).__name__


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _bad(path: Path, reason: str) -> CheckpointError:
    """A CheckpointError 'checkpoint PATH <reason>' that also keeps the reason alone."""
    err = CheckpointError(f"checkpoint {str(path)!r} {reason}")
    err.reason = reason  # type: ignore[attr-defined]
    return err


def _load_file(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read one checkpoint file, check its format and that its parameters are finite."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise _bad(path, "does not exist") from None
    except OSError as e:
        raise _bad(path, f"cannot be read ({e.strerror or type(e).__name__})") from None
    if path.is_dir():
        raise _bad(path, "is a directory")
    if size == 0:
        raise _bad(path, "is corrupt: empty (0 bytes)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError:
        raise _bad(path, "is not readable (permission denied)") from None
    except pickle.UnpicklingError as e:
        if "WeightsUnpickler" in str(e) or "weights_only" in str(e):
            raise _bad(path, "is corrupt or not a checkpoint of this project (it holds "
                             "more than tensors and plain values)") from None
        raise _bad(path, "is corrupt (its data cannot be unpickled)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError,
            KeyError, TypeError, IndexError) as e:
        raise _bad(path, f"is corrupt: truncated or damaged ({type(e).__name__} "
                         f"while reading it)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise _bad(path, f"is not a {FORMAT} file (wrong format)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise _bad(path, f"has format version {version!r}; this code reads version "
                         f"{FORMAT_VERSION}")
    for key in ("config", "model", "global_step"):
        if key not in payload:
            raise _bad(path, f"lacks {key!r} (wrong format)")
    if not isinstance(payload["model"], Mapping):
        raise _bad(path, "has no model state dict (wrong format)")
    bad = nonfinite_tensors(payload["model"])
    if bad:
        raise _bad(path, f"has non-finite parameters ({len(bad)} tensors, e.g. {bad[0]})")
    payload["path"] = str(path)
    return payload


def nonfinite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold a NaN or an inf."""
    return [k for k, v in state.items() if isinstance(v, torch.Tensor)
            and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def config_from_checkpoint(payload: Mapping[str, Any]) -> Any:
    """The TrainConfig stored in a loaded checkpoint; CheckpointError if it is not valid here
    (e.g. an unknown core)."""
    from .config import TrainConfig

    try:
        return TrainConfig.from_dict(dict(payload["config"]))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {payload.get('path', '?')!r} has a config this code "
                              f"cannot use: {one_line(e)}") from None


def load_model_state(policy: torch.nn.Module, state_dict: Mapping[str, Any],
                     path: str = "?") -> None:
    """load_state_dict(strict) with a one-line CheckpointError naming the first mismatches."""
    own = policy.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state_dict and hasattr(state_dict[k], "shape")
              and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {unexpected[0]})")
        if shapes:
            parts.append(f"shape mismatch {len(shapes)} (e.g. {shapes[0]}, checkpoint vs model)")
        raise CheckpointError(f"checkpoint {path!r} does not match the architecture of its "
                              f"config: {'; '.join(parts)}")
    policy.load_state_dict(state_dict, strict=True)


@dataclass
class LoadedAgent:
    """A trained policy ready to act, with the config it was trained with."""

    policy: torch.nn.Module
    """ActorCritic in eval mode, on the requested device."""
    config: Any
    """The run's TrainConfig."""
    global_step: int
    """Env steps the policy was trained for."""
    path: Path
    """The checkpoint file that was read."""


def load_agent(path_or_run_dir: str | os.PathLike, device: str | torch.device = "cpu"
               ) -> LoadedAgent:
    """Load a policy from a checkpoint file or a run dir's latest checkpoint.

    A checkpoint written on a GPU loads on a CPU-only machine. Raises CheckpointError (one
    line) for a missing, corrupt or incompatible checkpoint.
    """
    from policies import build_actor_critic

    payload = load_checkpoint(path_or_run_dir, map_location="cpu")
    path = payload["path"]
    cfg = config_from_checkpoint(payload)
    num_actions = _num_actions_from_state(payload, path)
    try:
        policy = build_actor_critic(cfg.model, num_actions)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path!r}: cannot build its model "
                              f"({one_line(e)})") from None
    load_model_state(policy, payload["model"], path)
    policy.to(device)
    policy.eval()
    return LoadedAgent(policy=policy, config=cfg, global_step=int(payload["global_step"]),
                       path=Path(path))


def _num_actions_from_state(payload: Mapping[str, Any], path: str) -> int:
    """Number of actions: stored in the payload; else the rows of the policy head's weight."""
    if "num_actions" in payload:
        return int(payload["num_actions"])
    weight = payload["model"].get("heads.policy.weight")
    if weight is None:
        raise CheckpointError(f"checkpoint {path!r}: no num_actions and no heads.policy.weight "
                              f"in the model state (wrong format)")
    return int(weight.shape[0])
