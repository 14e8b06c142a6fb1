"""``sentinel replay --from-kafka TOPIC --since T --until T`` against a real broker.

The topic gets a few days of synthetic events keyed by tenant (3 partitions),
with the record timestamp set to the event time, plus one malformed record.
Replaying a time range from Kafka must read exactly the records of that
range (no more, no fewer: checked against the offsets the producer got
back) and raise byte-identical alerts to a file replay of the same events.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from sentinel.cli import main
from sentinel.tuning.kafka_range import plan_range
from tests.synth import HOUR, T0, Factory, background, iso, merge, to_lines

pytestmark = pytest.mark.kafka

F = Factory("k")


@pytest.fixture(scope="module")
def topic(kafka_bootstrap: str) -> tuple[str, list[tuple[float, int, int, bytes]]]:
    """(topic name, [(event ts, partition, offset, value)]) of what was produced."""
    name = f"usage-range-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(name, 3, 1)])
    finally:
        admin.close()
    reads = [F.event(T0 + 20 * HOUR + 60 * i, tenant_id="t_beta", api_key_id="key_beta_1",
                     resource_tenant_id="t_alpha", user_id="u_b") for i in range(5)]
    events = merge(background(days=1.5, seed=21), reads)
    records = [(float(ev.ts), ev.tenant_id.encode(), value)
               for ev, value in zip(events, to_lines(events), strict=True)]
    records.append((T0 + 12 * HOUR, b"t_alpha", b'{"event_id": "broken", "ts": '))  # a malformed record, in order
    records.sort(key=lambda r: r[0])
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=10, batch_size=128 * 1024)
    futures = [(ts, value, producer.send(name, key=key, value=value, timestamp_ms=int(ts * 1000)))
               for ts, key, value in records]
    producer.flush()
    produced = []
    for ts, value, fut in futures:
        md = fut.get(timeout=30)
        produced.append((ts, md.partition, md.offset, value))
    producer.close()
    return name, produced


def in_range(produced: list[tuple[float, int, int, bytes]], since: float, until: float) -> list[tuple[float, int, int,
                                                                                                     bytes]]:
    # Record timestamps are whole milliseconds: compare the way the broker does.
    lo, hi = int(since * 1000), int(until * 1000)
    return [p for p in produced if lo <= int(p[0] * 1000) <= hi]


def test_plan_maps_times_to_offsets(kafka_bootstrap: str, topic: tuple[str, list[tuple[float, int, int, bytes]]]
                                    ) -> None:
    name, produced = topic
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    try:
        since, until = T0 + 6 * HOUR, T0 + 21 * HOUR
        plan = plan_range(consumer, name, int(since * 1000), int(until * 1000))
        want = in_range(produced, since, until)
        for pr in plan.partitions:
            offs = sorted(o for _, p, o, _ in want if p == pr.partition)
            assert offs, f"partition {pr.partition} has no record in range"
            assert (pr.start, pr.end) == (offs[0], offs[-1] + 1)
            assert pr.method in ("offsets_for_times", "binary search")
        # Whole topic; and a range after the last record is empty.
        whole = plan_range(consumer, name, 0, None)
        ends = {p: max(o for _, pp, o, _ in produced if pp == p) + 1 for p in range(3)}
        assert {p.partition: (p.start, p.end) for p in whole.partitions} == {p: (0, e) for p, e in ends.items()}
        late = plan_range(consumer, name, int((T0 + 10 * 86400) * 1000), None)
        assert late.records == 0
    finally:
        consumer.close()


def test_replay_range_equals_file_replay(kafka_bootstrap: str, topic: tuple[str, list[tuple[float, int, int, bytes]]],
                                         tmp_path: Path) -> None:
    name, produced = topic
    since, until = T0 + 6 * HOUR, T0 + 30 * HOUR
    want = in_range(produced, since, until)
    summary = tmp_path / "summary.json"
    code = main(["replay", "--from-kafka", name, "--since", iso(since), "--until", str(until),
                 "--bootstrap", kafka_bootstrap, "--out", str(tmp_path / "k.jsonl"),
                 "--dead-letter", str(tmp_path / "k.dead.jsonl"), "--summary-json", str(summary), "--no-progress"])
    assert code == 0
    data = json.loads(summary.read_text())
    assert data["lines"] == len(want)  # exactly the range
    assert data["rejected"] == 1
    assert {p["method"] for p in data["kafka"]["partitions"]} <= {"offsets_for_times", "binary search"}
    [dead] = [json.loads(x) for x in (tmp_path / "k.dead.jsonl").read_text().splitlines()]
    [(_, bad_p, bad_off, _)] = [p for p in produced if p[3].startswith(b'{"event_id": "broken"')]
    assert (dead["source"], dead["position"]) == (f"kafka:{name}/{bad_p}", bad_off)
    # The same events from a file, in time order, give byte-identical alerts.
    good = sorted((p for p in want if not p[3].startswith(b'{"event_id": "broken"')), key=lambda p: p[0])
    (tmp_path / "f.jsonl").write_bytes(b"\n".join(p[3] for p in good) + b"\n")
    assert main(["replay", str(tmp_path / "f.jsonl"), "--out", str(tmp_path / "f.jsonl.alerts"),
                 "--dead-letter", str(tmp_path / "f.dead.jsonl"), "--no-progress"]) == 0
    kafka_alerts = (tmp_path / "k.jsonl").read_bytes()
    assert kafka_alerts == (tmp_path / "f.jsonl.alerts").read_bytes()
    assert b'"entity":{"type":"api_key","id":"key_beta_1"}' in kafka_alerts  # the incident is in the range


def test_replay_from_kafka_errors(kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["replay", "--bootstrap", kafka_bootstrap, "--out", str(tmp_path / "a.jsonl"),
            "--dead-letter", str(tmp_path / "d.jsonl"), "--no-progress"]
    assert main([*base, "--from-kafka", "x"]) == 2
    assert "needs --since" in capsys.readouterr().err
    assert main([*base, "--from-kafka", "x", "--since", "yesterday"]) == 2
    assert "bad --since/--until" in capsys.readouterr().err
    assert main([*base, "--from-kafka", "x", "--since", "2026-11-03T00:00:00Z", "--until", "2026-11-02T00:00:00Z"]) == 2
    assert "--until is before --since" in capsys.readouterr().err
    assert main([*base]) == 2
    assert "give INPUT files" in capsys.readouterr().err
