"""The TOML configuration: how to control the daemons and who owns the files.

Every default is a stock Ganeti node's, so a node without a file behaves as
Ganeti's own ``node-daemon-setup`` would. The file is checked as strictly as
the payload (an unknown key, a wrong type, a bad address is exit 3), and all
its problems are reported at once, each naming its ``[table].key``, so an
operator fixes the file in one go instead of one typo per run.
"""

from __future__ import annotations

import grp
import math
import os
import pwd
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from txsetup.errors import InvalidInput, UsageError, environment_problem

__all__ = [
    "CLIENT_PEM_KEYS",
    "DEFAULT_CONFIG_PATH",
    "Argv",
    "ClientPemProfile",
    "Config",
    "DaemonConfig",
    "FilesConfig",
    "HealthTarget",
    "Ownership",
    "SshdConfig",
    "load_config",
    "parse_address",
    "resolve_ownership",
]

DEFAULT_CONFIG_PATH: Final = "etc/txsetup/config.toml"
"""Where the configuration lives, relative to ``--root``."""

Argv = tuple[str, ...]
_DAEMON_UTIL: Final = "/usr/lib/ganeti/daemon-util"
_STOP_ALL: Final = (_DAEMON_UTIL, "stop-all")
_TABLE_NAMES: Final = frozenset({"daemon", "files", "sshd"})
CLIENT_PEM_KEYS: Final = ("rsa-2048", "rsa-3072", "rsa-4096", "like-node")
_MAX_CLIENT_PEM_DAYS: Final = 36500
_T = TypeVar("_T")


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
    health_url: HealthTarget | None = HealthTarget("127.0.0.1", 1811)
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


def load_config(path: Path | None, *, root: Path) -> Config:
    """Read and check the configuration file.

    Args:
        path: the ``--config`` file, or ``None`` for ``<root>/etc/txsetup/config.toml``
            when that exists (defaults otherwise).
        root: the ``--root`` prefix.

    Raises:
        UsageError: an explicitly given ``path`` does not exist.
        EnvironmentProblem: this user may not read it (exit 7).
        InvalidInput: the file is unreadable, not TOML, or has a bad table, key or value.
    """
    explicit = path is not None
    source = path if path is not None else root / DEFAULT_CONFIG_PATH
    try:
        data = source.read_bytes()
    except FileNotFoundError as exc:
        if explicit:
            raise UsageError(f"{source}: configuration file not found") from exc
        if not os.path.lexists(source):
            return Config()
        raise InvalidInput(f"{source}: cannot read: {exc.strerror}") from exc
    except OSError as exc:
        raise environment_problem(exc, doing="configuration") or InvalidInput(
            f"{source}: cannot read: {exc.strerror or exc}"
        ) from exc
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError or TOMLDecodeError
        raise InvalidInput(f"{source}: not valid TOML: {exc}") from exc
    return _parse(document, str(source))


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


def parse_address(text: str, *, scheme: str | None) -> HealthTarget | None:
    """Parse ``scheme://HOST:PORT`` (``[v6]:PORT`` for IPv6) or ``none``.

    With ``scheme=None`` the bare ``HOST:PORT`` (optionally ``tcp://``) is wanted.

    Raises:
        ValueError: the text is not such an address; the message says what is expected.
    """
    if text == "none":
        return None
    expected = f'expected "{scheme + "://" if scheme else ""}HOST:PORT" or "none", got {text!r}'
    rest = text.removeprefix(f"{scheme or 'tcp'}://")
    if scheme is not None and rest == text:
        raise ValueError(expected)
    if rest.startswith("["):
        host, sep, port = rest[1:].partition("]:")
        valid_host = sep != "" and ":" in host
    else:
        host, sep, port = rest.rpartition(":")
        valid_host = sep != "" and ":" not in host
    if not valid_host or not host or any(c.isspace() or c in "/[]@?#" for c in host):
        raise ValueError(expected)
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536):
        raise ValueError(f"{expected} (port must be 1-65535)")
    return HealthTarget(host, int(port))


class _Bad(ValueError):
    """A value's problem; ``at`` extends the key's name to the element (``[1][0]``)."""

    def __init__(self, message: str, at: str = "") -> None:
        super().__init__(message)
        self.at = at


class _Table:
    """One TOML table being read: records problems and which keys were used."""

    def __init__(self, source: str, name: str, values: dict[str, object], problems: list[str]):
        self._where = f"{source}: [{name}]"
        self._values = values
        self._problems = problems
        self._used: set[str] = set()

    def read(self, key: str, check: Callable[[object], _T], default: _T) -> _T:
        """The checked value of ``key``, or ``default`` when absent (or wrong: then noted)."""
        self._used.add(key)
        if key not in self._values:
            return default
        try:
            return check(self._values[key])
        except ValueError as exc:
            at = exc.at if isinstance(exc, _Bad) else ""
            self._problems.append(f"{self._where}.{key}{at}: {exc}")
            return default

    def check_unknown(self) -> None:
        unknown = [key for key in self._values if key not in self._used]
        self._problems.extend(f"{self._where}.{key}: unknown key" for key in unknown)


