"""The ``ssh-setup`` step table (Ganeti's ``prepare-node-join``), as data.

A second table for the same engine, journal and recovery as
``node-daemon-setup`` (:mod:`txsetup.node.steps`): host keys, root's key pair
and ``authorized_keys`` are staged and committed as one transaction, and sshd
is reloaded only when a host key changed. Steps share one typed context,
:class:`SshRun`, filled in as they go.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, BinaryIO

from filelock import FileLock
from structlog.typing import FilteringBoundLogger

from txsetup.errors import InternalError, RefusedByVerification
from txsetup.node.documents import SshSetup
from txsetup.node.files import GANETI_DIR
from txsetup.node.payload import decode_ssh_setup
from txsetup.node.sshd import SshdControl, reload_journaled
from txsetup.node.sshd import restore_if_reloaded as restore_sshd
from txsetup.node.sshfiles import (
    AUTHORIZED_KEYS,
    DIR_MODES,
    KeyPairFiles,
    desired_ssh_files,
    host_key_paths,
    merge_authorized_keys,
    root_key_paths,
)
from txsetup.node.steps import read_local
from txsetup.node.strictjson import read_document
from txsetup.node.summaries import (
    describe_cluster,
    describe_commit,
    describe_lock,
    describe_plan,
    describe_ssh_cert,
    describe_ssh_decode,
    describe_ssh_keys,
    describe_ssh_reload,
    describe_stage,
)
from txsetup.txn import recovery
from txsetup.txn.engine import Step
from txsetup.txn.journal import Journal
from txsetup.txn.plan import Action, Layout, PlannedFile, plan_files, refuse_unsafe_targets
from txsetup.txn.run import commit, prepare, release_lock, take_lock, undo

if TYPE_CHECKING:
    from txsetup.node.preflight import Preflight

__all__ = ["SSH_DRY_RUN_STEPS", "SSH_SETUP_STEPS", "SshRun"]


@dataclass
class SshRun:
    """The context the ``ssh-setup`` steps share."""

    layout: Layout
    txid: str
    stdin: BinaryIO
    log: FilteringBoundLogger
    sshd: SshdControl
    hooks: recovery.Hooks
    lock_timeout: float = 60.0
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    hostname: Callable[[], str] = socket.gethostname
    lock: FileLock | None = None
    recovered: list[dict[str, str]] = field(default_factory=list)
    payload: SshSetup | None = None
    host_keys: dict[str, str] = field(default_factory=dict)  # kind → new fingerprint
    old_host_keys: dict[str, str] = field(default_factory=dict)  # kind → old fingerprint
    existing_authorized: bytes | None = None
    existing_root: dict[str, tuple[bytes | None, bytes | None]] = field(default_factory=dict)
    root_public_keys: list[str] = field(default_factory=list)
    plan: list[PlannedFile] = field(default_factory=list)
    txn: recovery.PendingTxn | None = None
    preflight: Preflight | None = None  # the programs check; None only where no program runs
    failure: dict[str, str] | None = None  # why the run is undone (set before compensation)

    def hooks_for_recovery(self) -> recovery.Hooks:
        """Recovery of any table's transaction."""
        return self.hooks

    @property
    def journal(self) -> Journal:
        """This transaction's journal writer."""
        return Journal(self.layout.journal, self.txid)

    @property
    def changed_paths(self) -> list[str]:
        """Root-relative paths this transaction changes."""
        return [p.desired.relpath for p in self.plan if p.action is not Action.UNCHANGED]

    @property
    def reload_needed(self) -> bool:
        """Whether a host key file changes (sshd reads them only when reloaded)."""
        return any(p.startswith("etc/ssh/ssh_host_") for p in self.changed_paths)

    def need_payload(self) -> SshSetup:
        """The decoded payload (the ``decode`` step has run)."""
        if self.payload is None:
            raise InternalError("decode must run before the steps that use the payload")
        return self.payload


# --- lock -------------------------------------------------------------------------------


# --- decode and verify ------------------------------------------------------------------


