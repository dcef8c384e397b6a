"""The cryptography compatibility module, at whichever end of the supported range runs the suite.

``nox -s tests`` runs these on the newest cryptography, ``nox -s tests_debian``
on Debian 12's 38.0.4: each stand-in must give the newest release's answer.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x25519
from cryptography.x509.oid import NameOID

from txsetup.node.cryptocompat import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
    check_issued_by,
    check_issued_by_hand,
    load_pem_private_key,
    valid_from,
    valid_until,
)

START = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
END = START + timedelta(days=400)
NEW_KEY: dict[str, Callable[[], CertificateIssuerPrivateKeyTypes]] = {
    "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ec": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
    "ed448": ed448.Ed448PrivateKey.generate,
    "dsa": lambda: dsa.generate_private_key(key_size=1024),  # noqa: S505 - quick; only signs
}
Check = Callable[[x509.Certificate, x509.Certificate], None]
CHECKS = pytest.mark.parametrize("check", [check_issued_by, check_issued_by_hand])


def name(common_name: str) -> x509.Name:
    """CN=common_name."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def certificate(
    key: CertificateIssuerPrivateKeyTypes,
    *,
    signer: CertificateIssuerPrivateKeyTypes | None = None,
    issuer: str = "node",
    not_before: datetime = START,
    not_after: datetime = END,
) -> x509.Certificate:
    """A certificate for ``key``, CN=node, naming ``issuer``, signed by ``signer`` (or key)."""
    signer = key if signer is None else signer
    eddsa = isinstance(signer, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
    return (
        x509.CertificateBuilder()
        .subject_name(name("node"))
        .issuer_name(name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(signer, None if eddsa else hashes.SHA256())
    )


def subject_key() -> ec.EllipticCurvePrivateKey:
    """A throwaway key for a certificate's subject (its kind does not matter here)."""
    return ec.generate_private_key(ec.SECP256R1())


def test_the_key_type_names_name_the_key_classes() -> None:
    """The type aliases exist at runtime and hold the key classes they stand for."""
    assert rsa.RSAPrivateKey in typing.get_args(PrivateKeyTypes)
    assert x25519.X25519PrivateKey in typing.get_args(PrivateKeyTypes)
    assert ed25519.Ed25519PublicKey in typing.get_args(PublicKeyTypes)
    issuers = typing.get_args(CertificateIssuerPrivateKeyTypes)
    assert {rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey} <= set(
        issuers
    )
    assert x25519.X25519PrivateKey not in issuers  # it cannot sign


@pytest.mark.parametrize("zone", [UTC, timezone(timedelta(hours=-5))], ids=["utc", "utc-5"])
def test_dates_are_aware_utc(zone: timezone) -> None:
    """valid_from and valid_until are the certificate's instants, as aware UTC datetimes."""
    cert = certificate(
        ec.generate_private_key(ec.SECP256R1()),
        not_before=START.astimezone(zone),
        not_after=END.astimezone(zone),
    )
    assert (valid_from(cert), valid_until(cert)) == (START, END)
    assert valid_from(cert).tzinfo == UTC
    assert valid_until(cert).tzinfo == UTC


@CHECKS
@pytest.mark.parametrize("kind", sorted(NEW_KEY))
def test_a_certificate_its_issuer_signed_passes(check: Check, kind: str) -> None:
    """A certificate signed by the issuer's key and naming the issuer passes, whatever the kind."""
    issuer_key = NEW_KEY[kind]()
    issuer = certificate(issuer_key)
    check(certificate(subject_key(), signer=issuer_key), issuer)


@CHECKS
@pytest.mark.parametrize("kind", sorted(NEW_KEY))
def test_a_forged_signature_fails(check: Check, kind: str) -> None:
    """Names right but signed by another key of the same kind: InvalidSignature."""
    issuer = certificate(NEW_KEY[kind]())
    forged = certificate(subject_key(), signer=NEW_KEY[kind]())
    with pytest.raises(InvalidSignature):
        check(forged, issuer)


@CHECKS
def test_another_issuer_name_fails(
    check: Check,
) -> None:
    """Signed by the right key but naming another issuer: ValueError."""
    issuer_key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate(subject_key(), signer=issuer_key, issuer="someone-else")
    with pytest.raises(ValueError, match="issuer"):
        check(cert, certificate(issuer_key))


def test_private_keys_load_and_encrypted_ones_are_a_type_error() -> None:
    """A plain PEM key loads as itself; an encrypted one raises TypeError, as checks expects."""
    key = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = serialization.PrivateFormat.PKCS8
    plain = key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())
    loaded = load_pem_private_key(plain)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.private_numbers() == key.private_numbers()
    locked = serialization.BestAvailableEncryption(b"secret")
    with pytest.raises(TypeError):
        load_pem_private_key(key.private_bytes(serialization.Encoding.PEM, pkcs8, locked))
