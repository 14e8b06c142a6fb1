"""Replay a time range of a Kafka topic: map times to offsets, read exactly that range, in time order.

``sentinel replay --from-kafka TOPIC --since T [--until T]`` uses this to feed
history still retained in Kafka through the same pipeline as a file replay.

**Times to offsets.** For each partition the range is ``[start, end)``:
``start`` = the first offset whose record timestamp is ``>= since``, ``end`` =
the first offset whose timestamp is ``> until`` (or the partition's end). The
broker's answer to ``offsets_for_times`` (ListOffsets by timestamp) is used
only after checking it against the records themselves -- the record at the
offset must carry the timestamp the broker reported, be at or after the
target, and the record before it must be earlier. Tansu 0.6 fails that check
(it answers offset 0 with the current wall-clock time for every target), and
so would any broker with a similar bug; then the offset is found by a binary
search over the partition, fetching one record per probe (``O(log n)``
fetches; record timestamps are assumed non-decreasing within a partition,
which holds for CreateTime set by one producer per key). The partition's
end is the **high watermark from a fetch response**, never ``end_offsets()``
(wrong on Tansu: the base offset of the last batch + 1).

**Reading.** The partitions are assigned (no consumer group: nothing is
committed, no rebalance delay) and read up to their end offsets, merged by
record timestamp so the pipeline sees one stream in time order, and handed
over in chunks. A chunk holds records from several partitions but spans less
than half the pipeline's allowed lateness of event time, and each partition's
part of it is fed on its own (source ``kafka:TOPIC/PARTITION``, positions =
offsets), so dead letters name the exact partition and offset.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from sentinel.logs import get_logger

log = get_logger("sentinel.replay")


class KafkaRangeError(Exception):
    """The range cannot be read (unknown topic, broker unreachable, a partition that never answers)."""


@dataclass
class PartitionRange:
    partition: int
    start: int
    end: int
    method: str = "offsets_for_times"

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


@dataclass
class RangePlan:
    topic: str
    since_ms: int
    until_ms: int | None
    partitions: list[PartitionRange] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(p.size for p in self.partitions)


@dataclass(slots=True)
class Chunk:
    """Records of one partition inside one time slice: what one ``Pipeline.feed`` call gets."""

    partition: int
    values: list[bytes]
    offsets: list[int]


class _Reader:
    """One-record probes on a manually assigned consumer."""

    def __init__(self, consumer: KafkaConsumer, timeout_s: float) -> None:
        self.c = consumer
        self.timeout_s = timeout_s

    def record_at(self, tp: TopicPartition, offset: int) -> Any | None:
        """The record at ``offset`` (or the next one present), None past the end."""
        c = self.c
        c.assign([tp])
        c.seek(tp, offset)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            got = c.poll(timeout_ms=200, max_records=1)
            for rec in got.get(tp, ()):
                return rec
            hw = c.highwater(tp)
            if hw is not None and offset >= hw:
                return None
        return None

    def highwater(self, tp: TopicPartition, begin: int) -> int:
        """The partition's end from a fetch response (not ListOffsets)."""
        c = self.c
        c.assign([tp])
        c.seek(tp, begin)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            c.poll(timeout_ms=200, max_records=1)
            hw = c.highwater(tp)
            if hw is not None:
                return int(hw)
        raise KafkaRangeError(f"{tp.topic}/{tp.partition}: no fetch response within {self.timeout_s:.0f}s")

    def first_at_or_after(self, tp: TopicPartition, target_ms: int, lo: int, hi: int) -> int:
        """Binary search for the first offset in [lo, hi) whose record timestamp is >= target (hi if none)."""
        while lo < hi:
            mid = (lo + hi) // 2
            rec = self.record_at(tp, mid)
            if rec is None:
                hi = mid
            elif rec.timestamp >= target_ms:
                hi = min(mid, rec.offset)
            else:
                lo = rec.offset + 1
        return lo

    def verified(self, tp: TopicPartition, answer: Any, target_ms: int, begin: int, end: int) -> int | None:
        """The broker's ListOffsets answer if the records confirm it, else None."""
        if answer is None:  # "no record at or after the target": check that the last record is earlier
            if end <= begin:
                return end
            last = self.record_at(tp, end - 1)
            return end if last is not None and last.timestamp < target_ms else None
        off = int(answer.offset)
        if not begin <= off <= end:
            return None
        if off == end:
            return end
        rec = self.record_at(tp, off)
        if rec is None or rec.offset != off or rec.timestamp != answer.timestamp or rec.timestamp < target_ms:
            return None
        if off > begin:
            prev = self.record_at(tp, off - 1)
            if prev is None or prev.timestamp >= target_ms:
                return None
        return off