def decode(ctx: SshRun) -> bool:
    """Read and validate the document on stdin."""
    ctx.payload = decode_ssh_setup(read_document(ctx.stdin))
    return False


def verify_cluster(ctx: SshRun) -> bool:
    """Cluster name: equal to this node's when it has one (there is no ssconf here)."""
    from txsetup.node.checks import verify_cluster_name

    given = ctx.need_payload().cluster_name
    local = read_local(ctx.layout, f"{GANETI_DIR}/ssconf_cluster_name")
    verify_cluster_name(
        given=given,
        in_ssconf=given,
        local=local.decode("utf-8", "replace").strip() if local is not None else None,
    )
    return False


def verify_cert(ctx: SshRun) -> bool:
    """The node daemon certificate, when sent: no private key, and this node's key."""
    from txsetup.node.checks import verify_public_certificate

    pem = ctx.need_payload().node_daemon_certificate
    if pem is not None:
        local = read_local(ctx.layout, f"{GANETI_DIR}/server.pem")
        verify_public_certificate(pem, local_pem=local, now=ctx.now())
    return False


def verify_keys(ctx: SshRun) -> bool:
    """Every pair parses and its halves match; every authorized line holds a key.

    Also refuses targets that are not plain files in real directories
    (:func:`refuse_unsafe_targets`: replacing a symlink at ``authorized_keys``
    would silently drop its lines), and reads what the plan keeps
    (``authorized_keys``, root's pair). New host keys mean a reload: every
    ``[sshd]`` program must be there (:mod:`txsetup.node.preflight`).
    """
    from txsetup.node.sshkeys import (
        fingerprint_of_line,
        verify_authorized_lines,
        verify_key_pairs,
    )

    payload = ctx.need_payload()
    hosts, problems = verify_key_pairs("$.ssh_host_key", payload.ssh_host_key)
    _, root_problems = verify_key_pairs("$.ssh_root_key", payload.ssh_root_key)
    problems += root_problems
    problems += verify_authorized_lines(payload.authorized_keys, "$.authorized_keys")
    ctx.host_keys = {facts.kind: facts.fingerprint for facts in hosts}
    if problems:
        raise RefusedByVerification("key verification failed", problems=problems)
    for kind in ctx.host_keys:
        old = read_local(ctx.layout, host_key_paths(kind)[1])
        old_fingerprint = fingerprint_of_line(old.decode("utf-8", "replace")) if old else None
        if old_fingerprint is not None:
            ctx.old_host_keys[kind] = old_fingerprint
    if ctx.host_keys and ctx.preflight is not None:  # new host keys: sshd is reloaded
        ctx.preflight.require_tables("sshd")
    root_kinds = [payload.ssh_key_type] if payload.ssh_key_type else []
    root_kinds += [pair.type for pair in payload.ssh_root_key]
    targets = [path for key in payload.ssh_host_key for path in host_key_paths(key.type)]
    targets += [path for kind in root_kinds for path in root_key_paths(kind)]
    refuse_unsafe_targets(ctx.layout, [*targets, AUTHORIZED_KEYS])
    ctx.existing_authorized = read_local(ctx.layout, AUTHORIZED_KEYS)
    if payload.ssh_key_type is not None:
        private, public = root_key_paths(payload.ssh_key_type)
        ctx.existing_root[payload.ssh_key_type] = (
            read_local(ctx.layout, private),
            read_local(ctx.layout, public),
        )
    return False


# --- stage and commit -------------------------------------------------------------------


def _root_pairs(ctx: SshRun) -> list[KeyPairFiles]:
    """Root's pair: made here with ``ssh_key_type`` (kept when it fits), else the given ones."""
    from txsetup.node.sshkeys import generate_key_pair, key_pair_fits

    payload = ctx.need_payload()
    kind = payload.ssh_key_type
    if kind is None:
        return [KeyPairFiles.of(root_key_paths(t.type), t) for t in payload.ssh_root_key]
    private, public = ctx.existing_root.get(kind, (None, None))
    if (
        private is None
        or public is None
        or not key_pair_fits(private, public, kind, payload.ssh_key_bits)
    ):
        private, public = generate_key_pair(kind, payload.ssh_key_bits, f"root@{ctx.hostname()}")
        ctx.log.info("ssh.root_key_generated", kind=kind, path=root_key_paths(kind)[0])
    return [KeyPairFiles(root_key_paths(kind), private, public)]


