"""The published payload schemas agree with the decoders.

``docs/node-daemon-setup.schema.json`` and ``docs/ssh-setup.schema.json``
are what a master can validate against before sending: every document a
decoder accepts must validate, and every document a decoder refuses for its
shape, a type, a value outside a set or an unknown key must not. A few rules
are beyond a JSON Schema (UTF-8 byte counts, lone surrogates, one key per
kind, an integer written as ``2048.0``); documents refused only for those
are left out of the second direction, by the decoder's own messages.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import make_document
from tests.sshdoc import key_pair, ssh_document
from tests.test_hostile import Material, load_cases, material, stdin_of
from tests.test_payload import (
    NODE_DAEMON_CASES,
    SSH_CASES,
    changed,
    ganeti_document,
)
from tests.test_payload import ssh_document as complete_ssh_document
from txsetup.demo.__main__ import payload as demo_payload
from txsetup.errors import InvalidInput
from txsetup.node.ganeti_fields import MAX_SSH_KEY_BITS, SSCONF_KEYS, SSH_KEY_TYPES
from txsetup.node.payload import decode_node_daemon_setup, decode_ssh_setup

__all__ = ["material"]  # the hostile corpus's fixture, used here too

DOCS = Path(__file__).resolve().parent.parent / "docs"
Decoder = Callable[[bytes], object]

# Problems a JSON Schema cannot see: the document's own size, byte sizes,
# surrogates, one key per kind, and 2048.0, which JSON Schema counts as an integer.
BEYOND_A_SCHEMA = (
    "$: document larger than",
    "not writable as UTF-8",
    "more than 128 KiB",
    "with the newline",
    ": a second ",
    "duplicate key",
    "$.ssh_key_bits: expected integer, got number",
    "more problems not shown",
)


BEYOND = "refused for a reason beyond a schema"


def schema_can_tell(problem: str) -> bool:
    """Whether a schema can see ``problem`` (a decoder's message, or its beginning)."""
    return not any(beyond in problem for beyond in BEYOND_A_SCHEMA)


def validator(name: str) -> jsonschema.protocols.Validator:
    """A validator for ``docs/<name>.schema.json``, after checking the schema itself."""
    schema = json.loads((DOCS / f"{name}.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


NODE = validator("node-daemon-setup")
SSH = validator("ssh-setup")


def strict_json(raw: bytes) -> Any | None:
    """``raw`` as JSON a schema can judge, or None (not UTF-8 JSON, NaN, duplicate keys)."""

    def pairs(found: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({key for key, _ in found}) != len(found):
            raise ValueError("duplicate key")
        return dict(found)

    def refuse(name: str) -> None:
        raise ValueError(name)

    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=pairs, parse_constant=refuse)
    except (ValueError, RecursionError):
        return None


def check_agreement(decode: Decoder, schema: jsonschema.protocols.Validator, raw: bytes) -> str:
    """Decode ``raw`` and check the schema's verdict against it; say which case it was."""
    document = strict_json(raw)
    try:
        decode(raw)
    except InvalidInput as error:
        seen = [problem for problem in error.problems if schema_can_tell(problem)]
        if document is None or not seen:
            return BEYOND
        assert not schema.is_valid(document), f"valid against the schema, refused: {seen}"
        return "refused"
    assert document is not None
    errors = [e.message for e in schema.iter_errors(document)]
    assert not errors, errors
    return "accepted"


# --- documents the decoders accept --------------------------------------------------------


def test_accepted_node_daemon_setup_documents_validate(node_pem: str) -> None:
    """The demo's payload, the tests' documents and Ganeti's own all validate."""
    documents = [
        demo_payload(node_pem),
        make_document(node_pem),
        make_document(node_pem, hmac_key="k", node_name="node9.example.com"),
        make_document(node_pem, ssconf={"cluster_tags": "", "node_list": "é" * 65_535}),
        ganeti_document(),
        {**ganeti_document(), "ssconf": {"cluster_name": "cluster.example.com"}},
    ]
    for document in documents:
        raw = json.dumps(document).encode()
        assert check_agreement(decode_node_daemon_setup, NODE, raw) == "accepted"


def test_accepted_ssh_setup_documents_validate() -> None:
    """Ganeti 3.0's and 2.x's documents, minimal and complete ones, all validate."""
    documents = [
        ssh_document(),
        ssh_document(key_type=None, root_keys=[key_pair("rsa", "root")]),
        ssh_document(key_type="ecdsa", key_bits=384),
        {k: v for k, v in ssh_document().items() if k != "ssh_key_bits"},
        ssh_document(authorized={"n": ["ssh-ed25519 AAAA x\n", "\n"]}),
        complete_ssh_document(),
        {"cluster_name": "c"},
    ]
    for document in documents:
        raw = json.dumps(document).encode()
        assert check_agreement(decode_ssh_setup, SSH, raw) == "accepted"


# --- documents the decoders refuse --------------------------------------------------------


def _raw(change: Mapping[str, object] | bytes, base: dict[str, object]) -> bytes:
    return change if isinstance(change, bytes) else changed(base, dict(change))


@pytest.mark.parametrize(
    ("change", "message"),
    [pytest.param(c, m, id=m[:60]) for c, m in NODE_DAEMON_CASES if not isinstance(c, bytes)],
)
def test_refused_node_daemon_setup_documents_are_invalid(
    change: Mapping[str, object], message: str
) -> None:
    """Each document the decoder refuses for its shape or types is invalid against the schema."""
    verdict = check_agreement(decode_node_daemon_setup, NODE, _raw(change, ganeti_document()))
    assert verdict == "refused" or not schema_can_tell(message), message


@pytest.mark.parametrize(
    ("change", "message"),
    [pytest.param(c, m, id=m[:60]) for c, m in SSH_CASES if not isinstance(c, bytes)],
)
def test_refused_ssh_setup_documents_are_invalid(
    change: Mapping[str, object], message: str
) -> None:
    """Each ssh-setup document refused for its shape, types or sizes is invalid too."""
    verdict = check_agreement(decode_ssh_setup, SSH, _raw(change, complete_ssh_document()))
    assert verdict != "accepted", message


def test_hostile_corpus_agrees_with_the_schema(material: Material) -> None:
    """Every hostile case: accepted ones validate, ones refused for their shape do not."""
    verdicts: dict[str, list[str]] = {}
    for param in load_cases():
        case = param.values[0]
        raw = stdin_of(case, material)
        verdict = check_agreement(decode_node_daemon_setup, NODE, raw)
        verdicts.setdefault(verdict, []).append(param.id)
        if case["expect"]["exit"] == 3 and verdict == "accepted":
            pytest.fail(f"{param.id}: expected exit 3, but the decoder accepts it")
    # The corpus exercises both directions, or this test would prove little.
    assert verdicts.get("accepted"), verdicts
    assert verdicts.get("refused"), verdicts


# --- generated documents ------------------------------------------------------------------

text = st.text(st.characters(codec="utf-8"), max_size=20)
non_empty = text.filter(bool)
key_line = st.text(st.characters(codec="utf-8", exclude_characters="\n\r\0"))
public_line = st.tuples(key_line, st.sampled_from(["", "\n"])).map("".join).filter(bool)


@st.composite
def node_documents(draw: st.DrawFn) -> dict[str, Any]:
    """Documents the node-daemon-setup decoder accepts: every optional key maybe there."""
    keys = draw(st.sets(st.sampled_from(sorted(SSCONF_KEYS)), min_size=1, max_size=5))
    document: dict[str, Any] = {
        "cluster_name": draw(non_empty),
        "node_daemon_certificate": draw(non_empty),
        "ssconf": {key: draw(text) for key in sorted(keys)},
    }
    optional = {"start_node_daemon": st.booleans(), "hmac_key": non_empty, "node_name": non_empty}
    for key, values in optional.items():
        if draw(st.booleans()):
            document[key] = draw(values)
    return document


BITS = {
    "rsa": st.integers(1024, MAX_SSH_KEY_BITS),
    "dsa": st.just(1024),
    "ecdsa": st.sampled_from([256, 384, 521]),
    "ed25519": st.integers(1, MAX_SSH_KEY_BITS),
}


@st.composite
def ssh_documents(draw: st.DrawFn) -> dict[str, Any]:
    """Documents the ssh-setup decoder accepts: one key per kind in each list."""

    def triples() -> list[list[str]]:
        kinds = draw(st.lists(st.sampled_from(SSH_KEY_TYPES), unique=True, max_size=4))
        return [[kind, draw(non_empty), draw(public_line)] for kind in kinds]

    document: dict[str, Any] = {"cluster_name": draw(non_empty)}
    optional: dict[str, Callable[[], object]] = {
        "node_daemon_certificate": lambda: draw(non_empty),
        "ssh_host_key": triples,
        "ssh_root_key": triples,
        "authorized_keys": lambda: draw(
            st.dictionaries(non_empty, st.lists(public_line, max_size=3), max_size=3)
        ),
    }
    for key, make in optional.items():
        if draw(st.booleans()):
            document[key] = make()
    if draw(st.booleans()):
        kind = draw(st.sampled_from(SSH_KEY_TYPES))
        document["ssh_key_type"] = kind
        if draw(st.booleans()):
            document["ssh_key_bits"] = draw(BITS[kind])
    return document


@settings(max_examples=150, deadline=None)
@given(node_documents())
def test_generated_node_daemon_setup_documents_validate(document: dict[str, Any]) -> None:
    """A document built to be valid is accepted by the decoder and valid against the schema."""
    raw = json.dumps(document, ensure_ascii=False).encode()
    assert check_agreement(decode_node_daemon_setup, NODE, raw) == "accepted"


@settings(max_examples=150, deadline=None)
@given(ssh_documents())
def test_generated_ssh_setup_documents_validate(document: dict[str, Any]) -> None:
    """The same for ssh-setup."""
    raw = json.dumps(document, ensure_ascii=False).encode()
    assert check_agreement(decode_ssh_setup, SSH, raw) == "accepted"


def _descriptions(node: object) -> list[str]:
    """Every ``description`` string anywhere in a schema."""
    if isinstance(node, dict):
        own = [node["description"]] if isinstance(node.get("description"), str) else []
        return own + [text for value in node.values() for text in _descriptions(value)]
    if isinstance(node, list):
        return [text for value in node for text in _descriptions(value)]
    return []


@pytest.mark.parametrize(
    "name", ["node-daemon-setup.schema.json", "ssh-setup.schema.json", "log-events.schema.json"]
)
def test_descriptions_are_plain_text(name: str) -> None:
    """The reference tables show descriptions as text with inline code: no Markdown emphasis."""
    texts = _descriptions(json.loads((DOCS / name).read_text(encoding="utf-8")))
    assert texts
    marked = [text for text in texts if "**" in text or "__" in text]
    assert marked == []
