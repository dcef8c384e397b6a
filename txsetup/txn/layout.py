"""Where txsetup keeps its own files under ``--root``: lock, journal, copies."""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from txsetup.errors import RefusedByVerification

__all__ = ["Layout"]


@dataclass(frozen=True)
class Layout:
    """Every path txsetup uses, derived from one root."""

    root: Path

    @property
    def state_dir(self) -> Path:
        """Journal, staged and hold copies (0700)."""
        return self.root / "var/lib/txsetup"

    @property
    def journal(self) -> Path:
        """The transaction journal."""
        return self.state_dir / "journal"

    @property
    def decisions(self) -> Path:
        """Every decision taken here on a held transaction (:mod:`txsetup.txn.decisions`)."""
        return self.state_dir / "decisions"

    @property
    def revertable(self) -> Path:
        """The manifest of the last commit's kept earlier files (:mod:`txsetup.txn.revertable`)."""
        return self.state_dir / "revertable"

    @property
    def lock_file(self) -> Path:
        """The transaction lock."""
        return self.root / "var/lock/txsetup.lock"

    def make_state_dir(self) -> None:
        """Create the lock and state directories (state 0700).

        Not durably: nothing depends on them until a transaction's ``prepared``
        record. The first transaction to write one fsyncs the state directory
        and its parent along with its staged copies
        (:func:`txsetup.txn.steps.prepare`, told by
        :meth:`txsetup.txn.journal.Journal.begin` that they may not be durable
        yet); the lock's directory never needs to be.
        """
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # a dangling symlink, a file: refused below
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(self.state_dir)
        if not stat.S_ISDIR(st.st_mode):
            raise RefusedByVerification(
                f"{self.relative(self.state_dir)} is not a directory (a symlink or a file): "
                "txsetup keeps its journal only in a real directory; move it away"
            )
        # Only when it is not 0700 already: a converged run writes nothing at all.
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(self.state_dir, 0o700)

    def path(self, relpath: str) -> Path:
        """The absolute path of a root-relative path."""
        return self.root / relpath

    def relative(self, path: Path) -> str:
        """The root-relative form of ``path`` (as results and the journal show it)."""
        return path.relative_to(self.root).as_posix()
