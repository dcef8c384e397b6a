"""Every program a node runs, by command, and what recovery needs of all of them.

A run of one program may find another program's transaction unfinished, so
its recovery gets every program's hooks (:func:`recovery_hooks`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from structlog.typing import FilteringBoundLogger

from txsetup.node.config import Config
from txsetup.txn.hooks import Hooks
from txsetup.txn.layout import Layout
from txsetup.txn.program import Program

__all__ = ["COMMANDS", "make_program", "recovery_hooks"]

COMMANDS = ("node-daemon-setup", "ssh-setup")


def make_program(
    command: str,
    *,
    config: Config,
    layout: Layout,
    log: FilteringBoundLogger,
    require_programs: Callable[[], None] = lambda: None,
) -> Program[Any, Any]:
    """The program ``command`` with this node's configuration.

    ``require_programs`` checks, before any write, that the programs its
    service starts are there (:mod:`txsetup.node.preflight`).
    """
    if command == "ssh-setup":
        from txsetup.node.ssh_setup import ssh_setup

        return ssh_setup(config=config, log=log, require_programs=require_programs)
    from txsetup.node.daemon_setup import node_daemon_setup

    return node_daemon_setup(
        config=config, layout=layout, log=log, require_programs=require_programs
    )


def recovery_hooks(config: Config, layout: Layout, log: FilteringBoundLogger) -> Hooks:
    """Every program's hooks: whichever command runs next (or ``--resume``) must
    finish or undo what another one began."""
    programs = [make_program(c, config=config, layout=layout, log=log) for c in COMMANDS]
    locks = tuple(p.commit_lock for p in programs if p.commit_lock is not None)
    return Hooks(
        services=tuple(p.service for p in programs),
        commit_locks=locks,
        sweep_dirs=tuple(dict.fromkeys(d for p in programs for d in p.sweep_dirs)),
    )
