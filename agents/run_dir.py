"""The run dir: where a run's config.json, checkpoints/ and tb/ live, and the checks that a
new run may use a given directory (new or empty, and writable) without touching anything."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import ConfigError

CONFIG_FILE = "config.json"
TB_DIR = "tb"


def check_new_run_dir(run_dir: str | os.PathLike) -> Path:
    """ConfigError unless run_dir is new (or empty) and can be created; changes nothing."""
    path = Path(run_dir)
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"run dir {str(path)!r} exists and is not a directory; "
                              f"pick another --run-dir")
        if any(path.iterdir()):
            raise ConfigError(f"run dir {str(path)!r} exists and is not empty; "
                              f"{_what_to_do(path)}")
        parent = path
    else:
        parent = path.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise ConfigError(f"run dir {str(path)!r} cannot be created: {str(parent)!r} is not "
                              f"a directory")
    try:  # a real probe (os.access is always True for root): make and remove a temp dir
        os.rmdir(tempfile.mkdtemp(prefix=".probe_", dir=parent))
    except OSError as e:
        raise ConfigError(f"run dir {str(path)!r} is not writable ({e.strerror or e} in "
                          f"{str(parent)!r})") from None
    return path


def _what_to_do(path: Path) -> str:
    """Advice for a non-empty run dir that never sends the user in a circle."""
    from .checkpoint import list_checkpoints

    if list_checkpoints(path):
        return f"use --resume {path} to continue it, or pick another --run-dir"
    if (path / CONFIG_FILE).is_file():
        return (f"it has a {CONFIG_FILE} but no checkpoint yet: use --resume {path} to start "
                f"it again from step 0 with that config, or pick another --run-dir")
    return (f"it holds no run (no {CONFIG_FILE}, no checkpoints/), so --resume cannot continue "
            f"it either: pick another --run-dir or empty it")


def saved_config(run_dir: str | os.PathLike):
    """The TrainConfig in run_dir/config.json (ConfigError, one line, if unreadable)."""
    from .config import TrainConfig

    path = Path(run_dir) / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{str(path)!r} cannot be read as a run config "
                          f"({type(e).__name__})") from None
    return TrainConfig.from_dict(data)


def is_restartable(run_dir: str | os.PathLike) -> bool:
    """A run dir with a config.json but no checkpoint (killed before its first one): resuming
    it starts again from step 0 with its config."""
    from .checkpoint import list_checkpoints

    path = Path(run_dir)
    return path.is_dir() and (path / CONFIG_FILE).is_file() and not list_checkpoints(path)


def prepare_new_run_dir(run_dir: str | os.PathLike) -> Path:
    """Create run_dir for a fresh run; ConfigError if it is not empty or not writable.

    Nothing existing is modified when this raises.
    """
    path = check_new_run_dir(run_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"run dir {str(path)!r} is not writable ({e.strerror or e})") from None
    return path
