"""A real Prometheus (Debian ``prometheus``) scrapes ``sentinel run``'s /metrics while it consumes a topic,
and its HTTP API gives back the events counter, the consumer lag per partition and the alerts by
detector -- equal to what the daemon wrote -- with deploy/prometheus/sentinel-rules.yaml loaded and
evaluating cleanly against the real series.

The backlog Prometheus must see is held, not raced: the daemon catches up on the topic in well under a
second, while Prometheus scrapes first about 5 s after it starts (its discovery manager sends the first
target set after its 5 s update interval) and then once a second. So the alerts file starts as a
directory: the first alert cannot be written, the daemon stops taking records (partitions paused) with
the rest of the topic unread, and the lag stays up until the test removes the directory.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.integration.daemon_helpers import (
    daemon_env,
    firing_events,
    lines_and_keys,
    log_events,
    start_daemon,
    wait_exit,
    wait_for,
)
from tests.services import REPO, Service, _spawn, create_topic, free_port, produce_lines, wait_tcp

pytestmark = pytest.mark.kafka

RULES = REPO / "deploy" / "prometheus" / "sentinel-rules.yaml"


def _ensure_prometheus() -> str:
    res = subprocess.run(["bash", str(REPO / "scripts" / "ensure_tools.sh"), "prometheus"], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.fail(f"prometheus is not available: {res.stderr.strip()[-800:]}")
    return "prometheus"


def start_prometheus(run: Path, target_port: int) -> tuple[Service, str]:
    run.mkdir(parents=True, exist_ok=True)
    conf = run / "prometheus.yml"
    conf.write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {RULES}
scrape_configs:
  - job_name: sentinel
    static_configs:
      - targets: ["127.0.0.1:{target_port}"]
""")
    binary = _ensure_prometheus()
    for _ in range(3):
        port = free_port()
        proc, log = _spawn("prometheus", [binary, f"--config.file={conf}", f"--storage.tsdb.path={run / 'tsdb'}",
                                          f"--web.listen-address=127.0.0.1:{port}"], run)
        svc = Service("prometheus", proc, port, run, log)
        url = f"http://127.0.0.1:{port}"
        if wait_tcp(port, 20, proc) and _get(url + "/-/ready", 20) is not None:
            return svc, url
        svc.kill()
    pytest.fail(f"prometheus did not become ready: {svc.log_tail()}")


def _get(url: str, timeout: float = 5.0) -> bytes | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return bytes(r.read())
        except OSError:
            pass
        time.sleep(0.1)
    return None


