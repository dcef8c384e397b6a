"""Self-signed node certificates for the demo and the tests.

A Ganeti master keeps its node daemon certificate as one ``server.pem``: the
private key, then the certificate. These helpers make such files with real
keys, so the tests exercise the same parsing a node sees.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

__all__ = ["generate_node_certificate", "renew_node_certificate", "split_pem"]

DEFAULT_LIFETIME: Final = timedelta(days=365)
BACKDATE: Final = timedelta(hours=1)

_BLOCK: Final = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----\n?", re.DOTALL)


def generate_node_certificate(
    common_name: str,
    *,
    key_type: Literal["rsa", "ec"] = "ec",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    key_size: int = 2048,
) -> str:
    """A fresh key and a self-signed certificate for it, as one server.pem text.

    The certificate is a CA (``path_length=0``) because it signs the nodes'
    client certificates, and names ``common_name`` as a DNS name too so TLS
    hostname checks can pass; the defaults make it valid from an hour ago
    (clock skew) for 365 days. ``key_size`` applies to RSA only; EC uses P-256.
    """
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    start = not_before if not_before is not None else datetime.now(UTC) - BACKDATE
    end = not_after if not_after is not None else start + DEFAULT_LIFETIME
    return _self_signed(key, common_name, start, end)


def renew_node_certificate(pem: str, common_name: str) -> str:
    """A new certificate for the key of ``pem`` (a server.pem text): what a rotation pushes.

    A node keeps its key: it refuses a certificate for another one.
    """
    key = serialization.load_pem_private_key(split_pem(pem)[0].encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise TypeError("only RSA and EC keys are renewed here")
    start = datetime.now(UTC) - BACKDATE
    return _self_signed(key, common_name, start, start + DEFAULT_LIFETIME)


def _self_signed(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    common_name: str,
    start: datetime,
    end: datetime,
) -> str:
    """``key`` and a self-signed CA certificate for it, as one server.pem text."""
    rsa_key = isinstance(key, rsa.RSAPrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(rsa_key=rsa_key), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return (key_pem + cert.public_bytes(serialization.Encoding.PEM)).decode("ascii")


def _key_usage(*, rsa_key: bool) -> x509.KeyUsage:
    """Serve TLS (handshake signatures) and sign client certificates, as strict verifiers demand."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=rsa_key,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def split_pem(pem: str) -> tuple[str, str]:
    """The (key, certificate) blocks of a server.pem text, for tests that reorder or mix them.

    Raises:
        ValueError: the text does not hold exactly one private key and one certificate.
    """
    blocks = [(match.group(1), match.group(0)) for match in _BLOCK.finditer(pem)]
    keys = [block for label, block in blocks if label.endswith("PRIVATE KEY")]
    certs = [block for label, block in blocks if label == "CERTIFICATE"]
    if len(blocks) != 2 or len(keys) != 1 or len(certs) != 1:
        raise ValueError("expected exactly one private key and one certificate")
    return keys[0], certs[0]
