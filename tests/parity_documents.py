"""The documents run side by side through Ganeti's node-daemon-setup and txsetup's.

Each :class:`Variant` is a document (as stdin bytes), what the node holds in
``/var/lib/ganeti`` before the run, and the row of docs/ganeti.md's table of
deliberate differences that explains why the two tools end differently on
it — or ``None`` when they must end alike. tests/test_ganeti_parity.py runs
them and checks every claim.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.certkinds import dsa_key, openssl_signed, rsa_key, self_signed
from tests.conftest import CLUSTER, make_document
from txsetup.demo.certs import generate_node_certificate, split_pem

NODE_NAME = "node1000.cluster.example.com"
MAX_SSCONF = 128 * 1024
MAX_DOCUMENT = 16 * 1024 * 1024

# The rows of docs/ganeti.md's table (its first column), as the variants name them.
BOOLEAN = "`start_node_daemon` not a boolean"
UNKNOWN_KEY = "an unknown top-level key"
DUPLICATE_KEY = "a key given twice"
BOM = "a byte order mark before the document"
TOO_LARGE = "a document over 16 MiB"
DATES = "a node certificate expired or not yet valid"
EXTRA_BLOCKS = "more PEM blocks after the node's key and certificate"
SSCONF_LIST = "an ssconf value that is a list"
SSCONF_NUMBER = "an ssconf value that is a number"
SSCONF_OVER_CAP = "an ssconf value over 128 KiB"
NO_HMAC_KEY = "no `hmac_key` (a Ganeti 2.x master)"
NO_NODE_NAME = "no `node_name` (a Ganeti 2.x master)"
EMPTY_NODE_NAME = "an empty `node_name`"
LONG_NODE_NAME = "a `node_name` over 64 characters"
WEAK_RSA = "an RSA node key of 1963 to 2047 bits"
UNSERVABLE_KEY = "a DSA node key, or an EC key off P-256, P-384 and P-521"
HMAC_NOT_STRING = "an `hmac_key` that is not a string"
EDDSA = "an Ed25519 node key"


@dataclass(frozen=True)
class Variant:
    """One document, the node's files before it, and the docs row of the difference (if any)."""

    id: str
    stdin: bytes
    row: str | None = None
    seed: Mapping[str, str] = field(default_factory=dict)  # name in /var/lib/ganeti -> text


def _json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document).encode()


