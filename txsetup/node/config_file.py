"""Reading the TOML configuration file, as strictly as the payload.

An unknown key, a wrong type or a bad address is exit 3, and all the file's
problems are reported at once, each naming its ``[table].key``, so an
operator fixes the file in one go instead of one typo per run. What the
values mean, and their defaults, is :mod:`txsetup.node.config`.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from txsetup.errors import InvalidInput, UsageError, environment_problem
from txsetup.node.config import (
    CLIENT_PEM_KEYS,
    DEFAULT_CONFIG_PATH,
    MAX_CLIENT_PEM_DAYS,
    Argv,
    ClientPemProfile,
    Config,
    DaemonConfig,
    FilesConfig,
    HealthTarget,
    Ownership,
    SshdConfig,
)

__all__ = ["load_config", "parse_address"]

_TABLE_NAMES: Final = frozenset({"daemon", "files", "sshd"})
_T = TypeVar("_T")


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
    if not 0 < value <= MAX_CLIENT_PEM_DAYS:
        raise _Bad(f"expected 1 to {MAX_CLIENT_PEM_DAYS} days, got {value}")
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
