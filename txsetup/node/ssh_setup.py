"""``ssh-setup`` (Ganeti's ``prepare-node-join``), declared: its document, checks, files, service.

Host keys, root's key pair and ``authorized_keys`` are installed as one
transaction, and sshd is reloaded only when a host key changed. Everything
else is the engine's (:mod:`txsetup.txn.steps`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from structlog.typing import FilteringBoundLogger

from txsetup.errors import RefusedByVerification
from txsetup.node.config import Config
from txsetup.node.documents import SshSetup
from txsetup.node.files import GANETI_DIR
from txsetup.node.local import describe_cluster, local_cluster_name, read_local
from txsetup.node.payload import decode_ssh_setup
from txsetup.node.sshd import SSHD, SshdControl
from txsetup.node.sshfiles import (
    AUTHORIZED_KEYS,
    DIR_MODES,
    ROOT_SSH_DIR,
    SSH_DIR,
    KeyPairFiles,
    desired_ssh_files,
    host_key_paths,
    merge_authorized_keys,
    root_key_paths,
)
from txsetup.node.strictjson import read_document
from txsetup.txn.engine import Step
from txsetup.txn.plan import DesiredFile, refuse_unsafe_targets
from txsetup.txn.program import Program, TxnContext
from txsetup.txn.service import Service
from txsetup.txn.steps import counted, named

__all__ = ["SshFacts", "ssh_setup"]


@dataclass(kw_only=True)
class SshFacts:
    """What ``ssh-setup``'s steps keep: its settings, then what its checks find."""

    require_programs: Callable[[], None] = lambda: None  # the [sshd] programs are there
    host_keys: dict[str, str] = field(default_factory=dict)  # kind → new fingerprint
    old_host_keys: dict[str, str] = field(default_factory=dict)  # kind → old fingerprint
    existing_authorized: bytes | None = None
    existing_root: dict[str, tuple[bytes | None, bytes | None]] = field(default_factory=dict)
    root_public_keys: list[str] = field(default_factory=list)


Context = TxnContext[SshSetup, SshFacts]


def describe_document(document: SshSetup) -> str:
    """The document: whose, and how many keys of each sort."""
    authorized = sum(len(lines) for lines in document.authorized_keys.values())
    roots = (
        f"root key pair of type {document.ssh_key_type}"
        if document.ssh_key_type
        else counted(len(document.ssh_root_key), "root key pair")
    )
    return (
        f"cluster {named(document.cluster_name)}: "
        f"{counted(len(document.ssh_host_key), 'host key')}, "
        f"{roots}, {counted(authorized, 'authorized key')}"
    )


def verify_cluster(ctx: Context) -> bool:
    """Cluster name: equal to this node's when it has one (there is no ssconf here)."""
    from txsetup.node.checks import verify_cluster_name

    given = ctx.need_document().cluster_name
    verify_cluster_name(given=given, in_ssconf=given, local=local_cluster_name(ctx.layout))
    return False


def verify_cert(ctx: Context) -> bool:
    """The node daemon certificate, when sent: no private key, and this node's key."""
    from txsetup.node.checks import verify_public_certificate

    pem = ctx.need_document().node_daemon_certificate
    if pem is not None:
        local = read_local(ctx.layout, f"{GANETI_DIR}/server.pem")
        verify_public_certificate(pem, local_pem=local, now=ctx.now)
    return False


def describe_cert(ctx: Context) -> str:
    """The public certificate check (the certificate is optional here)."""
    if ctx.need_document().node_daemon_certificate is None:
        return "no certificate sent"
    return "certificate matches this node's key"


def verify_keys(ctx: Context) -> bool:
    """Every pair parses and its halves match; every authorized line holds a key.

    Also refuses targets that are not plain files in real directories
    (:func:`refuse_unsafe_targets`: replacing a symlink at ``authorized_keys``
    would silently drop its lines), and reads what the plan keeps
    (``authorized_keys``, root's pair). New host keys mean a reload: every
    ``[sshd]`` program must be there (:mod:`txsetup.node.preflight`).
    """
    from txsetup.node.sshkeys import verify_authorized_lines, verify_key_pairs

    document, facts = ctx.need_document(), ctx.facts
    hosts, problems = verify_key_pairs("$.ssh_host_key", document.ssh_host_key)
    problems += verify_key_pairs("$.ssh_root_key", document.ssh_root_key)[1]
    problems += verify_authorized_lines(document.authorized_keys, "$.authorized_keys")
    facts.host_keys = {each.kind: each.fingerprint for each in hosts}
    if problems:
        raise RefusedByVerification("key verification failed", problems=problems)
    _read_old_host_keys(ctx)
    if facts.host_keys:  # new host keys: sshd is reloaded
        facts.require_programs()
    root_kinds = [document.ssh_key_type] if document.ssh_key_type else []
    root_kinds += [pair.type for pair in document.ssh_root_key]
    targets = [path for key in document.ssh_host_key for path in host_key_paths(key.type)]
    targets += [path for kind in root_kinds for path in root_key_paths(kind)]
    refuse_unsafe_targets(ctx.layout, [*targets, AUTHORIZED_KEYS])
    facts.existing_authorized = read_local(ctx.layout, AUTHORIZED_KEYS)
    if document.ssh_key_type is not None:
        private, public = root_key_paths(document.ssh_key_type)
        facts.existing_root[document.ssh_key_type] = (
            read_local(ctx.layout, private),
            read_local(ctx.layout, public),
        )
    return False


