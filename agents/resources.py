"""Checks made before any long work starts: is there memory for the run, and can its outputs
be written. Each raises a UserError with one line (the size asked, what is available; or the
path and why it cannot be written), so that a run or an eval fails in seconds, not after it
played every episode or when C++ aborts with `std::bad_alloc`.

- `check_memory(cfg, device, own_env)`: the rollout buffer (num_envs x unroll observations and
  the per-step values, on `device`) and, for envs built here, the envs themselves (in host
  memory; ~4 MiB per ProcGen env, measured on this project's CPU machine) against the memory
  available (Linux MemAvailable; CUDA: free device memory). The network's activations during
  the update are not counted, so passing this check is necessary, not sufficient.
- `check_output_dir(path, what)` / `check_output_file(path, what)`: the directory (or the
  file's directory) exists or can be created, and a file can be made there; nothing is left
  behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import ConfigError, UsageError

OBS_BYTES = 64 * 64 * 3
"""One uint8 [64, 64, 3] observation."""
STEP_BYTES = OBS_BYTES + 4 * 4 + 8 + 2
"""One step of one env in a Rollout: obs, 4 float32 (reward in, reward, logprob, value), the
int64 action, 2 bools (done, episode start)."""
ENV_BYTES = {"procgen": 4 * 2**20, "synthetic": 64 * 2**10}
"""Host memory of one env (ProcGen: measured RSS growth of 128 coinrun envs, ~3.3 MiB each,
rounded up)."""


def format_bytes(n: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def available_host_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (None where it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_device_bytes(device: Any) -> int | None:
    """Free memory of a CUDA device (None for other devices or when it cannot be read)."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except RuntimeError:
        return None
    return int(free)


def rollout_bytes(num_envs: int, unroll: int) -> int:
    """Bytes of one Rollout of num_envs x unroll steps plus the observations it carries."""
    return int(num_envs) * (int(unroll) + 1) * STEP_BYTES


def env_bytes(games: list[str], num_envs: int) -> int:
    from envs import SYNTHETIC_TASKS

    kind = "synthetic" if games and games[0] in SYNTHETIC_TASKS else "procgen"
    return int(num_envs) * ENV_BYTES[kind]


def check_memory(cfg: Any, device: Any, own_env: bool = True) -> None:
    """ConfigError (one line) when the rollout buffer (and the envs, when built here) cannot
    fit in the memory available; `cfg` is a resolved TrainConfig."""
    import torch

    device = torch.device(device)
    buffer = rollout_bytes(cfg.num_envs, cfg.unroll)
    envs = env_bytes(list(cfg.games), cfg.num_envs) if own_env else 0
    what = (f"--num-envs {cfg.num_envs} x --unroll {cfg.unroll}: the rollout buffer needs "
            f"{format_bytes(buffer)}")
    host = available_host_bytes()
    if device.type == "cuda":
        free = available_device_bytes(device)
        if free is not None and buffer > free:
            raise ConfigError(f"{what} on {device}, which has {format_bytes(free)} free; "
                              f"lower --num-envs or --unroll")
        if host is not None and envs > host:
            raise ConfigError(f"--num-envs {cfg.num_envs}: the envs need about "
                              f"{format_bytes(envs)} of memory, {format_bytes(host)} is "
                              f"available; lower --num-envs")
        return
    if host is not None and buffer + envs > host:
        env_part = f" and the envs about {format_bytes(envs)}" if envs else ""
        raise ConfigError(f"{what}{env_part}, but {format_bytes(host)} of memory is "
                          f"available; lower --num-envs or --unroll")


def _probe_dir(directory: Path) -> str | None:
    """Why no file can be created in `directory` (or its nearest existing parent), or None."""
    parent = directory
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        return f"{str(parent)!r} is not a directory"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".probe_", dir=parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        return f"{str(parent)!r} is not writable ({e.strerror or type(e).__name__})"
    return None


def check_output_dir(path: str | os.PathLike, what: str) -> Path:
    """UsageError unless `path` is a directory, or can be created, and is writable."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{what} {str(p)!r} exists and is not a directory; pick another path")
    problem = _probe_dir(p)
    if problem:
        raise UsageError(f"{what} {str(p)!r} cannot be written: {problem}")
    return p


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """UsageError unless a file can be written at `path` (not a directory; its directory
    exists or can be created and is writable)."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{what} {str(p)!r} is a directory; give a file name")
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{what} {str(p)!r} exists and is not writable")
    problem = _probe_dir(p.parent if str(p.parent) else Path("."))
    if problem:
        raise UsageError(f"{what} {str(p)!r} cannot be written: {problem}")
    return p
