"""The step tables: ``node-daemon-setup`` as data.

Each step is a name, a one-line description, a ``do`` and an idempotent
``undo``; the engine runs the table. Steps share one typed context,
:class:`Setup`, filled in as they go.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, BinaryIO

from filelock import FileLock
from structlog.typing import FilteringBoundLogger

from txsetup.errors import InternalError, RefusedByVerification
from txsetup.node.config import ClientPemProfile, FilesConfig, resolve_ownership
from txsetup.node.documents import NodeDaemonSetup
from txsetup.node.files import GANETI_DIR, FileOwner, desired_files, ganeti_owners
from txsetup.node.payload import decode_node_daemon_setup
from txsetup.node.restart import (
    DaemonControl,
    fingerprint_of_pem,
    recovery_hooks,
    restart_journaled,
    restore_if_touched,
)
from txsetup.node.strictjson import read_document
from txsetup.node.summaries import (
    describe_cert,
    describe_cluster,
    describe_commit,
    describe_decode,
    describe_lock,
    describe_plan,
    describe_restart,
    describe_stage,
)
from txsetup.txn import recovery
from txsetup.txn.atomic import read_regular
from txsetup.txn.engine import Step
from txsetup.txn.journal import Journal
from txsetup.txn.plan import (
    Action,
    Layout,
    PlannedFile,
    plan_files,
    refuse_unsafe_targets,
)
from txsetup.txn.run import commit, prepare, release_lock, take_lock, undo

if TYPE_CHECKING:
    from txsetup.node.checks import CertificateFacts
    from txsetup.node.preflight import Preflight

__all__ = [
    "DRY_RUN_STEPS",
    "NODE_DAEMON_SETUP_STEPS",
    "Setup",
    "resolve_owners",
]

_LOCAL_LIMIT = 1024 * 1024


@dataclass
class Setup:
    """The context the ``node-daemon-setup`` steps share."""

    layout: Layout
    txid: str
    stdin: BinaryIO
    log: FilteringBoundLogger
    daemon: DaemonControl
    owners: Mapping[str, FileOwner] = field(default_factory=dict)
    client_profile: ClientPemProfile = field(default_factory=ClientPemProfile)
    lock_timeout: float = 60.0
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    lock: FileLock | None = None
    old_fingerprint: str | None = None
    recovered: list[dict[str, str]] = field(default_factory=list)
    payload: NodeDaemonSetup | None = None
    cert: CertificateFacts | None = None
    client_pem: bytes | None = None
    plan: list[PlannedFile] = field(default_factory=list)
    txn: recovery.PendingTxn | None = None
    hooks: recovery.Hooks | None = None  # recovery of any table's transaction; default: ours
    preflight: Preflight | None = None  # the programs check; None only where no program runs
    failure: dict[str, str] | None = None  # why the run is undone (set before compensation)

    @property
    def journal(self) -> Journal:
        """This transaction's journal writer."""
        return Journal(self.layout.journal, self.txid)

    @property
    def changed_paths(self) -> list[str]:
        """Root-relative paths this transaction changes."""
        return [p.desired.relpath for p in self.plan if p.action is not Action.UNCHANGED]

    def hooks_for_recovery(self) -> recovery.Hooks:
        """Recovery of any table's transaction, by default with this daemon's hooks."""
        return self.hooks or recovery_hooks(self.daemon)

    def need_payload(self) -> NodeDaemonSetup:
        """The decoded payload (the ``decode`` step has run)."""
        if self.payload is None:
            raise InternalError("decode must run before the steps that use the payload")
        return self.payload


# --- lock -------------------------------------------------------------------------------


# --- decode and verify ------------------------------------------------------------------


def decode(ctx: Setup) -> bool:
    """Read and validate the document on stdin."""
    ctx.payload = decode_node_daemon_setup(read_document(ctx.stdin))
    return False


def read_local(layout: Layout, relpath: str) -> bytes | None:
    """A local file verification compares against, or None when there is none.

    Something that exists but cannot be read as a regular file of sane size
    (a symlink, a directory, over 1 MiB) is refused: treating it as absent
    would skip the very check it is there for.
    """
    path = layout.path(relpath)
    content = read_regular(path, _LOCAL_LIMIT)
    if content is None and os.path.lexists(path):
        raise RefusedByVerification(
            f"{relpath} exists but is not a regular file of at most 1 MiB; fix or remove it"
        )
    return content


def verify_cluster(ctx: Setup) -> bool:
    """Cluster name: equal to ssconf's and to the local one when there is one."""
    from txsetup.node.checks import verify_cluster_name

    payload = ctx.need_payload()
    local = read_local(ctx.layout, f"{GANETI_DIR}/ssconf_cluster_name")
    verify_cluster_name(
        given=payload.cluster_name,
        in_ssconf=payload.ssconf.get("cluster_name"),
        local=local.decode("utf-8", "replace").strip() if local is not None else None,
    )
    return False


