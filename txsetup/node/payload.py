"""Decode and validate the JSON documents a master sends on stdin.

Decoding is the ``decode`` step: it only decides whether a document is
well-formed input (exit 3). Whether the node accepts it — cluster name,
certificate, keys — is verification, done elsewhere (exit 4).

Every problem of a document is collected and reported at once, each message
starting with its JSON path. Messages name types and sizes, never values: a
document carries private keys, and error messages end up in logs.

Standard library only: this module is on the node's start-up path.
"""

from __future__ import annotations

import json
import re
import types
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, BinaryIO, Final, NoReturn, TypeVar

from txsetup.errors import InvalidInput
from txsetup.node.files import ssconf_content

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_SSCONF_VALUE_BYTES",
    "MAX_SSH_KEY_BITS",
    "SSCONF_KEYS",
    "SSH_KEY_TYPES",
    "NodeDaemonSetup",
    "SshKeyTriple",
    "SshSetup",
    "decode_node_daemon_setup",
    "decode_ssh_setup",
    "json_path",
    "read_document",
]

MAX_DOCUMENT_BYTES: Final = 16 * 1024 * 1024
MAX_SSCONF_VALUE_BYTES: Final = 128 * 1024  # the file's UTF-8 bytes, added newline included
# fmt: off
SSCONF_KEYS: Final[frozenset[str]] = frozenset({
    "cluster_name", "cluster_tags", "file_storage_dir", "shared_file_storage_dir",
    "gluster_storage_dir", "master_candidates", "master_candidates_ips",
    "master_candidates_certs", "master_ip", "master_netdev", "master_netmask", "master_node",
    "node_list", "node_primary_ips", "node_secondary_ips", "node_vm_capable", "offline_nodes",
    "online_nodes", "primary_ip_family", "instance_list", "release_version", "hypervisor_list",
    "maintain_node_health", "uid_pool", "nodegroups", "networks", "enabled_user_shutdown",
    "ssh_ports", "hvparams_chroot", "hvparams_lxc", "hvparams_fake", "hvparams_xen-hvm",
    "hvparams_kvm", "hvparams_xen-pvm",
})
# fmt: on
SSH_KEY_TYPES: Final = ("rsa", "dsa", "ecdsa", "ed25519")
MAX_SSH_KEY_BITS: Final = 16384
MIN_RSA_KEY_BITS: Final = 1024

_BYTE_ORDER_MARK: Final = "$: starts with a byte order mark (U+FEFF); send plain UTF-8 without it"
_PLAIN_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_SHOWN_KEY_CHARS: Final = 40
_SHOWN_PROBLEMS: Final = 100
_T = TypeVar("_T")
_D = TypeVar("_D")


@dataclass(frozen=True, repr=False)
class NodeDaemonSetup:
    """A valid ``node-daemon-setup`` document; ``ssconf`` is read-only."""

    cluster_name: str
    node_daemon_certificate: str  # secret: PEM with the private key
    ssconf: Mapping[str, str]
    start_node_daemon: bool = False
    hmac_key: str | None = None  # secret
    node_name: str | None = None

    def __repr__(self) -> str:
        """Leaves out the certificate and the HMAC key: a repr may reach a log."""
        return _safe_repr(self, secrets={"node_daemon_certificate", "hmac_key"})


@dataclass(frozen=True, repr=False)
class SshKeyTriple:
    """One SSH key pair, as the document's ``[type, private, public]``."""

    type: str
    private: str  # secret
    public: str

    def __repr__(self) -> str:
        """Leaves out the private key: a repr may reach a log."""
        return _safe_repr(self, secrets={"private"})


