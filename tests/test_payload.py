"""Decoding of the stdin documents: what is accepted, what is refused and how."""

from __future__ import annotations

import io
import json
import types
from collections.abc import Callable
from typing import Any, BinaryIO, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txsetup.errors import ExitCode, InvalidInput
from txsetup.node.documents import NodeDaemonSetup, SshSetup
from txsetup.node.files import ssconf_content
from txsetup.node.ganeti_fields import MAX_SSCONF_VALUE_BYTES, SSCONF_KEYS, SSH_KEY_TYPES
from txsetup.node.payload import decode_node_daemon_setup, decode_ssh_setup
from txsetup.node.strictjson import MAX_DOCUMENT_BYTES, read_document

SECRET = "S3CRET-MARKER-9f4c"
CERTIFICATE = (
    "-----BEGIN PRIVATE KEY-----\n"
    f"MIIEvQIBADANBgkqhkiG9w0BAQEFAASC{SECRET}\n"
    "-----END PRIVATE KEY-----\n"
    "-----BEGIN CERTIFICATE-----\n"
    "MIIDXTCCAkWgAwIBAgIJAJC1HiIAZAiIMA0GCSqGSIb3Df\n"
    "-----END CERTIFICATE-----\n"
)
HMAC_KEY = f"{SECRET}-hmac-0123456789abcdef\n"
PRIVATE_KEY = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{SECRET}\n-----END OPENSSH PRIVATE KEY-----\n"
DELETE = object()  # in a change set: remove this key

Document = dict[str, object]
Decoder = Callable[[bytes], object]


def ganeti_document() -> Document:
    """A document as Ganeti's master builds it in ``lib/bootstrap.py``, ``SetupNodeDaemon``."""
    ssconf = {key: f"value of {key}\n" for key in sorted(SSCONF_KEYS)}
    ssconf |= {"cluster_name": "cluster.example.com", "node_list": "node1\nnode2\nnode3"}
    ssconf |= {"cluster_tags": "", "uid_pool": ""}
    return {
        "cluster_name": "cluster.example.com",
        "node_daemon_certificate": CERTIFICATE,
        "ssconf": ssconf,
        "start_node_daemon": True,
        "node_name": "node4.example.com",
        "hmac_key": HMAC_KEY,
    }


def ssh_document() -> Document:
    """A complete ``ssh-setup`` document, one key of each type."""
    triples = [
        [kind, PRIVATE_KEY, f"ssh-{kind} AAAA{kind} root@master\n"] for kind in SSH_KEY_TYPES
    ]
    return {
        "cluster_name": "cluster.example.com",
        "node_daemon_certificate": "-----BEGIN CERTIFICATE-----\nMIID\n-----END CERTIFICATE-----\n",
        "ssh_host_key": triples,
        "ssh_root_key": triples[:1],
        "authorized_keys": {"node1-uuid": ["ssh-rsa AAAA1 root@node1", "ssh-ed25519 AAAA2 x\n"]},
    }


def encode(document: object) -> bytes:
    """The wire form: UTF-8 JSON, non-ASCII characters unescaped."""
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def changed(base: Document, changes: dict[str, object]) -> bytes:
    """``base`` with top-level keys set (or removed with DELETE), encoded."""
    document = dict(base)
    for key, value in changes.items():
        if value is DELETE:
            del document[key]
        else:
            document[key] = value
    return encode(document)


def with_ssconf(**values: object) -> dict[str, object]:
    """A change set replacing some ssconf values of the Ganeti document."""
    ssconf = cast(dict[str, object], ganeti_document()["ssconf"])
    return {"ssconf": ssconf | values}


def refusal(decode: Decoder, raw: bytes) -> InvalidInput:
    """Decode ``raw``, which must be refused, and return the error after the common checks."""
    with pytest.raises(InvalidInput) as caught:
        decode(raw)
    error = caught.value
    assert error.exit_code == ExitCode.INVALID_INPUT
    assert error.problems
    assert all(problem.startswith("$") for problem in error.problems)
    assert SECRET not in str(error)
    return error


