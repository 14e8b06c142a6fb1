"""Compressed topics: gateways produce gzip, lz4 or zstd batches; the daemon reads them all alike."""

from __future__ import annotations

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

CODECS = ("gzip", "lz4", "zstd")


def test_kafka_python_uses_the_c_crc32c() -> None:
    # Every fetched record batch is CRC-checked; the pure-Python fallback runs at ~9 MB/s.
    from kafka.record import util

    assert util.crc32c_c is not None, "the crc32c package (a runtime dependency) is not importable"


def test_batches_compressed_with_each_codec_give_replay_alerts(kafka_bootstrap: str, tmp_path: Path) -> None:
    lines, keys = lines_and_keys(firing_events())
    expected = replay_alerts(lines, tmp_path, cli=True)
    assert len(expected) >= 3, "the stream must make detectors fire"

    topic = f"usage-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 4)
    create_topic(kafka_bootstrap, f"{topic}-alerts", 1)
    create_topic(kafka_bootstrap, f"{topic}-dead", 1)
    # One third of the stream with each codec, in order: every partition holds batches of all three.
    third = len(lines) // len(CODECS) + 1
    for i, codec in enumerate(CODECS):
        part = slice(i * third, (i + 1) * third)
        produce_lines(kafka_bootstrap, topic, lines[part], keys[part], compression=codec)

    env = daemon_env(kafka_bootstrap, topic, f"grp-{uuid.uuid4().hex[:8]}")
    log = tmp_path / "daemon.log"
    proc = start_daemon(env, log, "--exit-when-idle", "1")
    assert wait_exit(proc, 60, log) == 0, log.read_text()[-3000:]

    got = {r.value for r in consume_all(kafka_bootstrap, f"{topic}-alerts", min_records=len(expected))}
    assert got == expected
    assert consume_all(kafka_bootstrap, f"{topic}-dead") == []
