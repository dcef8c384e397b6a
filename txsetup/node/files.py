"""The files ``node-daemon-setup`` installs: where, with which bytes, modes and owners.

Everything here mirrors what Ganeti's own ``node-daemon-setup`` leaves on a
node (see ``docs/ganeti.md``), so a node set up by txsetup looks the same to
the rest of a Ganeti cluster.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from txsetup.txn.plan import DesiredFile

if TYPE_CHECKING:
    from txsetup.node.documents import NodeDaemonSetup

__all__ = [
    "GANETI_DIR",
    "MASTERD_ACCOUNT",
    "FileOwner",
    "desired_files",
    "ganeti_owners",
    "group_id",
    "ssconf_content",
    "user_id",
]

GANETI_DIR = "var/lib/ganeti"
MASTERD_ACCOUNT: Final = "gnt-masterd"
"""Ganeti's masterd user and group (``constants.MASTERD_USER``, ``MASTERD_GROUP``)."""


@dataclass(frozen=True)
class FileOwner:
    """Who owns one secret file; -1 everywhere leaves it to the process (normally root).

    ``uid``/``gid`` come from ``[files]`` and apply always; ``new_uid``/``new_gid``
    are the defaults, which apply only to a file that is created: an existing
    file keeps its owner unless one is configured.
    """

    uid: int = -1
    gid: int = -1
    new_uid: int = -1
    new_gid: int = -1


def ssconf_content(value: str) -> bytes:
    """An ssconf file's bytes: the value plus a newline unless empty or already there.

    The same rule as Ganeti's ``SimpleStore.WriteFiles``; the node's 128 KiB
    cap applies to these bytes, newline included (see ``ganeti_fields``).
    """
    if value and not value.endswith("\n"):
        value += "\n"
    return value.encode()


def user_id(name: str) -> int | None:
    """The uid of a user of this node, or None when it has none of that name."""
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def group_id(name: str) -> int | None:
    """The gid of a group of this node, or None when it has none of that name."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def ganeti_owners(
    *,
    uid_of: Callable[[str], int | None] = user_id,
    gid_of: Callable[[str], int | None] = group_id,
) -> dict[str, tuple[int, int]]:
    """The owners Ganeti's ``node-daemon-setup`` gives the secret files it writes.

    ``server.pem`` and ``hmac.key`` go to ``gnt-masterd:gnt-masterd``, so that
    the master daemons (which run as that user) can read them; ``client.pem``
    stays with the writer, root. A user or group this node does not have is
    left to the process (-1) instead: Ganeti would refuse to run at all, but
    a node without Ganeti's accounts still needs its files.
    """
    uid, gid = uid_of(MASTERD_ACCOUNT), gid_of(MASTERD_ACCOUNT)
    masterd = (-1 if uid is None else uid, -1 if gid is None else gid)
    return {"server.pem": masterd, "hmac.key": masterd, "client.pem": (-1, -1)}


def desired_files(
    payload: NodeDaemonSetup,
    *,
    client_pem: bytes | None,
    owners: Mapping[str, FileOwner],
) -> list[DesiredFile]:
    """Every file the payload wants, with their documented modes and the owners given."""
    files = [
        DesiredFile(f"{GANETI_DIR}/ssconf_{key}", ssconf_content(value), 0o444)
        for key, value in sorted(payload.ssconf.items())
    ]
    secrets = {
        "server.pem": payload.node_daemon_certificate.encode(),
        "hmac.key": payload.hmac_key.encode() if payload.hmac_key is not None else None,
        "client.pem": client_pem,
    }
    for name, content in secrets.items():
        if content is not None:
            owner = owners.get(name, FileOwner())
            files.append(
                DesiredFile(
                    f"{GANETI_DIR}/{name}",
                    content,
                    0o440,
                    uid=owner.uid,
                    gid=owner.gid,
                    new_uid=owner.new_uid,
                    new_gid=owner.new_gid,
                )
            )
    return files
