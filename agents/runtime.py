"""What a process sets up around a run: the torch device, the seeds, the signal handlers.

- `resolve_device(spec)`: "auto" | "cpu" | "cuda" | "cuda:N" -> torch.device, checked against
  the machine (ConfigError otherwise). Training and evaluation both use it.
- `seed_everything(seed)`, `env_seed(seed, global_step)`.
- `stop_on_signals()`: the first SIGINT / SIGTERM becomes a request to stop after the current
  update; a second SIGINT aborts at once.
"""

from __future__ import annotations

import contextlib
import random
import re
import signal
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .errors import ConfigError

DEVICES_HELP = "auto | cpu | cuda | cuda:N"


def valid_device(spec: str) -> bool:
    """Is `spec` spelled like a device this project accepts (auto | cpu | cuda | cuda:N)?"""
    return spec in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", spec) is not None


def resolve_device(spec: str) -> torch.device:
    """auto -> cuda when available, else cpu. ConfigError (one line) for an unknown spelling,
    a CUDA device without CUDA, or a CUDA index the machine does not have."""
    if not valid_device(spec):
        raise ConfigError(f"unknown device {spec!r}; valid: {DEVICES_HELP}")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} requested but CUDA is not available here; "
                              f"valid: auto, cpu")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {spec!r} does not exist; valid: cuda:0 .. "
                              f"cuda:{torch.cuda.device_count() - 1}")
    return torch.device(spec)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def env_seed(seed: int, global_step: int) -> int:
    """Seed of the env: cfg.seed for a fresh run, seed + global_step after a resume (so that a
    resumed run does not replay the first run's level sequence)."""
    return int(seed + global_step) % (2**31 - 1)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[dict[str, str | None]]:
    """Yield a flag {"signal": None}; the first SIGINT / SIGTERM sets it to the signal's name
    (stop after the current update), a second SIGINT raises KeyboardInterrupt. The previous
    handlers come back on exit. Only in the main thread (signals cannot be caught elsewhere)."""
    flag: dict[str, str | None] = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        flag["signal"] = signal.Signals(signum).name
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