def _read_old_host_keys(ctx: Context) -> None:
    """The fingerprints of the host keys this node has now: sshd serves them until reloaded."""
    from txsetup.node.sshkeys import fingerprint_of_line

    for kind in ctx.facts.host_keys:
        old = read_local(ctx.layout, host_key_paths(kind)[1])
        old_fingerprint = fingerprint_of_line(old.decode("utf-8", "replace")) if old else None
        if old_fingerprint is not None:
            ctx.facts.old_host_keys[kind] = old_fingerprint


def describe_keys(ctx: Context) -> str:
    """The key check: how many host keys, all pairs and authorized lines valid."""
    kinds = ", ".join(sorted(ctx.facts.host_keys)) or "none"
    return f"key pairs and authorized keys valid; host keys: {kinds}"


def _root_pairs(ctx: Context) -> list[KeyPairFiles]:
    """Root's pair: made here with ``ssh_key_type`` (kept when it fits), else the given ones."""
    from txsetup.node.sshkeys import generate_key_pair, key_pair_fits

    document = ctx.need_document()
    kind = document.ssh_key_type
    if kind is None:
        return [KeyPairFiles.of(root_key_paths(t.type), t) for t in document.ssh_root_key]
    private, public = ctx.facts.existing_root.get(kind, (None, None))
    if (
        private is None
        or public is None
        or not key_pair_fits(private, public, kind, document.ssh_key_bits)
    ):
        owner = f"root@{socket.gethostname()}"
        private, public = generate_key_pair(kind, document.ssh_key_bits, owner)
        ctx.log.info("ssh.root_key_generated", kind=kind, path=root_key_paths(kind)[0])
    return [KeyPairFiles(root_key_paths(kind), private, public)]


def wanted(ctx: Context) -> list[DesiredFile]:
    """Host keys, root's pair (made here when asked) and the merged ``authorized_keys``."""
    document, facts = ctx.need_document(), ctx.facts
    hosts = [KeyPairFiles.of(host_key_paths(t.type), t) for t in document.ssh_host_key]
    roots = _root_pairs(ctx)
    facts.root_public_keys = [pair.public.decode().rstrip("\n") for pair in roots]
    # Root's own keys first, as Ganeti adds them, then the cluster's.
    lines = [*facts.root_public_keys]
    for listed in document.authorized_keys.values():
        lines.extend(listed)
    authorized = merge_authorized_keys(facts.existing_authorized, lines)
    files = desired_ssh_files(hosts, roots, authorized)
    if facts.existing_authorized is None and not authorized:
        files = files[:-1]  # no key for it and no file: do not create an empty one
    return files


def _reload_needed(ctx: Context) -> bool:
    """Whether a host key file changes (sshd reads them only when reloaded)."""
    return any(p.startswith("etc/ssh/ssh_host_") for p in ctx.changed_paths)


def service_details(ctx: Context) -> dict[str, Any]:
    """What the prepared record keeps for the reload: needed or not, new and old host keys."""
    return {
        "reload_sshd": _reload_needed(ctx),
        "host_keys": ctx.facts.host_keys,
        "old_host_keys": ctx.facts.old_host_keys,
    }


def describe_reload(ctx: Context) -> str:
    """The reload step: whether sshd was reloaded, and why not when not."""
    if ctx.txn is None:
        return "nothing changed: sshd not reloaded"
    if not _reload_needed(ctx):
        return "no host key changed: sshd not reloaded"
    return "sshd reloaded"


CHECKS: tuple[Step[Context], ...] = (
    Step("verify_cluster", "check the cluster name", verify_cluster, describe=describe_cluster),
    Step(
        "verify_cert",
        "check the node daemon certificate (public part)",
        verify_cert,
        describe=describe_cert,
    ),
    Step(
        "verify_keys",
        "check every SSH key pair and authorized key line",
        verify_keys,
        describe=describe_keys,
    ),
)


def ssh_setup(
    *,
    config: Config,
    log: FilteringBoundLogger,
    require_programs: Callable[[], None] = lambda: None,
) -> Program[SshSetup, SshFacts]:
    """The program, with this node's configuration."""
    return Program(
        command="ssh-setup",
        decode=lambda stdin: decode_ssh_setup(read_document(stdin)),
        describe_document=describe_document,
        facts=lambda: SshFacts(require_programs=require_programs),
        checks=CHECKS,
        wanted=wanted,
        service=Service(kind=SSHD, control=SshdControl(config=config.sshd, log=log)),
        service_details=service_details,
        describe_service=describe_reload,
        dir_modes=DIR_MODES,
        sweep_dirs=(SSH_DIR, ROOT_SSH_DIR),
        result=lambda ctx: {"root_public_keys": ctx.facts.root_public_keys},
    )
