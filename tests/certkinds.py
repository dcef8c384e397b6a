"""Node certificates of every kind of key and signature, for the key-strength and parity tests.

Keys come from ``cryptography``; SHA-1 and MD5 signatures, which
``cryptography`` no longer makes, from the ``openssl`` command. RSA and DSA
keys are made once per test process (:func:`rsa_key`, :func:`dsa_key`): a
DSA 2048 key alone takes a second, and no test needs its own.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from tests.conftest import require_tool
from txsetup.node.cryptocompat import CertificateIssuerPrivateKeyTypes

NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node.example.com")])


@cache
def rsa_key(bits: int, role: str = "node") -> rsa.RSAPrivateKey:
    """The RSA key of ``bits`` for ``role`` (``node``, or ``ca`` for an issuer that must
    differ from the node's key), made on first use."""
    del role  # part of the cache key only
    return rsa.generate_private_key(65537, bits)


@cache
def dsa_key(bits: int) -> dsa.DSAPrivateKey:
    """The DSA key of ``bits``, made on first use."""
    return dsa.generate_private_key(bits)


def key_pem(key: CertificateIssuerPrivateKeyTypes) -> str:
    """The unencrypted PKCS#8 PEM of ``key``."""
    pkcs8, none = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, none).decode()


def self_signed(key: CertificateIssuerPrivateKeyTypes) -> str:
    """server.pem text: ``key``, then a self-signed certificate for it (SHA-256 unless EdDSA),
    valid from a day ago for a year."""
    eddsa = isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(NAME)
        .issuer_name(NAME)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, None if eddsa else hashes.SHA256())
    )
    return key_pem(key) + cert.public_bytes(serialization.Encoding.PEM).decode()


def openssl_signed(work: Path, key: rsa.RSAPrivateKey, digest: str, *, by_ca: bool) -> str:
    """server.pem text whose certificate the ``openssl`` command signed with ``digest``:
    self-signed, or issued by an RSA 2048 CA key other than ``key``."""
    openssl = require_tool("openssl")
    work.mkdir(parents=True, exist_ok=True)
    (work / "node.key").write_text(key_pem(key))

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=work, check=True, capture_output=True, timeout=60)

    common = ["-days", "365", f"-{digest}"]
    if not by_ca:
        run("req", "-x509", "-new", "-key", "node.key", "-subj", "/CN=node", *common, "-out", "c")
    else:
        (work / "ca.key").write_text(key_pem(rsa_key(2048, "ca")))
        ca = ("-subj", "/CN=ca", "-days", "365", "-out", "ca")
        run("req", "-x509", "-new", "-key", "ca.key", *ca)
        run("req", "-new", "-key", "node.key", "-subj", "/CN=node", "-out", "csr")
        run("x509", "-req", "-in", "csr", "-CA", "ca", "-CAkey", "ca.key", *common, "-out", "c")
    return key_pem(key) + (work / "c").read_text()