def verify_cert(ctx: Setup) -> bool:
    """Certificate and key: parse, match, valid now, match the local key; then the targets.

    Every file the run will write must be absent or a regular file in a real
    directory (:func:`refuse_unsafe_targets`), and a document that asks for a
    restart needs every ``[daemon]`` program: checked here, before any write,
    so a refusal (and a dry run) touches nothing.
    """
    from txsetup.node.checks import verify_node_certificate
    from txsetup.node.client_pem import client_certificate_is_current, make_client_certificate

    payload = ctx.need_payload()
    local_pem = read_local(ctx.layout, f"{GANETI_DIR}/server.pem")
    ctx.old_fingerprint = fingerprint_of_pem(local_pem)
    now = ctx.now()
    ctx.cert = verify_node_certificate(
        payload.node_daemon_certificate, local_pem=local_pem, now=now
    )
    if ctx.cert.expires_soon:
        ctx.log.warning(
            "cert.expires_soon",
            not_after=ctx.cert.not_after.isoformat(),
            fingerprint=ctx.cert.fingerprint_sha256,
        )
    if payload.node_name:
        pem, name, profile = payload.node_daemon_certificate, payload.node_name, ctx.client_profile
        existing = read_regular(ctx.layout.path(f"{GANETI_DIR}/client.pem"), _LOCAL_LIMIT)
        if existing is not None and client_certificate_is_current(
            existing, pem, name, now=now, profile=profile
        ):
            ctx.client_pem = existing
        else:
            ctx.client_pem = make_client_certificate(pem, name, now=now, profile=profile)
    wanted = desired_files(payload, client_pem=ctx.client_pem, owners=ctx.owners)
    refuse_unsafe_targets(ctx.layout, [want.relpath for want in wanted])
    if payload.start_node_daemon and ctx.preflight is not None:
        ctx.preflight.require_tables("daemon")
    return False


# --- stage and commit -------------------------------------------------------------------


def resolve_owners(
    files: FilesConfig, *, defaults: Mapping[str, tuple[int, int]] | None = None
) -> dict[str, FileOwner]:
    """Owners per secret file: ``[files]`` (resolved before any step) over the defaults.

    The defaults are Ganeti's (:func:`ganeti_owners`) when running as root;
    a run that is not root (a demo or test root) cannot give files away, so
    it keeps new files as its own.

    Raises:
        InvalidInput: a user or group this node does not know (exit 3).
    """
    if defaults is None:
        defaults = ganeti_owners() if os.geteuid() == 0 else {}
    configured = {
        "server.pem": resolve_ownership(files.server_pem),
        "hmac.key": resolve_ownership(files.hmac_key),
        "client.pem": resolve_ownership(files.client_pem),
    }
    return {
        name: FileOwner(uid, gid, *defaults.get(name, (-1, -1)))
        for name, (uid, gid) in configured.items()
    }


def plan(ctx: Setup) -> bool:
    """Compare wanted files with the disk (the dry run's stage)."""
    wanted = desired_files(ctx.need_payload(), client_pem=ctx.client_pem, owners=ctx.owners)
    ctx.plan = plan_files(ctx.layout, wanted)
    return False


def _daemon_needs_restart(ctx: Setup) -> bool:
    """With no file to change, restart only if asked and the daemon is not healthy."""
    if not ctx.need_payload().start_node_daemon:
        return False
    fingerprint = ctx.cert.fingerprint_sha256 if ctx.cert else None
    return not ctx.daemon.healthy(fingerprint, timeout=1.0)


def stage(ctx: Setup) -> bool:
    """Stage every changing file durably, then journal the plan: the commit point."""
    plan(ctx)
    if not ctx.changed_paths and not _daemon_needs_restart(ctx):
        return False
    payload = ctx.need_payload()
    txn = prepare(
        ctx,
        ctx.plan,
        command="node-daemon-setup",
        details={
            "start_node_daemon": payload.start_node_daemon,
            "fingerprint": ctx.cert.fingerprint_sha256 if ctx.cert else None,
            "old_fingerprint": ctx.old_fingerprint,
        },
    )
    return bool(txn.changes)


def unstage(ctx: Setup) -> None:
    """Undo stage (and anything commit did): old files back, copies removed."""
    daemon = ctx.daemon
    undo(ctx, lambda t: restore_if_touched(daemon, t.records))


def restart_daemon(ctx: Setup) -> bool:
    """Restart the node daemon and wait until it serves the new certificate (when asked).

    Whether it ran before is journaled durably first: that is what undo (or
    ``--resume`` after a kill right here) brings it back to.
    """
    if ctx.txn is None or not ctx.need_payload().start_node_daemon:
        return False
    restart_journaled(
        ctx.daemon,
        ctx.journal,
        ctx.txn.records,
        old_fingerprint=ctx.old_fingerprint,
        new_fingerprint=ctx.cert.fingerprint_sha256 if ctx.cert else None,
    )
    return True


NODE_DAEMON_SETUP_STEPS: tuple[Step[Setup], ...] = (
    Step(
        "lock",
        "take the transaction lock; recover an unfinished transaction",
        take_lock,
        release_lock,
        describe=describe_lock,
    ),
    Step("decode", "read and validate the document on stdin", decode, describe=describe_decode),
    Step("verify_cluster", "check the cluster name", verify_cluster, describe=describe_cluster),
    Step(
        "verify_cert",
        "check the node daemon certificate and key",
        verify_cert,
        describe=describe_cert,
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
        "restart_daemon",
        "restart the node daemon; wait until healthy",
        restart_daemon,
        unstage,
        writes=True,
        describe=describe_restart,
    ),
)

DRY_RUN_STEPS: tuple[Step[Setup], ...] = (
    NODE_DAEMON_SETUP_STEPS[1],
    NODE_DAEMON_SETUP_STEPS[2],
    NODE_DAEMON_SETUP_STEPS[3],
    Step("stage", "plan the changes; write nothing", plan, describe=describe_plan),
)
