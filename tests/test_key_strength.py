"""The node certificate's key and signature: txsetup refuses what the node daemon's TLS cannot use.

Every certificate here is real (``tests/certkinds.py``), and every verdict
is checked against this machine's OpenSSL: a server context with Ganeti's
cipher list loads it and completes a handshake with a client that trusts
exactly that certificate, as Ganeti's RPC client does (docs/ganeti.md,
"Every deliberate difference").
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519

from tests.certkinds import dsa_key, openssl_signed, rsa_key, self_signed
from txsetup.demo.certs import generate_node_certificate
from txsetup.errors import ExitCode, RefusedByVerification
from txsetup.node.checks import verify_node_certificate, verify_public_certificate

NOW = datetime.now(UTC)
GANETI_CIPHERS = "HIGH:-DES:-3DES:-EXPORT:-DH"  # constants.OPENSSL_CIPHERS, noded's TLS


@dataclass(frozen=True)
class Strength:
    """A node certificate, txsetup's expected refusal, and whether OpenSSL 3 serves it anyway."""

    make: Callable[[Path], str]
    refusal: str | None = None
    openssl3_serves_anyway: bool = False  # refused on purpose (docs/ganeti.md)


def rsa_pem(bits: int) -> Callable[[Path], str]:
    """An RSA key of ``bits`` with a self-signed certificate."""
    return lambda _: self_signed(rsa_key(bits))


def ec_pem(curve: ec.EllipticCurve) -> Callable[[Path], str]:
    """An EC key on ``curve`` with a self-signed certificate."""
    return lambda _: self_signed(ec.generate_private_key(curve))


def dated(start_days: int, end_days: int) -> Callable[[Path], str]:
    """An EC P-256 key with a certificate valid from ``start_days`` to ``end_days`` from now."""
    now = datetime.now(UTC)
    start, end = now + timedelta(days=start_days), now + timedelta(days=end_days)
    return lambda _: generate_node_certificate("node.example.com", not_before=start, not_after=end)


STRENGTH_CASES = [
    pytest.param(Strength(rsa_pem(1024), "RSA key of 1024 bits: "), id="rsa-1024"),
    pytest.param(Strength(rsa_pem(1536), "RSA key of 1536 bits: "), id="rsa-1536"),
    pytest.param(
        Strength(rsa_pem(2000), "needs at least 2048", openssl3_serves_anyway=True), id="rsa-2000"
    ),
    pytest.param(Strength(rsa_pem(2048)), id="rsa-2048"),
    pytest.param(
        Strength(lambda _: self_signed(dsa_key(1024)), "DSA key"),
        id="dsa-1024",
    ),
    pytest.param(Strength(lambda _: self_signed(dsa_key(2048)), "DSA key"), id="dsa-2048"),
    pytest.param(Strength(ec_pem(ec.SECP192R1()), "curve secp192r1"), id="ec-p192"),
    pytest.param(Strength(ec_pem(ec.SECP224R1()), "curve secp224r1"), id="ec-p224"),
    pytest.param(Strength(ec_pem(ec.SECP256K1()), "curve secp256k1"), id="ec-secp256k1"),
    pytest.param(Strength(ec_pem(ec.BrainpoolP256R1()), "brainpoolP256r1"), id="ec-brainpool"),
    pytest.param(Strength(ec_pem(ec.SECP256R1())), id="ec-p256"),
    pytest.param(Strength(dated(-9, -1), "expired"), id="ec-p256-expired"),
    pytest.param(Strength(dated(1, 9), "not valid before"), id="ec-p256-not-yet-valid"),
    pytest.param(Strength(ec_pem(ec.SECP384R1())), id="ec-p384"),
    pytest.param(Strength(ec_pem(ec.SECP521R1())), id="ec-p521"),
    pytest.param(
        Strength(lambda _: self_signed(ed25519.Ed25519PrivateKey.generate())), id="ed25519"
    ),
    pytest.param(Strength(lambda _: self_signed(ed448.Ed448PrivateKey.generate())), id="ed448"),
    pytest.param(
        Strength(
            lambda w: openssl_signed(w, rsa_key(2048), "sha1", by_ca=True),
            "signed with SHA-1 by another key",
        ),
        id="sha1-by-a-ca",
    ),
    pytest.param(
        Strength(
            lambda w: openssl_signed(w, rsa_key(2048), "md5", by_ca=True),
            "signed with MD5 by another key",
        ),
        id="md5-by-a-ca",
    ),
    pytest.param(
        Strength(lambda w: openssl_signed(w, rsa_key(2048), "sha256", by_ca=True)),
        id="sha256-by-a-ca",
    ),
    pytest.param(
        Strength(lambda w: openssl_signed(w, rsa_key(2048), "sha1", by_ca=False)),
        id="sha1-self-signed",
    ),
    pytest.param(
        Strength(lambda w: openssl_signed(w, rsa_key(2048), "md5", by_ca=False)),
        id="md5-self-signed",
    ),
]


