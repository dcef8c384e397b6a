"""The sshd_config of a loopback node, and the checks on what goes into it.

Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "HOST",
    "ROOT_VARIABLE",
    "SshdSettings",
    "checked_env",
    "ensure_privsep_dir",
    "supports_penalty_switch",
    "write_sshd_config",
]

HOST: Final = "127.0.0.1"
ROOT_VARIABLE: Final = "TXSETUP_ROOT"
_PRIVSEP_DIR: Final = Path("/run/sshd")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class SshdSettings:
    """What every node's sshd_config and command line share within one start."""

    sshd: str
    launcher: tuple[str, ...]
    authorized_keys: Path
    env: tuple[tuple[str, str], ...]
    extra_lines: tuple[str, ...]
    root_host_keys: tuple[str, ...]


def write_sshd_config(
    path: Path, settings: SshdSettings, *, port: int, root: Path, host_key: Path, pidfile: Path
) -> None:
    """Write one node's sshd_config for ``port``.

    All variables go on one ``SetEnv`` line: sshd ignores every ``SetEnv``
    line after the first. ``%`` is doubled in ``AuthorizedKeysFile``, which
    expands ``%``-tokens.
    """
    variables = [(ROOT_VARIABLE, str(root)), *settings.env]
    setenv = " ".join(_quote(f"{name}={value}") for name, value in variables)
    lines = [
        f"ListenAddress {HOST}",
        f"Port {port}",
        f"HostKey {_quote(host_key)}",
        *(
            f"HostKey {_quote(root / f'etc/ssh/ssh_host_{kind}_key')}"
            for kind in settings.root_host_keys
        ),
        f"PidFile {_quote(pidfile)}",
        f"AuthorizedKeysFile {_quote(str(settings.authorized_keys).replace('%', '%%'))}",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        "PermitUserRC no",
        f"SetEnv {setenv}",
        "Subsystem sftp internal-sftp",
        "MaxStartups 100:30:200",
        "MaxSessions 100",
        "LogLevel ERROR",
        *settings.extra_lines,
    ]
    path.write_text("\n".join(lines) + "\n")


def _quote(value: str | Path) -> str:
    """One sshd_config argument, double-quoted so spaces, ``#`` and quotes survive.

    sshd splits config lines like a shell would for quoting: inside double
    quotes a backslash escapes ``\\`` and ``"``. A line cannot hold a newline.
    """
    text = str(value)
    if any(char in text for char in "\0\r\n"):
        raise ValueError(f"sshd_config cannot hold a newline or NUL: {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def checked_env(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """The caller's session variables, refusing what sshd would misread or drop.

    Raises:
        ValueError: A name is not a plain shell variable name, a value holds a
            newline, or the caller tries to set ``TXSETUP_ROOT`` (sshd keeps the
            first value of a variable, so the node's root would silently win).
    """
    items = []
    for name, value in env.items():
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"not an environment variable name: {name!r}")
        if name == ROOT_VARIABLE:
            raise ValueError(f"{ROOT_VARIABLE} is each node's own root; it cannot be set")
        _quote(value)
        items.append((name, value))
    return items


def supports_penalty_switch(sshd: str, host_key: Path) -> bool:
    """Whether this sshd knows ``PerSourcePenalties`` (OpenSSH 9.8 and later).

    Those versions refuse a source for a while after failed or abandoned logins,
    and every node here is reached from 127.0.0.1: readiness probes and tests of
    failing logins would lock the suite out. Older versions reject the keyword,
    so it is only written when ``sshd -t`` accepts it.
    """
    probe = [sshd, "-t", "-f", os.devnull, "-o", f"HostKey={host_key}"]
    run = subprocess.run(
        [*probe, "-o", "PerSourcePenalties=no"], capture_output=True, check=False, timeout=30
    )
    return run.returncode == 0


def ensure_privsep_dir() -> None:
    """Create sshd's privilege separation directory, which root's sshd requires.

    Packages create it at boot through tmpfiles.d; containers often lack it.
    """
    with contextlib.suppress(FileExistsError):
        _PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
        _PRIVSEP_DIR.chmod(0o755)