@dataclass(frozen=True, repr=False)
class SshSetup:
    """A valid ``ssh-setup`` document; absent lists and objects are empty."""

    cluster_name: str
    node_daemon_certificate: str | None
    ssh_host_key: tuple[SshKeyTriple, ...]
    ssh_root_key: tuple[SshKeyTriple, ...]
    authorized_keys: Mapping[str, tuple[str, ...]]
    ssh_key_type: str | None = None  # Ganeti 3.0: root's key pair is made on the node
    ssh_key_bits: int | None = None

    def __repr__(self) -> str:
        """Leaves out the certificate too: until verified it may still carry a private key."""
        return _safe_repr(self, secrets={"node_daemon_certificate"})


def read_document(stream: BinaryIO, *, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """Read the whole document, refusing one of more than ``limit`` bytes.

    At most ``limit + 1`` bytes are ever read, so an endless or hostile stdin
    costs bounded memory and time. Short reads (pipes, raw streams) are retried.

    Raises:
        InvalidInput: the stream holds more than ``limit`` bytes, or reading it
            failed (a dropped connection is no document).
    """
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        try:
            chunk = stream.read(limit + 1 - size)
        except (OSError, ValueError) as err:  # a dropped connection, a closed descriptor
            raise InvalidInput.at([f"$: stdin could not be read ({err})"]) from err
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise InvalidInput.at([f"$: document larger than {_size(limit)}, not read further"])
    return b"".join(chunks)


def decode_node_daemon_setup(raw: bytes) -> NodeDaemonSetup:
    """Decode a ``node-daemon-setup`` document, or report all of its problems at once.

    Raises:
        InvalidInput: one error listing every problem, each starting with its JSON path.
    """
    problems: list[str] = []
    top = _document(raw, NodeDaemonSetup, problems)
    setup = NodeDaemonSetup(
        cluster_name=_required(top, "cluster_name", _string, problems),
        node_daemon_certificate=_required(top, "node_daemon_certificate", _string, problems),
        ssconf=_required(top, "ssconf", _ssconf, problems),
        start_node_daemon=_optional(top, "start_node_daemon", _boolean, False, problems),
        hmac_key=_optional(top, "hmac_key", _string, None, problems),
        node_name=_optional(top, "node_name", _string, None, problems),
    )
    _raise_if_any(problems)
    return setup


def decode_ssh_setup(raw: bytes) -> SshSetup:
    """Decode an ``ssh-setup`` document: shapes and types only; keys are parsed by checks.

    Raises:
        InvalidInput: one error listing every problem, each starting with its JSON path.
    """
    problems: list[str] = []
    top = _document(raw, SshSetup, problems)
    setup = SshSetup(
        cluster_name=_required(top, "cluster_name", _string, problems),
        node_daemon_certificate=_optional(top, "node_daemon_certificate", _string, None, problems),
        ssh_host_key=_optional(top, "ssh_host_key", _key_triples, (), problems),
        ssh_root_key=_optional(top, "ssh_root_key", _key_triples, (), problems),
        authorized_keys=_optional(
            top, "authorized_keys", _authorized_keys, types.MappingProxyType({}), problems
        ),
        ssh_key_type=_optional(top, "ssh_key_type", _key_type, None, problems),
        ssh_key_bits=_optional(top, "ssh_key_bits", _key_bits, None, problems),
    )
    _check_key_size(setup, problems)
    _raise_if_any(problems)
    return setup


# Parsing. Numbers are never converted while parsing (converting a huge one
# is slow): an integer is kept as its digits, anything else as _NUMBER. A
# missing key is _ABSENT, as None is JSON null.
_ABSENT: Final = object()
_NUMBER: Final = object()


class _Integer:
    """A JSON integer, still as its text; only a check that wants a number converts it."""

    __slots__ = ("digits",)

    def __init__(self, digits: str) -> None:
        self.digits = digits


class _Object(dict[str, object]):
    """A JSON object that remembers which of its keys appeared more than once."""

    duplicates: tuple[str, ...] = ()


def _object_from_pairs(pairs: list[tuple[str, object]]) -> _Object:
    found = _Object(pairs)
    if len(found) != len(pairs):
        counts = Counter(key for key, _ in pairs)
        found.duplicates = tuple(key for key, count in counts.items() if count > 1)
    return found


def _refuse_constant(name: str) -> NoReturn:
    raise InvalidInput.at([f"$: not JSON: {name} is not a JSON value"])


def _parse(raw: bytes) -> object:
    """Bytes to JSON values, refusing what RFC 8259 refuses and Python's json allows."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise InvalidInput.at([f"$: document larger than {_size(MAX_DOCUMENT_BYTES)}"])
    if not raw.strip():
        raise InvalidInput.at(["$: empty document, expected a JSON object"])
    try:
        return json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_object_from_pairs,
            parse_constant=_refuse_constant,
            parse_int=_Integer,
            parse_float=lambda _: _NUMBER,
        )
    except UnicodeDecodeError as err:
        raise InvalidInput.at([f"$: not UTF-8 (invalid byte at offset {err.start})"]) from err
    except json.JSONDecodeError as err:
        if err.pos == 0 and raw.startswith(b"\xef\xbb\xbf"):
            raise InvalidInput.at([_BYTE_ORDER_MARK]) from err
        # Some of json's messages end in "at" already ("Invalid control character at").
        what = err.msg.removesuffix(" at")
        where = f"line {err.lineno} column {err.colno}"
        raise InvalidInput.at([f"$: not JSON: {what} at {where}"]) from err
    except RecursionError as err:
        raise InvalidInput.at(["$: arrays or objects nested too deeply"]) from err


def _document(raw: bytes, shape: type[DataclassInstance], problems: list[str]) -> _Object:
    """The top-level object; its keys are the field names of ``shape``, no others."""
    top = _parse(raw)
    if not isinstance(top, _Object):
        raise InvalidInput.at([_wrong_type("$", "object", top)])
    known = {field.name for field in fields(shape)}
    _report_duplicates(top, "$", problems)
    problems.extend(f"{_child('$', key)}: unknown key" for key in top if key not in known)
    return top


def _raise_if_any(problems: list[str]) -> None:
    """Report every problem, but not millions: a hostile document must not flood logs."""
    if len(problems) > _SHOWN_PROBLEMS:
        more = len(problems) - _SHOWN_PROBLEMS
        words = "problem" if more == 1 else "problems"
        problems = [*problems[:_SHOWN_PROBLEMS], f"$: {more} more {words} not shown"]
    if problems:
        raise InvalidInput.at(problems)


# Shared checks. Each reports problems at its path and goes on, returning a
# stand-in of the right type, so that one pass finds every problem.
_Check = Callable[[object, str, list[str]], _T]


def _required(top: Mapping[str, object], key: str, check: _Check[_T], problems: list[str]) -> _T:
    return check(top.get(key, _ABSENT), _child("$", key), problems)


def _optional(
    top: Mapping[str, object], key: str, check: _Check[_T], default: _D, problems: list[str]
) -> _T | _D:
    """An absent key is ``default``; JSON null is not absent, it is the wrong type."""
    return check(top[key], _child("$", key), problems) if key in top else default


def _string(value: object, path: str, problems: list[str], *, empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        problems.append(_wrong_type(path, "string", value))
        return ""
    if not value and not empty_ok:
        problems.append(f"{path}: empty string, expected a non-empty one")
    elif _utf8_size(value) is None:
        problems.append(f"{path}: not writable as UTF-8 (lone surrogate escape)")
    return value


def _key_type(value: object, path: str, problems: list[str]) -> str:
    if not isinstance(value, str):
        problems.append(_wrong_type(path, "string", value))
        return ""
    if value not in SSH_KEY_TYPES:
        problems.append(f"{path}: expected one of {', '.join(SSH_KEY_TYPES)}")
    return value


def _key_bits(value: object, path: str, problems: list[str]) -> int:
    """A positive integer of sane size (its digits are counted before any conversion)."""
    if not isinstance(value, _Integer):
        problems.append(_wrong_type(path, "integer", value))
        return 0
    digits = value.digits
    if len(digits) > len(str(MAX_SSH_KEY_BITS)) or not 0 < int(digits) <= MAX_SSH_KEY_BITS:
        problems.append(f"{path}: expected a key size from 1 to {MAX_SSH_KEY_BITS} bits")
        return 0
    return int(digits)


def _check_key_size(setup: SshSetup, problems: list[str]) -> None:
    """Sizes ssh-keygen accepts for the type, so the node can make the key Ganeti asks for."""
    bits, kind = setup.ssh_key_bits, setup.ssh_key_type
    if bits is not None and kind is None:
        problems.append("$.ssh_key_bits: given without $.ssh_key_type")
    if not bits or kind not in SSH_KEY_TYPES:
        return
    allowed = {
        "rsa": bits >= MIN_RSA_KEY_BITS,
        "dsa": bits == 1024,
        "ecdsa": bits in (256, 384, 521),
        "ed25519": True,  # ssh-keygen ignores -b for ed25519, as Ganeti passes it anyway
    }
    if not allowed[kind]:
        sizes = {
            "rsa": f"at least {MIN_RSA_KEY_BITS}",
            "dsa": "1024",
            "ecdsa": "256, 384 or 521",
        }
        problems.append(f"$.ssh_key_bits: a {kind} key must have {sizes[kind]} bits")


def _boolean(value: object, path: str, problems: list[str]) -> bool:
    if not isinstance(value, bool):
        problems.append(_wrong_type(path, "boolean", value))
        return False
    return value


def _object(value: object, path: str, problems: list[str]) -> _Object:
    if not isinstance(value, _Object):
        problems.append(_wrong_type(path, "object", value))
        return _Object()
    _report_duplicates(value, path, problems)
    return value


def _array(value: object, path: str, problems: list[str]) -> list[object]:
    if not isinstance(value, list):
        problems.append(_wrong_type(path, "array", value))
        return []
    return value


def _report_duplicates(found: _Object, path: str, problems: list[str]) -> None:
    problems.extend(f"{_child(path, key)}: duplicate key" for key in found.duplicates)


def _ssconf(value: object, path: str, problems: list[str]) -> Mapping[str, str]:
    """ssconf keys become file names, so only Ganeti's names are allowed."""
    found = _object(value, path, problems)
    if isinstance(value, _Object) and not found:
        problems.append(f"{path}: empty object, expected at least one ssconf key")
    values: dict[str, str] = {}
    for key, item in found.items():
        item_path = _child(path, key)
        if key not in SSCONF_KEYS:
            problems.append(f"{item_path}: unknown ssconf key")
            continue
        values[key] = _string(item, item_path, problems, empty_ok=True)
        problem = _ssconf_size_problem(values[key])
        if problem:
            problems.append(f"{item_path}: {problem}")
    return types.MappingProxyType(values)


def _ssconf_size_problem(value: str) -> str | None:
    """Cap the file a value makes, newline included, at 128 KiB of UTF-8.

    That file is what Ganeti's ``ReadSsconfFile`` refuses beyond 128 KiB (by
    its size in bytes), so a bigger one would break every ssconf read of the
    key on the node. Ganeti's writer counts characters of the value plus the
    newline, which is the same for ASCII and lets a longer UTF-8 file through.
    """
    size = _utf8_size(value)
    if size is None or size + 1 <= MAX_SSCONF_VALUE_BYTES:  # fast path; a surrogate is reported
        return None
    file_size = len(ssconf_content(value))
    if file_size <= MAX_SSCONF_VALUE_BYTES:
        return None
    limit = _size(MAX_SSCONF_VALUE_BYTES)
    if file_size > size:
        return f"value of {size} bytes, {file_size} with the newline ssconf adds, more than {limit}"
    return f"value of {size} bytes, more than {limit}"


def _key_triples(value: object, path: str, problems: list[str]) -> tuple[SshKeyTriple, ...]:
    """``[[type, private, public], ...]``, one key per type: each type is one file."""
    triples: list[SshKeyTriple] = []
    types_seen: set[str] = set()
    for index, item in enumerate(_array(value, path, problems)):
        item_path = f"{path}[{index}]"
        parts = _array(item, item_path, problems)
        if isinstance(item, list) and len(parts) != 3:
            problems.append(
                f"{item_path}: expected [type, private, public], got {len(parts)} items"
            )
        if len(parts) != 3:
            continue
        key_type = _string(parts[0], f"{item_path}[0]", problems)
        if isinstance(parts[0], str) and key_type not in SSH_KEY_TYPES:
            problems.append(f"{item_path}[0]: expected one of {', '.join(SSH_KEY_TYPES)}")
        elif key_type in types_seen:
            problems.append(f"{item_path}[0]: a second {key_type} key")
        elif key_type:
            types_seen.add(key_type)
        private = _string(parts[1], f"{item_path}[1]", problems)
        public = _key_line(parts[2], f"{item_path}[2]", problems)
        triples.append(SshKeyTriple(key_type, private, public))
    return tuple(triples)


def _authorized_keys(
    value: object, path: str, problems: list[str]
) -> Mapping[str, tuple[str, ...]]:
    """Name → public key lines, as Ganeti keeps them per node."""
    lines: dict[str, tuple[str, ...]] = {}
    for name, item in _object(value, path, problems).items():
        item_path = _child(path, name)
        if not name:
            problems.append(f"{item_path}: empty name")
        listed = enumerate(_array(item, item_path, problems))
        lines[name] = tuple(_key_line(line, f"{item_path}[{i}]", problems) for i, line in listed)
    return types.MappingProxyType(lines)


def _key_line(value: object, path: str, problems: list[str]) -> str:
    """One line: a line break inside it would add a second, unchecked key to a file."""
    line = _string(value, path, problems)
    if any(char in line.removesuffix("\n") for char in "\n\r\0"):
        problems.append(f"{path}: line break or NUL inside a key line")
    return line


# Messages: paths, types and sizes, never values.


def json_path(path: str, key: str) -> str:
    """The JSON path of ``key`` under ``path``, as every message here writes it."""
    return _child(path, key)


def _child(path: str, key: str) -> str:
    """``$.a`` for a plain key, else ``$["../x"]``: escaped, and cut short when long."""
    if len(key) <= _SHOWN_KEY_CHARS and _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}"
    if len(key) <= _SHOWN_KEY_CHARS:
        return f"{path}[{json.dumps(key)}]"
    return f"{path}[{json.dumps(key[:_SHOWN_KEY_CHARS])}...({len(key)} characters)]"


