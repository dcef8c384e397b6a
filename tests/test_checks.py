"""Verification of cluster names and certificates, with real keys and certificates."""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from txsetup.demo.certs import generate_node_certificate, split_pem
from txsetup.errors import ExitCode, RefusedByVerification
from txsetup.node.checks import (
    EXPIRY_WARNING,
    verify_cluster_name,
    verify_node_certificate,
    verify_public_certificate,
)
from txsetup.node.client_pem import client_certificate_is_current, make_client_certificate
from txsetup.node.config import ClientPemProfile
from txsetup.node.cryptocompat import (
    SKIPS_RSA_KEY_CHECK,
    CertificateIssuerPrivateKeyTypes,
    check_issued_by,
    valid_from,
    valid_until,
)

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
EC_PARAMETERS = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
NODE = "node1.example.com"


@dataclass(frozen=True)
class Keys:
    """Keys generated once per module: RSA generation is slow."""

    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    other_ec_key: ec.EllipticCurvePrivateKey
    ed25519_key: ed25519.Ed25519PrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    """One key of each kind the tests need."""
    return Keys(
        rsa_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec_key=ec.generate_private_key(ec.SECP256R1()),
        other_ec_key=ec.generate_private_key(ec.SECP256R1()),
        ed25519_key=ed25519.Ed25519PrivateKey.generate(),
    )


def key_pem(
    key: CertificateIssuerPrivateKeyTypes,
    *,
    password: bytes | None = None,
    key_format: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
) -> str:
    """The key as PEM (PKCS#8 unless told), encrypted when a password is given."""
    encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    if password is not None:
        encryption = serialization.BestAvailableEncryption(password)
    return key.private_bytes(serialization.Encoding.PEM, key_format, encryption).decode()


TRADITIONAL = serialization.PrivateFormat.TraditionalOpenSSL


