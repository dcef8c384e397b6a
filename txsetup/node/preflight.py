"""Preflight: every program a run may start must be there before anything is written.

A run that commits its files and only then finds that the node daemon's
restart command does not exist cannot put the daemon back either (the undo
runs the same program): the journal stays in ``rolling_back`` and every
``--resume`` fails the same way. So each program the configuration names
(``[daemon]`` restart, stop, status; ``[sshd]`` reload, status; and
``ssh-keyscan``, sshd's health check) is resolved as the run would start it:
a bare name on ``PATH``, a path as it is, which must be an executable regular
file. All missing programs are reported at once, each with the key that sets
it, the file to set it in and, for Ganeti's own paths, the package to install.

When: before the lock step (nothing written, not even the lock file) for
whatever is certain then: the programs the configuration file sets for this
command, and those an unfinished transaction's recovery will run (read from
its journal, without writing). Ganeti's defaults for keys the file leaves out
are checked once the document says they are needed (``start_node_daemon``,
new host keys), in the verify steps: still before any file changes, and a dry
run sees the same refusal. See ``docs/configuration.md``.
"""

from __future__ import annotations

import glob
import os
import shutil
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from txsetup.errors import RefusedByVerification
from txsetup.node.config import DEFAULT_CONFIG_PATH, Config
from txsetup.node.restart import DAEMON
from txsetup.node.sshd import SSHD
from txsetup.txn.journal import FINISHED_STATES, read_journal
from txsetup.txn.layout import Layout
from txsetup.txn.service import ServiceKind

__all__ = [
    "GANETI_PKGLIBDIR",
    "MissingProgram",
    "NeededProgram",
    "Preflight",
    "Table",
    "Which",
    "pending_tables",
    "programs_of",
]

Table = Literal["daemon", "sshd"]
# Each service, and the configuration table that names the programs it starts.
_SERVICE_TABLES: tuple[tuple[ServiceKind, Table], ...] = ((DAEMON, "daemon"), (SSHD, "sshd"))
Which = Callable[[str], str | None]
"""Looks a bare program name up on ``PATH``: :func:`shutil.which` in production."""

GANETI_PKGLIBDIR: Final = "/usr/lib/ganeti"
"""Ganeti's ``PKGLIBDIR`` (``pathutils.DAEMON_UTIL`` is ``PKGLIBDIR + "/daemon-util"``)."""

_ANY_VERSION: Final = "*"  # ganeti-3.0 keeps its tree in <PKGLIBDIR>/3.0/<PKGLIBDIR>/...


class MissingProgram(RefusedByVerification):
    """A program the run would start is not there, or cannot be run (exit 4)."""

    error_code = "missing_program"


@dataclass(frozen=True)
class NeededProgram:
    """A program the run may start, and the configuration key that names it."""

    name: str
    key: str


def programs_of(config: Config, table: Table) -> list[NeededProgram]:
    """Every program ``table``'s commands start, with the key that sets each one."""
    if table == "daemon":
        daemon = config.daemon
        return [
            *(NeededProgram(argv[0], "[daemon] restart") for argv in daemon.restart),
            *(NeededProgram(argv[0], "[daemon] stop") for argv in daemon.stop),
            NeededProgram(daemon.status[0], "[daemon] status"),
        ]
    sshd = config.sshd
    keyscan = [NeededProgram("ssh-keyscan", "[sshd] health_address")] if sshd.health_address else []
    return [
        *(NeededProgram(argv[0], "[sshd] reload") for argv in sshd.reload),
        NeededProgram(sshd.status[0], "[sshd] status"),
        *keyscan,
    ]


def pending_tables(layout: Layout) -> set[Table]:
    """The tables whose programs recovery of the unfinished transaction may start.

    Read from the journal without repairing it (nothing is written), with
    the rules the recovery hooks themselves follow: the daemon when the
    transaction asked for a restart or began one, sshd likewise for a reload.
    An unreadable journal is left to recovery, which reports it.
    """
    try:
        records = read_journal(layout.journal)
    except OSError:
        return set()
    if not records or records[-1].state in FINISHED_STATES:
        return set()
    mine = [r for r in records if r.txid == records[-1].txid]
    states = {r.state for r in mine}
    return {
        table
        for kind, table in _SERVICE_TABLES
        if kind.state in states or any(kind.wanted(r.data) for r in mine)
    }