def _wrong_type(path: str, expected: str, value: object) -> str:
    if value is _ABSENT:
        return f"{path}: missing, expected {expected}"
    return f"{path}: expected {expected}, got {_json_type(value)}"


def _json_type(value: object) -> str:
    if value is _NUMBER or isinstance(value, _Integer):
        return "number"
    kinds = ((dict, "object"), (list, "array"), (str, "string"), (bool, "boolean"))
    return next((kind for cls, kind in kinds if isinstance(value, cls)), "null")


def _utf8_size(text: str) -> int | None:
    """Size in UTF-8 bytes; None when a lone surrogate makes the text unwritable."""
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def _size(limit: int) -> str:
    for unit, factor in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit % factor == 0:
            return f"{limit // factor} {unit}"
    return f"{limit} bytes"


def _safe_repr(instance: DataclassInstance, *, secrets: set[str]) -> str:
    """A dataclass repr with secrets replaced by their size and mappings by their size."""
    shown: list[str] = []
    for field in fields(instance):
        value = getattr(instance, field.name)
        if field.name in secrets and value is not None:
            value = f"<redacted, {len(value)} characters>"
        elif isinstance(value, Mapping):
            value = f"<{len(value)} entries>"
        else:
            value = repr(value)
        shown.append(f"{field.name}={value}")
    return f"{type(instance).__name__}({', '.join(shown)})"
