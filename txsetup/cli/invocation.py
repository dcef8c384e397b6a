"""What a run needs of its invocation before it takes the lock: a root, and a document.

Both checks refuse at once, before any file is opened for writing: a
``--root`` that is missing would otherwise be created as a new, empty tree
(and the default configuration then restarts the machine's real node
daemon); a terminal on stdin would leave the run waiting, silently, with the
lock held.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from txsetup.errors import UsageError, environment_problem

__all__ = ["check_root", "check_stdin"]


def _named(root: Path) -> str:
    """The root as the person gave it, saying so when it may come from ``$TXSETUP_ROOT``."""
    from_env = os.environ.get("TXSETUP_ROOT")
    given = from_env is not None and Path(from_env) == root
    return f"--root {root}" + (" (from $TXSETUP_ROOT)" if given else "")


def check_root(root: Path) -> None:
    """Refuse a root that is not an existing directory; txsetup never creates the root itself.

    Raises:
        UsageError: it does not exist, or is not a directory (exit 2).
        EnvironmentProblem: this user may not reach it (exit 7).
    """
    try:
        st = os.stat(root)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise UsageError(
            f"{_named(root)} does not exist: give the node's root directory "
            "(default /); txsetup never creates it"
        ) from exc
    except OSError as exc:
        raise environment_problem(exc, doing="root") or UsageError(
            f"{_named(root)} cannot be used: {exc.strerror or exc}"
        ) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{_named(root)} is not a directory: give the node's root directory")


def check_stdin(prog: str) -> None:
    """Refuse a terminal on stdin: the run reads its JSON document there, to the end.

    Raises:
        UsageError: stdin is a terminal (exit 2).
    """
    if sys.stdin is not None and sys.stdin.isatty():
        raise UsageError(
            f"stdin is a terminal: {prog} expects the JSON document on stdin: {prog} < payload.json"
        )
