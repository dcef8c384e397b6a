"""``node-daemon-setup``, declared: its document, checks, files and service.

It installs the ssconf files and the node daemon's certificate (with
``hmac.key`` and a ``client.pem`` made on the node), under Ganeti's ssconf
lock, then restarts the node daemon when the document asks and waits until
it serves the new certificate. Everything else is the engine's
(:mod:`txsetup.txn.steps`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from structlog.typing import FilteringBoundLogger

from txsetup.node.config import ClientPemProfile, Config, FilesConfig, resolve_ownership
from txsetup.node.documents import NodeDaemonSetup
from txsetup.node.files import GANETI_DIR, FileOwner, desired_files, ganeti_owners
from txsetup.node.local import LOCAL_LIMIT, describe_cluster, local_cluster_name, read_local
from txsetup.node.payload import decode_node_daemon_setup
from txsetup.node.restart import DAEMON, DaemonControl, fingerprint_of_pem
from txsetup.node.ssconf import ssconf_locked
from txsetup.node.strictjson import read_document
from txsetup.txn.atomic import read_regular
from txsetup.txn.engine import Step
from txsetup.txn.layout import Layout
from txsetup.txn.plan import DesiredFile, refuse_unsafe_targets
from txsetup.txn.program import Program, TxnContext
from txsetup.txn.service import Service
from txsetup.txn.steps import counted, named

if TYPE_CHECKING:
    from txsetup.node.checks import CertificateFacts

__all__ = ["NodeDaemonFacts", "node_daemon_setup", "resolve_owners"]


@dataclass(kw_only=True)
class NodeDaemonFacts:
    """What ``node-daemon-setup``'s steps keep: its settings, then what its checks find."""

    owners: Mapping[str, FileOwner] = field(default_factory=dict)
    client_profile: ClientPemProfile = field(default_factory=ClientPemProfile)
    require_programs: Callable[[], None] = lambda: None  # the [daemon] programs are there
    old_fingerprint: str | None = None
    cert: CertificateFacts | None = None


Context = TxnContext[NodeDaemonSetup, NodeDaemonFacts]


def describe_document(document: NodeDaemonSetup) -> str:
    """The document: whose, how much, what it asks."""
    words = f"cluster {named(document.cluster_name)}: "
    words += counted(len(document.ssconf), "ssconf value")
    if document.hmac_key is not None:
        words += ", hmac key"
    return words + ("; start the daemon" if document.start_node_daemon else "")


def verify_cluster(ctx: Context) -> bool:
    """Cluster name: equal to ssconf's and to the local one when there is one."""
    from txsetup.node.checks import verify_cluster_name

    document = ctx.need_document()
    verify_cluster_name(
        given=document.cluster_name,
        in_ssconf=document.ssconf.get("cluster_name"),
        local=local_cluster_name(ctx.layout),
    )
    return False


def verify_cert(ctx: Context) -> bool:
    """Certificate and key: parse, match, valid now, match the local key; then the targets.

    Every file the run will write must be absent or a regular file in a real
    directory (:func:`refuse_unsafe_targets`), and a document that asks for a
    restart needs every ``[daemon]`` program: checked here, before any write,
    so a refusal (and a dry run) touches nothing.
    """
    from txsetup.node.checks import verify_node_certificate
    from txsetup.node.client_pem import verify_can_issue

    document, facts = ctx.need_document(), ctx.facts
    local_pem = read_local(ctx.layout, f"{GANETI_DIR}/server.pem")
    facts.old_fingerprint = fingerprint_of_pem(local_pem)
    facts.cert = verify_node_certificate(
        document.node_daemon_certificate, local_pem=local_pem, now=ctx.now
    )
    if facts.cert.expires_soon:
        ctx.log.warning(
            "cert.expires_soon",
            not_after=facts.cert.not_after.isoformat(),
            fingerprint=facts.cert.fingerprint_sha256,
        )
    if document.node_name:
        verify_can_issue(document.node_daemon_certificate, document.node_name, now=ctx.now)
    # Only the places: client.pem's bytes are made when planning, once this passed.
    placeholder = b"" if document.node_name else None
    targets = desired_files(document, client_pem=placeholder, owners=facts.owners)
    refuse_unsafe_targets(ctx.layout, [want.relpath for want in targets])
    if document.start_node_daemon:
        facts.require_programs()
    return False


