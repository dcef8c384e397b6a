"""cryptography's API across the supported range: Debian 12's 38.0.4 up to the newest.

txsetup uses four things that came after 38.0.4. Each has one stand-in here,
chosen once at import, so no other module asks which release it runs on:

* the key type aliases (``PrivateKeyTypes`` and its kin: 40; before, they
  were spelled in capitals; the SSH loaders' own ``SSHPrivateKeyTypes`` and
  ``SSHPublicKeyTypes``, which newer releases widen with kinds, such as
  hybrid ML-DSA keys, that ``PrivateKeyTypes`` does not name);
* a certificate's dates as aware UTC datetimes (``not_valid_before_utc``
  and ``not_valid_after_utc``: 42; before, naive datetimes meaning UTC);
* loading an RSA key without OpenSSL's slow consistency check
  (``unsafe_skip_rsa_key_validation``: 39; before, every load checks, so a
  damaged key is refused as one that does not parse);
* checking that a certificate is signed by another
  (``verify_directly_issued_by``: 40).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import cryptography
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa

if TYPE_CHECKING:  # mypy checks against the newest release, which has these names
    from cryptography.hazmat.primitives.asymmetric.types import (
        CertificateIssuerPrivateKeyTypes,
        PrivateKeyTypes,
        PublicKeyTypes,
    )
    from cryptography.hazmat.primitives.serialization.ssh import (
        SSHPrivateKeyTypes,
        SSHPublicKeyTypes,
    )
else:  # cryptography < 40 spells them in capitals
    from cryptography.hazmat.primitives.asymmetric import types as _types

    CertificateIssuerPrivateKeyTypes = (
        getattr(_types, "CertificateIssuerPrivateKeyTypes", None)
        or _types.CERTIFICATE_PRIVATE_KEY_TYPES
    )
    PrivateKeyTypes = getattr(_types, "PrivateKeyTypes", None) or _types.PRIVATE_KEY_TYPES
    PublicKeyTypes = getattr(_types, "PublicKeyTypes", None) or _types.PUBLIC_KEY_TYPES
    SSHPrivateKeyTypes = getattr(serialization.ssh, "SSHPrivateKeyTypes", PrivateKeyTypes)
    SSHPublicKeyTypes = getattr(serialization.ssh, "SSHPublicKeyTypes", PublicKeyTypes)

__all__ = [
    "SKIPS_RSA_KEY_CHECK",
    "CertificateIssuerPrivateKeyTypes",
    "PrivateKeyTypes",
    "PublicKeyTypes",
    "SSHPrivateKeyTypes",
    "SSHPublicKeyTypes",
    "check_issued_by",
    "check_issued_by_hand",
    "load_pem_private_key",
    "valid_from",
    "valid_until",
]

_MAJOR: Final = int(cryptography.__version__.split(".")[0])
#: Whether RSA keys load without OpenSSL's consistency check (cryptography >= 39).
SKIPS_RSA_KEY_CHECK: Final = _MAJOR >= 39
_AWARE_DATES: Final = hasattr(x509.Certificate, "not_valid_before_utc")
_VERIFIES_ISSUER: Final = hasattr(x509.Certificate, "verify_directly_issued_by")


def valid_from(cert: x509.Certificate) -> datetime:
    """The start of ``cert``'s validity, an aware UTC datetime."""
    if _AWARE_DATES:
        return cert.not_valid_before_utc
    return cert.not_valid_before.replace(tzinfo=UTC)


def valid_until(cert: x509.Certificate) -> datetime:
    """The end of ``cert``'s validity, an aware UTC datetime."""
    if _AWARE_DATES:
        return cert.not_valid_after_utc
    return cert.not_valid_after.replace(tzinfo=UTC)


def load_pem_private_key(block: bytes) -> PrivateKeyTypes:
    """An unencrypted PEM private key, without OpenSSL's RSA consistency check where possible.

    Raises:
        TypeError: the key is encrypted.
        ValueError: it does not parse (or, before cryptography 39, is an
            inconsistent RSA key).
        cryptography.exceptions.UnsupportedAlgorithm: a kind this build cannot load.
    """
    if SKIPS_RSA_KEY_CHECK:
        return serialization.load_pem_private_key(
            block, password=None, unsafe_skip_rsa_key_validation=True
        )
    return serialization.load_pem_private_key(block, password=None)


def check_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    """Check that ``issuer`` names and signed ``cert`` (its own key, not a chain).

    Raises:
        ValueError: the issuer's subject is not ``cert``'s issuer.
        TypeError: the issuer's key or the signature's algorithm is not supported.
        cryptography.exceptions.InvalidSignature: the signature does not verify.
    """
    if _VERIFIES_ISSUER:
        cert.verify_directly_issued_by(issuer)
    else:
        check_issued_by_hand(cert, issuer)


def check_issued_by_hand(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    """:func:`check_issued_by` with only the API of cryptography 38: names, then signature.

    RSA signatures are checked as PKCS#1 v1.5, what txsetup and Ganeti sign
    with; an RSA-PSS one does not verify here (so a client.pem signed so is
    minted anew).
    """
    if cert.issuer != issuer.subject:
        raise ValueError("the certificate's issuer is not the issuer's subject")
    key, signed, signature = issuer.public_key(), cert.tbs_certificate_bytes, cert.signature
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        key.verify(signature, signed)
        return
    digest = cert.signature_hash_algorithm
    if digest is None:
        raise TypeError("the signature names no hash algorithm")
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, signed, padding.PKCS1v15(), digest)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, signed, ec.ECDSA(digest))
    elif isinstance(key, dsa.DSAPublicKey):
        key.verify(signature, signed, digest)
    else:
        raise TypeError("the issuer's key cannot sign certificates")
