"""kill -9 mid-stream, restart: every event processed, alerts identical to an uninterrupted run, none twice."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis

from sentinel.state.ledger import RedisNotificationLedger
from tests.integration.daemon_helpers import (
    daemon_env,
    firing_events,
    lines_and_keys,
    replay_alerts,
    start_daemon,
    wait_exit,
    wait_for,
)
from tests.services import consume_all, create_topic, produce_lines

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


def test_kill_9_at_several_points_then_restart(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> None:
    lines, keys = lines_and_keys(firing_events(days=2.0))
    expected = replay_alerts(lines, tmp_path)  # = the uninterrupted run (see test_daemon_replay)
    topic = f"usage-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 4)
    create_topic(kafka_bootstrap, f"{topic}-alerts", 2)
    ends = produce_lines(kafka_bootstrap, topic, lines, keys)
    total = sum(ends.values())
    group = f"grp-{uuid.uuid4().hex[:8]}"
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    env = daemon_env(kafka_bootstrap, topic, group, redis_url=redis_url, prefix=prefix, extra={
        "SENTINEL_STATE__CHECKPOINT_EVERY_EVENTS": "400",
        "SENTINEL_STATE__CHECKPOINT_EVERY_S": "0.5",
    })
    r = redis.Redis.from_url(redis_url)
    ckpt_keys = [f"{prefix}:ckpt:{group}:{topic}:{p}" for p in range(4)]

    def saved() -> dict[int, int]:
        offs = [r.hget(k, "offset") for k in ckpt_keys]
        return {p: int(o) for p, o in enumerate(offs) if o is not None}

    log = tmp_path / "daemon.log"
    try:
        killed_at = []
        for frac in (0.15, 0.4, 0.65):
            proc = start_daemon(env, log)
            wait_for(lambda t=frac * total: sum(saved().values()) >= t, 60, f"checkpoints past {frac:.0%}",
                     interval=0.01)
            proc.kill()  # SIGKILL: no flush, no checkpoint, no LeaveGroup
            proc.wait(10)
            killed_at.append(sum(saved().values()))
        assert killed_at == sorted(killed_at) and killed_at[-1] < total, killed_at
        proc = start_daemon(env, log, "--exit-when-idle", "1")
        assert wait_exit(proc, 90, log) == 0

        # Every event processed: each partition's checkpoint is at its end offset.
        assert saved() == ends
        records = consume_all(kafka_bootstrap, f"{topic}-alerts", min_records=len(expected))
        versions = Counter((rec.key, dict(rec.headers)["alert_version"]) for rec in records)
        assert max(versions.values()) == 1, [k for k, n in versions.items() if n > 1]  # nothing notified twice
        assert {rec.value for rec in records} == expected  # identical to the uninterrupted run
        ledger = RedisNotificationLedger(redis_url, prefix)
        for value in expected:
            a = json.loads(value)
            assert ledger.status(a["alert_id"], a["version"], "alerts_topic") == "sent"
        ledger.close()
        # The restarts really resumed from checkpoints (not from the beginning).
        restored = [json.loads(x) for x in log.read_text().splitlines() if '"partition_restored"' in x]
        assert sum(1 for e in restored if e["offset"] is not None) >= 4
    finally:
        keys_ = list(r.scan_iter(f"{prefix}:*"))
        if keys_:
            r.delete(*keys_)
        r.close()
