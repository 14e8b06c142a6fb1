"""Shared pytest configuration: real service fixtures (broker, Redis, rsyslog) from tests/services.py,
and each test's logging set-up undone after it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from tests.services import *  # noqa: F403 - session fixtures kafka_bootstrap, redis_url, syslog_endpoint


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A test that runs a command in-process (``sentinel run``/``ingest`` call ``sentinel.logs.configure``)
    leaves a root handler and levels behind; later tests and session fixtures would log through them."""
    root, kafka = logging.getLogger(), logging.getLogger("kafka")
    handlers, level, kafka_level = list(root.handlers), root.level, kafka.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    kafka.setLevel(kafka_level)
    structlog.reset_defaults()
