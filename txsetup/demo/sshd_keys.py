"""The key material of loopback nodes: host keys, the client key, known_hosts.

Standard library only; keys are made by the system ``ssh-keygen``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from txsetup.demo.sshd_config import HOST

__all__ = ["generate_keys", "write_known_hosts"]


def generate_keys(keygen: str, keys: Sequence[Path]) -> None:
    """Create ed25519 keys without passphrase, all ssh-keygen runs in parallel.

    Parallel because a suite may start dozens of nodes, one host key each.
    Every started ssh-keygen is waited for, even when a later one fails to start.

    Raises:
        RuntimeError: An ssh-keygen run failed (its output is in the message).
    """
    running: list[tuple[Path, subprocess.Popen[bytes]]] = []
    failures = []
    try:
        for key in keys:
            comment = f"txsetup-{key.parent.name}-{key.name}"
            argv = [keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)]
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            running.append((key, proc))
    finally:
        for key, proc in running:
            output, _ = proc.communicate()
            if proc.returncode != 0:
                failures.append(f"{key}: {output.decode(errors='replace').strip()}")
    if failures:
        raise RuntimeError("ssh-keygen failed: " + "; ".join(failures))


def write_known_hosts(path: Path, host_keys: Sequence[tuple[int, Path]]) -> None:
    """Pin each node's host key (``(port, private key path)``) for the client."""
    path.write_text(
        "".join(
            f"[{HOST}]:{port} {Path(f'{key}.pub').read_text().strip()}\n" for port, key in host_keys
        )
    )
