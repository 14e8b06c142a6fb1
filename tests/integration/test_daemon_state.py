"""Checkpoint store and notification ledger: memory and Redis implementations, same semantics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sentinel.alerts import Alert, Entity, decode_alert, encode_alert
from sentinel.sinks.jsonl import JsonlAlertSink
from sentinel.state.checkpoints import (
    CheckpointStore,
    CheckpointWrite,
    MemoryCheckpointStore,
    RedisCheckpointStore,
    StoreUnavailable,
)
from sentinel.state.ledger import (
    Claim,
    MemoryNotificationLedger,
    NotificationLedger,
    RedisNotificationLedger,
    deliver,
)
from tests.services import free_port


def _alert(n: int, version: int = 1) -> Alert:
    return Alert(alert_id=f"al_{n:024d}", version=version, status="firing", detector="spend_spike",
                 rule="spend_spike", severity="high", score=0.9, entity=Entity("api_key", f"key_{n}"),
                 tenant_id="t_alpha", detected_at="2026-11-02T08:00:00.000Z", title=f"alert {n}", evidence={"n": n})


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    p = f"test-{uuid.uuid4().hex[:10]}"
    yield p
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{p}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest) -> Iterator[CheckpointStore]:
    if request.param == "memory":
        yield MemoryCheckpointStore()
        return
    url = request.getfixturevalue("redis_url")
    s = RedisCheckpointStore(url, request.getfixturevalue("prefix"))
    yield s
    s.close()


def _ledger(request: pytest.FixtureRequest, kind: str, owner: str) -> NotificationLedger:
    if kind == "memory":
        return MemoryNotificationLedger(owner=owner)
    return RedisNotificationLedger(request.getfixturevalue("redis_url"), request.getfixturevalue("prefix"),
                                   ttl_s=3600, owner=owner)


def test_checkpoint_roundtrip_and_fencing(store: CheckpointStore) -> None:
    assert store.load_many("g", "t", [0, 1]) == {}
    assert store.save_many("g", "t", [CheckpointWrite(0, b"\x00state-a\xff", 100), CheckpointWrite(1, b"b", 7)],
                           owner="o1", now=1000.0) == [True, True]
    got = store.load_many("g", "t", [0, 1, 2])
    assert set(got) == {0, 1}
    assert (got[0].state, got[0].offset, got[0].saved_at, got[0].owner) == (b"\x00state-a\xff", 100, 1000.0, "o1")
    # Equal offset (idle advance, reload) is accepted; a lower one (a replica that lost the partition) is refused.
    assert store.save_many("g", "t", [CheckpointWrite(0, b"same-offset", 100)], owner="o2") == [True]
    assert store.save_many("g", "t", [CheckpointWrite(0, b"stale", 99), CheckpointWrite(1, b"newer", 8)],
                           owner="zombie") == [False, True]
    got = store.load_many("g", "t", [0, 1])
    assert (got[0].state, got[0].offset, got[0].owner) == (b"same-offset", 100, "o2")
    assert (got[1].state, got[1].offset) == (b"newer", 8)
    # Keyed by group and topic too.
    assert store.load_many("other", "t", [0]) == {}
    store.delete("g", "t", [0])
    assert set(store.load_many("g", "t", [0, 1])) == {1}


@pytest.mark.redis
def test_redis_checkpoint_is_one_hash_written_at_once(redis_url: str, prefix: str) -> None:
    s = RedisCheckpointStore(redis_url, prefix)
    big = bytes(range(256)) * 4096  # 1 MiB of every byte value
    assert s.save_many("grp", "top", [CheckpointWrite(3, big, 12345)], owner="me") == [True]
    raw = redis.Redis.from_url(redis_url).hgetall(f"{prefix}:ckpt:grp:top:3")
    assert raw[b"state"] == big and raw[b"offset"] == b"12345" and raw[b"owner"] == b"me"
    s.close()


def test_store_unavailable_does_not_leak_credentials() -> None:
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    s = RedisCheckpointStore(url, socket_timeout_s=0.5)
    with pytest.raises(StoreUnavailable) as err:
        s.load_many("g", "t", [0])
    assert "hunter2" not in str(err.value) and "ConnectionError" in str(err.value)
    assert not s.ping()
    ledger = RedisNotificationLedger(url, socket_timeout_s=0.5)
    with pytest.raises(StoreUnavailable) as err2:
        ledger.claim_many([("al_x", 1, "sink")])
    assert "hunter2" not in str(err2.value)


@pytest.mark.parametrize("kind", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_ledger_claim_confirm_and_uncertain(request: pytest.FixtureRequest, kind: str) -> None:
    a = _ledger(request, kind, "owner-a")
    b = a if kind == "memory" else _ledger(request, kind, "owner-b")
    keys = [("al_1", 1, "topic"), ("al_1", 2, "topic"), ("al_1", 1, "file")]
    assert [r.status for r in a.claim_many(keys, ["0:10", "0:11", ""])] == [Claim.NEW] * 3
    a.confirm_many(keys[:1])
    assert a.status("al_1", 1, "topic") == "sent" and a.status("al_1", 2, "topic") == "pending"
    assert a.status("al_9", 1, "topic") is None
    # A restart / other replica: sent -> skip; claimed but unconfirmed -> uncertain, with the earlier hint.
    res = b.claim_many(keys, ["0:50", "0:51", ""])
    assert [r.status for r in res] == [Claim.DONE, Claim.UNCERTAIN, Claim.UNCERTAIN]
    assert res[1].hint == "0:11"
    assert not b.claim("al_1", 1, "topic") and b.claim("al_2", 1, "topic")


@pytest.mark.redis
def test_redis_ledger_records_expire(redis_url: str, prefix: str) -> None:
    ledger = RedisNotificationLedger(redis_url, prefix, ttl_s=120)
    ledger.claim_many([("al_t", 1, "s")])
    ledger.confirm_many([("al_t", 1, "s")])
    ttl = redis.Redis.from_url(redis_url).ttl(f"{prefix}:notified:s:al_t:1")
    assert 100 < ttl <= 120


class FlakySink:
    """A real file sink that fails its first ``failures`` flushes (what a sink outage looks like)."""

    def __init__(self, path: Path, failures: int) -> None:
        self.name = "flaky"
        self.inner = JsonlAlertSink(path, append=True)
        self.failures = failures
        self.buffer: list[Alert] = []

    def write(self, alerts: list[Alert]) -> None:
        self.buffer.extend(alerts)

    def flush(self) -> None:
        if self.failures:
            self.failures -= 1
            self.buffer.clear()
            raise ConnectionError("sink down")
        self.inner.write(self.buffer)
        self.inner.flush()
        self.buffer.clear()


@pytest.mark.parametrize("kind", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_deliver_at_most_once_per_sink_and_retry(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> None:
    ledger = _ledger(request, kind, "o1")
    good = JsonlAlertSink(tmp_path / "good.jsonl", append=True)
    flaky = FlakySink(tmp_path / "flaky.jsonl", failures=1)
    alerts = [_alert(1), _alert(2), _alert(1, version=2)]
    items = [(a, s) for a in alerts for s in ("jsonl", "flaky")]
    rep = deliver(ledger, [good, flaky], items)
    assert rep.sent == {"jsonl": 3} and rep.errors == {"flaky": "ConnectionError"}
    assert sorted((a.alert_id, a.version) for a, _ in rep.failed) == [(f"al_{1:024d}", 1), (f"al_{1:024d}", 2),
                                                                      (f"al_{2:024d}", 1)]
    # The same alerts again (a restart re-processing them) plus the retry of the failed sink.
    rep2 = deliver(ledger, [good, flaky], items)
    assert rep2.skipped == 3  # jsonl already has them
    assert rep2.resent == 3 and rep2.sent == {"flaky": 3}  # flaky cannot tell: uncertain -> written again
    rep3 = deliver(ledger, [good, flaky], items)
    assert rep3.skipped == 6 and rep3.sent == {}
    good.close()
    flaky.inner.close()
    lines = (tmp_path / "good.jsonl").read_bytes().splitlines()
    assert sorted(lines) == sorted(encode_alert(a) for a in alerts)
    assert [decode_alert(x).title for x in (tmp_path / "flaky.jsonl").read_bytes().splitlines()] == [
        "alert 1", "alert 2", "alert 1"]
