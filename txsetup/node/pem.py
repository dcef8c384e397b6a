"""Reading one PEM text into its certificates and private keys, never raising.

Any input, however broken, becomes a :class:`ParsedPem` whose ``problems``
say what went wrong; no problem ever quotes key material or PEM text. The
pair check proves a private key belongs to a certificate. Imports
``cryptography``: the CLI imports this module lazily.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from txsetup.node.cryptocompat import PrivateKeyTypes, load_pem_private_key

__all__ = [
    "PARSE_ERRORS",
    "ParsedPem",
    "count_problems",
    "pair_problems",
    "parse_pem",
    "spki",
]

PARSE_ERRORS: Final = (ValueError, TypeError, UnsupportedAlgorithm)
_BEGIN: Final = re.compile(r"-----BEGIN ([A-Z0-9 ]{1,64})-----")
_HARMLESS_LABELS: Final = frozenset({"EC PARAMETERS"})  # OpenSSL may emit these beside a key
# Two blocks of a kind are enough to tell "exactly one" from "more"; the rest
# are only counted. Loading checks a key (an RSA key costs about 0.1 s), so a
# document of thousands of keys would otherwise hold the lock for minutes.
_LOADED_PER_KIND: Final = 2
_SHOWN_PEM_PROBLEMS: Final = 10  # distinct ones; a hostile text must not flood the log


@dataclass
class ParsedPem:
    """The parsed blocks of one PEM text, with what went wrong while parsing."""

    certificate_blocks: int = 0
    key_blocks: int = 0
    certificates: list[x509.Certificate] = field(default_factory=list)
    keys: list[PrivateKeyTypes] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def parse_pem(text: str) -> ParsedPem:
    """Count every certificate and private key block, load the first two of each kind;
    never raise on garbage."""
    parsed = ParsedPem()
    blocks, parsed.problems = _split_blocks(text)
    for label, block in blocks:
        data = block.encode("ascii", "replace")
        if label == "CERTIFICATE":
            parsed.certificate_blocks += 1
            if parsed.certificate_blocks > _LOADED_PER_KIND:
                continue
            try:
                parsed.certificates.append(x509.load_pem_x509_certificate(data))
            except PARSE_ERRORS:
                parsed.problems.append("the certificate does not parse")
        elif label.endswith("PRIVATE KEY"):
            parsed.key_blocks += 1
            if parsed.key_blocks > _LOADED_PER_KIND:
                continue
            try:
                parsed.keys.append(_load_private_key(data))
            except TypeError:  # cryptography's way of saying "encrypted"
                parsed.problems.append("the private key is encrypted; an unencrypted key is needed")
            except PARSE_ERRORS:
                parsed.problems.append("the private key does not parse")
        elif label not in _HARMLESS_LABELS:
            parsed.problems.append(f"unexpected PEM block {_shown_label(label)}")
    parsed.problems = _summarized(parsed.problems)
    return parsed


@functools.lru_cache(maxsize=8)
def _load_private_key(block: bytes) -> PrivateKeyTypes:
    """One PEM private key block, loaded once per process.

    An RSA key is loaded without OpenSSL's full consistency check (the
    primality of its factors and the like: 0.1 to 0.2 s for 2048 bits, more
    than the rest of a run's own work) where cryptography allows it (39 and
    later; an older one checks, and refuses a damaged key as unparseable).
    What that check protects is proved instead where it matters, by
    :func:`pair_problems`: the key's public half is the certificate's, and it
    makes a signature the certificate's public key accepts, so it works for
    TLS and for signing client.pem. A run meets the same block up to three
    times (the node key when verified and again when it signs client.pem; on
    a re-add server.pem holds the same key), so a block is loaded once; a key
    object is immutable, and a block that fails raises every time, as
    failures are not kept.
    """
    return load_pem_private_key(block)


def _summarized(problems: list[str]) -> list[str]:
    """Each distinct problem once, with how often it occurred, and only the first few."""
    counted = [p if n == 1 else f"{p} ({n} times)" for p, n in Counter(problems).items()]
    if len(counted) > _SHOWN_PEM_PROBLEMS:
        more = len(counted) - _SHOWN_PEM_PROBLEMS
        counted = [*counted[:_SHOWN_PEM_PROBLEMS], f"{more} more kind(s) of PEM problem"]
    return counted


def _split_blocks(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Cut text into (label, block) pairs, reporting blocks that never end."""
    blocks: list[tuple[str, str]] = []
    problems: list[str] = []
    label: str | None = None
    lines: list[str] = []
    for line in (raw.strip() for raw in text.splitlines()):
        begin = _BEGIN.fullmatch(line)
        if begin is not None:
            if label is not None:
                problems.append(f"truncated PEM block {_shown_label(label)}")
            label, lines = begin.group(1), [line]
        elif label is not None:
            lines.append(line)
            if line == f"-----END {label}-----":
                blocks.append((label, "\n".join(lines) + "\n"))
                label = None
    if label is not None:
        problems.append(f"truncated PEM block {_shown_label(label)}")
    return blocks, problems


def _shown_label(label: str) -> str:
    """A PEM label for a message: a private key's is described, not quoted.

    The words "PRIVATE KEY" read as key material to whoever scrubs logs (our
    own log processor included), and the result carries the message too.
    """
    return "of a private key" if "PRIVATE KEY" in label else repr(label)


def count_problems(parsed: ParsedPem, *, want_key: bool) -> list[str]:
    """Demand exactly one certificate, and exactly one key or none at all."""
    problems = []
    if parsed.certificate_blocks == 0:
        problems.append("no certificate found")
    elif parsed.certificate_blocks > 1:
        problems.append(f"{parsed.certificate_blocks} certificates found, expected one")
    if want_key and parsed.key_blocks == 0:
        problems.append("no private key found")
    elif want_key and parsed.key_blocks > 1:
        problems.append(f"{parsed.key_blocks} private keys found, expected one")
    elif not want_key and parsed.key_blocks:
        problems.append("a private key was given; only the certificate may be sent")
    return problems


def pair_problems(cert: x509.Certificate, key: PrivateKeyTypes) -> list[str]:
    """A certificate is only usable with the private half of its own public key."""
    cert_key = spki(cert)
    if cert_key is None:
        return ["the certificate's public key is of an unsupported kind"]
    if cert_key != spki(key):
        return ["the private key does not match the certificate"]
    if isinstance(key, rsa.RSAPrivateKey) and not _signs_for(cert, key):
        return ["the private key is damaged: its signatures do not verify"]
    return []


def _signs_for(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> bool:
    """Whether ``key`` makes a signature that ``cert``'s public key accepts.

    The proof of an RSA key loaded without OpenSSL's consistency check: a
    key whose private numbers do not fit its public ones signs wrongly.
    """
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        return False
    message = b"txsetup: does this key sign for its certificate?"
    try:
        signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, *PARSE_ERRORS):
        return False
    return True


def spki(holder: PrivateKeyTypes | x509.Certificate) -> bytes | None:
    """The public key as DER SubjectPublicKeyInfo (comparable across kinds), None if unreadable."""
    try:
        return holder.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except PARSE_ERRORS:
        return None
