"""Live equals replay: the same events through Kafka and ``sentinel run`` give ``sentinel replay``'s alerts."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.integration.daemon_helpers import (
    daemon_env,
    firing_events,
    lines_and_keys,
    replay_alerts,
    start_daemon,
    wait_exit,
)
from tests.services import consume_all, create_topic, produce_lines

pytestmark = pytest.mark.kafka

BAD = [
    b'{"event_id": "bad-1", "ts": "not a time", "api_key_id": "k", "tenant_id": "t_alpha"}',
    b"\xff\xfe not json at all",
    b'{"event_id": "bad-2", "ts": 1793577700, "tenant_id": "t_beta", "api_key_id": "k", "provider": "openai", '
    b'"model": "gpt-4o", "input_tokens": -5, "output_tokens": 1}',
]


def test_live_alerts_equal_replay_and_bad_records_go_to_the_dead_letter_topic(kafka_bootstrap: str,
                                                                              tmp_path: Path) -> None:
    lines, keys = lines_and_keys(firing_events())
    for i, bad in enumerate(BAD):  # malformed records in the middle of the stream
        at = (i + 1) * len(lines) // (len(BAD) + 1)
        lines.insert(at, bad)
        keys.insert(at, None)
    expected = replay_alerts(lines, tmp_path, cli=True)
    assert len(expected) >= 6, "the stream must make detectors fire"

    topic = f"usage-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 4)
    create_topic(kafka_bootstrap, f"{topic}-alerts", 3)
    create_topic(kafka_bootstrap, f"{topic}-dead", 1)
    ends = produce_lines(kafka_bootstrap, topic, lines, keys)
    assert len(ends) >= 3, "tenants must spread over partitions"

    env = daemon_env(kafka_bootstrap, topic, f"grp-{uuid.uuid4().hex[:8]}")
    log = tmp_path / "daemon.log"
    alerts_file = tmp_path / "alerts.jsonl"
    proc = start_daemon(env, log, "--exit-when-idle", "1", "--alerts-file", str(alerts_file))
    assert wait_exit(proc, 45, log) == 0, log.read_text()[-3000:]

    records = consume_all(kafka_bootstrap, f"{topic}-alerts", min_records=len(expected))
    values = [r.value for r in records]
    assert len(values) == len(set(values)), "an alert version was produced twice"
    assert set(values) == expected  # byte for byte
    assert all(r.key == json.loads(r.value)["alert_id"].encode() for r in records)
    file_lines = alerts_file.read_bytes().splitlines()
    assert sorted(file_lines) == sorted(expected)

    dead = consume_all(kafka_bootstrap, f"{topic}-dead", min_records=len(BAD))
    assert sorted(r.value for r in dead) == sorted(BAD)  # original bytes, unchanged
    reasons = {r.value: dict(r.headers)["reason"].decode() for r in dead}
    assert all(reasons.values()) and reasons[BAD[1]] != reasons[BAD[0]]
    assert all(dict(r.headers)["source_topic"] == topic.encode() for r in dead)

    events = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    stopped = [e for e in events if e["event"] == "daemon_stopped"]
    assert stopped and stopped[0]["alerts"] == len(expected)