def cert_pem(
    key: CertificateIssuerPrivateKeyTypes,
    *,
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=365),
) -> str:
    """A self-signed certificate for ``key``, CN=NODE."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NODE)])
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, algorithm)
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def pair(key: CertificateIssuerPrivateKeyTypes, **validity: datetime) -> str:
    """A server.pem text: key, then its certificate."""
    return key_pem(key) + cert_pem(key, **validity)


def body_lines(text: str) -> list[str]:
    """The base64 lines of a PEM text: what must never reach a message."""
    return [line for line in text.splitlines() if len(line) >= 8 and not line.startswith("-----")]


def assert_no_pem_text(exc: RefusedByVerification, *sources: str) -> None:
    """No message or problem quotes PEM framing or any line of the inputs."""
    for message in (str(exc), exc.message, *exc.problems):
        assert "-----" not in message
        assert "BEGIN" not in message
        assert "PRIVATE KEY" not in message  # log scrubbers would take it for key material
        for source in sources:
            for line in body_lines(source):
                assert line not in message


def corrupt_body(pem: str) -> str:
    """Break the base64 of the second body line of every block."""
    lines = pem.splitlines()
    for index in range(len(lines) - 1):
        if lines[index].startswith("-----BEGIN"):
            lines[index + 2] = "@@@@" + lines[index + 2][4:]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Case:
    """One node certificate document, an optional local server.pem, and the expected refusal."""

    pem: Callable[[Keys], str]
    refusal: str | None = None
    local: Callable[[Keys], str | None] = lambda _: None


NODE_CERTIFICATE_CASES = [
    pytest.param(Case(lambda k: pair(k.rsa_key)), id="rsa-key-then-cert"),
    pytest.param(Case(lambda k: cert_pem(k.rsa_key) + key_pem(k.rsa_key)), id="rsa-cert-then-key"),
    pytest.param(Case(lambda k: pair(k.ec_key)), id="ec-key-then-cert"),
    pytest.param(Case(lambda k: cert_pem(k.ec_key) + key_pem(k.ec_key)), id="ec-cert-then-key"),
    pytest.param(Case(lambda k: pair(k.ed25519_key)), id="ed25519"),
    pytest.param(
        Case(lambda k: key_pem(k.rsa_key, key_format=TRADITIONAL) + cert_pem(k.rsa_key)),
        id="rsa-traditional-openssl-key",
    ),
    pytest.param(
        Case(
            lambda k: EC_PARAMETERS + key_pem(k.ec_key, key_format=TRADITIONAL) + cert_pem(k.ec_key)
        ),
        id="openssl-ecparam-output",
    ),
    pytest.param(
        Case(lambda k: "junk before\n" + pair(k.ec_key) + "junk after\n"), id="text-around"
    ),
    pytest.param(Case(lambda k: pair(k.ec_key).replace("\n", "\r\n")), id="crlf"),
    pytest.param(Case(lambda k: pair(k.ec_key, not_after=NOW)), id="last-valid-instant"),
    pytest.param(
        Case(
            lambda k: key_pem(k.ec_key) + cert_pem(k.other_ec_key), "does not match the certificate"
        ),
        id="mismatched-key",
    ),
    pytest.param(
        Case(lambda k: key_pem(k.rsa_key) + cert_pem(k.ec_key), "does not match the certificate"),
        id="rsa-key-ec-cert",
    ),
    pytest.param(Case(lambda k: cert_pem(k.ec_key), "no private key found"), id="cert-without-key"),
    pytest.param(Case(lambda k: key_pem(k.ec_key), "no certificate found"), id="key-without-cert"),
    pytest.param(
        Case(lambda k: pair(k.ec_key) + cert_pem(k.ec_key), "2 certificates found"), id="two-certs"
    ),
    pytest.param(
        Case(lambda k: pair(k.ec_key) + key_pem(k.other_ec_key), "2 private keys found"),
        id="two-keys",
    ),
    pytest.param(
        Case(lambda k: pair(k.ec_key, not_after=NOW - timedelta(seconds=1)), "expired"),
        id="expired",
    ),
    pytest.param(
        Case(lambda k: pair(k.ec_key, not_before=NOW + timedelta(days=1)), "not valid before"),
        id="not-yet-valid",
    ),
    pytest.param(
        Case(lambda k: key_pem(k.ec_key, password=b"secret") + cert_pem(k.ec_key), "encrypted"),
        id="encrypted-key",
    ),
    pytest.param(
        Case(
            lambda k: (
                key_pem(k.rsa_key, password=b"pw", key_format=TRADITIONAL) + cert_pem(k.rsa_key)
            ),
            "encrypted",
        ),
        id="encrypted-traditional-key",
    ),
    pytest.param(
        Case(lambda k: pair(k.ec_key), "this node's key", local=lambda k: pair(k.other_ec_key)),
        id="different-local-key",
    ),
    pytest.param(
        Case(lambda k: pair(k.ec_key), local=lambda k: pair(k.ec_key, not_after=NOW)),
        id="same-local-key-renewed",
    ),
    pytest.param(
        Case(lambda k: pair(k.ec_key), "no usable private key", local=lambda k: cert_pem(k.ec_key)),
        id="local-cert-only-same-key",
    ),
    pytest.param(
        Case(lambda k: pair(k.ec_key), "no certificate", local=lambda k: key_pem(k.ec_key)),
        id="local-key-only",
    ),
    pytest.param(
        Case(
            lambda k: pair(k.ec_key),
            "local server.pem's certificate does not match its key",
            local=lambda k: key_pem(k.ec_key) + cert_pem(k.other_ec_key),
        ),
        id="local-key-with-another-certificate",
    ),
    pytest.param(
        Case(
            lambda k: pair(k.ec_key),
            "no usable private key",
            local=lambda k: key_pem(k.ec_key, password=b"pw") + cert_pem(k.ec_key),
        ),
        id="local-key-encrypted",
    ),
    pytest.param(
        Case(lambda k: pair(k.ec_key), "unreadable", local=lambda _: "not a pem file\n"),
        id="local-unreadable",
    ),
    pytest.param(
        Case(lambda k: pair(k.ec_key), "unreadable", local=lambda k: corrupt_body(pair(k.ec_key))),
        id="local-corrupt",
    ),
    pytest.param(
        Case(lambda k: corrupt_body(pair(k.ec_key)), "does not parse"), id="broken-base64"
    ),
    pytest.param(
        Case(lambda k: pair(k.ec_key).rstrip().rsplit("\n", 1)[0], "truncated PEM block"),
        id="truncated-end",
    ),
    pytest.param(
        Case(
            lambda k: "-----BEGIN PRIVATE KEY-----\n" + cert_pem(k.ec_key),
            "truncated PEM block of a private key",
        ),
        id="truncated-key-block",
    ),
    pytest.param(
        Case(lambda k: pair(k.ec_key)[: len(pair(k.ec_key)) // 2], "truncated"), id="cut-half"
    ),
    pytest.param(
        Case(
            lambda k: key_pem(k.ec_key) + cert_pem(k.ec_key).replace("CERTIFICATE", "PUBLIC KEY"),
            "unexpected PEM block 'PUBLIC KEY'",
        ),
        id="wrong-block-type",
    ),
    pytest.param(Case(lambda _: "hello, world; no PEM here\n", "no certificate"), id="garbage"),
    pytest.param(Case(lambda _: "", "no certificate found"), id="empty"),
]


@pytest.mark.parametrize("case", NODE_CERTIFICATE_CASES)
def test_verify_node_certificate(keys: Keys, case: Case) -> None:
    """Each document is accepted or refused with the named problem, never quoting PEM text."""
    pem, local = case.pem(keys), case.local(keys)
    local_pem = None if local is None else local.encode()
    if case.refusal is None:
        facts = verify_node_certificate(pem, local_pem=local_pem, now=NOW)
        assert facts.subject == f"CN={NODE}"
        return
    with pytest.raises(RefusedByVerification) as info:
        verify_node_certificate(pem, local_pem=local_pem, now=NOW)
    assert info.value.exit_code == ExitCode.REFUSED
    assert any(case.refusal in problem for problem in info.value.problems)
    assert_no_pem_text(info.value, pem, local or "")


def der(tag: int, body: bytes) -> bytes:
    """One DER element."""
    if len(body) < 0x80:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def damaged_pem(key: rsa.RSAPrivateKey) -> str:
    """``key`` as PKCS#1 PEM with a wrong private exponent (CRT parts consistent with it).

    Encoded by hand: cryptography before 39 refuses to make such a key object.
    """
    numbers = key.private_numbers()
    p, q, public = numbers.p, numbers.q, numbers.public_numbers
    d = numbers.d + (p - 1) * (q - 1) // 2 + 2  # no longer e's inverse
    fields = (0, public.n, public.e, d, p, q, d % (p - 1), d % (q - 1), numbers.iqmp)
    body = b"".join(der(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big")) for n in fields)
    lines = textwrap.wrap(base64.b64encode(der(0x30, body)).decode(), 64)
    return "\n".join(["-----BEGIN RSA PRIVATE KEY-----", *lines, "-----END RSA PRIVATE KEY-----\n"])


def test_a_damaged_rsa_key_is_refused(keys: Keys) -> None:
    """An RSA key whose private numbers do not fit its public ones is refused (exit 4).

    Keys are loaded without OpenSSL's slow consistency check where cryptography
    allows it; a signature made with the key and checked against the
    certificate takes its place. An older cryptography checks on loading.
    """
    pem = damaged_pem(keys.rsa_key) + cert_pem(keys.rsa_key)
    with pytest.raises(RefusedByVerification) as info:
        verify_node_certificate(pem, local_pem=None, now=NOW)
    expected = (
        "the private key is damaged: its signatures do not verify"
        if SKIPS_RSA_KEY_CHECK
        else "the private key does not parse"
    )
    assert list(info.value.problems) == [expected]
    assert_no_pem_text(info.value, pem)
    assert verify_node_certificate(pair(keys.rsa_key), local_pem=None, now=NOW)


def test_facts_describe_the_certificate(keys: Keys) -> None:
    """The facts carry the DER fingerprint a TLS peer would see, the subject and aware dates."""
    pem = pair(keys.ec_key)
    cert = x509.load_pem_x509_certificate(split_pem(pem)[1].encode())
    facts = verify_node_certificate(pem, local_pem=None, now=NOW)
    assert facts.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex()
    assert facts.fingerprint_sha256 == facts.fingerprint_sha256.lower()
    assert facts.subject == f"CN={NODE}"
    assert facts.not_before == valid_from(cert)
    assert facts.not_after == valid_until(cert)
    assert facts.not_before.tzinfo is not None
    assert facts.not_after.tzinfo is not None
    assert not facts.expires_soon


@pytest.mark.parametrize(
    ("remaining", "expires_soon"),
    [
        (timedelta(days=10), True),
        (EXPIRY_WARNING - timedelta(seconds=1), True),
        (EXPIRY_WARNING, False),
        (timedelta(days=365), False),
    ],
)
def test_expiring_certificate_is_accepted_with_a_warning_flag(
    keys: Keys, remaining: timedelta, expires_soon: bool
) -> None:
    """A certificate near its end is accepted, flagged when under 30 days remain."""
    facts = verify_node_certificate(
        pair(keys.ec_key, not_after=NOW + remaining), local_pem=None, now=NOW
    )
    assert facts.expires_soon is expires_soon


def test_all_problems_are_reported_at_once(keys: Keys) -> None:
    """Expired, mismatched and foreign to the node: all three problems are listed."""
    pem = key_pem(keys.other_ec_key) + cert_pem(keys.ec_key, not_after=NOW - timedelta(days=1))
    with pytest.raises(RefusedByVerification) as info:
        verify_node_certificate(pem, local_pem=pair(keys.rsa_key).encode(), now=NOW)
    problems = " | ".join(info.value.problems)
    assert "expired" in problems
    assert "does not match the certificate" in problems
    assert "this node's key" in problems


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_demo_certificates_pass_verification_in_either_order(
    key_type: Literal["ec", "rsa"],
) -> None:
    """The demo's server.pem is accepted as generated and with its blocks swapped."""
    pem = generate_node_certificate(NODE, key_type=key_type)
    key, cert = split_pem(pem)
    assert pem == key + cert
    now = datetime.now(UTC)
    for text in (pem, cert + key):
        facts = verify_node_certificate(text, local_pem=pem.encode(), now=now)
        assert facts.subject == f"CN={NODE}"
        assert not facts.expires_soon


