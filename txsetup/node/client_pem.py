"""client.pem: minting the node's client certificate, and telling when one can stay.

The node daemon certificate signs it; its key is new, of the kind the
``[client_pem]`` profile asks for. Imports ``cryptography``: the CLI imports
this module lazily.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from txsetup.errors import RefusedByVerification
from txsetup.node.checks import EXPIRY_WARNING
from txsetup.node.config import ClientPemProfile
from txsetup.node.cryptocompat import (
    CertificateIssuerPrivateKeyTypes,
    PublicKeyTypes,
    check_issued_by,
    valid_from,
    valid_until,
)
from txsetup.node.pem import PARSE_ERRORS, count_problems, pair_problems, parse_pem, spki

__all__ = ["client_certificate_is_current", "make_client_certificate", "verify_can_issue"]

_CLIENT_BACKDATE: Final = timedelta(hours=1)
_COMMON_NAME_MAX: Final = 64
_GANETI_CLIENT_PEM: Final = ClientPemProfile()
_EC_CURVES: Final[dict[str, type[ec.EllipticCurve]]] = {
    curve.name: curve for curve in (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
}
_KeyKind = tuple[str, int | str]  # ("rsa", 2048), ("ec", "secp256r1"), ("ed25519", 0)
_ISSUER_KEYS: Final = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)


def verify_can_issue(server_pem: str, node_name: str, *, now: datetime) -> None:
    """Refuse, before anything is written, what would keep client.pem from being minted.

    The minting itself comes later, when the run plans its files; whatever
    could stop it is checked here, so a document that cannot have a
    client.pem is a refusal (exit 4), never a rollback.

    Raises:
        RefusedByVerification: the node certificate cannot issue now, or the
            name cannot be a common name.
    """
    _issuing(server_pem, node_name, now=now)


def _issuing(
    server_pem: str, node_name: str, *, now: datetime
) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes, x509.Name]:
    """The issuer's certificate and key, and the subject, when client.pem can be issued now."""
    server_cert, server_key = _issuer(server_pem)
    if not valid_from(server_cert) <= now <= valid_until(server_cert):
        raise RefusedByVerification("cannot issue client certificate: node certificate not valid")
    return server_cert, server_key, _client_subject(node_name)


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
    server_cert, server_key, subject = _issuing(server_pem, node_name, now=now)
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
    client = parse_pem(existing.decode("ascii", "replace"))
    if client.problems or len(client.certificates) != 1 or len(client.keys) != 1:
        return False
    cert = client.certificates[0]
    try:
        check_issued_by(cert, server_cert)
        kind = _key_kind(cert.public_key())
    except (*PARSE_ERRORS, InvalidSignature):
        return False
    return (
        cert.subject == subject
        and spki(cert) != spki(server_cert)  # its own key, never the node key
        and not pair_problems(cert, client.keys[0])
        and kind == _wanted_key_kind(profile, server_key)
        and valid_until(cert) - valid_from(cert) == timedelta(days=profile.days)
        and valid_from(cert) <= now
        and now + EXPIRY_WARNING <= valid_until(cert)
    )


def _issuer(server_pem: str) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    """The node certificate and its key, checked again because we sign with them."""
    parsed = parse_pem(server_pem)
    problems = [*parsed.problems, *count_problems(parsed, want_key=True)]
    if not problems:
        cert, key = parsed.certificates[0], parsed.keys[0]
        problems = pair_problems(cert, key)
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
