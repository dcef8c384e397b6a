"""The document a master sends: built once from the master's own files.

A Ganeti master keeps what a node needs under ``var/lib/ganeti``: the
``ssconf_*`` files, ``server.pem`` (the node daemon certificate and key) and
``hmac.key``. :func:`build_payload` reads them from ``--from-root``, checks the
result with the node's own decoder and certificate verification, and only then
may any connection be made: a master never ships a document its nodes would
refuse for a reason it could have seen itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from txsetup.errors import InvalidInput, RefusedByVerification
from txsetup.node.files import GANETI_DIR
from txsetup.node.ganeti_fields import MAX_SSCONF_VALUE_BYTES, SSCONF_KEYS
from txsetup.node.payload import decode_node_daemon_setup

__all__ = ["Payload", "build_payload", "load_document"]

_PEM_LIMIT = 1024 * 1024
_DOCUMENT_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True, repr=False)
class Payload:
    """The document for every node: ``node-daemon-setup``'s, where only ``node_name``
    differs, or ``ssh-setup``'s, the same bytes for every node.

    Holds key material: its repr names the cluster and the ssconf keys only.
    The document is encoded once, at the first :meth:`for_node`: do not change
    it after that.
    """

    document: Mapping[str, Any]
    program: str = "node-daemon-setup"

    @property
    def cluster_name(self) -> str:
        """The cluster the document is for."""
        return str(self.document["cluster_name"])

    def for_node(self, node_name: str) -> bytes:
        """The bytes sent on one node's stdin: the document with ``node_name`` last.

        The same bytes as ``json.dumps({**document, "node_name": node_name})``;
        the rest of the document (350 KiB for a 1,000-node cluster, several
        milliseconds to encode) is encoded once per push, not once per node.
        """
        if self.program != "node-daemon-setup":  # names no node
            return self._encoded_head
        name = json.dumps(node_name).encode()
        return self._encoded_head + name + b"}"

    @property
    def digest(self) -> str:
        """SHA-256 of the document without ``node_name``: what every node is sent."""
        return hashlib.sha256(self._encoded_head).hexdigest()

    @cached_property
    def _encoded_head(self) -> bytes:
        """The document without ``node_name``, up to where that key goes (all of it, for a
        program whose documents name no node)."""
        rest = {k: v for k, v in self.document.items() if k != "node_name"}
        encoded = json.dumps(rest).encode()
        if self.program != "node-daemon-setup":
            return encoded
        return encoded[:-1] + (b", " if rest else b"") + b'"node_name": '

    def __repr__(self) -> str:
        keys = sorted(self.document.get("ssconf", {}))
        return f"Payload(cluster_name={self.cluster_name!r}, ssconf={keys})"


def build_payload(
    from_root: Path,
    *,
    start_node_daemon: bool,
    now: datetime | None = None,
) -> Payload:
    """Read the master's files under ``from_root`` into a validated document.

    ``ssconf_<key>`` files are taken for every key of the ssconf key set that
    exists, read as Ganeti's ``SimpleStore`` reads them (trailing newlines
    stripped; the node adds one back); files of other names are not sent.
    ``hmac.key`` is optional.

    Raises:
        InvalidInput: a required file is missing or unreadable, or the document
            they make is not one a node accepts (exit 3 for push); the message
            names the file.
    """
    ganeti = from_root / GANETI_DIR
    ssconf = {
        key: _read_text(path, MAX_SSCONF_VALUE_BYTES + 1).rstrip("\n")
        for key in sorted(SSCONF_KEYS)
        if (path := ganeti / f"ssconf_{key}").exists()
    }
    if "cluster_name" not in ssconf:
        raise InvalidInput(f"--from-root: {ganeti / 'ssconf_cluster_name'} is missing")
    document: dict[str, Any] = {
        "cluster_name": ssconf["cluster_name"],
        "node_daemon_certificate": _read_text(ganeti / "server.pem", _PEM_LIMIT),
        "ssconf": ssconf,
        "start_node_daemon": start_node_daemon,
    }
    if (ganeti / "hmac.key").exists():
        document["hmac_key"] = _read_text(ganeti / "hmac.key", _PEM_LIMIT)
    payload = Payload(document)
    _validate(payload, from_root, now or datetime.now(UTC))
    return payload


def load_document(path: Path, program: str) -> Payload:
    """A document for ``program`` read from ``path`` (``--document``), checked with the
    node's own decoder before any node is contacted.

    Raises:
        InvalidInput: the file cannot be read, or a node would refuse to decode it
            (exit 3 for push); the message names the file and the JSON paths, never
            a value.
    """
    from txsetup.node.payload import decode_ssh_setup

    try:
        with path.open("rb") as stream:
            raw = stream.read(_DOCUMENT_LIMIT + 1)
    except OSError as exc:
        raise InvalidInput(f"--document: {path} cannot be read: {exc.strerror}") from exc
    if len(raw) > _DOCUMENT_LIMIT:
        raise InvalidInput(f"--document: {path} is larger than {_DOCUMENT_LIMIT} bytes")
    try:
        decode_ssh_setup(raw)
    except InvalidInput as exc:
        raise InvalidInput(f"--document: {path} is not a {program} document: {exc}") from exc
    return Payload(json.loads(raw), program)


def _read_text(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as stream:
            data = stream.read(limit + 1)
    except FileNotFoundError as exc:
        raise InvalidInput(f"--from-root: {path} is missing") from exc
    except OSError as exc:
        raise InvalidInput(f"--from-root: {path} cannot be read: {exc.strerror}") from exc
    if len(data) > limit:
        raise InvalidInput(f"--from-root: {path} is larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"--from-root: {path} is not UTF-8 text") from exc


def _validate(payload: Payload, from_root: Path, now: datetime) -> None:
    """The node's own decoder and certificate rules, on the master, before any node."""
    from txsetup.node.checks import verify_node_certificate

    try:
        decoded = decode_node_daemon_setup(payload.for_node("node.invalid"))
        verify_node_certificate(decoded.node_daemon_certificate, local_pem=None, now=now)
    except (InvalidInput, RefusedByVerification) as exc:
        raise InvalidInput(
            f"--from-root: the files under {from_root} do not make a valid payload: {exc}"
        ) from exc
