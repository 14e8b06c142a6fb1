"""PagerDuty sink against a strict Events API v2 stand-in: event shape, severity map, per-route keys,
the incident lifecycle through the delivery pipeline (trigger, escalate, Slack acknowledge, resolve),
400 dead-lettered, 429/5xx retried from the outbox, no routing key in any error."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import Iterator

import pytest

from sentinel.alerting.delivery import Delivery, RetryPolicy
from sentinel.alerting.notify import DeliveryError, Notification
from sentinel.alerting.outbox import SqliteOutbox
from sentinel.alerting.routes import Router
from sentinel.alerting.silences import MemorySilenceStore
from sentinel.rules import RoutesFile
from sentinel.sinks.factory import acknowledge_hook
from sentinel.sinks.pagerduty import PD_SEVERITY, PagerDutyRouting, PagerDutySink
from sentinel.sinks.slack_actions import SlackActions
from tests.receivers.alerts import make_alert
from tests.receivers.pagerduty import PagerDutyReceiver

DEFAULT_KEY = "R0UT1NGKEYDEFAULT000000000000001"
SOC_KEY = "R0UT1NGKEYS0C0000000000000000002"
TEMPLATE = "https://sentinel.example.com/alerts/{alert_id}"
ALL_TO_PD = RoutesFile.model_validate({"routes": [], "default_sinks": ["pagerduty"]})
SIGNING = "slack-signing-secret-for-tests"


@pytest.fixture
def pd() -> Iterator[PagerDutyReceiver]:
    r = PagerDutyReceiver({DEFAULT_KEY, SOC_KEY})
    r.start()
    yield r
    r.stop()


def sink(pd: PagerDutyReceiver, routes: RoutesFile | None = ALL_TO_PD, environ: dict[str, str] | None = None,
         default: str | None = DEFAULT_KEY, kv: SqliteOutbox | None = None) -> PagerDutySink:
    return PagerDutySink(PagerDutyRouting(routes, default, environ=environ or {}), base_url=pd.url, kv=kv,
                         alert_url_template=TEMPLATE)


def note(n: int, reason: str = "new", **kw: object) -> Notification:
    a = make_alert(n, **kw)  # type: ignore[arg-type]
    return Notification(alert=a, sink="pagerduty", reason=reason, group_key=f"tenant:{a.tenant_id}")  # type: ignore[arg-type]


def delivery(sinks: list[PagerDutySink], outbox: SqliteOutbox, routes: RoutesFile = ALL_TO_PD,
             max_attempts: int = 6) -> Delivery:
    return Delivery(sinks, outbox, Router(routes), retry=RetryPolicy(initial_s=0.05, max_s=0.2,
                    max_attempts=max_attempts, seed=1), idle_poll_s=0.02, realert_s=0).start()


def test_trigger_event_fields_and_severity_map(pd: PagerDutyReceiver) -> None:
    s = sink(pd)
    sevs = ["critical", "high", "medium", "low", "info"]
    for i, sev in enumerate(sevs):
        s.send([note(i, severity=sev)])
    assert [e["payload"]["severity"] for e in pd.accepted] == ["critical", "error", "warning", "info", "info"]
    assert dict(zip(sevs, ["critical", "error", "warning", "info", "info"], strict=True)) == PD_SEVERITY
    ev = pd.accepted[0]
    a = make_alert(0, severity="critical")
    assert (ev["event_action"], ev["dedup_key"], ev["routing_key"]) == ("trigger", a.alert_id, DEFAULT_KEY)
    p = ev["payload"]
    assert p["summary"] == f"[CRITICAL] {a.title} (tenant t_alpha)"
    assert (p["source"], p["component"], p["group"], p["class"]) == (f"api_key:{a.entity.id}", "spend_spike",
                                                                     "t_alpha", "spend_spike")
    assert p["timestamp"] == a.detected_at
    assert p["custom_details"]["observed_usd_per_hour"] == 412.5  # the evidence, as is
    meta = p["custom_details"]["sentinel"]
    assert (meta["alert_id"], meta["score"], meta["risk_usd_per_hour"]) == (a.alert_id, 0.95, 412.5)
    link = TEMPLATE.replace("{alert_id}", a.alert_id)
    assert ev["links"] == [{"href": link, "text": "Explain in sentinel"}] and ev["client_url"] == link
    assert len(pd.alerts) == 5 and all(x.status == "triggered" for x in pd.alerts)


def test_invalid_event_is_not_retryable_and_errors_carry_no_key(pd: PagerDutyReceiver) -> None:
    bad_key = "short-routing-key-value"
    with pytest.raises(DeliveryError) as exc:
        sink(pd, default=bad_key).send([note(1)])
    assert not exc.value.retryable
    assert "400" in str(exc.value) and "should be 32 characters" in str(exc.value)
    assert bad_key not in str(exc.value)
    unknown = "X" * 32
    with pytest.raises(DeliveryError) as exc:
        sink(pd, default=unknown).send([note(1)])
    assert not exc.value.retryable and "Invalid routing key" in str(exc.value) and unknown not in str(exc.value)
    with pytest.raises(DeliveryError) as exc:  # no key at all for the route: dead letter, not a crash
        sink(pd, default=None).send([note(1)])
    assert not exc.value.retryable and "no PagerDuty routing key" in str(exc.value)
    assert not pd.accepted


def test_per_route_routing_key_and_the_incident_stays_on_its_service(pd: PagerDutyReceiver) -> None:
    routes = RoutesFile.model_validate({"routes": [
        {"name": "soc", "match": {"tenant": "t_alpha", "min_severity": "critical"}, "sinks": ["pagerduty"],
         "pagerduty_routing_key_env": "PD_SOC_KEY"},
        {"name": "rest", "match": {}, "sinks": ["pagerduty"]},
    ]})
    kv = SqliteOutbox(":memory:")
    s = sink(pd, routes, environ={"PD_SOC_KEY": SOC_KEY}, kv=kv)
    s.send([note(1, severity="critical")])                                   # soc route, its own key
    s.send([note(2, tenant="t_beta", severity="critical")])                  # other tenant: default key
    s.send([note(3, severity="high")])                                       # t_alpha but not critical
    s.send([note(3, reason="escalated", version=2, severity="critical")])    # now matches soc: stays put
    s.send([note(3, reason="resolved", version=3, status="resolved", severity="critical")])
    keys = [(e["dedup_key"], e["routing_key"], e["event_action"]) for e in pd.accepted]
    a1, a2, a3 = (make_alert(1).alert_id, make_alert(2, tenant="t_beta").alert_id, make_alert(3).alert_id)
    assert keys == [(a1, SOC_KEY, "trigger"), (a2, DEFAULT_KEY, "trigger"), (a3, DEFAULT_KEY, "trigger"),
                    (a3, DEFAULT_KEY, "trigger"), (a3, DEFAULT_KEY, "resolve")]
    third = pd.latest(a3)
    assert third is not None and (third.triggers, third.severity, third.status) == (2, "critical", "resolved")


def test_route_key_env_unset_falls_back_to_the_default(pd: PagerDutyReceiver) -> None:
    routes = RoutesFile.model_validate({"routes": [
        {"name": "soc", "match": {}, "sinks": ["pagerduty"], "pagerduty_routing_key_env": "PD_UNSET_KEY"}]})
    sink(pd, routes, environ={}).send([note(1)])
    assert pd.accepted[0]["routing_key"] == DEFAULT_KEY


def _slack_ack(actions: SlackActions, alert_n: int) -> int:
    a = make_alert(alert_n)
    value = json.dumps({"alert_id": a.alert_id, "version": 1, "detector": a.detector, "tenant": a.tenant_id,
                        "api_key": a.api_key_id, "entity": a.entity.id})
    payload = {"type": "block_actions", "user": {"id": "U1", "username": "alice"},
               "actions": [{"action_id": "sentinel_ack", "value": value}]}
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time()))
    sig = "v0=" + hmac.new(SIGNING.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    status, _ = actions.handle(body, {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig})
    return status


def test_lifecycle_trigger_escalate_slack_ack_resolve_through_the_outbox(pd: PagerDutyReceiver) -> None:
    outbox = SqliteOutbox(":memory:")
    s = sink(pd, kv=outbox)
    d = delivery([s], outbox)
    actions = SlackActions(SIGNING, MemorySilenceStore(), outbox, on_ack=acknowledge_hook(outbox, [s]))
    a = make_alert(1, severity="high")
    try:
        d.enqueue([a, make_alert(1, version=2, severity="high", score=0.97)])  # same severity: no second page
        assert d.wait_idle(10)
        d.enqueue([make_alert(1, version=3, severity="critical")])
        assert d.wait_idle(10)
        assert _slack_ack(actions, 1) == 200
        assert _slack_ack(actions, 1) == 401  # the same signed request again is a replay
        assert _slack_ack(actions, 2) == 200  # never paged: nothing to acknowledge
        assert d.wait_idle(10)
        pd_alert = pd.latest(a.alert_id)
        assert pd_alert is not None and pd_alert.status == "acknowledged"
        d.enqueue([make_alert(1, version=4, status="resolved", severity="critical")])
        assert d.wait_idle(10)
    finally:
        d.close()
    assert [(e["event_action"], e.get("payload", {}).get("severity")) for e in pd.accepted] == [
        ("trigger", "error"), ("trigger", "critical"), ("acknowledge", None), ("resolve", None)]
    assert len(pd.alerts) == 1 and pd.alerts[0].status == "resolved" and pd.alerts[0].triggers == 2
    assert d.stats.suppressed["pagerduty/no_severity_rise"] == 1


def test_second_ack_click_enqueues_nothing(pd: PagerDutyReceiver) -> None:
    outbox = SqliteOutbox(":memory:")
    s = sink(pd, kv=outbox)
    d = delivery([s], outbox)
    hook = acknowledge_hook(outbox, [s])
    a = make_alert(7)
    value = {"alert_id": a.alert_id, "tenant": a.tenant_id, "detector": a.detector, "entity": a.entity.id}
    try:
        d.enqueue([a])
        assert d.wait_idle(10)
        assert hook(value, "alice", time.time()) == 1
        assert hook(value, "bob", time.time()) == 0
        assert d.wait_idle(10)
    finally:
        d.close()
    assert [e["event_action"] for e in pd.accepted] == ["trigger", "acknowledge"]


def test_throttled_and_failing_service_is_retried_by_the_outbox(pd: PagerDutyReceiver) -> None:
    outbox = SqliteOutbox(":memory:")
    s = sink(pd, kv=outbox)
    d = delivery([s], outbox)
    pd.throttle, pd.fail = 2, 3  # 2 x 429 then 500, 502, 503
    alerts = [make_alert(i) for i in range(4)]
    try:
        d.enqueue(alerts)
        assert d.wait_idle(20)
    finally:
        d.close()
    assert d.stats.failures["pagerduty"] == 5 and d.stats.delivered["pagerduty"] == 4
    assert not d.stats.dead["pagerduty"]
    # Delivered exactly once each: one trigger per dedup key, in order.
    assert [e["dedup_key"] for e in pd.accepted] == [a.alert_id for a in alerts]
    assert all(x.triggers == 1 for x in pd.alerts)


def test_dead_letter_after_max_attempts_and_400_at_once(pd: PagerDutyReceiver) -> None:
    outbox = SqliteOutbox(":memory:")
    good, bad = sink(pd, kv=outbox), None
    d = delivery([good], outbox, max_attempts=3)
    pd.fail = 100
    try:
        d.enqueue([make_alert(1)])
        assert d.wait_idle(20)
    finally:
        d.close()
    pd.fail = 0
    [dead] = outbox.dead("pagerduty")
    assert dead.attempts == 3 and "gave up after 3 attempts" in dead.reason and DEFAULT_KEY not in dead.reason
    outbox2 = SqliteOutbox(":memory:")
    bad = sink(pd, default="Y" * 32, kv=outbox2)
    d2 = delivery([bad], outbox2)
    try:
        d2.enqueue([make_alert(2)])
        assert d2.wait_idle(10)
    finally:
        d2.close()
    [dead2] = outbox2.dead("pagerduty")
    assert dead2.attempts == 1 and dead2.reason.startswith("rejected") and "Y" * 32 not in dead2.reason
    assert not pd.accepted


def test_factory_builds_the_paging_sinks_from_settings_and_knows_their_secrets(
        pd: PagerDutyReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import SecretStr

    from sentinel.config import Settings
    from sentinel.sinks.factory import build_notifiers, secrets_of

    monkeypatch.setenv("PD_SOC_KEY", SOC_KEY)
    base = Settings()
    settings = base.model_copy(update={"sinks": base.sinks.model_copy(update={
        "pagerduty_url": pd.url, "opsgenie_api_key": SecretStr("og-key-123"),
        "alertmanager_urls": ("http://127.0.0.1:9",), "alertmanager_bearer_token": SecretStr("am-token-456"),
        "alert_url_template": TEMPLATE})})
    routes = RoutesFile.model_validate({"routes": [
        {"name": "soc", "match": {}, "sinks": ["pagerduty"], "pagerduty_routing_key_env": "PD_SOC_KEY"}]})
    outbox = SqliteOutbox(":memory:")
    notifiers = build_notifiers(settings, outbox, MemorySilenceStore(), routes=routes)
    try:
        names = [n.name for n in notifiers]
        assert {"pagerduty", "opsgenie", "alertmanager"} <= set(names)
        pd_sink = next(n for n in notifiers if isinstance(n, PagerDutySink))
        pd_sink.send([note(1)])  # no default key: the route's key from the environment
        assert pd.accepted[0]["routing_key"] == SOC_KEY
        assert {"og-key-123", "am-token-456"} <= set(secrets_of(settings))
        assert "pagerduty" not in [n.name for n in build_notifiers(base, outbox, MemorySilenceStore())]
    finally:
        for n in notifiers:
            n.close()
