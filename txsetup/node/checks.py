"""Cluster-name and certificate verification: pure functions, no I/O.

The ``verify_*`` functions run before the first write and report
every problem of a document at once as :class:`RefusedByVerification`. Any
input, however broken, ends in that error and nothing else, and no message
ever quotes key material or PEM text: the messages are logged and shown to
the operator. PEM parsing is :mod:`txsetup.node.pem`, what the node daemon's
TLS accepts is :mod:`txsetup.node.key_strength`; with
:mod:`txsetup.node.client_pem` and :mod:`txsetup.node.cryptocompat` they are
the only node-daemon-setup modules that import ``cryptography``, and the
CLI imports them lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from txsetup.errors import RefusedByVerification
from txsetup.node.cryptocompat import valid_from, valid_until
from txsetup.node.key_strength import tls_problems
from txsetup.node.pem import PARSE_ERRORS, count_problems, pair_problems, parse_pem, spki

__all__ = [
    "EXPIRY_WARNING",
    "CertificateFacts",
    "verify_cluster_name",
    "verify_node_certificate",
    "verify_public_certificate",
]

EXPIRY_WARNING: Final = timedelta(days=30)
_FIX_LOCAL: Final = "fix or remove it"
_LOCAL_UNREADABLE: Final = (
    "the local server.pem is unreadable (no parseable private key or certificate); fix or remove it"
)


@dataclass(frozen=True)
class CertificateFacts:
    """What the log and the report may say about a certificate: no key material."""

    fingerprint_sha256: str
    subject: str
    not_before: datetime
    not_after: datetime
    expires_soon: bool


def verify_cluster_name(*, given: str, in_ssconf: str | None, local: str | None) -> None:
    """Refuse a document meant for another cluster, or one that contradicts itself.

    Raises:
        RefusedByVerification: listing every mismatch found.
    """
    problems = []
    if in_ssconf is None:
        problems.append("ssconf.cluster_name is missing")
    elif given != in_ssconf:
        problems.append(f"cluster_name {_shown(given)} differs from ssconf {_shown(in_ssconf)}")
    if local is not None and given != local:
        problems.append(f"cluster_name {_shown(given)} differs from this node's {_shown(local)}")
    if problems:
        raise RefusedByVerification("cluster name verification failed", problems=problems)


def verify_node_certificate(
    pem: str, *, local_pem: bytes | None, now: datetime
) -> CertificateFacts:
    """Accept only a usable certificate and key pair that keeps this node's identity.

    Raises:
        RefusedByVerification: listing every problem found.
    """
    parsed = parse_pem(pem)
    problems = [*parsed.problems, *count_problems(parsed, want_key=True)]
    cert = parsed.certificates[0] if len(parsed.certificates) == 1 else None
    if cert is not None:
        problems += _validity_problems(cert, now) + tls_problems(cert)
        if len(parsed.keys) == 1:
            problems += pair_problems(cert, parsed.keys[0])
    return _finish(cert, problems, local_pem, now)


def verify_public_certificate(
    pem: str, *, local_pem: bytes | None, now: datetime
) -> CertificateFacts:
    """Accept a certificate without its key (ssh-setup) that keeps this node's identity.

    Raises:
        RefusedByVerification: listing every problem found.
    """
    parsed = parse_pem(pem)
    problems = [*parsed.problems, *count_problems(parsed, want_key=False)]
    cert = parsed.certificates[0] if len(parsed.certificates) == 1 else None
    if cert is not None:
        problems += tls_problems(cert)
    return _finish(cert, problems, local_pem, now)


def _finish(
    cert: x509.Certificate | None, problems: list[str], local_pem: bytes | None, now: datetime
) -> CertificateFacts:
    """Add the local-key check, then refuse with every problem or describe the certificate."""
    if cert is not None and local_pem is not None and spki(cert) is not None:
        problems += _local_key_problems(cert, local_pem)
    if cert is None or problems:
        raise RefusedByVerification("certificate verification failed", problems=problems)
    try:
        return CertificateFacts(
            fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
            subject=cert.subject.rfc4514_string(),
            not_before=valid_from(cert),
            not_after=valid_until(cert),
            expires_soon=valid_until(cert) - now < EXPIRY_WARNING,
        )
    except PARSE_ERRORS as exc:
        raise RefusedByVerification("the certificate's subject does not decode") from exc


def _local_key_problems(cert: x509.Certificate, local_pem: bytes) -> list[str]:
    """Keep the node's identity: the local server.pem's key, which must be whole.

    As Ganeti's ``CheckNodeCertificate`` does, a local server.pem without its
    certificate or its key, or whose two halves do not match, is refused: it
    names no identity to keep, and the node daemon could not load it.
    """
    local = parse_pem(local_pem.decode("ascii", "replace"))
    local_cert = local.certificates[0] if local.certificates else None
    local_key = spki(local.keys[0]) if local.keys else None
    if local_cert is None and local_key is None:
        return [_LOCAL_UNREADABLE]
    if local_key is None:
        return [f"the local server.pem has no usable private key; {_FIX_LOCAL}"]
    if local_cert is None:
        return [f"the local server.pem has no certificate; {_FIX_LOCAL}"]
    if spki(local_cert) != local_key:
        return [f"the local server.pem's certificate does not match its key; {_FIX_LOCAL}"]
    if spki(cert) != local_key:
        return ["the certificate does not match this node's key (local server.pem)"]
    return []


def _validity_problems(cert: x509.Certificate, now: datetime) -> list[str]:
    """X.509 validity is inclusive at both ends."""
    if now < valid_from(cert):
        return [f"the certificate is not valid before {valid_from(cert).isoformat()}"]
    if now > valid_until(cert):
        return [f"the certificate expired at {valid_until(cert).isoformat()}"]
    return []


def _shown(name: str) -> str:
    """A name quoted for a message, cut short so a huge value cannot flood the log."""
    return repr(name if len(name) <= 64 else name[:64] + "...")
