"""Logging set-up: structlog configured once, JSON lines or the console view on stderr.

Every line carries ``ts`` (RFC 3339, UTC), ``level``, ``event``, ``program``,
``version`` and, once a transaction has one, ``txid`` (bound with
:func:`structlog.contextvars.bind_contextvars`). A processor strips anything
that looks like key material before a renderer can see it, so a careless call
site cannot leak a private key.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from txsetup import PROGRAM, __version__
from txsetup.console import ConsoleRenderer, speaks_unicode, wants_colour

__all__ = [
    "REDACTED",
    "LogFormat",
    "configure_logging",
    "default_log_format",
    "get_logger",
    "refuse_key_material",
    "without_key_material",
]

LogFormat = Literal["json", "console"]
REDACTED = "[redacted: key material]"

# Field names whose values are secret whatever they hold.
_SECRET_FIELDS = frozenset({"node_daemon_certificate", "hmac_key", "private", "payload"})
# Text that only key material (or a whole PEM document) contains.
_KEY_MARKERS = ("-----BEGIN", "PRIVATE KEY", "OPENSSH PRIVATE")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return REDACTED if any(marker in value for marker in _KEY_MARKERS) else value
    if isinstance(value, bytes):
        return _scrub(value.decode("utf-8", "replace"))
    if isinstance(value, MutableMapping | dict):
        return {k: (REDACTED if k in _SECRET_FIELDS else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def without_key_material(text: str) -> str:
    """``text``, or the redaction marker when it holds key material (journal records use it)."""
    return str(_scrub(text))


def refuse_key_material(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Replace secret fields and any PEM or private-key text with a marker."""
    for key in list(event_dict):
        event_dict[key] = REDACTED if key in _SECRET_FIELDS else _scrub(event_dict[key])
    return event_dict


_LEADING = ("ts", "level", "event", "program", "version", "txid")


def _add_program(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Add ``program`` and ``version``; put the common keys first for people reading."""
    event_dict.setdefault("program", PROGRAM)
    event_dict.setdefault("version", __version__)
    ordered = {k: event_dict.pop(k) for k in _LEADING if k in event_dict}
    ordered.update(event_dict)
    return ordered


class _BestEffortStream:
    """A text stream whose writes never raise.

    stderr is the master's SSH channel; when that connection drops, a write
    raises (``BrokenPipeError``, ``EIO``). A log line is never worth failing
    a step or stopping an undo halfway, so the line is dropped instead, here,
    once, for every caller.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            return 0

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


def default_log_format(requested: str | None, stream: TextIO) -> LogFormat:
    """``--log-format`` as given, else console for a terminal and JSON otherwise."""
    if requested == "json" or (requested is None and not stream.isatty()):
        return "json"
    return "console"


def configure_logging(*, fmt: LogFormat, level: int = logging.INFO, stream: TextIO) -> None:
    """Configure structlog for this process; the only place logging is set up.

    Python's warnings are silenced unless asked for (``-W``, ``PYTHONWARNINGS``):
    a library's deprecation notice printed raw on stderr would break the JSON
    lines the master parses, and a new release of a library may add one at
    any time.
    """
    if not sys.warnoptions:
        warnings.simplefilter("ignore")
    renderer: Processor = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if fmt == "json"
        else ConsoleRenderer(colors=wants_colour(stream), unicode=speaks_unicode(stream))
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.add_log_level,
            _add_program,
            refuse_key_material,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _BestEffortStream(stream))),
        cache_logger_on_first_use=False,
    )


def get_logger() -> FilteringBoundLogger:
    """The process logger, as configured by :func:`configure_logging`."""
    return cast(FilteringBoundLogger, structlog.get_logger())
