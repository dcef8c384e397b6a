"""``ssh-setup`` (alias ``prepare-node-join``): the run, and the result it prints.

The same shape as ``node-daemon-setup`` (:mod:`txsetup.cli.node`), with the
ssh-setup step table; the result adds ``root_public_keys``, root's public
key lines, so a master need not open a second connection to read them.
Failures become a :class:`Result`; nothing here prints or exits.
"""

from __future__ import annotations

import argparse

import structlog

from txsetup.cli.node import (
    Result,
    _failure,
    _stdin,
    all_recovery_hooks,
    new_txid,
    unfinished_txid,
)
from txsetup.errors import ExitCode, RolledBack, TxsetupError
from txsetup.log import get_logger
from txsetup.node.config import load_config
from txsetup.txn.plan import Layout

__all__ = ["run_ssh_setup"]


def run_ssh_setup(args: argparse.Namespace) -> Result:
    """Run (or dry-run) the ssh-setup transaction; failures become a result, never a traceback."""
    from txsetup.node.ssh_steps import (
        SSH_DRY_RUN_STEPS,
        SSH_SETUP_STEPS,
        SshRun,
    )
    from txsetup.node.sshd import SshdControl
    from txsetup.txn.engine import StepReport, StepState, run_steps, signals_raise
    from txsetup.txn.run import finish, release_lock

    layout = Layout(args.root)
    txid = new_txid()
    structlog.contextvars.bind_contextvars(txid=txid)
    log = get_logger()
    log.info("txn.begin", command="ssh-setup", root=str(args.root), dry_run=args.dry_run)
    config = load_config(args.config, root=args.root)
    ctx = SshRun(
        layout,
        txid,
        _stdin(),
        log,
        SshdControl(config.sshd, log),
        all_recovery_hooks(config, layout),
        lock_timeout=args.lock_timeout,
    )
    table = SSH_DRY_RUN_STEPS if args.dry_run else SSH_SETUP_STEPS
    names = [s.name for s in SSH_SETUP_STEPS]
    result = Result(txid, "dry_run" if args.dry_run else "committed")
    reports: list[StepReport] = []
    with signals_raise() as hush:
        try:
            run_steps(table, ctx, log=log, hush=hush, reports=reports)
            if not args.dry_run:
                finish(ctx)
        except TxsetupError as error:
            hush()
            result.outcome = "rolled_back" if isinstance(error, RolledBack) else "failed"
            result.exit_code = error.exit_code
            result.extra.update(_failure(error, layout))
            if isinstance(error, RolledBack):
                log.warning("txn.rolled_back", reason=str(error))
        finally:
            release_lock(ctx)
    done = {r.name: r for r in reports}
    result.steps = [done.get(n, StepReport(n, StepState.SKIPPED)).to_json() for n in names]
    if ctx.recovered:
        result.extra["recovered"] = ctx.recovered
    if result.exit_code != ExitCode.OK:
        return result
    result.extra["root_public_keys"] = ctx.root_public_keys
    if args.dry_run:
        result.extra["plan"] = [p.describe() for p in ctx.plan]
        pending = unfinished_txid(layout)
        if pending is not None:
            result.extra["pending_recovery"] = pending
        return result
    result.changed = ctx.changed_paths
    if ctx.txn is None:
        result.outcome = "converged"
        log.info("txn.converged")
    else:
        log.info("txn.committed", changed=result.changed)
    return result
