"""What the node daemon's TLS can load and serve: key sizes, curves, signature hashes.

OpenSSL at its default security level 2 (keys of at least 112 bits of
strength) with Ganeti's cipher list, which has no DHE; its peers, OpenSSL
clients, offer only P-256, P-384 and P-521 for ECDSA (see docs/ganeti.md).
Imports ``cryptography``: the CLI imports this module lazily.
"""

from __future__ import annotations

from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from txsetup.node.pem import PARSE_ERRORS

__all__ = ["tls_problems"]

_MIN_RSA_BITS: Final = 2048
_TLS_CURVES: Final = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_WEAK_SIGNATURE_HASHES: Final = {"md5": "MD5", "sha1": "SHA-1"}


def tls_problems(cert: x509.Certificate) -> list[str]:
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
    except PARSE_ERRORS:
        return []  # an unsupported kind of key: the pair check names it
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
    except PARSE_ERRORS:
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
    except (*PARSE_ERRORS, x509.DuplicateExtension):
        return False
    try:
        own = extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        own = None
    if authority.key_identifier is not None and own is not None:
        return authority.key_identifier == own
    serial = authority.authority_cert_serial_number
    return serial is None or serial == cert.serial_number