def _argv(value: object) -> Argv:
    if not isinstance(value, list) or not value:
        raise _Bad(f"expected a non-empty array of strings, got {_describe(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _Bad(f"expected a string, got {_describe(item)}", f"[{i}]")
        if "\0" in item:
            raise _Bad("contains a NUL character", f"[{i}]")
    if not value[0]:
        raise _Bad("the program name is empty", "[0]")
    return tuple(value)


def _commands(value: object) -> tuple[Argv, ...]:
    """One command (array of strings) or an array of commands."""
    if not (isinstance(value, list) and any(isinstance(item, list) for item in value)):
        return (_argv(value),)
    if not all(isinstance(item, list) for item in value):
        raise _Bad("mixes strings and arrays: give one command or an array of commands")
    commands = []
    for i, item in enumerate(value):
        try:
            commands.append(_argv(item))
        except _Bad as bad:
            raise _Bad(str(bad), f"[{i}]{bad.at}") from None
    return tuple(commands)


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"expected a number of seconds, got {_describe(value)}")
    if not (math.isfinite(value) and value > 0):
        raise _Bad(f"expected a positive finite number of seconds, got {value!r}")
    return float(value)


def _account(value: object) -> str:
    """A user or group name, or a numeric id (kept as its digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if not isinstance(value, str) or not value or "\0" in value or ":" in value:
        raise _Bad(f"expected a user or group name or id, got {_describe(value)}")
    return value


def _client_pem_key(value: object) -> str:
    if value not in CLIENT_PEM_KEYS:
        raise _Bad(f"expected one of {', '.join(CLIENT_PEM_KEYS)}, got {_describe(value)}")
    return str(value)


def _days(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"expected a whole number of days, got {_describe(value)}")
    if not 0 < value <= _MAX_CLIENT_PEM_DAYS:
        raise _Bad(f"expected 1 to {_MAX_CLIENT_PEM_DAYS} days, got {value}")
    return value


def _address(scheme: str | None) -> Callable[[object], HealthTarget | None]:
    def check(value: object) -> HealthTarget | None:
        if not isinstance(value, str):
            raise _Bad(f"expected a string, got {_describe(value)}")
        return parse_address(value, scheme=scheme)

    return check


def _parse(document: dict[str, object], source: str) -> Config:
    problems: list[str] = []
    tables: dict[str, _Table] = {}
    for name, values in document.items():
        if name not in _TABLE_NAMES and isinstance(values, dict):
            problems.append(f"{source}: [{name}]: unknown table")
        elif name not in _TABLE_NAMES:
            problems.append(f"{source}: {name}: unknown key (not in [daemon], [files] or [sshd])")
        elif not isinstance(values, dict):
            problems.append(f"{source}: [{name}]: expected a table, got {_describe(values)}")
        else:
            tables[name] = _Table(source, name, values, problems)
    empty = _Table(source, "", {}, problems)
    daemon = _read_daemon(tables.get("daemon", empty))
    files = _read_files(tables.get("files", empty))
    sshd = _read_sshd(tables.get("sshd", empty))
    for table in tables.values():
        table.check_unknown()
    if len(problems) == 1:
        raise InvalidInput(problems[0], problems=problems)
    if problems:
        raise InvalidInput(f"{source}: {len(problems)} problems", problems=problems)
    return Config(daemon=daemon, files=files, sshd=sshd)


def _read_daemon(table: _Table) -> DaemonConfig:
    default = DaemonConfig()
    return DaemonConfig(
        restart=table.read("restart", _commands, default.restart),
        stop=table.read("stop", _commands, default.stop),
        status=table.read("status", _argv, default.status),
        health_url=table.read("health_url", _address("tls"), default.health_url),
        health_timeout=table.read("health_timeout", _seconds, default.health_timeout),
        command_timeout=table.read("command_timeout", _seconds, default.command_timeout),
    )


def _read_files(table: _Table) -> FilesConfig:
    def ownership(file: str) -> Ownership:
        owner: str | None = table.read(f"{file}_owner", _account, None)
        return Ownership(owner, table.read(f"{file}_group", _account, None))

    default = ClientPemProfile()
    profile = ClientPemProfile(
        key=table.read("client_pem_key", _client_pem_key, default.key),
        days=table.read("client_pem_days", _days, default.days),
    )
    return FilesConfig(
        ownership("server_pem"), ownership("hmac_key"), ownership("client_pem"), profile
    )


def _read_sshd(table: _Table) -> SshdConfig:
    default = SshdConfig()
    return SshdConfig(
        reload=table.read("reload", _commands, default.reload),
        status=table.read("status", _argv, default.status),
        health_address=table.read("health_address", _address(None), default.health_address),
        health_timeout=table.read("health_timeout", _seconds, default.health_timeout),
        command_timeout=table.read("command_timeout", _seconds, default.command_timeout),
    )


def _describe(value: object) -> str:
    """Name a TOML value's type the way the TOML spec does."""
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list) and not value:
        return "an empty array"
    names = {bool: "boolean", int: "integer", float: "float", list: "array", dict: "table"}
    return names.get(type(value), type(value).__name__)
