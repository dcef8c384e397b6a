"""Cluster-name and certificate verification: pure functions, no I/O.

The ``verify_*`` functions run before the first write and report
every problem of a document at once as :class:`RefusedByVerification`. Any
input, however broken, ends in that error and nothing else, and no message
ever quotes key material or PEM text: the messages are logged and shown to
the operator. It and :mod:`txsetup.node.cryptocompat` are the only
node-daemon-setup modules that import ``cryptography``; the CLI imports them
lazily.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from txsetup.errors import RefusedByVerification
from txsetup.node.config import ClientPemProfile
from txsetup.node.cryptocompat import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
    check_issued_by,
    load_pem_private_key,
    valid_from,
    valid_until,
)

__all__ = [
    "EXPIRY_WARNING",
    "CertificateFacts",
    "client_certificate_is_current",
    "make_client_certificate",
    "verify_cluster_name",
    "verify_node_certificate",
    "verify_public_certificate",
]

EXPIRY_WARNING: Final = timedelta(days=30)
_CLIENT_BACKDATE: Final = timedelta(hours=1)
_COMMON_NAME_MAX: Final = 64
_GANETI_CLIENT_PEM: Final = ClientPemProfile()
_EC_CURVES: Final[dict[str, type[ec.EllipticCurve]]] = {
    curve.name: curve for curve in (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
}
_KeyKind = tuple[str, int | str]  # ("rsa", 2048), ("ec", "secp256r1"), ("ed25519", 0)

_BEGIN: Final = re.compile(r"-----BEGIN ([A-Z0-9 ]{1,64})-----")
_HARMLESS_LABELS: Final = frozenset({"EC PARAMETERS"})  # OpenSSL may emit these beside a key
_PARSE_ERRORS: Final = (ValueError, TypeError, UnsupportedAlgorithm)
# Two blocks of a kind are enough to tell "exactly one" from "more"; the rest
# are only counted. Loading checks a key (an RSA key costs about 0.1 s), so a
# document of thousands of keys would otherwise hold the lock for minutes.
_LOADED_PER_KIND: Final = 2
_SHOWN_PEM_PROBLEMS: Final = 10  # distinct ones; a hostile text must not flood the log
_ISSUER_KEYS: Final = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)
# What the node daemon's TLS can serve: OpenSSL at its default security level 2
# (keys of at least 112 bits of strength) with Ganeti's cipher list, which has
# no DHE; its peers, OpenSSL clients, offer only these curves for ECDSA.
_MIN_RSA_BITS: Final = 2048
_TLS_CURVES: Final = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_WEAK_SIGNATURE_HASHES: Final = {"md5": "MD5", "sha1": "SHA-1"}
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


@dataclass
class _Pem:
    """The parsed blocks of one PEM text, with what went wrong while parsing."""

    certificate_blocks: int = 0
    key_blocks: int = 0
    certificates: list[x509.Certificate] = field(default_factory=list)
    keys: list[PrivateKeyTypes] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


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
    parsed = _parse(pem)
    problems = [*parsed.problems, *_count_problems(parsed, want_key=True)]
    cert = parsed.certificates[0] if len(parsed.certificates) == 1 else None
    if cert is not None:
        problems += _validity_problems(cert, now) + _tls_problems(cert)
        if len(parsed.keys) == 1:
            problems += _pair_problems(cert, parsed.keys[0])
    return _finish(cert, problems, local_pem, now)


def verify_public_certificate(
    pem: str, *, local_pem: bytes | None, now: datetime
) -> CertificateFacts:
    """Accept a certificate without its key (ssh-setup) that keeps this node's identity.

    Raises:
        RefusedByVerification: listing every problem found.
    """
    parsed = _parse(pem)
    problems = [*parsed.problems, *_count_problems(parsed, want_key=False)]
    cert = parsed.certificates[0] if len(parsed.certificates) == 1 else None
    if cert is not None:
        problems += _tls_problems(cert)
    return _finish(cert, problems, local_pem, now)


def make_client_certificate(
    server_pem: str,
    node_name: str,
    *,
    now: datetime,
    profile: ClientPemProfile = _GANETI_CLIENT_PEM,
) -> bytes:
    """Mint client.pem: a new key and a certificate for ``node_name`` signed by the node key.

    By default as Ganeti's ``GenerateSignedX509Cert`` does: an RSA 2048 key,
    subject CN=node_name, issued by the node certificate, SHA-256, valid 1825
    days — not cut at the node certificate's end, as Ganeti does not: noded
    knows a peer by its certificate's digest, and cluster verify checks this
    certificate's own dates. It starts an hour early (at most back to the node
    certificate's start) so a peer whose clock lags does not see it as not
    yet valid; its validity is still exactly ``profile.days``.

    Raises:
        RefusedByVerification: the node certificate cannot issue now, or the
            name cannot be a common name.
    """
    server_cert, server_key = _issuer(server_pem)
    if not valid_from(server_cert) <= now <= valid_until(server_cert):
        raise RefusedByVerification("cannot issue client certificate: node certificate not valid")
    subject = _client_subject(node_name)
    key = _generate_key(_wanted_key_kind(profile, server_key))
    not_before = max(now - _CLIENT_BACKDATE, valid_from(server_cert))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(server_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=profile.days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(server_key.public_key()),
            critical=False,
        )
        .sign(server_key, _signature_hash(server_key))
    )
    pkcs8, unencrypted = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    key_pem = key.private_bytes(serialization.Encoding.PEM, pkcs8, unencrypted)
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


def client_certificate_is_current(
    existing: bytes,
    server_pem: str,
    node_name: str,
    *,
    now: datetime,
    profile: ClientPemProfile = _GANETI_CLIENT_PEM,
) -> bool:
    """Tell whether client.pem can stay, so a re-run converges instead of minting anew.

    It can when it is what :func:`make_client_certificate` would mint (its
    own key of the profile's kind, CN=node_name, signed by this node
    certificate, valid exactly ``profile.days``), is valid now and does not
    expire within 30 days (when Ganeti's cluster verify starts to warn).
    Keeping it matters: the master records its digest once the node is added.

    Raises:
        RefusedByVerification: the node certificate cannot issue, or the name
            cannot be a common name.
    """
    server_cert, server_key = _issuer(server_pem)
    subject = _client_subject(node_name)
    client = _parse(existing.decode("ascii", "replace"))
    if client.problems or len(client.certificates) != 1 or len(client.keys) != 1:
        return False
    cert = client.certificates[0]
    try:
        check_issued_by(cert, server_cert)
        kind = _key_kind(cert.public_key())
    except (*_PARSE_ERRORS, InvalidSignature):
        return False
    return (
        cert.subject == subject
        and _spki(cert) != _spki(server_cert)  # its own key, never the node key
        and not _pair_problems(cert, client.keys[0])
        and kind == _wanted_key_kind(profile, server_key)
        and valid_until(cert) - valid_from(cert) == timedelta(days=profile.days)
        and valid_from(cert) <= now
        and now + EXPIRY_WARNING <= valid_until(cert)
    )


def _parse(text: str) -> _Pem:
    """Count every certificate and private key block, load the first two of each kind;
    never raise on garbage."""
    parsed = _Pem()
    blocks, parsed.problems = _split_blocks(text)
    for label, block in blocks:
        data = block.encode("ascii", "replace")
        if label == "CERTIFICATE":
            parsed.certificate_blocks += 1
            if parsed.certificate_blocks > _LOADED_PER_KIND:
                continue
            try:
                parsed.certificates.append(x509.load_pem_x509_certificate(data))
            except _PARSE_ERRORS:
                parsed.problems.append("the certificate does not parse")
        elif label.endswith("PRIVATE KEY"):
            parsed.key_blocks += 1
            if parsed.key_blocks > _LOADED_PER_KIND:
                continue
            try:
                parsed.keys.append(_load_private_key(data))
            except TypeError:  # cryptography's way of saying "encrypted"
                parsed.problems.append("the private key is encrypted; an unencrypted key is needed")
            except _PARSE_ERRORS:
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
    :func:`_pair_problems`: the key's public half is the certificate's, and it
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


def _count_problems(parsed: _Pem, *, want_key: bool) -> list[str]:
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


def _finish(
    cert: x509.Certificate | None, problems: list[str], local_pem: bytes | None, now: datetime
) -> CertificateFacts:
    """Add the local-key check, then refuse with every problem or describe the certificate."""
    if cert is not None and local_pem is not None and _spki(cert) is not None:
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
    except _PARSE_ERRORS as exc:
        raise RefusedByVerification("the certificate's subject does not decode") from exc


def _local_key_problems(cert: x509.Certificate, local_pem: bytes) -> list[str]:
    """Keep the node's identity: the local server.pem's key, which must be whole.

    As Ganeti's ``CheckNodeCertificate`` does, a local server.pem without its
    certificate or its key, or whose two halves do not match, is refused: it
    names no identity to keep, and the node daemon could not load it.
    """
    local = _parse(local_pem.decode("ascii", "replace"))
    local_cert = local.certificates[0] if local.certificates else None
    local_key = _spki(local.keys[0]) if local.keys else None
    if local_cert is None and local_key is None:
        return [_LOCAL_UNREADABLE]
    if local_key is None:
        return [f"the local server.pem has no usable private key; {_FIX_LOCAL}"]
    if local_cert is None:
        return [f"the local server.pem has no certificate; {_FIX_LOCAL}"]
    if _spki(local_cert) != local_key:
        return [f"the local server.pem's certificate does not match its key; {_FIX_LOCAL}"]
    if _spki(cert) != local_key:
        return ["the certificate does not match this node's key (local server.pem)"]
    return []


def _pair_problems(cert: x509.Certificate, key: PrivateKeyTypes) -> list[str]:
    """A certificate is only usable with the private half of its own public key."""
    cert_key = _spki(cert)
    if cert_key is None:
        return ["the certificate's public key is of an unsupported kind"]
    if cert_key != _spki(key):
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
    except (InvalidSignature, *_PARSE_ERRORS):
        return False
    return True


def _tls_problems(cert: x509.Certificate) -> list[str]:
    """Refuse what the node daemon's TLS could not load or serve (docs/ganeti.md).

    OpenSSL refuses to load an RSA or DSA key under 2048 bits (older releases
    rate anything under 2048 below level 2's 112 bits; 3.0 from 1963 up),
    an EC key under 224 bits, and a certificate signed with SHA-1 or MD5
    unless it is self-signed. A DSA key loads but no handshake can use it
    (TLS 1.3 has no DSA, and Ganeti's cipher list drops DHE, which DSA needs
    in TLS 1.2); an EC key off P-256, P-384 and P-521 fails the handshake
    with OpenSSL clients, which offer only those curves for ECDSA.
    """
    problems = []
    try:
        key = cert.public_key()
    except _PARSE_ERRORS:
        return []  # an unsupported kind of key: _pair_problems names it
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < _MIN_RSA_BITS:
        problems.append(
            f"RSA key of {key.key_size} bits: the node daemon's TLS needs at least {_MIN_RSA_BITS}"
        )
    elif isinstance(key, dsa.DSAPublicKey):
        problems.append("DSA key: the node daemon's TLS cannot serve a DSA certificate")
    elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in _TLS_CURVES:
        problems.append(
            f"EC key on curve {key.curve.name}: the node daemon's TLS needs P-256, P-384 or P-521"
        )
    try:
        algorithm = cert.signature_hash_algorithm
    except _PARSE_ERRORS:
        algorithm = None
    weak = _WEAK_SIGNATURE_HASHES.get(algorithm.name) if algorithm is not None else None
    if weak is not None and not _self_signed(cert):
        problems.append(
            f"the certificate is signed with {weak} by another key: "
            "the node daemon's TLS refuses SHA-1 and MD5 signatures"
        )
    return problems


def _self_signed(cert: x509.Certificate) -> bool:
    """OpenSSL's notion, which exempts a certificate's own signature from the hash rule:
    issued to and by the same name, and no authority key identifier naming another key."""
    if cert.issuer != cert.subject:
        return False
    try:
        extensions = cert.extensions
        authority = extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return True
    except (*_PARSE_ERRORS, x509.DuplicateExtension):
        return False
    try:
        own = extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        own = None
    if authority.key_identifier is not None and own is not None:
        return authority.key_identifier == own
    serial = authority.authority_cert_serial_number
    return serial is None or serial == cert.serial_number


def _validity_problems(cert: x509.Certificate, now: datetime) -> list[str]:
    """X.509 validity is inclusive at both ends."""
    if now < valid_from(cert):
        return [f"the certificate is not valid before {valid_from(cert).isoformat()}"]
    if now > valid_until(cert):
        return [f"the certificate expired at {valid_until(cert).isoformat()}"]
    return []


def _issuer(server_pem: str) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    """The node certificate and its key, checked again because we sign with them."""
    parsed = _parse(server_pem)
    problems = [*parsed.problems, *_count_problems(parsed, want_key=True)]
    if not problems:
        cert, key = parsed.certificates[0], parsed.keys[0]
        problems = _pair_problems(cert, key)
        if not problems and isinstance(key, _ISSUER_KEYS):
            return cert, key
        problems = problems or ["the node key cannot sign certificates"]
    raise RefusedByVerification("cannot issue client certificate", problems=problems)


def _key_kind(key: PublicKeyTypes) -> _KeyKind | None:
    """What kind of key this is, as far as minting one like it goes."""
    if isinstance(key, rsa.RSAPublicKey):
        return ("rsa", key.key_size)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ("ec", key.curve.name)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ("ed25519", 0)
    return None


def _wanted_key_kind(
    profile: ClientPemProfile, node_key: CertificateIssuerPrivateKeyTypes
) -> _KeyKind:
    """``rsa-N``: RSA of N bits; ``like-node``: the node key's kind (else EC P-256)."""
    if profile.key.startswith("rsa-"):
        return ("rsa", int(profile.key.removeprefix("rsa-")))
    kind = _key_kind(node_key.public_key())
    if kind is None or (kind[0] == "ec" and kind[1] not in _EC_CURVES):
        return ("ec", ec.SECP256R1.name)
    return kind


def _generate_key(kind: _KeyKind) -> CertificateIssuerPrivateKeyTypes:
    """A fresh private key of ``kind``."""
    algorithm, size = kind
    if algorithm == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=int(size))
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(_EC_CURVES[str(size)]())


def _signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    """EdDSA signs the message itself; the others sign a SHA-256 digest."""
    eddsa = isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))
    return None if eddsa else hashes.SHA256()


def _client_subject(node_name: str) -> x509.Name:
    """CN=node_name; X.509 caps a common name at 64 characters (bytes of UTF-8).

    The cap is checked here: cryptography enforces it only in newer releases.
    """
    try:
        if not 1 <= len(node_name.encode("utf-8")) <= _COMMON_NAME_MAX:
            raise ValueError("not a common name's length")
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_name)])
    except ValueError as exc:
        raise RefusedByVerification(
            "node_name cannot be a certificate common name (1 to 64 characters)"
        ) from exc


def _spki(holder: PrivateKeyTypes | x509.Certificate) -> bytes | None:
    """The public key as DER SubjectPublicKeyInfo (comparable across kinds), None if unreadable."""
    try:
        return holder.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except _PARSE_ERRORS:
        return None


def _shown(name: str) -> str:
    """A name quoted for a message, cut short so a huge value cannot flood the log."""
    return repr(name if len(name) <= 64 else name[:64] + "...")
