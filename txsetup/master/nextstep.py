"""What to run after a push that did not fully succeed: a command line to copy as printed.

After Ctrl-C the nodes that were running finish or roll back on their own, so
the next command asks them how they ended (``txsetup push --resume
--retry-from FILE``); after failures it pushes again to just those nodes
(``txsetup push --retry-from FILE``). Either repeats the options that reach
the nodes (``--ssh``, ``--ssh-option``, ``--remote-command``...), and FILE
is push's stdout when that is a file, so the line works as printed.
"""

from __future__ import annotations

import os
import shlex
import stat
from dataclasses import dataclass
from typing import TextIO

from txsetup.master.results import PushReport

__all__ = ["NextStep", "Rerun", "results_file_of"]

PLACEHOLDER = "RESULTS-FILE"


@dataclass(frozen=True)
class NextStep:
    """The next command, and what it does in a few words."""

    command: str
    words: str


@dataclass(frozen=True)
class Rerun:
    """What the next push needs of this one.

    Attributes:
        reach: the options that reach the nodes: ssh, its options, the
            remote command, ``--parallel``, ``--timeout``.
        again: the options that say what to push: ``--from-root``,
            ``--no-start-node-daemon``, ``--dry-run``, or ``--resume [--abort]``.
        abort: this push was ``--resume --abort``.
        results_file: where this push's result lines go, when that is a file.
    """

    reach: tuple[str, ...] = ()
    again: tuple[str, ...] = ()
    abort: bool = False
    results_file: str | None = None

    def next_step(self, report: PushReport) -> NextStep | None:
        """The command to run next, or None when every node succeeded."""
        if report.fleet is not None:
            return self._fleet_step(report)
        if not report.failed:
            return None
        where = self.results_file or PLACEHOLDER
        retry = ["--retry-from", where]
        if report.interrupted:
            mode = ["--resume", *(["--abort"] if self.abort else [])]
            argv = ["txsetup", "push", *mode, *retry, *self.reach]
            words = (
                "asks every node that did not finish how its run ended: a node finishes "
                "or undoes a cut-off run on its own; then push again with --retry-from"
            )
        else:
            argv = ["txsetup", "push", *retry, *self.again, *self.reach]
            words = "pushes again to just the nodes that did not succeed"
        if self.results_file is None:
            words += f"; {PLACEHOLDER}: this push's stdout, saved to a file"
        return NextStep(shlex.join(argv), words)

    def _fleet_step(self, report: PushReport) -> NextStep | None:
        """After an atomic push: resume it, or push to the whole fleet again."""
        outcome = (report.fleet or {}).get("outcome")
        if outcome == "committed" and not report.interrupted:
            return None
        if outcome not in ("aborted", "reverted") or report.interrupted:
            at = self.again.index("--from-root") if "--from-root" in self.again else None
            root = list(self.again[at : at + 2]) if at is not None else []
            return NextStep(
                shlex.join(["txsetup", "push", "--resume", *root]),
                "finishes the atomic push from the master's record: the recorded decision "
                "goes to every node that has not answered (repeat until the push ends)",
            )
        where = self.results_file or PLACEHOLDER
        argv = ["txsetup", "push", "--retry-from", where, *self.again, *self.reach]
        words = (
            f"every node is old again ({outcome}); fix what the failing node's line says, "
            "then push the whole fleet again"
        )
        if self.results_file is None:
            words += f"; {PLACEHOLDER}: this push's stdout, saved to a file"
        return NextStep(shlex.join(argv), words)


def results_file_of(stream: TextIO) -> str | None:
    """The file ``stream`` writes to, as a person would type it; None unless a regular file.

    A terminal, a pipe or ``/dev/null`` has no file to retry from.
    """
    try:
        fd = stream.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        path = os.readlink(f"/proc/self/fd/{fd}")
        if not path.startswith("/") or path.endswith(" (deleted)"):
            return None
        relative = os.path.relpath(path)
    except (OSError, ValueError, AttributeError):
        return None
    return path if relative.startswith("..") else relative
