"""The files ``ssh-setup`` installs: where, with which bytes and modes.

Standard library only: recovery (on every run's start-up path) imports the
paths from here, and ``cryptography`` is loaded only when keys are checked.

Host keys go to ``etc/ssh``, root's pair and ``authorized_keys`` to
``root/.ssh``, all under ``--root``. Private keys are 0600 and public keys
0644, as ``ssh-keygen`` and Ganeti write them; ``authorized_keys`` is 0600.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from txsetup.node.documents import SshKeyTriple
from txsetup.txn.plan import DesiredFile

__all__ = [
    "AUTHORIZED_KEYS",
    "DIR_MODES",
    "KEY_LINE_TYPES",
    "ROOT_SSH_DIR",
    "SSH_DIR",
    "KeyPairFiles",
    "authorized_key_identity",
    "desired_ssh_files",
    "host_key_paths",
    "merge_authorized_keys",
    "public_line",
    "root_key_paths",
]

SSH_DIR: Final = "etc/ssh"
ROOT_SSH_DIR: Final = "root/.ssh"
AUTHORIZED_KEYS: Final = f"{ROOT_SSH_DIR}/authorized_keys"
# Directories a run may create: root's home and its .ssh are private (sshd's
# StrictModes refuses a group- or world-writable one, and no one else needs them).
DIR_MODES: Final = {"root": 0o700, ROOT_SSH_DIR: 0o700, "etc": 0o755, SSH_DIR: 0o755}
# The key type names a public key line (or an authorized_keys line) may carry.
KEY_LINE_TYPES: Final = frozenset(
    {
        "ssh-rsa",
        "ssh-dss",
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "sk-ssh-ed25519@openssh.com",
    }
)


def host_key_paths(kind: str) -> tuple[str, str]:
    """sshd's host key files of ``kind``: private, public."""
    private = f"{SSH_DIR}/ssh_host_{kind}_key"
    return private, f"{private}.pub"


def root_key_paths(kind: str) -> tuple[str, str]:
    """root's key files of ``kind``: private, public."""
    private = f"{ROOT_SSH_DIR}/id_{kind}"
    return private, f"{private}.pub"


def public_line(text: str) -> bytes:
    """A public key file's bytes: the line, ending in exactly one newline."""
    return text.rstrip("\r\n").encode() + b"\n"


@dataclass(frozen=True, repr=False)
class KeyPairFiles:
    """One pair's files as they should be: private 0600, public 0644."""

    paths: tuple[str, str]
    private: bytes  # secret
    public: bytes

    def __repr__(self) -> str:
        return f"KeyPairFiles({self.paths[0]!r}, {len(self.private)} bytes private)"

    @classmethod
    def of(cls, paths: tuple[str, str], triple: SshKeyTriple) -> KeyPairFiles:
        """A document's pair, the private key as given, the public one as a line."""
        return cls(paths, triple.private.encode(), public_line(triple.public))

    def desired(self) -> list[DesiredFile]:
        """The two files to plan."""
        return [
            DesiredFile(self.paths[0], self.private, 0o600),
            DesiredFile(self.paths[1], self.public, 0o644),
        ]


def authorized_key_identity(line: str) -> tuple[str, ...]:
    """What makes two authorized_keys lines the same key, as Ganeti compares them.

    A line without options is its type and blob (the comment and spacing do
    not matter); a line with options is all of its words.
    """
    parts = line.split()
    if parts and parts[0] in KEY_LINE_TYPES:
        return ("", *parts[:2])
    return ("options", *parts)


def merge_authorized_keys(existing: bytes | None, lines: Iterable[str]) -> bytes:
    """``authorized_keys`` keeping every existing line and its order, plus each new key once.

    Keys are compared as Ganeti compares them (type and blob for a line
    without options), so a key that is already there under another comment
    is not added twice, and a key listed twice in the document is added once.
    """
    content = existing or b""
    seen = {
        authorized_key_identity(line)
        for line in content.decode("utf-8", "replace").splitlines()
        if line.strip()
    }
    added: list[str] = []
    for line in lines:
        identity = authorized_key_identity(line)
        if identity in seen:
            continue
        seen.add(identity)
        added.append(line.rstrip("\r\n"))
    if not added:
        return content
    if content and not content.endswith(b"\n"):
        content += b"\n"
    return content + "".join(f"{line}\n" for line in added).encode()


def desired_ssh_files(
    host_pairs: Sequence[KeyPairFiles],
    root_pairs: Sequence[KeyPairFiles],
    authorized_keys: bytes,
) -> list[DesiredFile]:
    """Every file the run wants, host keys first, ``authorized_keys`` last."""
    files = [f for pair in (*host_pairs, *root_pairs) for f in pair.desired()]
    files.append(DesiredFile(AUTHORIZED_KEYS, authorized_keys, 0o600))
    return files