def query(url: str, promql: str) -> list[dict[str, Any]]:
    raw = _get(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
    assert raw is not None, promql
    doc = json.loads(raw)
    assert doc["status"] == "success", doc
    return list(doc["data"]["result"])


def scalar(url: str, promql: str) -> float | None:
    result = query(url, promql)
    return float(result[0]["value"][1]) if result else None


def wait_value(url: str, promql: str, expected: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = scalar(url, promql)
        if last == expected:
            return
        time.sleep(0.25)
    raise AssertionError(f"{promql} = {last}, expected {expected} within {timeout}s")


def test_prometheus_scrapes_the_daemon(kafka_bootstrap: str, tmp_path: Path) -> None:
    lines, keys = lines_and_keys(firing_events(days=1.5))
    topic = f"usage-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 4)
    create_topic(kafka_bootstrap, f"{topic}-alerts", 1)
    create_topic(kafka_bootstrap, f"{topic}-dead", 1)
    ends = produce_lines(kafka_bootstrap, topic, lines, keys)  # partition -> end offset

    http_port = free_port()
    env = daemon_env(kafka_bootstrap, topic, f"grp-{uuid.uuid4().hex[:8]}",
                     extra={"SENTINEL_HTTP_PORT": str(http_port)})
    log = tmp_path / "daemon.log"
    alerts_file = tmp_path / "alerts.jsonl"
    alerts_file.mkdir()  # a sink outage: holds the backlog until Prometheus has scraped it (module docstring)
    prom, url = start_prometheus(tmp_path / "prometheus", http_port)
    daemon = start_daemon(env, log, "--alerts-file", str(alerts_file))
    try:
        assert wait_tcp(http_port, 30, daemon), log.read_text()[-2000:]
        job = 'job="sentinel"'
        lag = f'sentinel_consumer_lag{{{job}, topic="{topic}"}}'
        wait_for(lambda: any(e["event"] == "processing_blocked" and e.get("reason") == "sink_failing:jsonl"
                             for e in log_events(log)), 30, "the daemon to stop on the failing alerts file")
        # Held: Prometheus sees the records the paused daemon has not read yet, never more than were produced.
        deadline = time.monotonic() + 30
        while (held := scalar(url, f"sum({lag})")) is None or held <= 0:
            assert time.monotonic() < deadline, f"no backlog scraped; log tail:\n{log.read_text()[-2000:]}"
            time.sleep(0.25)
        assert held < len(lines)
        by_partition = {int(r["metric"]["partition"]): float(r["value"][1]) for r in query(url, lag)}
        assert all(n <= ends[p] for p, n in by_partition.items()), (by_partition, ends)
        alerts_file.rmdir()  # the sink is back: the daemon resumes and catches up
        # Every record fed is counted once under one outcome; Prometheus gets there by scraping.
        wait_value(url, f'sum(sentinel_events_total{{{job}, outcome=~"accepted|duplicate|blank|rejected"}})',
                   float(len(lines)), 60)
        assert scalar(url, f'up{{{job}}}') == 1.0
        # Lag per partition: one series for every partition that holds records (the gauge needs a fetch's
        # high watermark), all caught up now.
        wait_value(url, f"count({lag})", float(len(ends)), 10)
        wait_value(url, f"sum({lag})", 0.0, 20)
        assert {r["metric"]["partition"] for r in query(url, f'sentinel_consumer_lag{{{job}}}')} == {
            str(p) for p in ends}
        assert len(ends) >= 3, "tenants must spread over partitions"
        # The scrapes saw the backlog, then the daemon caught up: the series went from above 0 to 0.
        peak = scalar(url, f"max(max_over_time({lag}[5m]))")
        assert peak is not None and 0 < max(by_partition.values()) <= peak < len(lines)

        written = Counter(json.loads(x)["detector"] for x in alerts_file.read_text().splitlines() if x)
        assert written, "the stream must make detectors fire"
        # Alert versions by detector, as Prometheus sees them, equal what the daemon wrote.
        deadline = time.monotonic() + 20
        seen: dict[str, float] = {}
        while time.monotonic() < deadline:
            seen = {r["metric"]["detector"]: float(r["value"][1])
                    for r in query(url, f'sum by (detector) (sentinel_alerts_total{{{job}}})')}
            if seen == {k: float(v) for k, v in written.items()}:
                break
            time.sleep(0.25)
        assert seen == {k: float(v) for k, v in written.items()}
        assert (scalar(url, f'sum(sentinel_batch_seconds_count{{{job}}})') or 0) > 0
        assert scalar(url, f'histogram_quantile(0.99, sum by (le) (sentinel_batch_seconds_bucket{{{job}}}))') \
            is not None

        # The shipped alert rules load and evaluate against the real series without errors.
        raw = _get(f"{url}/api/v1/rules")
        assert raw is not None
        rules = [r for g in json.loads(raw)["data"]["groups"] for r in g["rules"]]
        assert len(rules) >= 10 and all(r["health"] == "ok" for r in rules), [
            (r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
        assert all(r.get("lastEvaluation", "").startswith("20") for r in rules)
        firing = [a for r in rules for a in r.get("alerts", []) if a["state"] == "firing"]
        assert not firing, firing  # a healthy, caught-up daemon pages nobody
    finally:
        prom.stop()
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        assert wait_exit(daemon, 30, log) == 0
