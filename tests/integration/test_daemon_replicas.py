"""Two replicas in one consumer group split the partitions and together raise exactly the single-replica alerts."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.daemon_helpers import (
    daemon_env,
    firing_events,
    lines_and_keys,
    replay_alerts,
    start_daemon,
    wait_exit,
)
from tests.services import consume_all, create_topic, produce_lines

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


def _events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]


def test_two_replicas_split_partitions_and_match_one_replica(kafka_bootstrap: str, redis_url: str,
                                                             tmp_path: Path) -> None:
    lines, keys = lines_and_keys(firing_events(days=2.0))
    expected = replay_alerts(lines, tmp_path)
    topic = f"usage-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 4)
    ends = produce_lines(kafka_bootstrap, topic, lines, keys)
    assert len(ends) >= 3
    prefixes = [f"test-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        # One replica: the reference.
        single_topic = f"{topic}-alerts-single"
        create_topic(kafka_bootstrap, single_topic, 2)
        env = daemon_env(kafka_bootstrap, topic, f"grp1-{uuid.uuid4().hex[:8]}", redis_url=redis_url,
                         prefix=prefixes[0], alerts_topic=single_topic)
        log0 = tmp_path / "single.log"
        assert wait_exit(start_daemon(env, log0, "--exit-when-idle", "1"), 90, log0) == 0
        single = [r.value for r in consume_all(kafka_bootstrap, single_topic, min_records=len(expected))]
        assert len(single) == len(set(single)) and set(single) == expected

        # Two replicas, one group, started together.
        pair_topic = f"{topic}-alerts-pair"
        create_topic(kafka_bootstrap, pair_topic, 2)
        env = daemon_env(kafka_bootstrap, topic, f"grp2-{uuid.uuid4().hex[:8]}", redis_url=redis_url,
                         prefix=prefixes[1], alerts_topic=pair_topic,
                         extra={"SENTINEL_STATE__CHECKPOINT_EVERY_EVENTS": "1000"})
        logs = [tmp_path / "replica-a.log", tmp_path / "replica-b.log"]
        procs = [start_daemon(env, log, "--exit-when-idle", "2") for log in logs]
        codes = [wait_exit(p, 90, log) for p, log in zip(procs, logs, strict=True)]
        assert codes == [0, 0]
        for log in logs:
            ev = _events(log)
            first = next(e for e in ev if e["event"] == "partitions_assigned")
            stopped = next(e for e in ev if e["event"] == "daemon_stopped")
            # Each replica owned a strict subset of the partitions at some point and did real work.
            assert any(e["event"] == "partitions_assigned" and len(e["partitions"]) < 4 for e in ev), first
            assert isinstance(stopped["records"], int) and stopped["records"] > 0
        pair = consume_all(kafka_bootstrap, pair_topic, min_records=len(expected))
        versions = Counter((r.key, dict(r.headers)["alert_version"]) for r in pair)
        assert max(versions.values()) == 1  # no alert version from both replicas
        assert sorted(r.value for r in pair) == sorted(single)  # exactly the single-replica alerts
    finally:
        r = redis.Redis.from_url(redis_url)
        for p in prefixes:
            found = list(r.scan_iter(f"{p}:*"))
            if found:
                r.delete(*found)
        r.close()
