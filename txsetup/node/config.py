"""The configuration: how to control the daemons and who owns the files.

Every default is a stock Ganeti node's, so a node without a file behaves as
Ganeti's own ``node-daemon-setup`` would; ``Config()`` is that configuration.
Reading the TOML file is :mod:`txsetup.node.config_file`.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from txsetup.errors import InvalidInput

__all__ = [
    "CLIENT_PEM_KEYS",
    "DEFAULT_CONFIG_PATH",
    "NODED_PORT",
    "Argv",
    "ClientPemProfile",
    "Config",
    "DaemonConfig",
    "FilesConfig",
    "HealthTarget",
    "Ownership",
    "SshdConfig",
    "resolve_ownership",
]

DEFAULT_CONFIG_PATH: Final = "etc/txsetup/config.toml"
"""Where the configuration lives, relative to ``--root``."""

Argv = tuple[str, ...]
_DAEMON_UTIL: Final = "/usr/lib/ganeti/daemon-util"
_STOP_ALL: Final = (_DAEMON_UTIL, "stop-all")
CLIENT_PEM_KEYS: Final = ("rsa-2048", "rsa-3072", "rsa-4096", "like-node")
MAX_CLIENT_PEM_DAYS: Final = 36500


NODED_PORT: Final = 1811
"""The port Ganeti's node daemon listens on (TLS); the master checks it there too."""


@dataclass(frozen=True)
class HealthTarget:
    """A TCP endpoint to probe; ``host`` is bare (an IPv6 address has no brackets)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class DaemonConfig:
    """How to control the node daemon and how to tell that it is healthy.

    ``restart`` and ``stop`` are command sequences, each command must exit 0:
    Ganeti restarts noded as "stop all, then start noded", which one argv cannot say.
    """

    restart: tuple[Argv, ...] = (_STOP_ALL, (_DAEMON_UTIL, "start", "ganeti-noded"))
    stop: tuple[Argv, ...] = (_STOP_ALL,)
    status: Argv = (_DAEMON_UTIL, "check", "ganeti-noded")
    health_url: HealthTarget | None = HealthTarget("127.0.0.1", NODED_PORT)
    health_timeout: float = 30.0
    command_timeout: float = 60.0


@dataclass(frozen=True)
class Ownership:
    """Owner and group for a file; ``None`` leaves an existing file's as they are."""

    user: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class ClientPemProfile:
    """How ``client.pem`` is minted; the defaults are Ganeti's.

    Ganeti's ``GenerateSignedX509Cert`` makes an RSA key of ``RSA_KEY_BITS``
    (2048) and a certificate valid ``X509_CERT_DEFAULT_VALIDITY`` (1825) days,
    and its cluster verify warns about any key under 2048 bits. ``like-node``
    is the node key's kind and size instead (txsetup's earlier choice).
    """

    key: str = "rsa-2048"
    days: int = 1825


@dataclass(frozen=True)
class FilesConfig:
    """Ownership of the secret files (unset: Ganeti's defaults) and how client.pem is minted."""

    server_pem: Ownership = Ownership()
    hmac_key: Ownership = Ownership()
    client_pem: Ownership = Ownership()
    client_pem_profile: ClientPemProfile = ClientPemProfile()


@dataclass(frozen=True)
class SshdConfig:
    """How ``ssh-setup`` reloads the SSH daemon and tells that it serves the new host keys.

    The default reload is Ganeti's own (``daemon-util reload-ssh-keys``), so a
    node without a file behaves as Ganeti's ``prepare-node-join`` would.
    """

    reload: tuple[Argv, ...] = ((_DAEMON_UTIL, "reload-ssh-keys"),)
    status: Argv = ("systemctl", "is-active", "ssh")
    health_address: HealthTarget | None = HealthTarget("127.0.0.1", 22)
    health_timeout: float = 30.0
    command_timeout: float = 60.0


@dataclass(frozen=True)
class Config:
    """The whole configuration; ``Config()`` is what a node without a file gets."""

    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    sshd: SshdConfig = field(default_factory=SshdConfig)


def resolve_ownership(ownership: Ownership) -> tuple[int, int]:
    """Names to ``(uid, gid)`` for :func:`os.fchown`; -1 leaves it as is; digits are ids.

    Raises:
        InvalidInput: a user or group that this node does not know.
    """

    def lookup(name: str | None, kind: str, by_name: Callable[[str], int]) -> int:
        if name is None:
            return -1
        try:
            return by_name(name)
        except KeyError:
            if name.isdigit():
                return int(name)
            raise InvalidInput(f"configuration: no such {kind} {name!r} on this node") from None

    return (
        lookup(ownership.user, "user", lambda name: pwd.getpwnam(name).pw_uid),
        lookup(ownership.group, "group", lambda name: grp.getgrnam(name).gr_gid),
    )
