"""Strict JSON for documents that carry secrets: read, parse, check at a JSON path.

Reading is bounded (a hostile stdin costs bounded memory and time); parsing
refuses what RFC 8259 refuses and Python's json allows; the checks report a
problem at its JSON path and go on, returning a stand-in of the right type,
so that one pass finds every problem of a document. Messages name types and
sizes, never values: a document carries private keys, and error messages end
up in logs.

Standard library only: this module is on the node's start-up path.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, BinaryIO, Final, NoReturn, TypeVar

from txsetup.errors import InvalidInput

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "Check",
    "Integer",
    "JsonObject",
    "array",
    "boolean",
    "json_object",
    "json_path",
    "optional",
    "raise_if_any",
    "read_document",
    "required",
    "size_text",
    "string",
    "top_object",
    "utf8_size",
    "wrong_type",
]

MAX_DOCUMENT_BYTES: Final = 16 * 1024 * 1024

_BYTE_ORDER_MARK: Final = "$: starts with a byte order mark (U+FEFF); send plain UTF-8 without it"
_PLAIN_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_SHOWN_KEY_CHARS: Final = 40
_SHOWN_PROBLEMS: Final = 100
_T = TypeVar("_T")
_D = TypeVar("_D")


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
        raise InvalidInput.at([f"$: document larger than {size_text(limit)}, not read further"])
    return b"".join(chunks)


# Parsing. Numbers are never converted while parsing (converting a huge one
# is slow): an integer is kept as its digits, anything else as _NUMBER. A
# missing key is _ABSENT, as None is JSON null.
_ABSENT: Final = object()
_NUMBER: Final = object()


class Integer:
    """A JSON integer, still as its text; only a check that wants a number converts it."""

    __slots__ = ("digits",)

    def __init__(self, digits: str) -> None:
        self.digits = digits


class JsonObject(dict[str, object]):
    """A JSON object that remembers which of its keys appeared more than once."""

    duplicates: tuple[str, ...] = ()


def _object_from_pairs(pairs: list[tuple[str, object]]) -> JsonObject:
    found = JsonObject(pairs)
    if len(found) != len(pairs):
        counts = Counter(key for key, _ in pairs)
        found.duplicates = tuple(key for key, count in counts.items() if count > 1)
    return found


def _refuse_constant(name: str) -> NoReturn:
    raise InvalidInput.at([f"$: not JSON: {name} is not a JSON value"])


def _parse(raw: bytes) -> object:
    """Bytes to JSON values, refusing what RFC 8259 refuses and Python's json allows."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise InvalidInput.at([f"$: document larger than {size_text(MAX_DOCUMENT_BYTES)}"])
    if not raw.strip():
        raise InvalidInput.at(["$: empty document, expected a JSON object"])
    try:
        return json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_object_from_pairs,
            parse_constant=_refuse_constant,
            parse_int=Integer,
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


def top_object(raw: bytes, shape: type[DataclassInstance], problems: list[str]) -> JsonObject:
    """The top-level object; its keys are the field names of ``shape``, no others.

    Raises:
        InvalidInput: the document is no JSON object at all (nothing more to check).
    """
    top = _parse(raw)
    if not isinstance(top, JsonObject):
        raise InvalidInput.at([wrong_type("$", "object", top)])
    known = {field.name for field in fields(shape)}
    _report_duplicates(top, "$", problems)
    problems.extend(f"{json_path('$', key)}: unknown key" for key in top if key not in known)
    return top


def raise_if_any(problems: list[str]) -> None:
    """Report every problem, but not millions: a hostile document must not flood logs."""
    if len(problems) > _SHOWN_PROBLEMS:
        more = len(problems) - _SHOWN_PROBLEMS
        words = "problem" if more == 1 else "problems"
        problems = [*problems[:_SHOWN_PROBLEMS], f"$: {more} more {words} not shown"]
    if problems:
        raise InvalidInput.at(problems)


# Checks. Each reports problems at its path and goes on, returning a
# stand-in of the right type, so that one pass finds every problem.
Check = Callable[[object, str, list[str]], _T]


def required(top: Mapping[str, object], key: str, check: Check[_T], problems: list[str]) -> _T:
    """The value of a key the document must have; a missing one is reported."""
    return check(top.get(key, _ABSENT), json_path("$", key), problems)


def optional(
    top: Mapping[str, object], key: str, check: Check[_T], default: _D, problems: list[str]
) -> _T | _D:
    """An absent key is ``default``; JSON null is not absent, it is the wrong type."""
    return check(top[key], json_path("$", key), problems) if key in top else default


def string(value: object, path: str, problems: list[str], *, empty_ok: bool = False) -> str:
    """A string writable as UTF-8, non-empty unless ``empty_ok``."""
    if not isinstance(value, str):
        problems.append(wrong_type(path, "string", value))
        return ""
    if not value and not empty_ok:
        problems.append(f"{path}: empty string, expected a non-empty one")
    elif utf8_size(value) is None:
        problems.append(f"{path}: not writable as UTF-8 (lone surrogate escape)")
    return value


def boolean(value: object, path: str, problems: list[str]) -> bool:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        problems.append(wrong_type(path, "boolean", value))
        return False
    return value


def json_object(value: object, path: str, problems: list[str]) -> JsonObject:
    """An object, its duplicate keys reported."""
    if not isinstance(value, JsonObject):
        problems.append(wrong_type(path, "object", value))
        return JsonObject()
    _report_duplicates(value, path, problems)
    return value


def array(value: object, path: str, problems: list[str]) -> list[object]:
    """An array, items unchecked."""
    if not isinstance(value, list):
        problems.append(wrong_type(path, "array", value))
        return []
    return value


def _report_duplicates(found: JsonObject, path: str, problems: list[str]) -> None:
    problems.extend(f"{json_path(path, key)}: duplicate key" for key in found.duplicates)


# Messages: paths, types and sizes, never values.


def json_path(path: str, key: str) -> str:
    """``$.a`` for a plain key, else ``$["../x"]``: escaped, and cut short when long."""
    if len(key) <= _SHOWN_KEY_CHARS and _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}"
    if len(key) <= _SHOWN_KEY_CHARS:
        return f"{path}[{json.dumps(key)}]"
    return f"{path}[{json.dumps(key[:_SHOWN_KEY_CHARS])}...({len(key)} characters)]"


def wrong_type(path: str, expected: str, value: object) -> str:
    """The message for a value of another JSON type than ``expected``, or a missing one."""
    if value is _ABSENT:
        return f"{path}: missing, expected {expected}"
    return f"{path}: expected {expected}, got {_json_type(value)}"


def _json_type(value: object) -> str:
    if value is _NUMBER or isinstance(value, Integer):
        return "number"
    kinds = ((dict, "object"), (list, "array"), (str, "string"), (bool, "boolean"))
    return next((kind for cls, kind in kinds if isinstance(value, cls)), "null")


def utf8_size(text: str) -> int | None:
    """Size in UTF-8 bytes; None when a lone surrogate makes the text unwritable."""
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def size_text(limit: int) -> str:
    """A byte count for a message: ``16 MiB``, ``128 KiB`` or ``N bytes``."""
    for unit, factor in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit % factor == 0:
            return f"{limit // factor} {unit}"
    return f"{limit} bytes"
