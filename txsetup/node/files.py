"""The files ``node-daemon-setup`` installs: where, with which bytes and modes (SPEC §4)."""

from __future__ import annotations

from collections.abc import Mapping

from txsetup.node.payload import NodeDaemonSetup
from txsetup.txn.plan import DesiredFile

__all__ = ["GANETI_DIR", "desired_files", "ssconf_content"]

GANETI_DIR = "var/lib/ganeti"


def ssconf_content(value: str) -> bytes:
    """An ssconf file's bytes: the value plus a newline unless empty or already there."""
    if value and not value.endswith("\n"):
        value += "\n"
    return value.encode()


def desired_files(
    payload: NodeDaemonSetup,
    *,
    client_pem: bytes | None,
    owners: Mapping[str, tuple[int, int]],
) -> list[DesiredFile]:
    """Every file the payload wants, with SPEC §4's modes and configured owners."""
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
            uid, gid = owners.get(name, (-1, -1))
            files.append(DesiredFile(f"{GANETI_DIR}/{name}", content, 0o440, uid, gid))
    return files
