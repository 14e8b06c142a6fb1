"""Dependencies failing under the daemon: no crash, no loss, not ready while it lasts, recovery after."""

from __future__ import annotations

import contextlib
import json
import signal
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis
from kafka.errors import TopicAlreadyExistsError

from tests.integration.daemon_helpers import (
    daemon_env,
    firing_events,
    http_get,
    http_port,
    lines_and_keys,
    log_events,
    replay_alerts,
    start_daemon,
    wait_exit,
    wait_for,
)
from tests.services import consume_all, create_topic, free_port, produce_lines, start_redis, start_tansu
from tests.synth import DAY, HOUR, T0

pytestmark = pytest.mark.kafka


def test_broker_down_at_start(tmp_path: Path) -> None:
    lines, keys = lines_and_keys(firing_events(days=1.5))
    expected = replay_alerts(lines, tmp_path)
    port = free_port()  # nothing listens here yet
    bootstrap = f"127.0.0.1:{port}"
    topic = f"usage-{uuid.uuid4().hex[:8]}"
    env = daemon_env(bootstrap, topic, f"grp-{uuid.uuid4().hex[:8]}")
    log = tmp_path / "daemon.log"
    proc = start_daemon(env, log, "--exit-when-idle", "1")
    broker = None
    try:
        http = http_port(log)
        wait_for(lambda: sum(e["event"] == "kafka_unavailable" for e in log_events(log)) >= 2, 30,
                 "two failed connection attempts")
        assert proc.poll() is None  # waiting, not crashed
        code, body = http_get(http, "/readyz")
        assert code == 503 and "kafka_unreachable" in json.loads(body)["reasons"]
        assert http_get(http, "/healthz")[0] == 200  # alive: a restart would not help
        retries = [e for e in log_events(log) if e["event"] == "kafka_unavailable"]
        assert [e["attempt"] for e in retries[:2]] == [1, 2] and retries[1]["retry_in_s"] > retries[0]["retry_in_s"]

        broker = start_tansu(tmp_path / "tansu", port)
        for name, parts in ((topic, 4), (f"{topic}-alerts", 2)):
            with contextlib.suppress(TopicAlreadyExistsError):  # the daemon may have auto-created it already
                create_topic(bootstrap, name, parts)
        produce_lines(bootstrap, topic, lines, keys)
        wait_for(lambda: http_get(http, "/readyz")[0] == 200, 30, "ready once the broker is up")
        assert wait_exit(proc, 60, log) == 0
        records = consume_all(bootstrap, f"{topic}-alerts", min_records=len(expected))
        assert sorted(r.value for r in records) == sorted(expected)
        assert any(e["event"] == "kafka_connected" for e in log_events(log))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if broker is not None:
            broker.stop()


@pytest.mark.redis
def test_redis_down_mid_run(kafka_bootstrap: str, tmp_path: Path) -> None:
    events = firing_events(days=2.0)
    cut = next(i for i, e in enumerate(events) if e.t >= T0 + DAY + 5 * HOUR)  # all incidents come after
    lines, keys = lines_and_keys(events)
    expected = replay_alerts(lines, tmp_path)
    (tmp_path / "first").mkdir()
    expected_first = replay_alerts(lines[:cut], tmp_path / "first")  # the daemon drains at the cut, as replay
    topic = f"usage-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 4)
    create_topic(kafka_bootstrap, f"{topic}-alerts", 2)
    first = produce_lines(kafka_bootstrap, topic, lines[:cut], keys[:cut])

    rdir = tmp_path / "redis"
    server = start_redis(rdir)
    url = f"redis://{server.address}/0"
    group = f"grp-{uuid.uuid4().hex[:8]}"
    env = daemon_env(kafka_bootstrap, topic, group, redis_url=url, extra={
        "SENTINEL_STATE__CHECKPOINT_EVERY_S": "0.5",
        "SENTINEL_DAEMON__RETRY_MAX_S": "1.0",
    })
    log = tmp_path / "daemon.log"
    proc = start_daemon(env, log)
    client = redis.Redis.from_url(url)

    def saved() -> dict[int, int]:
        out = {}
        for p in range(4):
            with contextlib.suppress(redis.RedisError):
                off = client.hget(f"sentinel:ckpt:{group}:{topic}:{p}", "offset")
                if off is not None:
                    out[p] = int(off)
        return out

    try:
        http = http_port(log)
        wait_for(lambda: saved() == first, 40, "first half checkpointed")
        wait_for(lambda: {r.value for r in consume_all(kafka_bootstrap, f"{topic}-alerts", timeout_s=2)}
                 == expected_first, 20, "the first half's alerts")
        wait_for(lambda: http_get(http, "/readyz")[0] == 200, 10, "ready")
        server.kill()  # Redis gone (and, without persistence, its data with it)
        ends = produce_lines(kafka_bootstrap, topic, lines[cut:], keys[cut:])
        wait_for(lambda: "redis_unreachable" in json.loads(http_get(http, "/readyz")[1])["reasons"], 15,
                 "not ready while Redis is down")
        wait_for(lambda: sum(e["event"] == "retry_failed" for e in log_events(log)) >= 2, 20, "retries")
        assert proc.poll() is None
        blocked = [e for e in log_events(log) if e["event"] == "processing_blocked"]
        assert blocked and blocked[0]["reason"] == "redis_unavailable"
        # Held back, not lost and not sent without a ledger record:
        assert {r.value for r in consume_all(kafka_bootstrap, f"{topic}-alerts", timeout_s=2)} == expected_first

        server = start_redis(rdir, port=server.port)
        wait_for(lambda: len(consume_all(kafka_bootstrap, f"{topic}-alerts", timeout_s=2)) >= len(expected), 40,
                 "alerts after Redis is back")
        wait_for(lambda: http_get(http, "/readyz")[0] == 200, 20, "ready again")
        assert any(e["event"] == "processing_resumed" for e in log_events(log))
        total = {p: max(first.get(p, 0), ends.get(p, 0)) for p in set(first) | set(ends)}
        wait_for(lambda: saved() == total, 30, "every record checkpointed into the restarted Redis")
        proc.send_signal(signal.SIGTERM)
        assert wait_exit(proc, 30, log) == 0
        records = consume_all(kafka_bootstrap, f"{topic}-alerts", min_records=len(expected))
        assert max(Counter((r.key, dict(r.headers)["alert_version"]) for r in records).values()) == 1
        assert sorted(r.value for r in records) == sorted(expected)  # nothing lost, nothing twice
        assert saved() == total
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        server.stop()