def describe_cert(ctx: Context) -> str:
    """The certificate check: its fingerprint and how long it is valid."""
    cert = ctx.facts.cert
    if cert is None:
        return "certificate checked"
    words = f"certificate {cert.fingerprint_sha256[:12]} valid until {cert.not_after:%Y-%m-%d}"
    words += " (soon)" if cert.expires_soon else ""
    return words + ", key matches"


def client_pem(ctx: Context) -> bytes | None:
    """``client.pem``: the node's own when still current, else a new one (when named).

    Minted only when planning, after every check passed: a refused document
    costs no key generation.
    """
    from txsetup.node.client_pem import client_certificate_is_current, make_client_certificate

    document, profile, now = ctx.need_document(), ctx.facts.client_profile, ctx.now
    if not document.node_name:
        return None
    pem, name = document.node_daemon_certificate, document.node_name
    existing = read_regular(ctx.layout.path(f"{GANETI_DIR}/client.pem"), LOCAL_LIMIT)
    if existing is not None and client_certificate_is_current(
        existing, pem, name, now=now, profile=profile
    ):
        return existing
    return make_client_certificate(pem, name, now=now, profile=profile)


def wanted(ctx: Context) -> list[DesiredFile]:
    """The ssconf files, server.pem, hmac.key and client.pem the document wants."""
    return desired_files(ctx.need_document(), client_pem=client_pem(ctx), owners=ctx.facts.owners)


def service_details(ctx: Context) -> dict[str, Any]:
    """What the prepared record keeps for the restart: asked or not, new and old certificate."""
    cert = ctx.facts.cert
    return {
        "start_node_daemon": ctx.need_document().start_node_daemon,
        "fingerprint": cert.fingerprint_sha256 if cert else None,
        "old_fingerprint": ctx.facts.old_fingerprint,
    }


def describe_restart(ctx: Context) -> str:
    """The restart step: whether the daemon was restarted, and why not when not."""
    if not ctx.need_document().start_node_daemon:
        return "daemon not asked to start: left as it was"
    if ctx.txn is None:
        return "daemon already healthy on this certificate: not restarted"
    return "daemon restarted"


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


CHECKS: tuple[Step[Context], ...] = (
    Step("verify_cluster", "check the cluster name", verify_cluster, describe=describe_cluster),
    Step(
        "verify_cert",
        "check the node daemon certificate and key",
        verify_cert,
        describe=describe_cert,
    ),
)


def node_daemon_setup(
    *,
    config: Config,
    layout: Layout,
    log: FilteringBoundLogger,
    require_programs: Callable[[], None] = lambda: None,
) -> Program[NodeDaemonSetup, NodeDaemonFacts]:
    """The program, with this node's configuration.

    Its ``facts`` resolve ``[files]``' owners, before any step: a user or
    group this node does not know is :class:`~txsetup.errors.InvalidInput` (exit 3).
    """
    control = DaemonControl(
        config=config.daemon, log=log, server_pem=layout.path(f"{GANETI_DIR}/server.pem")
    )
    return Program(
        command="node-daemon-setup",
        decode=lambda stdin: decode_node_daemon_setup(read_document(stdin)),
        describe_document=describe_document,
        facts=lambda: NodeDaemonFacts(
            owners=resolve_owners(config.files),
            client_profile=config.files.client_pem_profile,
            require_programs=require_programs,
        ),
        checks=CHECKS,
        wanted=wanted,
        service=Service(kind=DAEMON, control=control),
        service_details=service_details,
        describe_service=describe_restart,
        sweep_dirs=(GANETI_DIR,),
        commit_lock=ssconf_locked,
    )
