"""The decoded documents, one type per program: what a valid document holds.

:mod:`txsetup.node.payload` makes them from JSON; the step tables read them.
Their reprs leave secrets out, because a repr may reach a log.

Standard library only: this module is on the node's start-up path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["NodeDaemonSetup", "SshKeyTriple", "SshSetup"]


@dataclass(frozen=True, repr=False)
class NodeDaemonSetup:
    """A valid ``node-daemon-setup`` document; ``ssconf`` is read-only."""

    cluster_name: str
    node_daemon_certificate: str  # secret: PEM with the private key
    ssconf: Mapping[str, str]
    start_node_daemon: bool = False
    hmac_key: str | None = None  # secret
    node_name: str | None = None

    def __repr__(self) -> str:
        """Leaves out the certificate and the HMAC key: a repr may reach a log."""
        return _safe_repr(self, secrets={"node_daemon_certificate", "hmac_key"})


@dataclass(frozen=True, repr=False)
class SshKeyTriple:
    """One SSH key pair, as the document's ``[type, private, public]``."""

    type: str
    private: str  # secret
    public: str

    def __repr__(self) -> str:
        """Leaves out the private key: a repr may reach a log."""
        return _safe_repr(self, secrets={"private"})


@dataclass(frozen=True, repr=False)
class SshSetup:
    """A valid ``ssh-setup`` document; absent lists and objects are empty."""

    cluster_name: str
    node_daemon_certificate: str | None
    ssh_host_key: tuple[SshKeyTriple, ...]
    ssh_root_key: tuple[SshKeyTriple, ...]
    authorized_keys: Mapping[str, tuple[str, ...]]
    ssh_key_type: str | None = None  # Ganeti 3.0: root's key pair is made on the node
    ssh_key_bits: int | None = None

    def __repr__(self) -> str:
        """Leaves out the certificate too: until verified it may still carry a private key."""
        return _safe_repr(self, secrets={"node_daemon_certificate"})


def _safe_repr(instance: DataclassInstance, *, secrets: set[str]) -> str:
    """A dataclass repr with secrets replaced by their size and mappings by their size."""
    shown: list[str] = []
    for field in fields(instance):
        value = getattr(instance, field.name)
        if field.name in secrets and value is not None:
            value = f"<redacted, {len(value)} characters>"
        elif isinstance(value, Mapping):
            value = f"<{len(value)} entries>"
        else:
            value = repr(value)
        shown.append(f"{field.name}={value}")
    return f"{type(instance).__name__}({', '.join(shown)})"
