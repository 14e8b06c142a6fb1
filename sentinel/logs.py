"""Structured logging: structlog, JSON lines on stderr, secrets scrubbed.

Events are stable snake_case names with key-value context
(``log.info("alert_sent", sink="slack", alert_id=...)``); the hot path does not
log per event. A last processor runs every string value through
:func:`sentinel.redact.redact_text`, so a credential that slipped into a
message is fingerprinted, not printed.

Libraries that log through the standard library (kafka-python, urllib3) come
out as JSON lines too, scrubbed the same way, with their logger's name. Both
kinds of line are written whole, under one lock: a line from a sink thread
cannot land inside a line from the main thread, so the log stays one JSON
object per line for whatever ingests it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import IO, Any

import structlog

from sentinel.redact import redact_text


def _scrub(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k, v in event_dict.items():
        if isinstance(v, str):
            event_dict[k] = redact_text(v)
    return event_dict


class _ForeignJson(logging.Formatter):
    """A standard-library record as one scrubbed JSON line, keys as structlog writes them."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "event": redact_text(record.getMessage()),
            "logger": record.name,
            "level": record.levelname.lower(),
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
        }
        if record.exc_info:
            doc["exception"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(doc, default=str)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler both kinds of line go through: to ``target``, or to whatever ``sys.stderr``
    is when a line is written (tests and embedders swap it)."""

    def __init__(self, target: IO[str] | None) -> None:
        self._target = target
        super().__init__()

    @property
    def stream(self) -> IO[str]:
        return sys.stderr if self._target is None else self._target

    @stream.setter
    def stream(self, _: IO[str]) -> None:
        pass

    def write_line(self, line: str) -> None:
        """A line rendered by structlog, written whole under the lock ``emit`` holds for a record."""
        self.acquire()
        try:
            stream = self.stream
            stream.write(line + self.terminator)
            stream.flush()
        finally:
            self.release()


class _LineWriter:
    """structlog's logger: every level is :meth:`_Handler.write_line`."""

    def __init__(self, handler: _Handler) -> None:
        self._write = handler.write_line

    def msg(self, message: str) -> None:
        self._write(message)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg


def configure(level: str = "info", fmt: str = "json", stream: IO[str] | None = None) -> None:
    """Set up structlog and the standard library's root logger (idempotent: a second call replaces the first)."""
    lvl = getattr(logging, level.upper(), logging.INFO)
    handler = _Handler(stream)
    if fmt == "json":
        handler.setFormatter(_ForeignJson())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(lvl)
    # kafka-python at DEBUG logs raw protocol bytes: record values (events, secrets a gateway put in them)
    # and SASL handshakes. The scrubber cannot recognise every secret inside raw bytes, so that logger
    # never goes below INFO.
    logging.getLogger("kafka").setLevel(max(lvl, logging.INFO))
    renderer: Any = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    writer = _LineWriter(handler)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=lambda *_: writer,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "sentinel") -> Any:
    return structlog.get_logger(name)