def plan_range(consumer: KafkaConsumer, topic: str, since_ms: int, until_ms: int | None,
               timeout_s: float = 10.0) -> RangePlan:
    """Map ``[since, until]`` (ms) to ``[start, end)`` offsets per partition (see the module docstring)."""
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise KafkaRangeError(f"topic {topic!r} does not exist (or has no partitions)")
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    reader = _Reader(consumer, timeout_s)
    begins = consumer.beginning_offsets(tps)
    plan = RangePlan(topic, since_ms, until_ms)
    targets = [since_ms] + ([until_ms + 1] if until_ms is not None else [])
    answers: list[dict[TopicPartition, Any]] = []
    for target in targets:
        try:
            answers.append(consumer.offsets_for_times({tp: target for tp in tps}))
        except Exception as err:  # a broker without timestamp lookups: search instead
            log.warning("kafka_offsets_for_times_failed", topic=topic, error=type(err).__name__)
            answers.append({})
    for tp in tps:
        begin = int(begins[tp])
        end_all = reader.highwater(tp, begin)
        offsets = []
        methods = []
        for target, answer in zip(targets, answers, strict=True):
            got = reader.verified(tp, answer.get(tp), target, begin, end_all) if tp in answer else None
            if got is None:
                got = reader.first_at_or_after(tp, target, begin, end_all)
                methods.append("binary search")
            else:
                methods.append("offsets_for_times")
            offsets.append(got)
        start = offsets[0]
        end = offsets[1] if until_ms is not None else end_all
        method = "offsets_for_times" if set(methods) == {"offsets_for_times"} else "binary search"
        plan.partitions.append(PartitionRange(tp.partition, start, max(start, end), method))
    log.info("kafka_range_planned", topic=topic, since_ms=since_ms, until_ms=until_ms, records=plan.records,
             partitions=len(plan.partitions), methods=sorted({p.method for p in plan.partitions}))
    return plan


def read_range(consumer: KafkaConsumer, plan: RangePlan, slice_ms: int = 15_000, max_chunk: int = 4096,
               timeout_s: float = 10.0, max_buffered: int = 50_000) -> Iterator[list[Chunk]]:
    """Yield groups of chunks in record-timestamp order; each group spans less than ``slice_ms``."""
    todo = {p.partition: p for p in plan.partitions if p.size > 0}
    if not todo:
        return
    tps = {p: TopicPartition(plan.topic, p) for p in todo}
    consumer.assign(list(tps.values()))
    for p, r in todo.items():
        consumer.seek(tps[p], r.start)
    buffers: dict[int, deque[tuple[int, int, bytes]]] = {p: deque() for p in todo}
    done: set[int] = set()
    paused: set[int] = set()
    heap: list[tuple[int, int, int]] = []  # (timestamp, partition, offset) of each buffer's head
    group: dict[int, Chunk] = {}
    group_first = -1
    group_size = 0
    last_progress = time.monotonic()

    def push_head(p: int) -> None:
        if buffers[p]:
            ts, off, _ = buffers[p][0]
            heapq.heappush(heap, (ts, p, off))

    while len(done) < len(todo) or heap:
        # Fill: every partition still being read must have a buffered record before we can order.
        starving = [p for p in todo if p not in done and not buffers[p]]
        if starving:
            for p in list(paused):
                if len(buffers[p]) < max_buffered // 2:
                    consumer.resume(tps[p])
                    paused.discard(p)
            got = consumer.poll(timeout_ms=200, max_records=5000)
            progressed = False
            for tp, recs in got.items():
                p = tp.partition
                if p not in todo or p in done:
                    continue
                end = todo[p].end
                was_empty = not buffers[p]
                for rec in recs:
                    if rec.offset >= end:
                        break
                    if rec.value is not None:
                        buffers[p].append((int(rec.timestamp), int(rec.offset), bytes(rec.value)))
                    progressed = True
                if was_empty:
                    push_head(p)
                if recs and recs[-1].offset + 1 >= end:
                    done.add(p)
                    consumer.pause(tp)
                elif len(buffers[p]) >= max_buffered:
                    consumer.pause(tp)
                    paused.add(p)
            for p in todo:
                if p not in done and consumer.position(tps[p]) >= todo[p].end:
                    done.add(p)
            if progressed:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > timeout_s:
                missing = sorted(p for p in todo if p not in done)
                raise KafkaRangeError(f"{plan.topic}: partitions {missing} stopped delivering before their end "
                                      f"offsets ({timeout_s:.0f}s without a record)")
            if any(p not in done and not buffers[p] for p in todo):
                continue
        if not heap:
            continue
        ts, p, off = heapq.heappop(heap)
        _, _, value = buffers[p].popleft()
        push_head(p)
        if group_first < 0:
            group_first = ts
        elif ts - group_first >= slice_ms or group_size >= max_chunk:
            yield list(group.values())
            group, group_first, group_size = {}, ts, 0
        ch = group.get(p)
        if ch is None:
            ch = group[p] = Chunk(p, [], [])
        ch.values.append(value)
        ch.offsets.append(off)
        group_size += 1
    if group:
        yield list(group.values())


def replay_kafka(consumer: KafkaConsumer, plan: RangePlan, feed: Callable[[list[bytes], str, list[int]], None],
                 lateness_s: float, on_chunk: Callable[[int], None] | None = None) -> int:
    """Feed the planned range to ``feed(values, source, offsets)``; returns the number of records read."""
    n = 0
    slice_ms = max(1, int(lateness_s * 1000 / 2))
    for group in read_range(consumer, plan, slice_ms=slice_ms):
        for ch in group:
            feed(ch.values, f"kafka:{plan.topic}/{ch.partition}", ch.offsets)
            n += len(ch.values)
            if on_chunk is not None:
                on_chunk(len(ch.values))
    return n
