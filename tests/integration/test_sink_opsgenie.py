"""Opsgenie sink against a strict Alert API stand-in: create body and priority map, escalation updates
the priority, Slack acknowledge, close on resolve, 401/422 semantics, 429/503 retried from the outbox."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from sentinel.alerting.delivery import Delivery, RetryPolicy
from sentinel.alerting.notify import DeliveryError, Notification
from sentinel.alerting.outbox import SqliteOutbox
from sentinel.alerting.routes import Router
from sentinel.rules import RoutesFile
from sentinel.sinks.factory import acknowledge_hook
from sentinel.sinks.opsgenie import OG_PRIORITY, OpsgenieSink
from tests.receivers.alerts import make_alert
from tests.receivers.opsgenie import OpsgenieReceiver

KEY = "5d2c5e7a-0b4c-4f6e-9a1d-opsgenie-key"
ALL_TO_OG = RoutesFile.model_validate({"routes": [], "default_sinks": ["opsgenie"]})
TEMPLATE = "https://sentinel.example.com/alerts/{alert_id}"


@pytest.fixture
def og() -> Iterator[OpsgenieReceiver]:
    r = OpsgenieReceiver(KEY)
    r.start()
    yield r
    r.stop()


def sink(og: OpsgenieReceiver, key: str = KEY) -> OpsgenieSink:
    return OpsgenieSink(key, base_url=og.url, responders=("team:SOC", "user:oncall@example.com"),
                        alert_url_template=TEMPLATE)


def note(n: int, reason: str = "new", **kw: object) -> Notification:
    a = make_alert(n, **kw)  # type: ignore[arg-type]
    return Notification(alert=a, sink="opsgenie", reason=reason, group_key=f"tenant:{a.tenant_id}")  # type: ignore[arg-type]


def delivery(s: OpsgenieSink, outbox: SqliteOutbox) -> Delivery:
    return Delivery([s], outbox, Router(ALL_TO_OG), retry=RetryPolicy(initial_s=0.05, max_s=0.2, max_attempts=6,
                    seed=1), idle_poll_s=0.02, realert_s=0).start()


def test_create_body_and_priority_map(og: OpsgenieReceiver) -> None:
    s = sink(og)
    sevs = ["critical", "high", "medium", "low", "info"]
    for i, sev in enumerate(sevs):
        s.send([note(i, severity=sev)])
    assert [og.alerts[make_alert(i).alert_id].priority for i in range(5)] == ["P1", "P2", "P3", "P4", "P5"]
    assert dict(zip(sevs, ["P1", "P2", "P3", "P4", "P5"], strict=True)) == OG_PRIORITY
    method, path, headers, _ = og.requests[0]
    assert (method, path, headers["Authorization"]) == ("POST", "/v2/alerts", f"GenieKey {KEY}")
    a = make_alert(0)
    body = og.alerts[a.alert_id].body
    assert body["message"] == f"[CRITICAL] {a.title}" and body["alias"] == a.alert_id
    assert (body["entity"], body["source"]) == (f"api_key:{a.entity.id}", "sentinel")
    assert body["responders"] == [{"type": "team", "name": "SOC"}, {"type": "user", "username": "oncall@example.com"}]
    assert {"sentinel", "spend_spike", "critical", "tenant:t_alpha"} <= set(body["tags"])
    d = body["details"]
    assert d["evidence.observed_usd_per_hour"] == "412.5" and d["explain_url"] == TEMPLATE.replace(
        "{alert_id}", a.alert_id)
    assert TEMPLATE.replace("{alert_id}", a.alert_id) in body["description"]


def test_long_title_and_huge_evidence_stay_within_the_limits(og: OpsgenieReceiver) -> None:
    evidence = {f"k{i}": "v" * 300 for i in range(60)}
    sink(og).send([note(1, title="t" * 400, evidence=evidence)])
    body = og.alerts[make_alert(1).alert_id].body
    assert len(body["message"]) == 130 and body["details"]["evidence_truncated"] == "true"


def test_lifecycle_escalate_ack_close_through_the_outbox(og: OpsgenieReceiver) -> None:
    outbox = SqliteOutbox(":memory:")
    s = sink(og)
    d = delivery(s, outbox)
    hook = acknowledge_hook(outbox, [s])
    a = make_alert(1, severity="medium")
    try:
        d.enqueue([a])
        assert d.wait_idle(10)
        assert og.alerts[a.alert_id].priority == "P3"
        d.enqueue([make_alert(1, version=2, severity="critical")])
        assert d.wait_idle(10)
        assert (og.alerts[a.alert_id].priority, og.alerts[a.alert_id].count) == ("P1", 2)
        assert hook({"alert_id": a.alert_id, "tenant": "t_alpha", "detector": "spend_spike"}, "alice",
                    time.time()) == 1
        assert d.wait_idle(10)
        assert og.alerts[a.alert_id].acknowledged
        d.enqueue([make_alert(1, version=3, status="resolved", severity="critical")])
        assert d.wait_idle(10)
    finally:
        d.close()
    assert og.alerts[a.alert_id].status == "closed" and len(og.history) == 1
    paths = [(m, p.split("?")[0].rsplit("/", 1)[-1], p.partition("?")[2]) for m, p, _, _ in og.requests]
    assert paths == [("POST", "alerts", ""), ("POST", "alerts", ""), ("PUT", "priority", "identifierType=alias"),
                     ("POST", "acknowledge", "identifierType=alias"), ("POST", "close", "identifierType=alias")]


def test_bad_key_is_retryable_and_never_in_the_error(og: OpsgenieReceiver) -> None:
    wrong = "wrong-genie-key-0123456789"
    with pytest.raises(DeliveryError) as exc:
        sink(og, wrong).send([note(1)])
    assert exc.value.retryable and "401" in str(exc.value) and "Could not authenticate" in str(exc.value)
    assert wrong not in str(exc.value) and KEY not in str(exc.value) and not og.alerts


def test_unprocessable_body_is_not_retryable(og: OpsgenieReceiver) -> None:
    s = sink(og)
    s.create_body = lambda n: {"message": "", "alias": n.alert.alert_id}  # type: ignore[method-assign]
    with pytest.raises(DeliveryError) as exc:
        s.send([note(1)])
    assert not exc.value.retryable and "422" in str(exc.value) and "request " in str(exc.value)


def test_rate_limited_and_unavailable_are_retried_once_delivered(og: OpsgenieReceiver) -> None:
    outbox = SqliteOutbox(":memory:")
    d = delivery(sink(og), outbox)
    og.throttle, og.fail = 2, 2
    try:
        d.enqueue([make_alert(i) for i in range(3)])
        assert d.wait_idle(20)
    finally:
        d.close()
    assert d.stats.failures["opsgenie"] == 4 and d.stats.delivered["opsgenie"] == 3
    assert sorted(og.alerts) == sorted(make_alert(i).alert_id for i in range(3))
    assert all(a.count == 1 for a in og.alerts.values())