def node_daemon_can_serve(pem: str, work: Path) -> bool:
    """Whether a TLS server set up as Ganeti's node daemon loads ``pem`` and completes a
    handshake with a client trusting exactly its certificate (as Ganeti's RPC client)."""
    path = work / "server.pem"
    path.write_text(pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.set_ciphers(GANETI_CIPHERS)
    try:
        server.load_cert_chain(path)
    except ssl.SSLError:
        return False
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False  # curl with SSL_VERIFYHOST 0
    client.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # curl's default since 7.68
    client.load_verify_locations(cadata=pem[pem.index("-----BEGIN CERTIFICATE-----") :])
    ours, theirs = socket.socketpair()
    served: list[bool] = []

    def serve() -> None:
        try:
            with server.wrap_socket(theirs, server_side=True) as tls:
                tls.do_handshake()
                served.append(True)
        except (ssl.SSLError, OSError):
            served.append(False)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(ours) as tls:
            tls.do_handshake()
        handshake = True
    except (ssl.SSLError, OSError):
        handshake = False
    finally:
        ours.close()
        thread.join(timeout=60)
    return handshake and served == [True]


@pytest.mark.parametrize("case", STRENGTH_CASES)
def test_refuses_exactly_what_the_node_daemon_cannot_serve(tmp_path: Path, case: Strength) -> None:
    """txsetup refuses a node certificate (exit 4, naming why) exactly when this machine's OpenSSL,
    set up as Ganeti's node daemon, cannot load or serve it — RSA 1963 to 2047 bits aside."""
    pem = case.make(tmp_path / "make")
    serves = node_daemon_can_serve(pem, tmp_path)
    assert serves is (case.refusal is None or case.openssl3_serves_anyway)
    if case.refusal is None:
        verify_node_certificate(pem, local_pem=None, now=datetime.now(UTC))
        return
    with pytest.raises(RefusedByVerification) as info:
        verify_node_certificate(pem, local_pem=None, now=datetime.now(UTC))
    assert info.value.exit_code == ExitCode.REFUSED
    assert any(case.refusal in problem for problem in info.value.problems), info.value.problems
    assert "-----" not in str(info.value)


def test_ssh_setup_applies_the_key_rules_to_the_public_certificate() -> None:
    """ssh-setup's node_daemon_certificate (no key) is refused for a weak key too."""
    pem = self_signed(rsa_key(1024))
    cert = pem[pem.index("-----BEGIN CERTIFICATE-----") :]
    with pytest.raises(RefusedByVerification) as info:
        verify_public_certificate(cert, local_pem=None, now=NOW)
    assert info.value.problems == (
        "RSA key of 1024 bits: the node daemon's TLS needs at least 2048",
    )
    good = self_signed(ec.generate_private_key(ec.SECP256R1()))
    verify_public_certificate(
        good[good.index("-----BEGIN CERTIFICATE-----") :], local_pem=None, now=NOW
    )