def build_variants(node_pem: str, other_pem: str, work: Path) -> list[Variant]:
    """Every variant: each field's edge cases, on a fresh node or one already set up."""
    now = datetime.now(UTC)

    def doc(pem: str = node_pem, **changes: Any) -> dict[str, Any]:
        document = make_document(pem, hmac_key="hmac-secret-parity\n", node_name=NODE_NAME)
        for key, value in changes.items():
            if value is _DELETE:
                del document[key]
            else:
                document[key] = value
        return document

    def with_ssconf(**values: Any) -> dict[str, Any]:
        document = doc()
        document["ssconf"] = {**document["ssconf"], **values}
        return document

    def dated(start: timedelta, end: timedelta) -> str:
        return generate_node_certificate(CLUSTER, not_before=now + start, not_after=now + end)

    key, cert = split_pem(node_pem)
    other_key, other_cert = split_pem(other_pem)
    valid = _json(doc())
    text = valid.decode()
    v: list[Variant] = []
    add: Callable[..., None] = lambda *a, **k: v.append(Variant(*a, **k))  # noqa: E731

    add("valid", valid)
    add("valid-rsa-2048", _json(doc(generate_node_certificate(CLUSTER, key_type="rsa"))))
    add("start-node-daemon-true", _json(doc(start_node_daemon=True)))
    add("start-node-daemon-absent", _json(doc(start_node_daemon=_DELETE)))
    add("start-node-daemon-string-false", _json(doc(start_node_daemon="false")), BOOLEAN)
    add("start-node-daemon-one", _json(doc(start_node_daemon=1)), BOOLEAN)
    add("start-node-daemon-zero", _json(doc(start_node_daemon=0)), BOOLEAN)
    add("start-node-daemon-null", _json(doc(start_node_daemon=None)), BOOLEAN)
    add("unknown-top-level-key", _json(doc(master_secret="x")), UNKNOWN_KEY)
    add(
        "duplicate-key-same-value",
        text.replace("{", '{"node_name": "x", ', 1).encode(),
        DUPLICATE_KEY,
    )
    conflicting = text.replace(
        "{", '{"node_daemon_certificate": ' + json.dumps(other_pem) + ", ", 1
    )
    add("duplicate-certificate-conflicting", conflicting.encode(), DUPLICATE_KEY)
    add("byte-order-mark", b"\xef\xbb\xbf" + valid, BOM)
    add("document-16mib-plus-1", valid + b" " * (MAX_DOCUMENT + 1 - len(valid)), TOO_LARGE)
    add("document-16mib-exactly", valid + b" " * (MAX_DOCUMENT - len(valid)))
    add("not-json", b'{"cluster_name": ')
    add("empty-stdin", b"")
    add("top-level-array", b"[]")
    add(
        "certificate-expired",
        _json(doc(dated(-timedelta(days=9), -timedelta(days=1)))),
        DATES,
    )
    add("certificate-not-yet-valid", _json(doc(dated(timedelta(days=1), timedelta(days=9)))), DATES)
    add(
        "certificate-expiring-in-10-days", _json(doc(dated(-timedelta(days=1), timedelta(days=10))))
    )
    add("certificate-then-key", _json(doc(cert + key)))
    add("text-around-pem", _json(doc("junk before\n" + node_pem + "junk after\n")))
    add("extra-certificate-after", _json(doc(node_pem + other_cert)), EXTRA_BLOCKS)
    add("extra-key-after", _json(doc(node_pem + other_key)), EXTRA_BLOCKS)
    public = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    add("extra-unknown-block-after", _json(doc(node_pem + public)), EXTRA_BLOCKS)
    add("certificate-without-key", _json(doc(cert)))
    add("key-of-another-certificate", _json(doc(other_key + cert)))
    add("rsa-1024", _json(doc(self_signed(rsa_key(1024)))))
    rsa_2000 = self_signed(rsa_key(2000))
    add("rsa-2000", _json(doc(rsa_2000)), WEAK_RSA)
    add("dsa-2048", _json(doc(self_signed(dsa_key(2048)))), UNSERVABLE_KEY)
    add("ec-p192", _json(doc(self_signed(ec.generate_private_key(ec.SECP192R1())))))
    add("ec-p224", _json(doc(self_signed(ec.generate_private_key(ec.SECP224R1())))), UNSERVABLE_KEY)
    k1 = self_signed(ec.generate_private_key(ec.SECP256K1()))
    add("ec-secp256k1", _json(doc(k1)), UNSERVABLE_KEY)
    add("ec-p384", _json(doc(self_signed(ec.generate_private_key(ec.SECP384R1())))))
    sha1_by_ca = openssl_signed(work, rsa_key(2048), "sha1", by_ca=True)
    add("sha1-signature-by-a-ca", _json(doc(sha1_by_ca)))
    add("ed25519", _json(doc(self_signed(ed25519.Ed25519PrivateKey.generate()))), EDDSA)
    add("cluster-name-mismatch", _json(doc(cluster_name="other.example.com")))
    add("cluster-name-number", _json(doc(cluster_name=5)))
    add("ssconf-list-value", _json(with_ssconf(node_list=["node1", "node2"])), SSCONF_LIST)
    add("ssconf-number-value", _json(with_ssconf(master_netmask=24)), SSCONF_NUMBER)
    add("ssconf-empty-value", _json(with_ssconf(cluster_tags="")))
    add("ssconf-unknown-key", _json(with_ssconf(**{"../../etc/passwd": "x"})))
    add("ssconf-empty", _json(doc(ssconf={})))
    over_cap = with_ssconf(uid_pool="a" * MAX_SSCONF)
    add("ssconf-value-over-cap", _json(over_cap), SSCONF_OVER_CAP)
    add("hmac-key-missing", _json(doc(hmac_key=_DELETE)), NO_HMAC_KEY)
    add("hmac-key-empty", _json(doc(hmac_key="")))
    add("hmac-key-number", _json(doc(hmac_key=5)), HMAC_NOT_STRING)
    add("node-name-missing", _json(doc(node_name=_DELETE)), NO_NODE_NAME)
    add("node-name-empty", _json(doc(node_name="")), EMPTY_NODE_NAME)
    add("node-name-65-characters", _json(doc(node_name="n" * 65)), LONG_NODE_NAME)
    # A node already set up: its server.pem (whole or damaged) and its cluster name.
    add("local-same-key", valid, seed={"server.pem": node_pem})
    add("local-other-key", valid, seed={"server.pem": other_pem})
    add("local-certificate-without-key", valid, seed={"server.pem": cert})
    add("local-key-without-certificate", valid, seed={"server.pem": key})
    add("local-key-with-another-certificate", valid, seed={"server.pem": key + other_cert})
    add("local-garbage", valid, seed={"server.pem": "not a certificate\n"})
    add("local-cluster-name-differs", valid, seed={"ssconf_cluster_name": "other.example.com\n"})
    add("local-cluster-name-same", valid, seed={"ssconf_cluster_name": CLUSTER + "\n"})
    return v


_DELETE: Any = object()