def plan(ctx: SshRun) -> bool:
    """Compare wanted files with the disk (the dry run's stage); root's key is made here."""
    payload = ctx.need_payload()
    hosts = [KeyPairFiles.of(host_key_paths(t.type), t) for t in payload.ssh_host_key]
    roots = _root_pairs(ctx)
    ctx.root_public_keys = [pair.public.decode().rstrip("\n") for pair in roots]
    # Root's own keys first, as Ganeti adds them, then the cluster's.
    lines = [*ctx.root_public_keys]
    for listed in payload.authorized_keys.values():
        lines.extend(listed)
    authorized = merge_authorized_keys(ctx.existing_authorized, lines)
    wanted = desired_ssh_files(hosts, roots, authorized)
    if ctx.existing_authorized is None and not authorized:
        wanted = wanted[:-1]  # no key for it and no file: do not create an empty one
    ctx.plan = plan_files(ctx.layout, wanted)
    return False


def stage(ctx: SshRun) -> bool:
    """Stage every changing file durably, then journal the plan: the commit point."""
    plan(ctx)
    if not ctx.changed_paths:
        return False
    prepare(
        ctx,
        ctx.plan,
        command="ssh-setup",
        details={
            "reload_sshd": ctx.reload_needed,
            "host_keys": ctx.host_keys,
            "old_host_keys": ctx.old_host_keys,
        },
        dir_modes=DIR_MODES,
    )
    return True


def unstage(ctx: SshRun) -> None:
    """Undo stage (and anything commit and reload did): old files back, sshd on them."""
    sshd = ctx.sshd
    undo(ctx, lambda t: restore_sshd(sshd, t.records))


def reload_sshd(ctx: SshRun) -> bool:
    """Reload sshd and wait until it serves the new host keys (only when one changed).

    Whether sshd ran and which keys it had are journaled durably first: that
    is what undo (or ``--resume`` after a kill right here) brings it back to.
    """
    if ctx.txn is None or not ctx.reload_needed:
        return False
    reload_journaled(
        ctx.sshd, ctx.journal, ctx.txn.records, old=ctx.old_host_keys, new=ctx.host_keys
    )
    return True


SSH_SETUP_STEPS: tuple[Step[SshRun], ...] = (
    Step(
        "lock",
        "take the transaction lock; recover an unfinished transaction",
        take_lock,
        release_lock,
        describe=describe_lock,
    ),
    Step("decode", "read and validate the document on stdin", decode, describe=describe_ssh_decode),
    Step("verify_cluster", "check the cluster name", verify_cluster, describe=describe_cluster),
    Step(
        "verify_cert",
        "check the node daemon certificate (public part)",
        verify_cert,
        describe=describe_ssh_cert,
    ),
    Step(
        "verify_keys",
        "check every SSH key pair and authorized key line",
        verify_keys,
        describe=describe_ssh_keys,
    ),
    Step(
        "stage",
        "write staged copies durably; journal the plan",
        stage,
        unstage,
        writes=True,
        describe=describe_stage,
    ),
    Step(
        "commit",
        "put the staged files in place",
        commit,
        unstage,
        writes=True,
        describe=describe_commit,
    ),
    Step(
        "reload_sshd",
        "reload sshd; wait until it serves the new host keys",
        reload_sshd,
        unstage,
        writes=True,
        describe=describe_ssh_reload,
    ),
)

SSH_DRY_RUN_STEPS: tuple[Step[SshRun], ...] = (
    *SSH_SETUP_STEPS[1:5],
    Step("stage", "plan the changes; write nothing", plan, describe=describe_plan),
)
