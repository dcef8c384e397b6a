"""A program's run and ``--resume``, from the command line: wiring, then the result.

The node's configuration makes the program (:mod:`txsetup.node.programs`)
and every program's recovery hooks; :func:`txsetup.txn.run.run_transaction`
runs it; :mod:`txsetup.cli.result` turns what happened into the result.
Nothing here prints or exits: :mod:`txsetup.cli` does.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import sys
from typing import BinaryIO

import structlog
from structlog.typing import FilteringBoundLogger

from txsetup.cli.result import Result, failed, of_decision, of_outcome, of_resume
from txsetup.errors import EnvironmentProblem, TxsetupError
from txsetup.log import get_logger
from txsetup.node.config import Config
from txsetup.node.config_file import load_config
from txsetup.node.preflight import Preflight, Table
from txsetup.txn.hooks import Hooks
from txsetup.txn.layout import Layout
from txsetup.txn.pending import new_txid

__all__ = ["run_decision", "run_program", "run_resume"]

# The configuration table naming the programs each command's service starts.
_TABLES: dict[str, Table] = {"node-daemon-setup": "daemon", "ssh-setup": "sshd"}


def checked_before_lock(
    args: argparse.Namespace, config: Config, layout: Layout, *, own: Table | None = None
) -> Preflight:
    """Refuse before anything is written when a program the run will start is missing.

    Checks what is known before the document is read: the programs the
    configuration file sets for the ``own`` table, and those recovering an
    unfinished transaction will start. Returns the check, for the verify steps
    to finish once the document says what else the run needs.

    Raises:
        MissingProgram: a program is missing (exit 4); nothing was written.
    """
    preflight = Preflight.for_run(config, root=args.root, config_arg=args.config)
    preflight.before_lock(layout, own=own)
    return preflight


def _stdin() -> BinaryIO:
    """stdin as bytes; a closed descriptor 0 reads as an empty document (exit 3)."""
    return sys.stdin.buffer if sys.stdin is not None else io.BytesIO()


def run_program(args: argparse.Namespace) -> Result:
    """Run (or dry-run) ``args.command``'s transaction; failures become the result.

    Raises:
        TxsetupError: refused before any step (configuration, a missing program).
    """
    from txsetup.node.programs import make_program, recovery_hooks
    from txsetup.txn.program import TxnContext
    from txsetup.txn.run import run_transaction

    command: str = args.command
    layout = Layout(args.root)
    txid = new_txid()
    structlog.contextvars.bind_contextvars(txid=txid)
    log = get_logger()
    log.info("txn.begin", command=command, root=str(args.root), dry_run=args.dry_run)
    config = load_config(args.config, root=args.root)
    table = _TABLES[command]
    preflight = checked_before_lock(args, config, layout, own=table)
    program = make_program(
        command,
        config=config,
        layout=layout,
        log=log,
        require_programs=lambda: preflight.require_tables(table),
    )
    ctx = TxnContext(
        program=program,
        layout=layout,
        txid=txid,
        stdin=_stdin(),
        log=log,
        recovery=with_confirm_timer(recovery_hooks(config, layout, log), args, log),
        facts=program.facts(),
        lock_timeout=args.lock_timeout,
        hold={"by": f"txsetup {command} --prepare", "coordinator": args.coordinator}
        if args.prepare
        else None,
        confirm_within=args.confirm_within,
    )
    outcome = run_transaction(ctx, dry_run=args.dry_run, prepare=args.prepare)
    return of_outcome(outcome, layout)


def run_decision(args: argparse.Namespace) -> Result:
    """``txsetup commit|abort|confirm|revert``: a verb on one transaction."""
    from txsetup.node.programs import recovery_hooks
    from txsetup.txn import decide, last_commit

    layout = Layout(args.root)
    structlog.contextvars.bind_contextvars(txid=args.txid)
    log = get_logger()
    log.info("txn.begin", command=args.command)
    config = load_config(args.config, root=args.root)
    checked_before_lock(args, config, layout)
    hooks = with_confirm_timer(recovery_hooks(config, layout, log), args, log)
    common = {"hooks": hooks, "lock_timeout": args.lock_timeout}
    try:
        if args.command == "confirm":
            decided = last_commit.confirm(layout, log, txid=args.txid, **common)
        elif args.command == "revert":
            decided = last_commit.revert(
                layout, log, txid=args.txid, if_unconfirmed=args.if_unconfirmed, **common
            )
        else:
            decided = decide.decide(
                layout,
                log,
                txid=args.txid,
                coordinator=args.coordinator,
                decision=args.command,
                confirm_within=getattr(args, "confirm_within", None),
                **common,
            )
    except EnvironmentProblem:
        raise
    except TxsetupError as error:
        return failed(error, layout)
    return of_decision(decided)


def with_confirm_timer(hooks: Hooks, args: argparse.Namespace, log: FilteringBoundLogger) -> Hooks:
    """``hooks`` with the timer that reverts an unconfirmed commit, calling this txsetup back."""
    from txsetup.node.confirm_timer import arm_timer

    def arm(layout: Layout, txid: str, deadline: str) -> str | None:
        return arm_timer(layout, txid, deadline, config=args.config, log=log)

    return dataclasses.replace(hooks, arm_timer=arm)


def run_resume(args: argparse.Namespace) -> Result:
    """``--resume [--abort]``: finish or undo the unfinished transaction.

    Every result it gives, failures included, carries ``last_transaction``:
    what the node's last transaction ended with, read back from the journal,
    so a master that lost a run's own result (a push that timed out) learns
    it here.

    Raises:
        EnvironmentProblem: the lock may not be taken here (not root, a
            read-only file system); the journal was not even read (exit 7).
    """
    from txsetup.node.programs import recovery_hooks
    from txsetup.node.status import read_last_transaction
    from txsetup.txn.run import resume

    layout = Layout(args.root)
    structlog.contextvars.bind_contextvars(txid=None)
    log = get_logger()
    log.info("txn.begin", command=args.command, resume=True, abort=args.abort)
    config = load_config(args.config, root=args.root)
    checked_before_lock(args, config, layout)
    hooks = with_confirm_timer(recovery_hooks(config, layout, log), args, log)
    try:
        found = resume(layout, log, hooks=hooks, abort=args.abort, lock_timeout=args.lock_timeout)
    except EnvironmentProblem:
        raise
    except TxsetupError as error:
        result = failed(error, layout)
    else:
        if found is not None:
            structlog.contextvars.bind_contextvars(txid=found.txid)
        result = of_resume(found)
    with contextlib.suppress(OSError):  # an unreadable journal: the error already says so
        result.extra["last_transaction"] = read_last_transaction(layout)
    return result
