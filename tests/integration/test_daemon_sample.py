"""Live equals replay on real data: the whole ``replay_data/sample.jsonl.gz`` through Kafka and ``sentinel run``.

The 178,013 events of the one-week sample are produced to a 4-partition topic keyed by ``tenant_id``
(as a gateway does), the daemon consumes them until idle, and its alerts must equal, byte for byte,
those of ``sentinel replay --partitions 4`` over the same file. The daemon's alerts file interleaves
partitions in fetch order, so the two are compared as sorted lists.

The daemon is told not to checkpoint before it is idle (checkpoints every hour or 10M records; the
idle drain and the shutdown checkpoint come after): cross_tenant's shape view is exchanged between
partitions at checkpoints, and what one partition gets back then depends on how far the others have
got, i.e. on wall time (see "Replay with partitions" in :mod:`sentinel.commands.replay`).
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from sentinel.partitioning import TenantRouter
from tests.integration.daemon_helpers import REPO, daemon_env, log_events, start_daemon, wait_exit
from tests.services import create_topic, produce_lines

pytestmark = pytest.mark.kafka

SAMPLE = REPO / "replay_data" / "sample.jsonl.gz"
PARTITIONS = 4


def test_daemon_on_the_whole_sample_equals_replay_with_4_partitions(kafka_bootstrap: str, tmp_path: Path) -> None:
    t0 = time.monotonic()
    lines = gzip.decompress(SAMPLE.read_bytes()).splitlines()
    assert len(lines) == 178_013
    keys = [json.loads(ln)["tenant_id"].encode() for ln in lines]  # as a gateway keys them

    out = tmp_path / "replay-alerts.jsonl"
    replay = subprocess.Popen(
        [sys.executable, "-m", "sentinel.cli", "replay", str(SAMPLE), "--partitions", str(PARTITIONS),
         "--out", str(out), "--dead-letter", str(tmp_path / "replay-dead.jsonl"), "--no-progress"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    topic = f"usage-sample-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, PARTITIONS)
    ends = produce_lines(kafka_bootstrap, topic, lines, keys)
    t_produced = time.monotonic()
    # The broker's partitions (kafka-python's producer chose them) are the ones replay routes to.
    router = TenantRouter(PARTITIONS)
    assert ends == dict(Counter(router.partition(ln) for ln in lines))

    env = daemon_env(kafka_bootstrap, topic, f"grp-{uuid.uuid4().hex[:8]}", extra={
        "SENTINEL_KAFKA__MAX_POLL_RECORDS": "5000",  # the production default; 200 (tests' default) is slower
        "SENTINEL_STATE__CHECKPOINT_EVERY_S": "3600",
        "SENTINEL_STATE__CHECKPOINT_EVERY_EVENTS": "10000000",
    })
    log = tmp_path / "daemon.log"
    alerts_file = tmp_path / "alerts.jsonl"
    proc = start_daemon(env, log, "--exit-when-idle", "1", "--alerts-file", str(alerts_file))
    assert wait_exit(proc, 120, log) == 0, log.read_text()[-3000:]
    t_daemon = time.monotonic()

    _, err = replay.communicate(timeout=120)
    assert replay.returncode == 0, err.decode()[-2000:]
    expected = out.read_bytes().splitlines()
    assert len(expected) >= 40, "the sample's incidents must make detectors fire"
    got = alerts_file.read_bytes().splitlines()
    assert len(got) == len(set(got)), "an alert version was written twice"
    assert sorted(got) == sorted(expected)  # byte for byte
    assert expected == sorted(expected, key=lambda b: (json.loads(b)["detected_at"], json.loads(b)["alert_id"],
                                                       json.loads(b)["version"]))

    events = log_events(log)
    stopped = next(e for e in events if e["event"] == "daemon_stopped")
    assert stopped["records"] == len(lines) and stopped["alerts"] == len(expected)
    print(f"produce {t_produced - t0:.1f}s, daemon {t_daemon - t_produced:.1f}s, total {time.monotonic() - t0:.1f}s")
