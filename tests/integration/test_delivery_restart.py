"""Restart resumes the outbox: a process that enqueued alerts is killed with SIGKILL before delivering them;
a new process with the same outbox (SQLite file, or Redis) delivers every one exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis

from sentinel.alerting.delivery import Delivery, RetryPolicy
from sentinel.alerting.outbox import Outbox, RedisOutbox, SqliteOutbox
from sentinel.alerting.routes import Router
from sentinel.rules import RoutesFile
from sentinel.sinks.splunk_hec import SplunkHecSink
from tests.receivers.alerts import make_alert
from tests.receivers.splunk_hec import HecReceiver
from tests.services import free_port

REPO = Path(__file__).resolve().parents[2]
TOKEN = "hec-restart-token-0002"
N = 200

CHILD = """
import sys, time, redis
from sentinel.alerting.delivery import Delivery, RetryPolicy
from sentinel.alerting.outbox import RedisOutbox, SqliteOutbox
from sentinel.alerting.routes import Router
from sentinel.rules import RoutesFile
from sentinel.sinks.splunk_hec import SplunkHecSink
from tests.receivers.alerts import make_alert
from sentinel.logs import configure
configure("warning")
kind, where, prefix, url, token, n = sys.argv[1:7]
box = SqliteOutbox(where) if kind == "sqlite" else RedisOutbox(redis.Redis.from_url(where), prefix)
routes = RoutesFile.model_validate({"routes": [], "default_sinks": ["splunk_hec"]})
d = Delivery([SplunkHecSink(url, token)], box, Router(routes), retry=RetryPolicy(initial_s=5, max_s=5, seed=1),
             lease_s=2.0)
d.start()
for i in range(0, int(n), 20):
    d.enqueue([make_alert(j) for j in range(i, i + 20)])
print("enqueued", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_killed_process_pending_entries_are_delivered_after_restart(kind: str, tmp_path: Path,
                                                                    request: pytest.FixtureRequest) -> None:
    prefix = f"test-restart-{uuid.uuid4().hex[:8]}"
    where = str(tmp_path / "outbox.sqlite") if kind == "sqlite" else request.getfixturevalue("redis_url")
    port = free_port()
    down_url = f"http://127.0.0.1:{port}"  # nothing listens yet: the child cannot deliver
    child = subprocess.Popen([sys.executable, "-c", CHILD, kind, where, prefix, down_url, TOKEN, str(N)],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    err = child.stderr.read()[-2000:] if child.stderr else b""
    for pipe in (child.stdout, child.stderr):
        if pipe is not None:
            pipe.close()
    assert line.strip() == b"enqueued", err
    client = redis.Redis.from_url(where) if kind == "redis" else None
    outbox: Outbox = SqliteOutbox(where) if client is None else RedisOutbox(client, prefix)
    assert outbox.depth("splunk_hec") == N
    hec = HecReceiver(TOKEN)
    hec.port = port
    hec.start()
    routes = RoutesFile.model_validate({"routes": [], "default_sinks": ["splunk_hec"]})
    d = Delivery([SplunkHecSink(down_url, TOKEN)], outbox, Router(routes),
                 retry=RetryPolicy(initial_s=0.05, max_s=0.2, seed=1), idle_poll_s=0.02, lease_s=1.0)
    try:
        d.enqueue([make_alert(j) for j in range(N)])  # the same alerts again after the restart: not re-queued
        assert outbox.depth("splunk_hec") == N
        d.start()
        assert d.wait_idle(20)  # Redis: the dead child's lease lapses first
    finally:
        d.close()
        hec.stop()
        if client is not None:
            keys = list(client.scan_iter(f"{prefix}:*"))
            if keys:
                client.delete(*keys)
            client.close()
    got = Counter(e["event"]["alert_id"] for e in hec.events)
    assert got == Counter(make_alert(j).alert_id for j in range(N))