def test_demo_certificate_honours_validity_window() -> None:
    """Explicit validity bounds reach the certificate, so tests can build expired ones."""
    start, end = NOW - timedelta(days=2), NOW - timedelta(days=1)
    pem = generate_node_certificate(NODE, not_before=start, not_after=end)
    cert = x509.load_pem_x509_certificate(split_pem(pem)[1].encode())
    assert (valid_from(cert), valid_until(cert)) == (start, end)


def test_split_pem_refuses_other_shapes(keys: Keys) -> None:
    """split_pem insists on exactly one key and one certificate."""
    for text in (cert_pem(keys.ec_key), pair(keys.ec_key) + cert_pem(keys.ec_key), ""):
        with pytest.raises(ValueError, match="exactly one"):
            split_pem(text)


PUBLIC_CERTIFICATE_CASES = [
    pytest.param(Case(lambda k: cert_pem(k.ec_key)), id="certificate-only"),
    pytest.param(
        Case(lambda k: cert_pem(k.ec_key), local=lambda k: pair(k.ec_key)), id="same-local-key"
    ),
    pytest.param(
        Case(lambda k: pair(k.ec_key), "a private key was given"), id="carries-private-key"
    ),
    pytest.param(
        Case(
            lambda k: cert_pem(k.ec_key) + key_pem(k.ec_key, password=b"x"),
            "a private key was given",
        ),
        id="carries-encrypted-key",
    ),
    pytest.param(
        Case(lambda k: cert_pem(k.ec_key), "this node's key", local=lambda k: pair(k.other_ec_key)),
        id="different-local-key",
    ),
    pytest.param(
        Case(lambda k: cert_pem(k.ec_key), "unreadable", local=lambda _: ""), id="local-unreadable"
    ),
    pytest.param(
        Case(
            lambda k: cert_pem(k.ec_key),
            "no usable private key",
            local=lambda k: cert_pem(k.ec_key),
        ),
        id="local-cert-only",
    ),
    pytest.param(
        Case(
            lambda k: cert_pem(k.ec_key),
            "does not match its key",
            local=lambda k: key_pem(k.ec_key) + cert_pem(k.other_ec_key),
        ),
        id="local-key-with-another-certificate",
    ),
    pytest.param(
        Case(lambda k: cert_pem(k.ec_key) + cert_pem(k.rsa_key), "2 certificates found"),
        id="two-certs",
    ),
    pytest.param(Case(lambda k: corrupt_body(cert_pem(k.ec_key)), "does not parse"), id="broken"),
    pytest.param(Case(lambda _: "", "no certificate found"), id="empty"),
]


