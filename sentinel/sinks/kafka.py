"""Kafka topics the daemon writes: alerts (key = alert_id) and dead letters (original bytes + reason).

:class:`AlertsTopicSink` is an :class:`~sentinel.state.ledger.AlertSink` that
can also answer "did this alert version already reach the topic?" (see
:mod:`sentinel.state.ledger`): it picks the partition itself (the Java
client's murmur2 of the key, like the default partitioner) and records with
each claim a lower bound of the offset the record would land at, so after a
crash it reads only that partition from that offset to the high watermark.

:class:`DeadLetterTopic` produces each rejected line unchanged, with the
reason, field, message (redacted) and source position in headers, so an
operator can fix and re-produce it.

Each has its own idempotent producer (a failing dead-letter topic does not
hold alerts back); ``flush`` waits for every record sent so far and raises if
any failed, which is what makes "flush before saving the checkpoint" hold.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner.default import murmur2

from sentinel.alerts import Alert, decode_alert, encode_alert
from sentinel.config import KafkaSettings
from sentinel.pipeline import DeadLetter
from sentinel.redact import redact_text
from sentinel.sources.kafka import client_config

__all__ = ["AlertsTopicSink", "DeadLetterTopic", "ProducerError", "TopicProducer"]


class ProducerError(Exception):
    """Records could not be delivered to the broker (retry later)."""


class TopicProducer:
    """An idempotent producer that remembers its futures, so ``flush`` can report failed records."""

    def __init__(self, settings: KafkaSettings, client_id: str = "sentinel", flush_timeout_s: float = 10.0,
                 linger_ms: int = 5) -> None:
        self.settings = settings
        self.flush_timeout_s = flush_timeout_s
        self.producer: Any = KafkaProducer(
            **client_config(settings), client_id=f"{client_id}-producer", acks="all", linger_ms=linger_ms,
            max_block_ms=10_000, bootstrap_timeout_ms=10_000,
        )
        self._futures: list[tuple[Any, Any]] = []  # (future, on_success(metadata))

    def send(self, topic: str, value: bytes, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None,
             partition: int | None = None, on_success: Any = None) -> None:
        fut = self.producer.send(topic, value=value, key=key, headers=headers or [], partition=partition)
        self._futures.append((fut, on_success))

    def partitions_for(self, topic: str) -> list[int]:
        return sorted(self.producer.partitions_for(topic) or ())

    def flush(self) -> None:
        """Wait for every record sent so far; raise ProducerError if any failed (they are dropped here:
        the caller re-sends what it still holds)."""
        futures, self._futures = self._futures, []
        if not futures:
            return
        try:
            self.producer.flush(timeout=self.flush_timeout_s)
        except Exception as err:
            raise ProducerError(f"flush: {type(err).__name__}") from None
        failed = 0
        for fut, on_success in futures:
            if fut.failed():
                failed += 1
            elif on_success is not None:
                on_success(fut.value)
        if failed:
            raise ProducerError(f"{failed} of {len(futures)} records not delivered")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.producer.flush(timeout=self.flush_timeout_s)
        self.producer.close(timeout=5)


class AlertsTopicSink:
    """Alerts to a Kafka topic: key = alert_id, value = canonical alert JSON, version etc. in headers."""

    def __init__(self, producer: TopicProducer, topic: str, settings: KafkaSettings, name: str = "alerts_topic",
                 probe_timeout_s: float = 15.0) -> None:
        self.name = name
        self.producer = producer
        self.topic = topic
        self.settings = settings
        self.probe_timeout_s = probe_timeout_s
        self._partitions: list[int] = []
        self._low: dict[int, int] = {}
        self._low_loaded = False
        self.written = 0

    def _partition_of(self, alert_id: str) -> int:
        if not self._partitions:
            self._partitions = self.producer.partitions_for(self.topic)
            if not self._partitions:
                raise ProducerError(f"no partitions for topic {self.topic}")
        idx = (murmur2(alert_id.encode()) & 0x7FFFFFFF) % len(self._partitions)
        return int(self._partitions[idx])

    def hint(self, alert: Alert) -> str:
        """``partition:offset`` where ``offset`` is at most where this record will land."""
        try:
            p = self._partition_of(alert.alert_id)
        except Exception:
            return ""
        if not self._low_loaded:
            self._load_low()
        return f"{p}:{self._low.get(p, 0)}"

    def _load_low(self) -> None:
        # end_offsets may be *below* the true end on some brokers (Tansu): still a valid lower bound.
        try:
            consumer = KafkaConsumer(**client_config(self.settings), enable_auto_commit=False,
                                     bootstrap_timeout_ms=5000)
            try:
                tps = [TopicPartition(self.topic, p) for p in self._partitions]
                ends = consumer.end_offsets(tps, timeout_ms=5000)
            finally:
                consumer.close(autocommit=False)
        except Exception:
            self._low_loaded = True  # 0 stays the (valid, if slower to probe) lower bound; sends raise it
            return
        for tp, off in ends.items():
            self._low[tp.partition] = max(self._low.get(tp.partition, 0), int(off))
        self._low_loaded = True

    def write(self, alerts: list[Alert]) -> None:
        for a in alerts:
            p = self._partition_of(a.alert_id)

            def landed(meta: Any, p: int = p) -> None:
                if meta.offset + 1 > self._low.get(p, 0):
                    self._low[p] = meta.offset + 1

            self.producer.send(
                self.topic, encode_alert(a), key=a.alert_id.encode(), partition=p, on_success=landed,
                headers=[("alert_version", str(a.version).encode()), ("detector", a.detector.encode()),
                         ("severity", a.severity.encode()), ("status", a.status.encode())],
            )
        self.written += len(alerts)

    def flush(self) -> None:
        self.producer.flush()

    def find_sent(self, items: Sequence[tuple[Alert, str]]) -> set[tuple[str, int]]:
        """Read each hinted partition from the hinted offset to its high watermark and report which of
        the (alert_id, version) are there. Raises if the topic cannot be read to the end in time."""
        self.producer.flush()  # records still in flight from an earlier attempt must land (or fail) first
        want: dict[int, int] = {}
        wanted: set[tuple[str, int]] = set()
        for alert, hint in items:
            part, _, low = hint.partition(":")
            p = int(part) if part.isdigit() else self._partition_of(alert.alert_id)
            lo = int(low) if low.isdigit() else 0
            want[p] = min(want.get(p, lo), lo)
            wanted.add((alert.alert_id, alert.version))
        found: set[tuple[str, int]] = set()
        consumer = KafkaConsumer(**client_config(self.settings), enable_auto_commit=False, bootstrap_timeout_ms=5000)
        try:
            tps = {p: TopicPartition(self.topic, p) for p in want}
            consumer.assign(list(tps.values()))
            for p, tp in tps.items():
                consumer.seek(tp, want[p])
            deadline = time.monotonic() + self.probe_timeout_s
            done: set[int] = set()
            while len(done) < len(tps):
                if time.monotonic() > deadline:
                    raise ProducerError("alerts topic probe timed out")
                for records in consumer.poll(timeout_ms=300).values():
                    for r in records:
                        key = (r.key or b"").decode(errors="replace")
                        version = dict(r.headers or ()).get("alert_version")
                        v = int(version) if version else decode_alert(r.value).version
                        if (key, v) in wanted:
                            found.add((key, v))
                for p, tp in tps.items():
                    hw = consumer.highwater(tp)
                    if hw is not None and consumer.position(tp) >= hw:
                        done.add(p)
        finally:
            consumer.close(autocommit=False)
        return found


class DeadLetterTopic:
    """Rejected lines to a Kafka topic: the original bytes, the reason in headers."""

    def __init__(self, producer: TopicProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.written = 0

    def send(self, dead: DeadLetter, raw: bytes, source_topic: str, partition: int, offset: int) -> None:
        headers = [
            ("reason", dead.reason.encode()),
            ("field", (dead.field or "").encode()),
            ("message", redact_text(dead.message).encode()),
            ("source_topic", source_topic.encode()),
            ("source_partition", str(partition).encode()),
            ("source_offset", str(offset).encode()),
        ]
        self.producer.send(self.topic, raw, headers=headers)
        self.written += 1

    def flush(self) -> None:
        self.producer.flush()
