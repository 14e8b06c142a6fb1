"""Structured logging: structlog, JSON lines on stderr, secrets scrubbed.

Events are stable snake_case names with key-value context
(``log.info("alert_sent", sink="slack", alert_id=...)``); the hot path does not
log per event. A last processor runs every string value through
:func:`sentinel.redact.redact_text`, so a credential that slipped into a
message is fingerprinted, not printed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from sentinel.redact import redact_text


def _scrub(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k, v in event_dict.items():
        if isinstance(v, str):
            event_dict[k] = redact_text(v)
    return event_dict


def configure(level: str = "info", fmt: str = "json") -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(stream=sys.stderr, level=lvl, format="%(message)s")
    # kafka-python at DEBUG logs raw protocol bytes: record values (events, secrets a gateway put in them)
    # and SASL handshakes. Those bytes bypass the scrubber below, so that logger never goes below INFO.
    logging.getLogger("kafka").setLevel(max(lvl, logging.INFO))
    renderer: Any = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
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
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "sentinel") -> Any:
    return structlog.get_logger(name)
