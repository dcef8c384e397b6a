"""ssh-setup documents and key pairs for the tests, made with the real libraries.

Keys are generated with ``cryptography`` in OpenSSH format (what ``ssh-keygen``
writes and what a Ganeti master reads from its own files), cached per
process: RSA generation is slow on a busy box.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import CLUSTER
from txsetup.node.sshkeys import generate_key_pair

Triple = list[str]

SSHD_CONFIG = "etc/txsetup/config.toml"


@cache
def _cached_pair(kind: str, label: str, bits: int | None) -> tuple[str, str, str]:
    private, public = generate_key_pair(kind, bits, f"root@{label}")
    return kind, private.decode(), public.decode()


def key_pair(kind: str, label: str = "a", bits: int | None = None) -> Triple:
    """A fresh ``[kind, private, public]`` list; the same ``label`` gives the same pair."""
    return list(_cached_pair(kind, label, bits))


def pem_pair(label: str = "pem") -> Triple:
    """An ECDSA pair whose private half is PEM (SEC1), as older masters keep it."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return ["ecdsa", private.decode(), public.decode() + f" root@{label}\n"]


def fingerprint(public_line: str) -> str:
    """Hex SHA-256 of a public key line's blob (what ssh-keyscan's output hashes to)."""
    return hashlib.sha256(base64.b64decode(public_line.split()[1])).hexdigest()


def ssh_document(
    *,
    hosts: tuple[str, ...] = ("ed25519", "ecdsa"),
    label: str = "a",
    key_type: str | None = "ed25519",
    key_bits: int | None = 256,
    root_keys: list[Triple] | None = None,
    authorized: Mapping[str, list[str]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A document as Ganeti 3.0's ``_SetupSSH`` builds it (``key_type=None``: Ganeti 2.x)."""
    document: dict[str, Any] = {
        "cluster_name": CLUSTER,
        "ssh_host_key": [key_pair(kind, f"host-{label}") for kind in hosts],
        "ssh_root_key": root_keys if root_keys is not None else [],
        "authorized_keys": dict(
            authorized
            if authorized is not None
            else {"master-uuid": [key_pair("ed25519", "master")[2]]}
        ),
    }
    if key_type is not None:
        document["ssh_key_type"] = key_type
        document["ssh_key_bits"] = key_bits
    document.update(extra)
    return document


def write_sshd_config(root: Path, **values: object) -> Path:
    """``[sshd]`` in ``<root>/etc/txsetup/config.toml`` (strings and argv lists only)."""
    lines = ["[sshd]"]
    for key, value in values.items():
        if isinstance(value, list):
            items = ", ".join(f'"{item}"' for item in value)
            lines.append(f"{key} = [{items}]")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value}")
    path = root / SSHD_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def counting_reload(root: Path, *, exit_code: int = 0) -> list[str]:
    """A reload command that appends a line to ``<root>/../reloads`` and exits ``exit_code``."""
    log = root.parent / "reloads"
    return ["sh", "-c", f"echo reload >> '{log}'; exit {exit_code}"]


def reload_count(root: Path) -> int:
    """How many times the counting reload ran."""
    log = root.parent / "reloads"
    return len(log.read_text().splitlines()) if log.exists() else 0
