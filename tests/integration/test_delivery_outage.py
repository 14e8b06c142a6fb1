"""A receiver down for a while, then back: every alert is delivered exactly once, and other sinks never wait.

The issue asks for a two-minute outage; the default suite uses a short one on
the same code path. Set ``SENTINEL_TEST_OUTAGE_S=120`` for the full length.
Both outbox backends are exercised: SQLite, and Redis (a real server).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sentinel.alerting.delivery import Delivery, RetryPolicy
from sentinel.alerting.outbox import Outbox, RedisOutbox, SqliteOutbox
from sentinel.alerting.routes import Router
from sentinel.rules import RoutesFile
from sentinel.sinks.factory import JsonlNotifier
from sentinel.sinks.splunk_hec import SplunkHecSink
from tests.receivers.alerts import make_alert
from tests.receivers.splunk_hec import HecReceiver

OUTAGE_S = float(os.environ.get("SENTINEL_TEST_OUTAGE_S", "5"))
TOKEN = "hec-outage-token-0001"
ROUTES = RoutesFile.model_validate({"routes": [], "default_sinks": ["jsonl", "splunk_hec"]})
RETRY = RetryPolicy(initial_s=0.1, max_s=1.0, multiplier=2.0, jitter=0.2, max_attempts=10_000, seed=3)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def outbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outbox]:
    if request.param == "sqlite":
        box: Outbox = SqliteOutbox(tmp_path / "outbox.sqlite")
        yield box
        box.close()
        return
    url = request.getfixturevalue("redis_url")
    client = redis.Redis.from_url(url)
    prefix = f"test-outage-{uuid.uuid4().hex[:8]}"
    yield RedisOutbox(client, prefix)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_receiver_down_then_back_delivers_everything_exactly_once(outbox: Outbox, tmp_path: Path) -> None:
    hec = HecReceiver(TOKEN).start()
    jsonl = JsonlNotifier(tmp_path / "alerts.jsonl")
    d = Delivery([jsonl, SplunkHecSink(hec.url, TOKEN, batch=25)], outbox, Router(ROUTES), retry=RETRY,
                 idle_poll_s=0.05).start()
    sent: list[Any] = []
    try:
        batch1 = [make_alert(i) for i in range(50)]
        d.enqueue(batch1)
        sent += batch1
        assert d.wait_idle(10)
        hec.stop()
        assert hec.refused()
        # Alerts keep coming during the outage; the pipeline is never blocked by the down sink.
        t_end = time.monotonic() + OUTAGE_S
        i = 50
        worst_enqueue = 0.0
        while time.monotonic() < t_end:
            batch = [make_alert(i + k) for k in range(10)] + [make_alert(i - 50, version=2, severity="critical")]
            t = time.perf_counter()
            d.enqueue(batch)
            worst_enqueue = max(worst_enqueue, time.perf_counter() - t)
            sent += batch
            i += 10
            time.sleep(0.1)
        assert worst_enqueue < 0.5
        assert d.pending()["jsonl"] == 0 or _drains(d, "jsonl")
        assert d.pending()["splunk_hec"] > 0
        assert d.stats.failures["splunk_hec"] >= 2
        hec.start()  # back on the same port
        assert d.wait_idle(30)
    finally:
        d.close()
        hec.stop()
    want = Counter((a.alert_id, a.version) for a in sent)
    got = Counter((e["event"]["alert_id"], e["event"]["version"]) for e in hec.events)
    assert got == want and max(got.values()) == 1
    lines = (tmp_path / "alerts.jsonl").read_bytes().splitlines()
    assert len(lines) == len(sent)
    assert not outbox.dead("splunk_hec")


def _drains(d: Delivery, sink: str) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if d.pending()[sink] == 0:
            return True
        time.sleep(0.02)
    return False


def test_enqueue_never_waits_for_a_slow_sink(tmp_path: Path) -> None:
    """A receiver that hangs holds its own worker only."""
    gate = threading.Event()

    class Hanging(HecReceiver):
        def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
            gate.wait(10)
            return super().handle(method, path, headers, body)

    hec = Hanging(TOKEN).start()
    jsonl = JsonlNotifier(tmp_path / "a.jsonl")
    d = Delivery([jsonl, SplunkHecSink(hec.url, TOKEN, timeout=30)], SqliteOutbox(tmp_path / "o.sqlite"),
                 Router(ROUTES), retry=RETRY, idle_poll_s=0.05).start()
    try:
        d.enqueue([make_alert(0)])
        time.sleep(0.2)
        t = time.perf_counter()
        d.enqueue([make_alert(i) for i in range(1, 100)])
        assert time.perf_counter() - t < 0.5
        assert _drains(d, "jsonl")
        assert d.pending()["splunk_hec"] >= 99
        gate.set()
        assert d.wait_idle(15)
    finally:
        gate.set()
        d.close()
        hec.stop()
    assert len(hec.events) == 100
