"""SSH key pairs for ``ssh-setup``: verify, recognise, generate. Pure functions, no I/O.

Verification runs before the first write and reports every problem
of a document at once, each at its JSON path (``$.ssh_host_key[1]: ...``).
Messages name kinds and paths, never key material: they are logged.

``cryptography`` loads both private formats a master may send: OpenSSH's own
(``-----BEGIN OPENSSH PRIVATE KEY-----``, what ``ssh-keygen`` writes) and PEM
(PKCS#1, SEC1, PKCS#8). Its warnings about DSA are silenced here: a warning
printed on stderr would break the JSON log the master parses, and a DSA key
that a future ``cryptography`` cannot load any more is a clear refusal, not
a crash.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import struct
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from txsetup.node.cryptocompat import (
    PrivateKeyTypes,
    PublicKeyTypes,
    SSHPrivateKeyTypes,
    SSHPublicKeyTypes,
)
from txsetup.node.documents import SshKeyTriple
from txsetup.node.sshfiles import KEY_LINE_TYPES
from txsetup.node.strictjson import json_path

__all__ = [
    "DEFAULT_BITS",
    "KeyFacts",
    "fingerprint_of_line",
    "generate_key_pair",
    "key_pair_fits",
    "verify_authorized_lines",
    "verify_key_pairs",
]

# Key sizes used when a master names a type but no size (Ganeti's defaults).
DEFAULT_BITS: Final = {"rsa": 2048, "dsa": 1024, "ecdsa": 256, "ed25519": 256}

_PRIVATE_CLASSES: Final[Mapping[str, type]] = {
    "rsa": rsa.RSAPrivateKey,
    "dsa": dsa.DSAPrivateKey,
    "ecdsa": ec.EllipticCurvePrivateKey,
    "ed25519": ed25519.Ed25519PrivateKey,
}
_CURVES: Final[Mapping[int, type[ec.EllipticCurve]]] = {
    256: ec.SECP256R1,
    384: ec.SECP384R1,
    521: ec.SECP521R1,
}
_PARSE_ERRORS: Final = (ValueError, TypeError, UnsupportedAlgorithm, struct.error, IndexError)
_OPENSSH_MAGIC: Final = b"openssh-key-v1\x00"


@dataclass(frozen=True)
class KeyFacts:
    """What may be said and journaled about a verified pair: its kind and public identity."""

    kind: str
    fingerprint: str  # lowercase hex SHA-256 of the public key blob


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No deprecation warning from cryptography (DSA) may reach stderr, the master's log."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


#: What the two loaders may return: the SSH loader's kinds and PEM's differ.
_AnyPrivateKey = PrivateKeyTypes | SSHPrivateKeyTypes
_AnyPublicKey = PublicKeyTypes | SSHPublicKeyTypes


def _load_private(text: str) -> _AnyPrivateKey:
    data = text.encode("utf-8", "replace")
    with _quiet():
        if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
            return serialization.load_ssh_private_key(data, password=None)
        return serialization.load_pem_private_key(data, password=None)


def _load_public(line: str) -> SSHPublicKeyTypes:
    with _quiet():
        return serialization.load_ssh_public_key(line.strip().encode("utf-8", "replace"))


def _blob(public: _AnyPublicKey) -> bytes:
    """The public key in SSH wire form (what sshd presents and ssh-keyscan shows)."""
    with _quiet():
        line = public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    return base64.b64decode(line.split()[1])


def _fingerprint(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def fingerprint_of_line(line: str) -> str | None:
    """The fingerprint of an OpenSSH public key line (``type base64 [comment]``), or None."""
    try:
        return _fingerprint(_blob(_load_public(line)))
    except _PARSE_ERRORS:
        return None


def _private_or_problem(kind: str, private: str) -> tuple[_AnyPrivateKey | None, str | None]:
    """The loaded private key, or why it cannot be loaded (never quoting it)."""
    try:
        return _load_private(private), None
    except TypeError:  # cryptography's way of saying "encrypted"
        return None, "the private key is encrypted; an unencrypted key is needed"
    except UnsupportedAlgorithm:
        return None, f"this node cannot load {kind} private keys (cryptography refuses them)"
    except _PARSE_ERRORS:
        if _openssh_encrypted(private.encode("utf-8", "replace")):
            return None, "the private key is encrypted; an unencrypted key is needed"
        return None, "the private key does not parse (OpenSSH or PEM expected)"


def _openssh_encrypted(data: bytes) -> bool:
    """Whether an OpenSSH private key names a cipher, read from the key itself.

    cryptography says "encrypted" with a TypeError for PEM, but for OpenSSH's
    format with a ValueError in older releases (Debian 12's 38.0.4), whose
    message for any unparseable key also mentions encryption.
    """
    body = data.partition(b"-----BEGIN OPENSSH PRIVATE KEY-----")[2]
    try:
        blob = base64.b64decode(b"".join(body.partition(b"-----END")[0].split()))
    except (binascii.Error, ValueError):
        return False
    if not blob.startswith(_OPENSSH_MAGIC) or len(blob) < len(_OPENSSH_MAGIC) + 4:
        return False
    (size,) = struct.unpack_from(">I", blob, len(_OPENSSH_MAGIC))
    start = len(_OPENSSH_MAGIC) + 4
    return blob[start : start + size] != b"none"


def _pair_problems(kind: str, private: str, public: str) -> tuple[list[str], str | None]:
    """Problems of one ``[kind, private, public]``, and its fingerprint when it is sound."""
    key, why = _private_or_problem(kind, private)
    if key is None:
        return [why or "the private key does not parse"], None
    problems = []
    if kind in _PRIVATE_CLASSES and not isinstance(key, _PRIVATE_CLASSES[kind]):
        problems.append(f"the private key is not a {kind} key")
    try:
        public_blob = _blob(_load_public(public))
        private_blob = _blob(key.public_key())
    except _PARSE_ERRORS:
        return [*problems, "the public key does not parse (an OpenSSH public key line)"], None
    if private_blob != public_blob:
        problems.append("the private key does not match the public key")
    return problems, None if problems else _fingerprint(public_blob)


def verify_key_pairs(
    path: str, triples: Sequence[SshKeyTriple]
) -> tuple[list[KeyFacts], list[str]]:
    """Check every pair under the JSON path ``path``: parses, is its kind, halves match.

    Returns the facts of the sound pairs and the problems of the others, each
    starting with its JSON path, so a caller collects every problem at once.
    """
    facts: list[KeyFacts] = []
    problems: list[str] = []
    for index, triple in enumerate(triples):
        found, fingerprint = _pair_problems(triple.type, triple.private, triple.public)
        problems.extend(f"{path}[{index}]: {problem}" for problem in found)
        if fingerprint is not None:
            facts.append(KeyFacts(triple.type, fingerprint))
    return facts, problems


def _wire_type(blob: bytes) -> str | None:
    """The key type a public key blob names in its first field (SSH wire format)."""
    if len(blob) < 4:
        return None
    (size,) = struct.unpack(">I", blob[:4])
    name = blob[4 : 4 + size]
    return name.decode("ascii", "replace") if len(name) == size else None


def _key_at(parts: Sequence[str]) -> int | None:
    """Where a line's ``type base64`` begins (after any options), if it has one.

    Checked structurally (the blob names its own type), so keys cryptography
    does not load, such as FIDO ``sk-`` keys, are accepted too.
    """
    for index, part in enumerate(parts[:-1]):
        if part in KEY_LINE_TYPES:
            try:
                blob = base64.b64decode(parts[index + 1], validate=True)
            except (binascii.Error, ValueError):
                return None
            return index if _wire_type(blob) == part else None
    return None


def verify_authorized_lines(authorized: Mapping[str, Sequence[str]], path: str) -> list[str]:
    """Each line must carry a public key: junk must not reach root's authorized_keys."""
    problems = []
    for name, lines in authorized.items():
        for index, line in enumerate(lines):
            if _key_at(line.split()) is None:
                problems.append(f"{json_path(path, name)}[{index}]: no public key in the line")
    return problems


def key_pair_fits(private: bytes | None, public: bytes | None, kind: str, bits: int | None) -> bool:
    """Whether root's existing pair is of ``kind`` and ``bits`` and its halves match.

    Such a pair is kept, so that a re-run converges instead of changing root's
    identity on every node add. ``bits`` None accepts any size.
    """
    if private is None or public is None:
        return False
    try:
        key = _load_private(private.decode("utf-8", "replace"))
        pair_matches = _blob(key.public_key()) == _blob(
            _load_public(public.decode("utf-8", "replace"))
        )
    except _PARSE_ERRORS:
        return False
    if not (pair_matches and isinstance(key, _PRIVATE_CLASSES[kind])):
        return False
    if bits is None or isinstance(key, ed25519.Ed25519PrivateKey):
        return True
    size = key.curve.key_size if isinstance(key, ec.EllipticCurvePrivateKey) else key.key_size  # type: ignore[union-attr]
    return bool(size == bits)


def generate_key_pair(kind: str, bits: int | None, comment: str) -> tuple[bytes, bytes]:
    """A new pair as ``ssh-keygen`` writes it: OpenSSH private format, one public line.

    Returns:
        ``(private, public)`` file contents.
    """
    size = bits or DEFAULT_BITS[kind]
    key: (
        rsa.RSAPrivateKey
        | dsa.DSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
    )
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=size)
    elif kind == "dsa":
        key = dsa.generate_private_key(key_size=size)
    elif kind == "ecdsa":
        key = ec.generate_private_key(_CURVES[size]())
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    with _quiet():
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    return private, public + b" " + comment.encode() + b"\n"
