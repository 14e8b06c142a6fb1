"""``sentinel replay --partitions N``: lines routed as a producer keyed by tenant_id routes them, one pipeline
per partition, alerts merged in (detected_at, alert_id, version) order. The daemon side (the same alerts
from ``sentinel run`` over a real 4-partition topic) is tests/integration/test_daemon_sample.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kafka.partitioner import DefaultPartitioner

from sentinel.partitioning import KEYLESS_PARTITION, TenantRouter, kafka_partition
from tests.integration.daemon_helpers import REPO, firing_events, lines_and_keys
from tests.unit.test_cli_replay import sentinel


class _Cluster:
    """The two questions kafka-python's DefaultPartitioner asks the cluster metadata."""

    def __init__(self, n: int) -> None:
        self.n = n

    def topics(self) -> set[str]:
        return {"usage"}

    def partitions_for_topic(self, _topic: str) -> set[int]:
        return set(range(self.n))

    def available_partitions_for_topic(self, _topic: str) -> set[int]:
        return set(range(self.n))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 12])
def test_partition_of_a_key_is_the_kafka_python_producers_choice(n: int) -> None:
    producer_side = DefaultPartitioner()
    keys = [f"t_{i}".encode() for i in range(300)] + [b"", "t_\u00e9\u4e2d".encode(), b"\x00\xff" * 9]
    for key in keys:
        assert kafka_partition(key, n) == producer_side.partition("usage", None, key, None, None, _Cluster(n))
    assert kafka_partition(None, n) == KEYLESS_PARTITION == 0


def test_router_reads_only_the_tenant_id_and_sends_lines_without_one_to_partition_0() -> None:
    router = TenantRouter(4)
    line = b'{"event_id": "e1", "ts": "x", "tenant_id": "t_acme", "nested": {"tenant_id": "t_other"}, "extra": [1]}'
    assert router.key(line) == b"t_acme"
    assert router.partition(line) == kafka_partition(b"t_acme", 4)
    assert router.partition(b'{"tenant_id": "t_acme"}') == router.partition(line)  # memoised, same answer
    for bad in (b"{not json", b"\xff\xfe", b"[1, 2]", b'{"event_id": "x"}', b'{"tenant_id": 7}', b"",
                b'{"tenant_id": "\\ud800"}'):
        assert router.key(bad) is None
        assert router.partition(bad) == KEYLESS_PARTITION
    with pytest.raises(ValueError):
        TenantRouter(0)


def _replay(tmp: Path, src: Path, name: str, *extra: str) -> tuple[list[bytes], dict[str, object]]:
    out, summ = tmp / f"{name}.jsonl", tmp / f"{name}.summary.json"
    res = sentinel("replay", "--rules", str(REPO / "rules"), "--out", str(out), "--dead-letter",
                   str(tmp / f"{name}.dead.jsonl"), "--summary-json", str(summ), "--no-progress", *extra, str(src))
    assert res.returncode == 0, res.stderr.decode()
    return out.read_bytes().splitlines(), json.loads(summ.read_text())


def test_partitioned_replay_is_the_union_of_one_replay_per_partition_sorted(tmp_path: Path) -> None:
    lines, _ = lines_and_keys(firing_events(days=2.0))
    lines.insert(len(lines) // 2, b"{not json")  # keyless: partition 0, dead-lettered there
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(ln + b"\n" for ln in lines))

    got, summary = _replay(tmp_path, src, "p4", "--partitions", "4")
    router = TenantRouter(4)
    per_partition: list[bytes] = []
    used = 0
    for p in range(4):
        part = [ln for ln in lines if router.partition(ln) == p]
        used += bool(part)
        (tmp_path / f"part{p}.jsonl").write_bytes(b"".join(ln + b"\n" for ln in part))
        alerts, _ = _replay(tmp_path, tmp_path / f"part{p}.jsonl", f"part{p}")
        per_partition.extend(alerts)
    assert used >= 3, "the stream's tenants must spread over partitions"
    assert len(per_partition) >= 6, "the stream must make detectors fire"
    assert sorted(got) == sorted(per_partition)  # byte for byte
    order = [(a["detected_at"], a["alert_id"], a["version"]) for a in map(json.loads, got)]
    assert order == sorted(order)
    assert summary["lines"] == len(lines) and summary["rejected_by_reason"] == {"malformed_json": 1}
    assert summary["alerts"] == len(got)

    one, _ = _replay(tmp_path, src, "p1", "--partitions", "1")
    default, _ = _replay(tmp_path, src, "default")
    assert one == default  # --partitions 1 is today's replay, order included


def test_partitions_must_be_positive_and_need_usage_v1_input(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"")
    res = sentinel("replay", "--partitions", "0", str(src))
    assert res.returncode == 2 and b"--partitions" in res.stderr
    res = sentinel("replay", "--partitions", "2", "--format", "litellm", "--dead-letter", str(tmp_path / "d"),
                   str(src))
    assert res.returncode == 2 and b"usage-v1" in res.stderr
    res = sentinel("replay", "--partitions", "2", "--from-kafka", "usage", "--since", "0")
    assert res.returncode == 2 and b"--partitions" in res.stderr


def test_partition_stats_add_up_field_by_field() -> None:
    from collections import Counter
    from dataclasses import fields

    from sentinel.commands.replay import add_stats
    from sentinel.pipeline import PipelineStats

    def filled(k: int) -> PipelineStats:
        s = PipelineStats()
        for f in fields(PipelineStats):
            setattr(s, f.name, Counter({f"x{k}": k, "both": 1}) if isinstance(getattr(s, f.name), Counter) else k)
        return s

    total = PipelineStats()
    add_stats(total, filled(2))
    add_stats(total, filled(5))
    for f in fields(PipelineStats):
        got = getattr(total, f.name)
        assert got == (Counter({"x2": 2, "x5": 5, "both": 2}) if isinstance(got, Counter) else 7), f.name
