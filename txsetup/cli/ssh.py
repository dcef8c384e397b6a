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
    _stdin,
    all_recovery_hooks,
    checked_before_lock,
    new_txid,
    run_table,
)
from txsetup.errors import ExitCode
from txsetup.log import get_logger
from txsetup.node.config_file import load_config
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

    layout = Layout(args.root)
    txid = new_txid()
    structlog.contextvars.bind_contextvars(txid=txid)
    log = get_logger()
    log.info("txn.begin", command="ssh-setup", root=str(args.root), dry_run=args.dry_run)
    config = load_config(args.config, root=args.root)
    preflight = checked_before_lock(args, config, layout, own="sshd")
    ctx = SshRun(
        layout,
        txid,
        _stdin(),
        log,
        SshdControl(config.sshd, log),
        all_recovery_hooks(config, layout),
        lock_timeout=args.lock_timeout,
        preflight=preflight,
    )
    table = SSH_DRY_RUN_STEPS if args.dry_run else SSH_SETUP_STEPS
    result = run_table(ctx, table, SSH_SETUP_STEPS, dry_run=args.dry_run, command="ssh-setup")
    if result.exit_code == ExitCode.OK:
        result.extra["root_public_keys"] = ctx.root_public_keys
    return result