@dataclass(frozen=True)
class Preflight:
    """Checks the programs of a configuration, as read from ``config_file``."""

    config: Config
    config_file: Path
    which: Which = field(default=shutil.which, kw_only=True)
    ganeti_dir: str = field(default=GANETI_PKGLIBDIR, kw_only=True)

    @classmethod
    def for_run(cls, config: Config, *, root: Path, config_arg: Path | None) -> Preflight:
        """The check for a run whose ``--config`` was ``config_arg`` under ``--root`` ``root``."""
        return cls(config, config_arg if config_arg is not None else root / DEFAULT_CONFIG_PATH)

    def before_lock(self, layout: Layout, *, own: Table | None = None) -> None:
        """What is certain before the lock: the programs the file sets for the ``own``
        table, and every program recovering the unfinished transaction may start.

        Raises:
            MissingProgram: any of them is missing.
        """
        wanted = []
        if own is not None:
            default = programs_of(Config(), own)
            wanted = [p for p in programs_of(self.config, own) if p not in default]
        for table in sorted(pending_tables(layout)):
            wanted += programs_of(self.config, table)
        self.require(wanted)

    def require_tables(self, *tables: Table) -> None:
        """Every program of ``tables``, Ganeti's defaults included (the document needs them).

        Raises:
            MissingProgram: any of them is missing.
        """
        self.require(program for table in tables for program in programs_of(self.config, table))

    def require(self, programs: Iterable[NeededProgram]) -> None:
        """Refuse, naming each missing program once with all the keys that set it.

        Raises:
            MissingProgram: any of ``programs`` is missing.
        """
        keys: dict[str, list[str]] = {}
        for program in programs:
            keys.setdefault(program.name, [])
            if program.key not in keys[program.name]:
                keys[program.name].append(program.key)
        problems = []
        for name, named_by in keys.items():
            why = self._why_missing(name)
            if why is not None:
                problems.append(self._problem(name, _keys_in_words(named_by), why))
        if len(problems) == 1:
            raise MissingProgram(
                "preflight: a program this run needs is missing", problems=problems
            )
        if problems:
            raise MissingProgram(
                f"preflight: {len(problems)} programs this run needs are missing", problems=problems
            )

    def _why_missing(self, name: str) -> str | None:
        """Why ``name`` cannot be started as the run would start it, or None when it can."""
        if "/" not in name:
            return None if self.which(name) is not None else "is not on PATH"
        try:
            mode = os.stat(name).st_mode
        except OSError:
            return "is a dangling symlink" if os.path.lexists(name) else "does not exist"
        if not stat.S_ISREG(mode):
            return "is not a regular file"
        return None if os.access(name, os.X_OK) else "is not executable"

    def _problem(self, name: str, keys: str, why: str) -> str:
        """One line: the program, its keys, why, what to install, where to configure."""
        where = f"in {self.config_file}"
        if name == "ssh-keyscan":
            return (
                f"{name} ({keys}) {why}: install the OpenSSH client "
                f'("apt-get install openssh-client"), or set {keys} = "none" {where}'
            )
        if name.startswith(self.ganeti_dir + "/") and why == "does not exist":
            return f"{name} ({keys}) {why}{self._ganeti_layout(name)}, or set {keys} {where}"
        return f"{name} ({keys}) {why}: {_FIXES[why]}, or set {keys} {where}"

    def _ganeti_layout(self, name: str) -> str:
        """What Ganeti's packages have (or lack) for one of its paths, and what to install."""
        relative = name.removeprefix(self.ganeti_dir + "/")
        found = sorted(glob.glob(f"{self.ganeti_dir}/{_ANY_VERSION}{self.ganeti_dir}/{relative}"))
        install = 'install it with "apt-get install ganeti"'
        if not found:
            return f" (Ganeti is not installed): {install}"
        version = Path(found[-1]).relative_to(self.ganeti_dir).parts[0]
        return (
            f": ganeti-{version} keeps it at {found[-1]}, and only the ganeti package "
            f"links it there: {install}"
        )


_FIXES: Final = {
    "is not on PATH": "install it",
    "does not exist": "install it",
    "is a dangling symlink": "install what it points to",
    "is not a regular file": "name a program file",
    "is not executable": "make it executable",
}


def _keys_in_words(keys: list[str]) -> str:
    """``[daemon] restart``, ``[daemon] restart, stop, status``: one table name per group."""
    words: list[str] = []
    table = None
    for key in keys:
        this, _, name = key.partition(" ")
        words.append(name if this == table else key)
        table = this
    return ", ".join(words)
