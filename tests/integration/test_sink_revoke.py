"""The revoke ladder against a strict signed webhook; caps across two replicas sharing Redis."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sentinel.alerting.delivery import Delivery, RetryPolicy
from sentinel.alerting.outbox import RedisOutbox
from sentinel.alerting.routes import Router
from sentinel.rules import RoutesFile
from sentinel.sinks.revoke import (
    AuditLog,
    MemoryRateLimiter,
    RedisRateLimiter,
    RevokeLadder,
    RevokeSink,
    RevokeWebhook,
    unrevoke,
)
from tests.receivers.alerts import make_alert
from tests.receivers.revoke import RevokeReceiver

SECRET = "revoke-hmac-secret-value-42"
ROUTES = RoutesFile.model_validate({"routes": [], "default_sinks": ["revoke"]})


@pytest.fixture
def receiver() -> Iterator[RevokeReceiver]:
    r = RevokeReceiver(SECRET).start()
    yield r
    r.stop()


def sink(receiver: RevokeReceiver, tmp_path: Path, **ladder: object) -> RevokeSink:
    opts: dict[str, object] = {"dry_run": False, "min_score": 0.9, "min_signals": 2, **ladder}
    return RevokeSink(RevokeLadder(**opts),  # type: ignore[arg-type]
                      RevokeWebhook(receiver.url + "/revoke", SECRET), AuditLog(tmp_path / "audit.jsonl"))


def test_each_rung_skips_with_its_reason(receiver: RevokeReceiver, tmp_path: Path) -> None:
    s = sink(receiver, tmp_path, deny=["t_denied"], allow=[])
    cases = {
        "not_firing": make_alert(1, status="resolved"),
        "deny_list": make_alert(2, tenant="t_denied"),
        "below_min_score": make_alert(3, score=0.5),
        "too_few_signals": make_alert(4, signals={"spend_ratio": 0.9, "new_ip": 0.01}),
    }
    for reason, alert in cases.items():
        assert s.revoke(alert).reason == reason
    assert s.revoke(make_alert(5)).action == "revoke"
    allow_only = sink(receiver, tmp_path, allow=["key_other"])
    assert allow_only.revoke(make_alert(6)).reason == "not_in_allow_list"
    recs = s.audit.records()
    assert [r.decision for r in recs] == ["skipped"] * 4 + ["sent", "skipped"]
    assert [r.reason for r in recs[:4]] == list(cases)
    assert [d["api_key_id"] for d in receiver.revoked] == [make_alert(5).api_key_id]


def test_dry_run_is_the_default_and_sends_nothing(receiver: RevokeReceiver, tmp_path: Path) -> None:
    s = RevokeSink(RevokeLadder(), RevokeWebhook(receiver.url + "/revoke", SECRET), AuditLog(tmp_path / "a.jsonl"))
    d = s.revoke(make_alert(1))
    assert (d.action, d.reason) == ("would_revoke", "dry_run")
    assert not receiver.requests
    assert s.audit.records()[0].decision == "would_revoke"


def test_signature_timestamp_and_idempotency_key_are_verified(receiver: RevokeReceiver, tmp_path: Path) -> None:
    good = sink(receiver, tmp_path)
    alert = make_alert(1)
    good.revoke(alert)
    _, _, headers, body = receiver.requests[-1]
    assert headers["Idempotency-Key"] == alert.alert_id
    assert json.loads(body)["api_key_id"] == alert.api_key_id
    good.revoke(alert)  # a retry of the same alert: the receiver answers from its idempotency record
    assert len(receiver.revoked) == 1
    bad = RevokeSink(RevokeLadder(dry_run=False), RevokeWebhook(receiver.url + "/revoke", "not-the-secret"),
                     AuditLog(tmp_path / "b.jsonl"))
    from sentinel.alerting.notify import DeliveryError

    with pytest.raises(DeliveryError) as exc:
        bad.revoke(make_alert(2))
    assert "401" in str(exc.value) and not exc.value.retryable
    assert "not-the-secret" not in str(exc.value)
    assert receiver.rejected == ["bad_signature"]
    stale = RevokeSink(RevokeLadder(dry_run=False),
                       RevokeWebhook(receiver.url + "/revoke", SECRET, clock=lambda: 1_000_000.0),
                       AuditLog(tmp_path / "c.jsonl"))
    with pytest.raises(DeliveryError):
        stale.revoke(make_alert(3))
    assert receiver.rejected[-1] == "stale_timestamp"
    assert [r.decision for r in AuditLog(tmp_path / "b.jsonl").records()] == ["failed"]


def test_unrevoke_is_signed_and_audited(receiver: RevokeReceiver, tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    webhook = RevokeWebhook(receiver.url + "/revoke", SECRET)
    unrevoke(webhook, audit, "key_9", actor="cli:alice", reason="false positive")
    assert receiver.unrevoked[0]["api_key_id"] == "key_9"
    assert audit.records()[0].decision == "unrevoke_sent" and audit.records()[0].actor == "cli:alice"


def test_memory_window_slides_and_lets_a_retry_through() -> None:
    lim = MemoryRateLimiter(2, window_s=3600)
    assert lim.acquire("a", 0) and lim.acquire("b", 1) and not lim.acquire("c", 2)
    assert lim.acquire("a", 3)  # already counted: a retry
    assert lim.acquire("c", 3601)


@pytest.mark.redis
def test_cap_holds_under_a_burst_of_100_across_two_replicas(receiver: RevokeReceiver, tmp_path: Path,
                                                            redis_url: str) -> None:
    cap = 5
    prefix = f"test-revoke-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    replicas = []
    try:
        for r in range(2):
            ladder = RevokeLadder(dry_run=False, max_per_hour=cap,
                                  limiter=RedisRateLimiter(client, f"{prefix}:revoke:window", cap))
            s = RevokeSink(ladder, RevokeWebhook(receiver.url + "/revoke", SECRET), AuditLog(tmp_path / f"a{r}.jsonl"))
            d = Delivery([s], RedisOutbox(client, f"{prefix}:r{r}"), Router(ROUTES),
                         retry=RetryPolicy(initial_s=0.05, max_s=0.1, seed=r), idle_poll_s=0.02)
            replicas.append(d.start())
        alerts = [make_alert(i, tenant=f"t_{i % 7}") for i in range(100)]
        threads = [threading.Thread(target=replicas[r].enqueue, args=(alerts[r::2],)) for r in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for d in replicas:
            assert d.wait_idle(30)
    finally:
        for d in replicas:
            d.close()
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
    assert len(receiver.revoked) == cap
    records = AuditLog(tmp_path / "a0.jsonl").records() + AuditLog(tmp_path / "a1.jsonl").records()
    assert len(records) == 100
    assert sum(r.decision == "sent" for r in records) == cap
    assert sum(r.reason == "rate_limited" for r in records) == 100 - cap
