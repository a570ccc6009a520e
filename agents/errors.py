"""Errors a user can cause, and the one place where they become one line and exit code 2.

- `UserError`: the base of every mistake the user can fix. Its message is one line that names
  the bad value and, where there is a short list, the valid choices.
  - `ConfigError`: a bad config value or run dir (agents.config, the trainer).
  - `CheckpointError`: a missing, corrupt or incompatible checkpoint (agents.checkpoint).
  - `UsageError`: a bad command line (the parsers of train_rl.py and eval_rl.py).
- `RunFailed`: a run that broke while training (an env group, the actor thread or the learner
  raised); not the user's input. Its message is one line; a checkpoint was saved first.
- `one_line(error)`: the message of an exception (or any text) with its whitespace collapsed,
  for wrapping a library's multi-line message into a UserError.
- `run_main(prog, main)`: the guard both scripts run their work in: a UserError prints
  `<prog>: error: <message>` on stderr and gives exit code 2; a RunFailed prints
  `<prog>: run failed: <message>` and gives 1; Ctrl-C gives 130.

Library code raises UserErrors and never exits; only `run_main` turns them into exit codes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_USAGE = 2
"""Exit code of a user error (argparse's convention)."""
EXIT_FAILED = 1
"""Exit code of a run that failed while training (RunFailed)."""
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}
"""Exit codes of a run stopped by a signal (the shell's 128 + signal number)."""


class UserError(Exception):
    """A mistake the user can fix; the message is one line naming the bad value."""


class ConfigError(UserError, ValueError):
    """A bad configuration value or run dir."""


class CheckpointError(UserError, ValueError):
    """A missing, corrupt or incompatible checkpoint."""


class UsageError(UserError):
    """A bad command line (unknown option, bad value, options that do not go together)."""


class RunFailed(RuntimeError):
    """Training broke (an exception in an env group, the actor or the learner); one line."""


def one_line(error: BaseException | str) -> str:
    """The text of `error` on one line (runs of whitespace, newlines included, become one
    space)."""
    return " ".join(str(error).split())


def run_main(prog: str, main: Callable[[], int], *, interrupted: str = "interrupted") -> int:
    """Run `main()` and return its exit code; a UserError prints one line `<prog>: error:
    <message>` on stderr and returns 2, Ctrl-C prints `<prog>: <interrupted>` and returns 130."""
    try:
        return main()
    except UserError as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailed as e:
        print(f"{prog}: run failed: {one_line(e)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return EXIT_SIGNAL["SIGINT"]
