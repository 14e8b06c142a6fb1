"""Operating the daemon: /healthz, /readyz, /metrics, SIGHUP rule reload, graceful SIGTERM."""

from __future__ import annotations

import json
import shutil
import signal
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.daemon_helpers import (
    REPO,
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
from tests.services import create_topic, produce_lines

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


def _samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    code, body = http_get(port, "/metrics")
    assert code == 200
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_health_metrics_and_rule_reload(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> None:
    lines, keys = lines_and_keys(firing_events(days=1.5))
    expected = [json.loads(x) for x in replay_alerts(lines, tmp_path)]
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    topic = f"usage-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 4)
    ends = produce_lines(kafka_bootstrap, topic, lines, keys)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    env = daemon_env(kafka_bootstrap, topic, f"grp-{uuid.uuid4().hex[:8]}", redis_url=redis_url, prefix=prefix,
                     extra={"SENTINEL_STATE__CHECKPOINT_EVERY_S": "1.0"})
    log = tmp_path / "daemon.log"
    proc = start_daemon(env, log, "--rules", str(rules))
    try:
        port = http_port(log)
        assert http_get(port, "/healthz") == (200, b"ok\n")
        wait_for(lambda: _value(_samples(port), "sentinel_events_total", outcome="accepted") == len(lines), 40,
                 "every event accepted")
        wait_for(lambda: http_get(port, "/readyz")[0] == 200, 10, "ready")
        assert json.loads(http_get(port, "/readyz")[1]) == {"ready": True, "reasons": [], "partitions": 4}
        wait_for(lambda: sum(v for (n, _), v in _samples(port).items() if n == "sentinel_alerts_total")
                 == len(expected), 20, "all alerts counted (after the idle drain)")
        m = _samples(port)
        by = Counter((a["detector"], a["severity"], a["status"]) for a in expected)
        for (det, sev, status), n in by.items():
            assert _value(m, "sentinel_alerts_total", detector=det, severity=sev, status=status) == n
        for p in ends:
            assert _value(m, "sentinel_consumer_lag", topic=topic, partition=str(p)) == 0
        wait_for(lambda: all((_value(_samples(port), "sentinel_checkpoint_age_seconds", topic=topic,
                                     partition=str(p)) or 99) < 10 for p in ends), 10, "checkpoint ages")
        assert (_value(m, "sentinel_batch_seconds_count") or 0) > 0
        assert (_value(m, "sentinel_batch_events_sum") or 0) == len(lines)
        assert _value(m, "sentinel_assigned_partitions") == 4
        assert _value(m, "sentinel_dependency_up", dependency="redis") == 1
        # tracked keys are counted on scrape, at most once a second (not per batch): wait for a fresh count
        wait_for(lambda: any(n == "sentinel_tracked_keys" and v > 0 for (n, _), v in _samples(port).items()), 5,
                 "tracked keys reported")
        assert _value(m, "sentinel_notifications_total", sink="alerts_topic", outcome="sent") == len(expected)

        # SIGHUP with a broken rules file: rejected, old rules kept, still running and ready.
        det = rules / "detectors" / "cross_tenant.yaml"
        good = det.read_text()
        det.write_text(good.replace("fanout_min_tenants: 3", "fanout_min_tenants: lots"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: any(e["event"] == "rules_reload_failed" for e in log_events(log)), 10, "reload refused")
        failed = next(e for e in log_events(log) if e["event"] == "rules_reload_failed")
        assert "cross_tenant.yaml" in str(failed["detail"]) and "fanout_min_tenants" in str(failed["detail"])
        assert _value(_samples(port), "sentinel_rules_reloads_total", result="invalid") == 1
        assert proc.poll() is None and http_get(port, "/readyz")[0] == 200
        # SIGHUP with a valid change: applied.
        det.write_text(good.replace("enabled: true", "enabled: false", 1))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: any(e["event"] == "rules_reloaded" for e in log_events(log)), 10, "reload applied")
        reloaded = next(e for e in log_events(log) if e["event"] == "rules_reloaded")
        started = next(e for e in log_events(log) if e["event"] == "daemon_started")
        assert "cross_tenant" not in reloaded["detectors"] and "runaway_loop" in reloaded["detectors"]
        assert reloaded["rules_digest"] != started["rules_digest"]
        assert _value(_samples(port), "sentinel_rules_reloads_total", result="ok") == 1

        proc.send_signal(signal.SIGTERM)
        assert wait_exit(proc, 30, log) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        r = redis.Redis.from_url(redis_url)
        found = list(r.scan_iter(f"{prefix}:*"))
        if found:
            r.delete(*found)
        r.close()


def test_sigterm_flushes_checkpoints_and_leaves_the_group(kafka_bootstrap: str, redis_url: str,
                                                          tmp_path: Path) -> None:
    lines, keys = lines_and_keys(firing_events(days=1.0))
    topic = f"usage-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 4)
    ends = produce_lines(kafka_bootstrap, topic, lines, keys)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    group = f"grp-{uuid.uuid4().hex[:8]}"
    # No periodic checkpoint at all: whatever is in Redis afterwards was written on SIGTERM.
    env = daemon_env(kafka_bootstrap, topic, group, redis_url=redis_url, prefix=prefix, extra={
        "SENTINEL_STATE__CHECKPOINT_EVERY_EVENTS": "1000000000", "SENTINEL_STATE__CHECKPOINT_EVERY_S": "3600",
        "SENTINEL_DAEMON__IDLE_ADVANCE": "off"})
    log = tmp_path / "daemon.log"
    proc = start_daemon(env, log)
    r = redis.Redis.from_url(redis_url)
    try:
        port = http_port(log)
        wait_for(lambda: _value(_samples(port), "sentinel_events_total", outcome="accepted") == len(lines), 40,
                 "every event accepted")
        assert r.keys(f"{prefix}:ckpt:*") == []
        proc.send_signal(signal.SIGTERM)
        assert wait_exit(proc, 30, log) == 0
        saved = {p: int(r.hget(f"{prefix}:ckpt:{group}:{topic}:{p}", "offset") or -1) for p in ends}
        assert saved == ends
        ev = [e["event"] for e in log_events(log)]
        assert ev.index("signal_received") < ev.index("daemon_stopping") < ev.index("partitions_revoked") \
            < ev.index("daemon_stopped")
        # The group really was left (LeaveGroup), so a new member gets every partition at once rather than
        # after the old member's session timeout; and it resumes from the checkpoint, not from zero.
        log2 = tmp_path / "daemon-2.log"
        proc = start_daemon(env, log2, "--exit-when-idle", "0.5")
        assert wait_exit(proc, 30, log2) == 0
        restored = {e["partition"]: e["offset"] for e in log_events(log2) if e["event"] == "partition_restored"}
        assert {p: restored[p] for p in ends} == ends
        assigned = [e["partitions"] for e in log_events(log2) if e["event"] == "partitions_assigned"]
        assert assigned == [[0, 1, 2, 3]]
        last = next(e for e in log_events(log2) if e["event"] == "daemon_stopped")
        assert last["records"] == 0  # nothing re-read
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        found = list(r.scan_iter(f"{prefix}:*"))
        if found:
            r.delete(*found)
        r.close()