@pytest.mark.parametrize("case", PUBLIC_CERTIFICATE_CASES)
def test_verify_public_certificate(keys: Keys, case: Case) -> None:
    """ssh-setup's certificate must come without its key and keep the node's identity."""
    pem, local = case.pem(keys), case.local(keys)
    local_pem = None if local is None else local.encode()
    if case.refusal is None:
        assert verify_public_certificate(pem, local_pem=local_pem, now=NOW).subject == f"CN={NODE}"
        return
    with pytest.raises(RefusedByVerification) as info:
        verify_public_certificate(pem, local_pem=local_pem, now=NOW)
    assert any(case.refusal in problem for problem in info.value.problems)
    assert_no_pem_text(info.value, pem, local or "")


@pytest.mark.parametrize(
    ("given", "in_ssconf", "local", "refusals"),
    [
        pytest.param("c1", "c1", "c1", [], id="all-good"),
        pytest.param("c1", "c1", None, [], id="no-local-name"),
        pytest.param("c1", "c1", "c2", ["this node's"], id="mismatch-with-local"),
        pytest.param("c1", "c2", "c1", ["ssconf"], id="mismatch-with-ssconf"),
        pytest.param("c1", None, None, ["missing"], id="missing-in-ssconf"),
        pytest.param("c1", "c2", "c3", ["ssconf", "this node's"], id="both-mismatch"),
        pytest.param("c1", None, "c3", ["missing", "this node's"], id="missing-and-local"),
        pytest.param("c1", "C1", None, ["ssconf"], id="case-matters"),
    ],
)
def test_verify_cluster_name(
    given: str, in_ssconf: str | None, local: str | None, refusals: list[str]
) -> None:
    """The cluster name must equal ssconf's and, when one exists, the node's own."""
    if not refusals:
        verify_cluster_name(given=given, in_ssconf=in_ssconf, local=local)
        return
    with pytest.raises(RefusedByVerification) as info:
        verify_cluster_name(given=given, in_ssconf=in_ssconf, local=local)
    assert len(info.value.problems) == len(refusals)
    for problem, refusal in zip(info.value.problems, refusals, strict=True):
        assert refusal in problem


