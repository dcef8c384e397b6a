"""What each step did, in words: the ``describe`` of the step tables.

The engine logs the sentence as ``step.end``'s ``summary``, so the JSON log,
the console view and the master all read the same words. Each function runs
right after its step's ``do`` succeeded and reads only the shared context
(never key material: fingerprints, counts and names only).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import TYPE_CHECKING

from txsetup.node.files import GANETI_DIR
from txsetup.txn.plan import Action

if TYPE_CHECKING:
    from txsetup.node.ssh_steps import SshRun
    from txsetup.node.steps import Setup
    from txsetup.txn.run import TableRun

__all__ = [
    "counted",
    "describe_cert",
    "describe_cluster",
    "describe_commit",
    "describe_decode",
    "describe_lock",
    "describe_plan",
    "describe_restart",
    "describe_ssh_cert",
    "describe_ssh_decode",
    "describe_ssh_keys",
    "describe_ssh_reload",
    "describe_stage",
    "named",
]

_RECOVERED = {"rolled_forward": "finished", "rolled_back": "undone"}


def counted(number: int, noun: str) -> str:
    """``1 file``, ``14 files``: a number with its noun."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def named(text: str, limit: int = 64) -> str:
    """A name from the document, cut short: a log line must not carry megabytes of it."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_lock(ctx: TableRun) -> str:
    """The lock step: taken, and what became of an interrupted transaction it found."""
    if not ctx.recovered:
        return "lock taken"
    found = ctx.recovered[-1]
    done = _RECOVERED.get(found.get("action", ""), "recovered")
    return f"lock taken; interrupted transaction {found.get('txid')} {done}"


def describe_decode(ctx: Setup) -> str:
    """The document of ``node-daemon-setup``: whose, how much, what it asks."""
    payload = ctx.need_payload()
    words = f"cluster {named(payload.cluster_name)}: {counted(len(payload.ssconf), 'ssconf value')}"
    if payload.hmac_key is not None:
        words += ", hmac key"
    return words + ("; start the daemon" if payload.start_node_daemon else "")


def describe_cluster(ctx: TableRun) -> str:
    """The cluster name check: against this node's own name, or a node that has none yet."""
    if os.path.lexists(ctx.layout.path(f"{GANETI_DIR}/ssconf_cluster_name")):
        return "cluster name matches this node's"
    return "cluster name accepted (this node has none yet)"


def describe_cert(ctx: Setup) -> str:
    """The certificate check: its fingerprint and how long it is valid."""
    if ctx.cert is None:
        return "certificate checked"
    cert = ctx.cert
    words = f"certificate {cert.fingerprint_sha256[:12]} valid until {cert.not_after:%Y-%m-%d}"
    words += " (soon)" if cert.expires_soon else ""
    return words + ", key matches"


def _by_action(ctx: TableRun) -> Counter[Action]:
    return Counter(planned.action for planned in ctx.plan)


def describe_plan(ctx: TableRun) -> str:
    """The dry run's stage: what a real run would do to each file; nothing is written."""
    actions = _by_action(ctx)
    create, replace = actions[Action.CREATE], actions[Action.REPLACE]
    if not create and not replace:
        return f"plan: nothing to change ({counted(actions[Action.UNCHANGED], 'file')} as wanted)"
    return f"plan: {create} to create, {replace} to replace, {actions[Action.UNCHANGED]} unchanged"


def describe_stage(ctx: TableRun) -> str:
    """The stage step: how many files were staged and journaled (or why none)."""
    if ctx.txn is None:
        return "nothing to change"
    changed = len(ctx.changed_paths)
    if not changed:
        return "no file to change; journaled for the daemon's restart"
    created = _by_action(ctx)[Action.CREATE]
    return f"{counted(changed, 'file')} staged ({created} new, {changed - created} replaced)"


def describe_commit(ctx: TableRun) -> str:
    """The commit step: how many files were put in place."""
    if ctx.txn is None or not ctx.txn.changes:
        return "nothing to put in place"
    return f"{counted(len(ctx.txn.changes), 'file')} put in place"


def describe_restart(ctx: Setup) -> str:
    """The restart step: whether the daemon was restarted, and why not when not."""
    if not ctx.need_payload().start_node_daemon:
        return "daemon not asked to start: left as it was"
    if ctx.txn is None:
        return "daemon already healthy on this certificate: not restarted"
    return "daemon restarted"


def describe_ssh_decode(ctx: SshRun) -> str:
    """The document of ``ssh-setup``: whose, and how many keys of each sort."""
    payload = ctx.need_payload()
    authorized = sum(len(lines) for lines in payload.authorized_keys.values())
    roots = (
        f"root key pair of type {payload.ssh_key_type}"
        if payload.ssh_key_type
        else counted(len(payload.ssh_root_key), "root key pair")
    )
    return (
        f"cluster {named(payload.cluster_name)}: {counted(len(payload.ssh_host_key), 'host key')}, "
        f"{roots}, {counted(authorized, 'authorized key')}"
    )


def describe_ssh_cert(ctx: SshRun) -> str:
    """The public certificate check of ``ssh-setup`` (the certificate is optional there)."""
    if ctx.need_payload().node_daemon_certificate is None:
        return "no certificate sent"
    return "certificate matches this node's key"


def describe_ssh_keys(ctx: SshRun) -> str:
    """The key check: how many host keys, all pairs and authorized lines valid."""
    kinds = ", ".join(sorted(ctx.host_keys)) or "none"
    return f"key pairs and authorized keys valid; host keys: {kinds}"


def describe_ssh_reload(ctx: SshRun) -> str:
    """The reload step: whether sshd was reloaded, and why not when not."""
    if ctx.txn is None:
        return "nothing changed: sshd not reloaded"
    if not ctx.reload_needed:
        return "no host key changed: sshd not reloaded"
    return "sshd reloaded"