HUGE_KEY = "k" * 100_000
NODE_DAEMON_CASES = [
    # (change set or raw bytes, message expected among the problems)
    ({"cluster_name": 1}, "$.cluster_name: expected string, got number"),
    ({"cluster_name": True}, "$.cluster_name: expected string, got boolean"),
    ({"cluster_name": None}, "$.cluster_name: expected string, got null"),
    ({"cluster_name": []}, "$.cluster_name: expected string, got array"),
    ({"cluster_name": {}}, "$.cluster_name: expected string, got object"),
    ({"cluster_name": ""}, "$.cluster_name: empty string"),
    ({"cluster_name": DELETE}, "$.cluster_name: missing, expected string"),
    ({"node_daemon_certificate": 1.5}, "$.node_daemon_certificate: expected string, got number"),
    ({"node_daemon_certificate": False}, "$.node_daemon_certificate: expected string, got boolean"),
    ({"node_daemon_certificate": [CERTIFICATE]}, "$.node_daemon_certificate: expected string"),
    ({"node_daemon_certificate": ""}, "$.node_daemon_certificate: empty string"),
    ({"node_daemon_certificate": DELETE}, "$.node_daemon_certificate: missing"),
    ({"ssconf": []}, "$.ssconf: expected object, got array"),
    ({"ssconf": "cluster_name=x"}, "$.ssconf: expected object, got string"),
    ({"ssconf": None}, "$.ssconf: expected object, got null"),
    ({"ssconf": {}}, "$.ssconf: empty object"),
    ({"ssconf": DELETE}, "$.ssconf: missing, expected object"),
    (with_ssconf(master_ip=5), "$.ssconf.master_ip: expected string, got number"),
    (with_ssconf(master_ip=True), "$.ssconf.master_ip: expected string, got boolean"),
    (with_ssconf(master_ip=None), "$.ssconf.master_ip: expected string, got null"),
    (with_ssconf(node_list=["a", "b"]), "$.ssconf.node_list: expected string, got array"),
    (with_ssconf(**{"hvparams_xen-hvm": {}}), "$.ssconf.hvparams_xen-hvm: expected string"),
    (with_ssconf(**{"../x": "a"}), '$.ssconf["../x"]: unknown ssconf key'),
    (with_ssconf(**{"/etc/passwd": "a"}), '$.ssconf["/etc/passwd"]: unknown ssconf key'),
    (with_ssconf(**{"a/b": "a"}), '$.ssconf["a/b"]: unknown ssconf key'),
    (with_ssconf(**{"": "a"}), '$.ssconf[""]: unknown ssconf key'),
    (with_ssconf(**{"master_ip\n": "a"}), '$.ssconf["master_ip\\n"]: unknown ssconf key'),
    (with_ssconf(ssconf_master_ip="a"), "$.ssconf.ssconf_master_ip: unknown ssconf key"),
    (with_ssconf(MASTER_IP="a"), "$.ssconf.MASTER_IP: unknown ssconf key"),
    (with_ssconf(**{HUGE_KEY: "a"}), '$.ssconf["kkkkkkkkkk'),
    (
        with_ssconf(node_list="a" * MAX_SSCONF_VALUE_BYTES + "\n"),
        "$.ssconf.node_list: value of 131073 bytes, more than 128 KiB",
    ),
    (
        with_ssconf(node_list="a" * MAX_SSCONF_VALUE_BYTES),
        "$.ssconf.node_list: value of 131072 bytes, 131073 with the newline ssconf adds, "
        "more than 128 KiB",
    ),
    (
        with_ssconf(node_list="é" * (MAX_SSCONF_VALUE_BYTES // 2)),
        "$.ssconf.node_list: value of 131072 bytes, 131073 with the newline",
    ),
    ({"start_node_daemon": "true"}, "$.start_node_daemon: expected boolean, got string"),
    ({"start_node_daemon": 1}, "$.start_node_daemon: expected boolean, got number"),
    ({"start_node_daemon": 0}, "$.start_node_daemon: expected boolean, got number"),
    ({"start_node_daemon": None}, "$.start_node_daemon: expected boolean, got null"),
    ({"hmac_key": ""}, "$.hmac_key: empty string"),
    ({"hmac_key": 7}, "$.hmac_key: expected string, got number"),
    ({"hmac_key": True}, "$.hmac_key: expected string, got boolean"),
    ({"hmac_key": None}, "$.hmac_key: expected string, got null"),
    ({"hmac_key": [HMAC_KEY]}, "$.hmac_key: expected string, got array"),
    ({"node_name": ""}, "$.node_name: empty string"),
    ({"node_name": 4}, "$.node_name: expected string, got number"),
    ({"node_name": False}, "$.node_name: expected string, got boolean"),
    ({"node_name": None}, "$.node_name: expected string, got null"),
    ({"color": "blue"}, "$.color: unknown key"),
    ({"Cluster_Name": "x"}, "$.Cluster_Name: unknown key"),
    ({"../etc": "x"}, '$["../etc"]: unknown key'),
    ({"ssh_host_key": []}, "$.ssh_host_key: unknown key"),
    (b"", "$: empty document"),
    (b" \n\t", "$: empty document"),
    (b"[]", "$: expected object, got array"),
    (b"null", "$: expected object, got null"),
    (b'"cluster"', "$: expected object, got string"),
    (b"17", "$: expected object, got number"),
    (b"true", "$: expected object, got boolean"),
    (b"\xff\xfe{}", "$: not UTF-8 (invalid byte at offset 0)"),
    (b'{"cluster_name": "\xc3("}', "$: not UTF-8 (invalid byte at offset 18)"),
    (
        b"\xef\xbb\xbf{}",
        "$: starts with a byte order mark (U+FEFF); send plain UTF-8 without it",
    ),
    (b'{"cluster_name": "a\x01"}', "$: not JSON: Invalid control character at line 1 column 20"),
    (b'{"cluster_name": "x"', "$: not JSON"),
    (b'{"cluster_name": "x"} {}', "$: not JSON: Extra data"),
    (b'{"cluster_name": NaN}', "$: not JSON: NaN is not a JSON value"),
    (b'{"cluster_name": -Infinity}', "$: not JSON: -Infinity is not a JSON value"),
    (b'{"ssconf": {"master_ip": Infinity}}', "$: not JSON: Infinity is not a JSON value"),
    (b"[" * 100_000, "$: arrays or objects nested too deeply"),
    (b'{"a":' * 100_000, "$: arrays or objects nested too deeply"),
    (b'{"cluster_name": 1' + b"0" * 100_000 + b"}", "$.cluster_name: expected string, got number"),
    (b'{"cluster_name": "a", "cluster_name": "a"}', "$.cluster_name: duplicate key"),
    (b'{"ssconf": {"master_ip": "a", "master_ip": "b"}}', "$.ssconf.master_ip: duplicate key"),
    (b'{"cluster_name": "\\ud800"}', "$.cluster_name: not writable as UTF-8"),
    (b'{"ssconf": {"master_ip": "a\\udfff"}}', "$.ssconf.master_ip: not writable as UTF-8"),
]


@pytest.mark.parametrize(
    ("change", "message"),
    [pytest.param(change, message, id=message[:60]) for change, message in NODE_DAEMON_CASES],
)
def test_node_daemon_setup_refuses(change: dict[str, object] | bytes, message: str) -> None:
    """Each invalid document is invalid input, reported at its exact JSON path, secrets unsaid."""
    raw = change if isinstance(change, bytes) else changed(ganeti_document(), change)
    error = refusal(decode_node_daemon_setup, raw)
    assert any(problem.startswith(message) for problem in error.problems), error.problems


def test_huge_key_is_cut_short_in_the_message() -> None:
    """An unknown key of 100,000 characters is named by its beginning, not echoed whole."""
    error = refusal(decode_node_daemon_setup, changed(ganeti_document(), {HUGE_KEY: 1}))
    assert len(str(error)) < 200
    assert "100000 characters" in str(error)


TRIPLE = ["rsa", PRIVATE_KEY, "ssh-rsa AAAA root@master"]
SSH_CASES = [
    ({"cluster_name": DELETE}, "$.cluster_name: missing, expected string"),
    ({"cluster_name": 3}, "$.cluster_name: expected string, got number"),
    ({"cluster_name": ""}, "$.cluster_name: empty string"),
    ({"node_daemon_certificate": None}, "$.node_daemon_certificate: expected string, got null"),
    ({"node_daemon_certificate": ""}, "$.node_daemon_certificate: empty string"),
    ({"ssh_host_key": {}}, "$.ssh_host_key: expected array, got object"),
    ({"ssh_host_key": None}, "$.ssh_host_key: expected array, got null"),
    ({"ssh_host_key": ["rsa"]}, "$.ssh_host_key[0]: expected array, got string"),
    ({"ssh_host_key": [TRIPLE[:2]]}, "$.ssh_host_key[0]: expected [type, private, public], got 2"),
    ({"ssh_host_key": [[*TRIPLE, "x"]]}, "$.ssh_host_key[0]: expected [type, private, public]"),
    ({"ssh_host_key": [[1, *TRIPLE[1:]]]}, "$.ssh_host_key[0][0]: expected string, got number"),
    ({"ssh_host_key": [["dss", *TRIPLE[1:]]]}, "$.ssh_host_key[0][0]: expected one of rsa, dsa"),
    ({"ssh_host_key": [["RSA", *TRIPLE[1:]]]}, "$.ssh_host_key[0][0]: expected one of"),
    ({"ssh_host_key": [TRIPLE, TRIPLE]}, "$.ssh_host_key[1][0]: a second rsa key"),
    ({"ssh_host_key": [["rsa", "", TRIPLE[2]]]}, "$.ssh_host_key[0][1]: empty string"),
    ({"ssh_host_key": [["rsa", True, TRIPLE[2]]]}, "$.ssh_host_key[0][1]: expected string"),
    ({"ssh_host_key": [[*TRIPLE[:2], "a\nb"]]}, "$.ssh_host_key[0][2]: line break or NUL"),
    ({"ssh_host_key": [[*TRIPLE[:2], None]]}, "$.ssh_host_key[0][2]: expected string, got null"),
    ({"ssh_root_key": "rsa"}, "$.ssh_root_key: expected array, got string"),
    ({"ssh_root_key": [TRIPLE, ["ed25519", PRIVATE_KEY, 1]]}, "$.ssh_root_key[1][2]: expected"),
    ({"authorized_keys": []}, "$.authorized_keys: expected object, got array"),
    ({"authorized_keys": {"n": "ssh-rsa A"}}, "$.authorized_keys.n: expected array, got string"),
    ({"authorized_keys": {"n": [1]}}, "$.authorized_keys.n[0]: expected string, got number"),
    ({"authorized_keys": {"n": [""]}}, "$.authorized_keys.n[0]: empty string"),
    ({"authorized_keys": {"n": ["a", "a\nb"]}}, "$.authorized_keys.n[1]: line break or NUL"),
    ({"authorized_keys": {"n": ["a\rb"]}}, "$.authorized_keys.n[0]: line break or NUL"),
    ({"authorized_keys": {"n": ["a\0b"]}}, "$.authorized_keys.n[0]: line break or NUL"),
    ({"authorized_keys": {"n": ["a\n\n"]}}, "$.authorized_keys.n[0]: line break or NUL"),
    ({"authorized_keys": {"": []}}, '$.authorized_keys[""]: empty name'),
    ({"ssh_key_type": "dss"}, "$.ssh_key_type: expected one of rsa, dsa, ecdsa, ed25519"),
    ({"ssh_key_type": 1}, "$.ssh_key_type: expected string, got number"),
    ({"ssh_key_type": "rsa", "ssh_key_bits": "2048"}, "$.ssh_key_bits: expected integer, got"),
    ({"ssh_key_type": "rsa", "ssh_key_bits": 2048.0}, "$.ssh_key_bits: expected integer, got"),
    ({"ssh_key_type": "rsa", "ssh_key_bits": 0}, "$.ssh_key_bits: expected a key size from 1"),
    ({"ssh_key_type": "rsa", "ssh_key_bits": -5}, "$.ssh_key_bits: expected a key size from 1"),
    ({"ssh_key_type": "rsa", "ssh_key_bits": 10**400}, "$.ssh_key_bits: expected a key size"),
    ({"ssh_key_type": "rsa", "ssh_key_bits": 512}, "$.ssh_key_bits: a rsa key must have at"),
    ({"ssh_key_type": "dsa", "ssh_key_bits": 2048}, "$.ssh_key_bits: a dsa key must have 1024"),
    ({"ssh_key_type": "ecdsa", "ssh_key_bits": 255}, "$.ssh_key_bits: a ecdsa key must have"),
    ({"ssh_key_bits": 2048}, "$.ssh_key_bits: given without $.ssh_key_type"),
    ({"ssconf": {}}, "$.ssconf: unknown key"),
    ({"start_node_daemon": True}, "$.start_node_daemon: unknown key"),
    (b'{"cluster_name": "a", "authorized_keys": {"n": [], "n": []}}', "$.authorized_keys.n: dup"),
    (b"[]", "$: expected object, got array"),
    (b"", "$: empty document"),
]


@pytest.mark.parametrize(
    ("change", "message"),
    [pytest.param(change, message, id=message[:60]) for change, message in SSH_CASES],
)
def test_ssh_setup_refuses(change: dict[str, object] | bytes, message: str) -> None:
    """Each invalid ssh-setup document is invalid input, reported at its exact JSON path."""
    raw = change if isinstance(change, bytes) else changed(ssh_document(), change)
    error = refusal(decode_ssh_setup, raw)
    assert any(problem.startswith(message) for problem in error.problems), error.problems


def test_ganeti_document_is_accepted() -> None:
    """The document Ganeti's master sends decodes to exactly its values."""
    document = ganeti_document()
    setup = decode_node_daemon_setup(encode(document))
    assert setup == NodeDaemonSetup(
        cluster_name="cluster.example.com",
        node_daemon_certificate=CERTIFICATE,
        ssconf=cast(dict[str, str], document["ssconf"]),
        start_node_daemon=True,
        hmac_key=HMAC_KEY,
        node_name="node4.example.com",
    )
    assert isinstance(setup.ssconf, types.MappingProxyType)


def test_older_ganeti_document_is_accepted() -> None:
    """Without hmac_key, node_name and start_node_daemon, the defaults apply."""
    raw = changed(
        ganeti_document(), {"hmac_key": DELETE, "node_name": DELETE, "start_node_daemon": DELETE}
    )
    setup = decode_node_daemon_setup(raw)
    assert (setup.hmac_key, setup.node_name, setup.start_node_daemon) == (None, None, False)


@pytest.mark.parametrize(
    "value",
    [
        "a" * (MAX_SSCONF_VALUE_BYTES - 1),
        "a" * (MAX_SSCONF_VALUE_BYTES - 1) + "\n",
        "é" * (MAX_SSCONF_VALUE_BYTES // 2 - 1) + "a",
    ],
)
def test_ssconf_file_of_exactly_the_limit_is_accepted(value: str) -> None:
    """A value whose file (newline included) is 128 KiB of UTF-8 is allowed, ASCII or not."""
    assert len(ssconf_content(value)) == MAX_SSCONF_VALUE_BYTES
    raw = changed(ganeti_document(), with_ssconf(node_list=value))
    assert decode_node_daemon_setup(raw).ssconf["node_list"] == value


def test_all_problems_are_reported_at_once() -> None:
    """One error lists every problem of the document, in one pass."""
    raw = changed(
        ganeti_document(),
        {"cluster_name": 1, "color": "red", "start_node_daemon": "yes"}
        | with_ssconf(master_ip=2, **{"../x": "y"}),
    )
    error = refusal(decode_node_daemon_setup, raw)
    assert sorted(error.problems) == sorted(
        [
            "$.color: unknown key",
            "$.cluster_name: expected string, got number",
            "$.ssconf.master_ip: expected string, got number",
            '$.ssconf["../x"]: unknown ssconf key',
            "$.start_node_daemon: expected boolean, got string",
        ]
    )


def test_problem_flood_is_capped() -> None:
    """A document with many thousands of bad keys gives a bounded message, saying how many."""
    ssconf = {f"bad{index}": "" for index in range(5000)}
    error = refusal(decode_node_daemon_setup, changed(ganeti_document(), {"ssconf": ssconf}))
    assert len(error.problems) == 101
    assert error.problems[-1] == "$: 4900 more problems not shown"


def test_ssh_document_is_accepted() -> None:
    """A complete ssh-setup document decodes to its values; absent parts are empty."""
    setup = decode_ssh_setup(encode(ssh_document()))
    assert [triple.type for triple in setup.ssh_host_key] == list(SSH_KEY_TYPES)
    assert setup.ssh_root_key[0].private == PRIVATE_KEY
    assert setup.authorized_keys["node1-uuid"][1] == "ssh-ed25519 AAAA2 x\n"
    minimal = decode_ssh_setup(b'{"cluster_name": "c"}')
    assert minimal == SshSetup("c", None, (), (), {})
    ganeti_30 = decode_ssh_setup(
        encode({**ssh_document(), "ssh_key_type": "rsa", "ssh_key_bits": 2048})
    )
    assert (ganeti_30.ssh_key_type, ganeti_30.ssh_key_bits) == ("rsa", 2048)
    ed25519 = decode_ssh_setup(b'{"cluster_name": "c", "ssh_key_type": "ed25519"}')
    assert (ed25519.ssh_key_type, ed25519.ssh_key_bits) == ("ed25519", None)


def test_repr_never_shows_secrets() -> None:
    """repr of a decoded document leaves out the certificate, HMAC and private keys."""
    node = decode_node_daemon_setup(encode(ganeti_document()))
    ssh_raw = changed(ssh_document(), {"node_daemon_certificate": CERTIFICATE})
    for text in (repr(node), str(node), repr(decode_ssh_setup(ssh_raw))):
        assert SECRET not in text
        assert "redacted" in text
    assert "cluster.example.com" in repr(node)


class CountingStream(io.RawIOBase):
    """``size`` bytes of input, in short reads, that fail if read past ``allowed`` bytes."""

    def __init__(self, size: int, allowed: int) -> None:
        self.size, self.allowed, self.delivered = size, allowed, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.delivered >= self.allowed:
            raise AssertionError(f"read past {self.allowed} bytes")
        count = min(len(buffer), self.size - self.delivered, 65536)
        buffer[:count] = b"x" * count
        self.delivered += count
        return count


def test_oversized_input_is_refused_without_reading_it_all() -> None:
    """17 MiB on stdin is refused after reading 16 MiB + 1 byte, never more."""
    stream = CountingStream(17 * 1024 * 1024, allowed=MAX_DOCUMENT_BYTES + 1)
    with pytest.raises(InvalidInput, match=r"^.*\$: document larger than 16 MiB"):
        read_document(cast(BinaryIO, stream))
    assert stream.delivered == MAX_DOCUMENT_BYTES + 1
    buffered = io.BytesIO(b"{" * (17 * 1024 * 1024))
    with pytest.raises(InvalidInput, match=r"\$: document larger than 16 MiB"):
        read_document(buffered)
    assert buffered.tell() == MAX_DOCUMENT_BYTES + 1


def test_input_up_to_the_limit_is_read_whole() -> None:
    """A document of exactly ``limit`` bytes, arriving in short reads, is read completely."""
    stream = CountingStream(200_000, allowed=200_001)
    assert read_document(cast(BinaryIO, stream), limit=200_000) == b"x" * 200_000
    assert read_document(io.BytesIO(b"{}"), limit=2) == b"{}"
    with pytest.raises(InvalidInput, match="larger than 2 bytes"):
        read_document(io.BytesIO(b"{} "), limit=2)


def test_oversized_bytes_are_refused_by_the_decoder() -> None:
    """Bytes handed straight to a decoder obey the same 16 MiB limit."""
    raw = b" " * MAX_DOCUMENT_BYTES + b"{}"
    for decode in (decode_node_daemon_setup, decode_ssh_setup):
        assert "$: document larger than 16 MiB" in str(refusal(decode, raw))


# Property tests. JSON leaves include NaN and Infinity (json.dumps writes them),
# numbers of every size, and strings; keys are often the ones the decoders know.
KNOWN_KEYS = sorted(
    SSCONF_KEYS
    | {"cluster_name", "node_daemon_certificate", "ssconf", "start_node_daemon"}
    | {"hmac_key", "node_name", "ssh_host_key", "ssh_root_key", "authorized_keys"}
)
keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=8)


def json_values(leaves: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Arbitrary JSON over ``leaves``, objects keyed mostly by names the decoders know."""
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=6)
        ),
        max_leaves=30,
    )


any_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
decoders = st.sampled_from([decode_node_daemon_setup, decode_ssh_setup])


def outcome(decode: Decoder, raw: bytes) -> InvalidInput | None:
    """The InvalidInput a decoder raises for ``raw``, or None when it accepts it."""
    try:
        decode(raw)
    except InvalidInput as error:
        return error
    return None


words = st.text(min_size=1, max_size=20)
key_lines = st.text(
    st.characters(codec="utf-8", exclude_characters="\n\r\0"), min_size=1, max_size=20
)
node_daemon_documents = st.fixed_dictionaries(
    {
        "cluster_name": words,
        "node_daemon_certificate": words,
        "ssconf": st.dictionaries(st.sampled_from(sorted(SSCONF_KEYS)), st.text(), min_size=1),
    },
    optional={"start_node_daemon": st.booleans(), "hmac_key": words, "node_name": words},
)
triples = st.lists(
    st.tuples(st.sampled_from(SSH_KEY_TYPES), words, key_lines), unique_by=lambda t: t[0]
)
ssh_documents = st.fixed_dictionaries(
    {"cluster_name": words},
    optional={
        "node_daemon_certificate": words,
        "ssh_host_key": triples,
        "ssh_root_key": triples,
        "authorized_keys": st.dictionaries(words, st.lists(key_lines, max_size=3), max_size=3),
    },
)


@st.composite
def spoiled_documents(draw: st.DrawFn, leaves: st.SearchStrategy[object]) -> object:
    """A valid document with one arbitrary value put at the top level or into ssconf."""
    document = dict(draw(node_daemon_documents | ssh_documents))
    key, value = draw(keys), draw(json_values(leaves))
    ssconf = document.get("ssconf")
    if isinstance(ssconf, dict) and draw(st.booleans()):
        document["ssconf"] = ssconf | {key: value}
    else:
        document[key] = value
    return document


@settings(deadline=None)
@given(raw=st.binary(max_size=300), decode=decoders)
def test_arbitrary_bytes_give_a_result_or_invalid_input(raw: bytes, decode: Decoder) -> None:
    """No byte string makes a decoder fail with anything but InvalidInput."""
    error = outcome(decode, raw)
    assert error is None or all(problem.startswith("$") for problem in error.problems)


@settings(deadline=None)
@given(value=json_values(any_leaf) | spoiled_documents(any_leaf), decode=decoders)
def test_arbitrary_json_gives_a_result_or_invalid_input(value: object, decode: Decoder) -> None:
    """No JSON value makes a decoder fail with anything but InvalidInput."""
    error = outcome(decode, json.dumps(value).encode())
    assert error is None or all(problem.startswith("$") for problem in error.problems)


secret_leaf = st.just(SECRET) | st.integers() | st.booleans()


@settings(deadline=None)
@given(value=json_values(secret_leaf) | spoiled_documents(secret_leaf), decode=decoders)
def test_messages_never_repeat_a_value(value: object, decode: Decoder) -> None:
    """Whatever the shape, a string value never appears in an error message."""
    assert SECRET not in str(outcome(decode, json.dumps(value).encode()))


@settings(deadline=None)
@given(document=node_daemon_documents, ascii_only=st.booleans())
def test_valid_node_daemon_documents_round_trip(
    document: dict[str, object], ascii_only: bool
) -> None:
    """Every valid generated document decodes to exactly the values it holds."""
    setup = decode_node_daemon_setup(json.dumps(document, ensure_ascii=ascii_only).encode())
    defaults: dict[str, object] = {"start_node_daemon": False, "hmac_key": None, "node_name": None}
    assert setup == NodeDaemonSetup(**cast(dict[str, Any], defaults | document))


@settings(deadline=None)
@given(document=ssh_documents)
def test_valid_ssh_documents_round_trip(document: dict[str, object]) -> None:
    """Every valid generated ssh-setup document decodes to exactly the values it holds."""
    setup = decode_ssh_setup(encode(document))
    assert setup.cluster_name == document["cluster_name"]
    assert setup.node_daemon_certificate == document.get("node_daemon_certificate")
    for name in ("ssh_host_key", "ssh_root_key"):
        got = [(t.type, t.private, t.public) for t in getattr(setup, name)]
        assert got == document.get(name, [])
    expected = cast(dict[str, list[str]], document.get("authorized_keys", {}))
    assert setup.authorized_keys == {name: tuple(lines) for name, lines in expected.items()}
