"""Kafka pieces against a real broker: the consumer-group source, the alerts topic (with its crash probe),
the dead-letter topic."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from sentinel.alerts import Alert, Entity, encode_alert
from sentinel.config import KafkaSettings
from sentinel.pipeline import DeadLetter
from sentinel.sinks.kafka import AlertsTopicSink, DeadLetterTopic, TopicProducer
from sentinel.sources.kafka import KafkaSource, broker_reachable
from sentinel.state.ledger import RedisNotificationLedger, deliver
from tests.services import consume_all, create_topic, free_port, produce_lines

pytestmark = pytest.mark.kafka


def _alert(n: int, version: int = 1) -> Alert:
    return Alert(alert_id=f"al_{n:024x}", version=version, status="firing", detector="cross_tenant",
                 rule="cross_tenant", severity="critical", score=0.97, entity=Entity("principal", f"p{n}"),
                 tenant_id="t_beta", detected_at="2026-11-03T10:00:00.000Z", title=f"alert {n}", evidence={})


def _settings(bootstrap: str, topic: str, **kw: object) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap, topic=topic, group_id=f"g-{uuid.uuid4().hex[:8]}",
                         session_timeout_ms=2000, heartbeat_interval_ms=500, **kw)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, list[int]]] = []

    def on_assigned(self, partitions: list[int]) -> None:
        self.events.append(("assigned", partitions))

    def on_revoked(self, partitions: list[int]) -> None:
        self.events.append(("revoked", partitions))

    def on_lost(self, partitions: list[int]) -> None:
        self.events.append(("lost", partitions))


def test_source_joins_group_pauses_new_partitions_and_reports_lag(kafka_bootstrap: str) -> None:
    topic = f"src-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 2)
    keys = [f"k{i % 7}".encode() for i in range(300)]  # murmur2 spreads these over both partitions
    ends = produce_lines(kafka_bootstrap, topic, [f'{{"n":{i}}}'.encode() for i in range(300)], keys)
    assert set(ends) == {0, 1}
    rec = Recorder()
    src = KafkaSource(_settings(kafka_bootstrap, topic, max_poll_records=50), rec)
    try:
        deadline = time.monotonic() + 15
        while not rec.events and time.monotonic() < deadline:
            assert src.poll(200) == []  # assigned partitions stay paused until the daemon resumes them
        assert rec.events == [("assigned", [0, 1])]
        assert src.assignment() == {0, 1}
        src.seek(0, 5)
        src.resume([0, 1])
        got: dict[int, list[int]] = {0: [], 1: []}
        while sum(map(len, got.values())) < 300 - 5 and time.monotonic() < deadline:
            for b in src.poll(200):
                assert len(b.values) == len(b.offsets) <= 50
                got[b.partition].extend(b.offsets)
        assert got[0] == list(range(5, ends[0])) and got[1] == list(range(ends[1]))
        assert src.highwater(0) == ends[0] and src.highwater(1) == ends[1]  # lag = highwater - position = 0
        src.commit({0: ends[0], 1: 7})
    finally:
        src.close()
    assert rec.events[-1] == ("revoked", [0, 1])  # close runs the revoke hook (final checkpoint)
    assert broker_reachable(kafka_bootstrap) and not broker_reachable(f"127.0.0.1:{free_port()}")


@pytest.mark.redis
def test_alerts_topic_exactly_once_across_a_crash(kafka_bootstrap: str, redis_url: str) -> None:
    """The crash window between "claimed" and "confirmed": the next owner asks the topic, not the ledger."""
    topic = f"alerts-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 3)
    settings = _settings(kafka_bootstrap, "unused")
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    sent_before_crash = [_alert(1), _alert(2), _alert(2, 2)]
    never_sent = [_alert(3)]
    try:
        # Process A claims four alert versions, writes three to the topic, and dies before confirming.
        prod_a = TopicProducer(settings)
        sink_a = AlertsTopicSink(prod_a, topic, settings)
        ledger_a = RedisNotificationLedger(redis_url, prefix, ttl_s=600, owner="A")
        everything = sent_before_crash + never_sent
        ledger_a.claim_many([(a.alert_id, a.version, sink_a.name) for a in everything],
                            [sink_a.hint(a) for a in everything])
        sink_a.write(sent_before_crash)
        sink_a.flush()
        prod_a.close()
        # Process B regenerates the same versions after restoring the checkpoint.
        prod_b = TopicProducer(settings)
        sink_b = AlertsTopicSink(prod_b, topic, settings)
        ledger_b = RedisNotificationLedger(redis_url, prefix, ttl_s=600, owner="B")
        rep = deliver(ledger_b, [sink_b], [(a, sink_b.name) for a in everything])
        assert rep.found == 3 and rep.sent == {sink_b.name: 1} and not rep.failed
        assert all(ledger_b.status(a.alert_id, a.version, sink_b.name) == "sent" for a in everything)
        rep2 = deliver(ledger_b, [sink_b], [(a, sink_b.name) for a in everything])
        assert rep2.skipped == 4 and rep2.sent == {}
        prod_b.close()
        records = consume_all(kafka_bootstrap, topic, min_records=4)
        assert sorted((r.key, r.value) for r in records) == sorted(
            (a.alert_id.encode(), encode_alert(a)) for a in everything)
        for r in records:  # key = alert_id, version in headers, on the partition the hint named
            headers = dict(r.headers)
            assert headers["alert_version"] == str(
                next(a.version for a in everything if encode_alert(a) == r.value)).encode()
            assert r.partition == sink_b._partition_of(r.key.decode())
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_dead_letter_topic_keeps_original_bytes_and_reason(kafka_bootstrap: str) -> None:
    topic = f"dlq-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 1)
    settings = _settings(kafka_bootstrap, "usage")
    dlq = DeadLetterTopic(TopicProducer(settings), topic)
    raw = b'{"event_id": "e1", "ts": "yesterday", "api_key": "sk-proj-AAAAAAAAAAAAAAAAAAAAAAAAAAAA"}\xff'
    dead = DeadLetter(reason="invalid_ts", field="ts", message="not a timestamp", value="yesterday",
                      source="usage/2", position=41, raw="(redacted)", raw_bytes=len(raw))
    dlq.send(dead, raw, "usage", 2, 41)
    dlq.flush()
    dlq.producer.close()
    (rec,) = consume_all(kafka_bootstrap, topic, min_records=1)
    assert rec.value == raw  # unchanged, for an operator to fix and re-produce
    assert dict(rec.headers) == {"reason": b"invalid_ts", "field": b"ts", "message": b"not a timestamp",
                                 "source_topic": b"usage", "source_partition": b"2", "source_offset": b"41"}
