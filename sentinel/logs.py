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


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler on whatever ``sys.stderr`` is when a line is written (tests and embedders swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _: IO[str]) -> None:
        pass


class _LineWriter:
    """structlog's logger: one rendered line per call, written under the stdlib handler's lock."""

    def __init__(self, handler: logging.StreamHandler[IO[str]]) -> None:
        self._handler = handler

    def msg(self, message: str) -> None:
        h = self._handler
        h.acquire()
        try:
            h.stream.write(message + "\n")
            h.stream.flush()
        finally:
            h.release()

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg


_HANDLER_MARK = "_sentinel_handler"


def configure(level: str = "info", fmt: str = "json", stream: IO[str] | None = None) -> None:
    """Set up structlog and the standard library's root logger (idempotent: a second call replaces the first)."""
    lvl = getattr(logging, level.upper(), logging.INFO)
    handler: logging.StreamHandler[IO[str]] = logging.StreamHandler(stream) if stream is not None else _Stderr()
    setattr(handler, _HANDLER_MARK, True)
    if fmt == "json":
        handler.setFormatter(_ForeignJson())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
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
