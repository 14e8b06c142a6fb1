"""Shared pytest configuration: real service fixtures (broker, Redis, rsyslog) from tests/services.py."""

from tests.services import *  # noqa: F403 - session fixtures kafka_bootstrap, redis_url, syslog_endpoint