def test_cluster_name_message_is_bounded() -> None:
    """A huge cluster name is cut short in the message."""
    with pytest.raises(RefusedByVerification) as info:
        verify_cluster_name(given="x" * 100_000, in_ssconf="y", local=None)
    assert len(str(info.value)) < 300


def load_client(client_pem: bytes) -> tuple[x509.Certificate, bytes]:
    """The client certificate and its key's public half, DER."""
    key_text, cert_text = split_pem(client_pem.decode())
    key = serialization.load_pem_private_key(key_text.encode(), password=None)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return x509.load_pem_x509_certificate(cert_text.encode()), public


def spki(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """A private key's public half, DER."""
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


GANETI_VALIDITY = timedelta(days=1825)
CLIENT_START = NOW - timedelta(hours=1)


@pytest.mark.parametrize("kind", ["ec_key", "rsa_key", "ed25519_key"])
def test_client_certificate_is_minted_as_ganeti_does(keys: Keys, kind: str) -> None:
    """Whatever the node key, client.pem is a new RSA 2048 key, CN=node_name, 1825 days."""
    server_key: CertificateIssuerPrivateKeyTypes = getattr(keys, kind)
    server_pem = pair(server_key)
    server = x509.load_pem_x509_certificate(split_pem(server_pem)[1].encode())
    client_pem = make_client_certificate(server_pem, "node2.example.com", now=NOW)
    assert client_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    cert, public = load_client(client_pem)
    check_issued_by(cert, server)
    assert cert.subject.rfc4514_string() == "CN=node2.example.com"
    assert cert.issuer == server.subject
    client_key = cert.public_key()
    assert isinstance(client_key, rsa.RSAPublicKey)
    assert (client_key.key_size, client_key.public_numbers().e) == (2048, 65537)
    if kind != "ed25519_key":
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert valid_from(cert) == CLIENT_START
    assert valid_until(cert) == CLIENT_START + GANETI_VALIDITY
    assert valid_until(cert) > valid_until(server)  # not cut, as in Ganeti
    assert public != spki(server_key)
    assert verify_node_certificate(client_pem.decode(), local_pem=None, now=NOW)
    assert client_certificate_is_current(client_pem, server_pem, "node2.example.com", now=NOW)


@pytest.mark.parametrize(
    ("kind", "algorithm"),
    [
        ("ec_key", ec.EllipticCurvePublicKey),
        ("rsa_key", rsa.RSAPublicKey),
        ("ed25519_key", ed25519.Ed25519PublicKey),
    ],
)
def test_like_node_profile_mints_the_node_key_kind(
    keys: Keys, kind: str, algorithm: type[object]
) -> None:
    """client_pem_key = "like-node" and client_pem_days mint the node key's kind, that long."""
    server_pem = pair(getattr(keys, kind))
    profile = ClientPemProfile(key="like-node", days=400)
    client_pem = make_client_certificate(server_pem, "node2", now=NOW, profile=profile)
    cert, _ = load_client(client_pem)
    assert isinstance(cert.public_key(), algorithm)
    assert valid_until(cert) - valid_from(cert) == timedelta(days=400)
    assert client_certificate_is_current(client_pem, server_pem, "node2", now=NOW, profile=profile)
    assert not client_certificate_is_current(client_pem, server_pem, "node2", now=NOW)


def test_client_certificate_never_starts_before_the_node_certificate(keys: Keys) -> None:
    """A node certificate younger than an hour bounds the start; the validity stays 1825 days."""
    server_pem = pair(keys.ec_key, not_before=NOW - timedelta(minutes=5))
    cert, _ = load_client(make_client_certificate(server_pem, "node2", now=NOW))
    assert valid_from(cert) == NOW - timedelta(minutes=5)
    assert valid_until(cert) - valid_from(cert) == GANETI_VALIDITY


def test_each_client_certificate_has_a_new_key(keys: Keys) -> None:
    """Two mints give two keys: reuse comes only from client_certificate_is_current."""
    server_pem = pair(keys.ec_key)
    first = make_client_certificate(server_pem, "node2", now=NOW)
    second = make_client_certificate(server_pem, "node2", now=NOW)
    assert load_client(first)[1] != load_client(second)[1]


def test_client_certificate_is_not_current_when_anything_differs(keys: Keys) -> None:
    """Another name, signer, profile, time near or past its end, or garbage means a new one."""
    server_pem = pair(keys.ec_key)
    client_pem = make_client_certificate(server_pem, "node2", now=NOW)
    end = CLIENT_START + GANETI_VALIDITY
    assert client_certificate_is_current(client_pem, server_pem, "node2", now=NOW)
    assert client_certificate_is_current(client_pem, server_pem, "node2", now=end - EXPIRY_WARNING)
    assert not client_certificate_is_current(client_pem, server_pem, "node3", now=NOW)
    assert not client_certificate_is_current(client_pem, pair(keys.other_ec_key), "node2", now=NOW)
    later = end - EXPIRY_WARNING + timedelta(seconds=1)  # cluster verify would warn now
    assert not client_certificate_is_current(client_pem, server_pem, "node2", now=later)
    before = CLIENT_START - timedelta(seconds=1)
    assert not client_certificate_is_current(client_pem, server_pem, "node2", now=before)
    for profile in (ClientPemProfile(key="rsa-3072"), ClientPemProfile(days=365)):
        assert not client_certificate_is_current(
            client_pem, server_pem, "node2", now=NOW, profile=profile
        )
    assert not client_certificate_is_current(server_pem.encode(), server_pem, NODE, now=NOW)
    assert not client_certificate_is_current(b"", server_pem, "node2", now=NOW)
    assert not client_certificate_is_current(b"\xff\x00garbage", server_pem, "node2", now=NOW)
    mixed = split_pem(client_pem.decode())[1] + key_pem(keys.other_ec_key)
    assert not client_certificate_is_current(mixed.encode(), server_pem, "node2", now=NOW)


def test_client_certificate_outlives_a_renewal_with_the_same_key(keys: Keys) -> None:
    """A node certificate renewed on the same key (and name) still signs the client.pem."""
    client_pem = make_client_certificate(pair(keys.ec_key), "node2", now=NOW)
    renewed = pair(keys.ec_key, not_after=NOW + timedelta(days=700))
    assert client_certificate_is_current(client_pem, renewed, "node2", now=NOW)


@pytest.mark.parametrize(
    ("server", "node_name"),
    [
        pytest.param(lambda k: cert_pem(k.ec_key), "node2", id="no-server-key"),
        pytest.param(
            lambda k: key_pem(k.ec_key) + cert_pem(k.other_ec_key), "node2", id="mismatch"
        ),
        pytest.param(lambda _: "garbage", "node2", id="garbage"),
        pytest.param(
            lambda k: pair(k.ec_key, not_after=NOW - timedelta(hours=2)), "n", id="expired"
        ),
        pytest.param(lambda k: pair(k.ec_key), "", id="empty-name"),
        pytest.param(lambda k: pair(k.ec_key), "n" * 65, id="name-too-long"),
    ],
)
def test_make_client_certificate_refuses(
    keys: Keys, server: Callable[[Keys], str], node_name: str
) -> None:
    """Without a usable node key and name there is no client certificate, only a refusal."""
    server_pem = server(keys)
    with pytest.raises(RefusedByVerification) as info:
        make_client_certificate(server_pem, node_name, now=NOW)
    assert_no_pem_text(info.value, server_pem)


def pem_fragments(keys: Keys) -> list[str]:
    """Lines of real PEM blocks, for the fuzzer to recombine."""
    text = pair(keys.ec_key) + cert_pem(keys.other_ec_key) + key_pem(keys.ed25519_key)
    return text.splitlines()


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_text_is_refused_or_accepted_never_crashes(keys: Keys, data: st.DataObject) -> None:
    """Any text, real PEM lines shuffled in, yields facts or a refusal and nothing else."""
    fragments = pem_fragments(keys)
    lines = data.draw(st.lists(st.one_of(st.text(), st.sampled_from(fragments))))
    text = "\n".join(lines)
    local = data.draw(st.one_of(st.none(), st.binary(), st.just(pair(keys.ec_key).encode())))
    for verify in (verify_node_certificate, verify_public_certificate):
        try:
            verify(text, local_pem=local, now=NOW)
        except RefusedByVerification as exc:
            assert_no_pem_text(exc, "\n".join(line for line in lines if line in fragments))
    existing = text.encode("utf-8", "replace")
    assert client_certificate_is_current(existing, pair(keys.ec_key), "n", now=NOW) in (True, False)


@settings(deadline=None)
@given(text=st.text())
def test_arbitrary_text_raises_only_refused(text: str) -> None:
    """Any text whatever is refused with RefusedByVerification and no other exception."""
    with pytest.raises(RefusedByVerification):
        verify_node_certificate(text, local_pem=None, now=NOW)
