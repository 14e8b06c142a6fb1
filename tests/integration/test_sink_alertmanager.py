"""Alertmanager sink against a real Prometheus Alertmanager (Debian ``prometheus-alertmanager``) that
routes to a local webhook receiver: alerts arrive grouped by tenant, the re-post cadence keeps them
firing (also after a restart), resolve and severity changes arrive as resolved, 400 is not retried."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sentinel.alerting.delivery import Delivery, RetryPolicy
from sentinel.alerting.notify import DeliveryError, Notification
from sentinel.alerting.outbox import SqliteOutbox
from sentinel.alerting.routes import Router
from sentinel.alerts import rfc3339
from sentinel.rules import RoutesFile
from sentinel.sinks.alertmanager import AlertmanagerSink
from tests.receivers.alerts import T0, make_alert
from tests.receivers.base import Receiver, Reply
from tests.services import REPO, Service, _spawn, free_port, wait_tcp

ALL_TO_AM = RoutesFile.model_validate({"routes": [], "default_sinks": ["alertmanager"]})
TEMPLATE = "https://sentinel.example.com/alerts/{alert_id}"
_WEBHOOK_KEYS = {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels", "commonLabels",
                 "commonAnnotations", "externalURL", "alerts"}
_ALERT_KEYS = {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}


class WebhookReceiver(Receiver):
    """Alertmanager's webhook_config target: checks the documented payload (version 4) strictly."""

    def __init__(self) -> None:
        super().__init__()
        self.notifications: list[dict[str, Any]] = []
        self.invalid: list[str] = []

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if (method, path) != ("POST", "/hook"):
            return Reply(404, "not found", content_type="text/plain")
        ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        try:
            doc = json.loads(body)
            assert ctype.startswith("application/json"), ctype
            assert set(doc) == _WEBHOOK_KEYS, set(doc) ^ _WEBHOOK_KEYS
            assert doc["version"] == "4" and doc["status"] in ("firing", "resolved")
            for a in doc["alerts"]:
                assert set(a) == _ALERT_KEYS, set(a) ^ _ALERT_KEYS
                assert a["status"] in ("firing", "resolved")
        except (ValueError, AssertionError) as err:
            self.invalid.append(repr(err))
            return Reply(400, "bad payload", content_type="text/plain")
        self.notifications.append(doc)
        return Reply(200, "ok", content_type="text/plain")

    def for_tenant(self, tenant: str) -> list[dict[str, Any]]:
        with self.lock:
            return [n for n in self.notifications if n["groupLabels"].get("tenant") == tenant]


@dataclass
class Alertmanager:
    url: str
    webhook: WebhookReceiver
    service: Service

    def alerts(self, tenant: str) -> list[dict[str, Any]]:
        """Active alerts of a tenant as Alertmanager holds them (resolved ones are not listed)."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?filter=tenant%3D%22{tenant}%22", timeout=5) as r:
            return list(json.loads(r.read()))


def _ensure_alertmanager() -> str:
    res = subprocess.run(["bash", str(REPO / "scripts" / "ensure_tools.sh"), "alertmanager"], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.fail(f"prometheus-alertmanager is not available: {res.stderr.strip()[-800:]}")
    return "prometheus-alertmanager"


@pytest.fixture(scope="module")
def am(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    binary = _ensure_alertmanager()
    webhook = WebhookReceiver()
    webhook.start()
    run = tmp_path_factory.mktemp("alertmanager")
    conf = run / "alertmanager.yml"
    conf.write_text(f"""
route:
  receiver: hook
  group_by: [tenant]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {webhook.url}/hook
        send_resolved: true
""")
    port = free_port()
    proc, log = _spawn("alertmanager", [binary, f"--config.file={conf}", f"--storage.path={run / 'data'}",
                                        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="], run)
    svc = Service("alertmanager", proc, port, run, log)
    try:
        if not wait_tcp(port, 15, proc) or not _ready(f"http://127.0.0.1:{port}"):
            pytest.fail(f"alertmanager did not become ready: {svc.log_tail()}")
        yield Alertmanager(f"http://127.0.0.1:{port}", webhook, svc)
    finally:
        svc.stop()
        webhook.stop()
    assert not webhook.invalid, webhook.invalid


def _ready(url: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.05)
    return False


def wait_until(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def note(n: int, reason: str = "new", **kw: Any) -> Notification:
    a = make_alert(n, **kw)
    return Notification(alert=a, sink="alertmanager", reason=reason, group_key=f"tenant:{a.tenant_id}")  # type: ignore[arg-type]


def test_alerts_arrive_grouped_by_tenant_then_resolved(am: Alertmanager) -> None:
    tenant = "t_group"
    outbox = SqliteOutbox(":memory:")
    sink = AlertmanagerSink([am.url], kv=outbox, alert_url_template=TEMPLATE)
    d = Delivery([sink], outbox, Router(ALL_TO_AM), retry=RetryPolicy(initial_s=0.05, max_s=0.2, seed=1),
                 idle_poll_s=0.02).start()
    a1, a2 = make_alert(1, tenant=tenant), make_alert(2, tenant=tenant, detector="quota_burn", severity="critical")
    try:
        d.enqueue([a1, a2])
        firing = wait_until(lambda: [n for n in am.webhook.for_tenant(tenant) if n["status"] == "firing"], 15,
                            "the grouped firing notification")
        assert len(firing) == 1, "one notification for the group"
        [group] = firing
        assert group["groupLabels"] == {"tenant": tenant} and group["commonLabels"]["source"] == "sentinel"
        by_id = {x["labels"]["alert_id"]: x for x in group["alerts"]}
        assert set(by_id) == {a1.alert_id, a2.alert_id}
        x = by_id[a1.alert_id]
        assert x["labels"] == {"alertname": "spend_spike", "detector": "spend_spike", "severity": "high",
                               "tenant": tenant, "entity": f"api_key:{a1.entity.id}", "alert_id": a1.alert_id,
                               "source": "sentinel"}
        assert x["annotations"]["summary"] == a1.title and json.loads(x["annotations"]["evidence"]) == a1.evidence
        assert x["generatorURL"] == TEMPLATE.replace("{alert_id}", a1.alert_id)
        assert x["startsAt"].startswith((a1.first_seen or "")[:19]) and x["endsAt"].startswith("0001-01-01")
        assert by_id[a2.alert_id]["labels"]["severity"] == "critical"
        assert len(am.alerts(tenant)) == 2

        d.enqueue([make_alert(1, tenant=tenant, version=2, status="resolved"),
                   make_alert(2, tenant=tenant, detector="quota_burn", severity="critical", version=2,
                              status="resolved")])
        resolved = wait_until(lambda: [n for n in am.webhook.for_tenant(tenant) if n["status"] == "resolved"], 15,
                              "the resolved notification")
        assert {x["labels"]["alert_id"] for x in resolved[-1]["alerts"]} == {a1.alert_id, a2.alert_id}
        assert all(x["status"] == "resolved" and not x["endsAt"].startswith("0001") for x in resolved[-1]["alerts"])
        assert am.alerts(tenant) == []
    finally:
        d.close()
    assert d.stats.delivered["alertmanager"] == 4 and not d.stats.dead["alertmanager"]


def test_reposts_keep_an_alert_firing_across_a_restart_and_it_expires_when_they_stop(
        am: Alertmanager, tmp_path: Path) -> None:
    tenant = "t_cadence"
    path = tmp_path / "outbox.sqlite"
    resend = 0.5  # endsAt = now + 4 x 0.5 s
    first = AlertmanagerSink([am.url], kv=SqliteOutbox(path), resend_s=resend).start()
    a = make_alert(1, tenant=tenant)
    try:
        first.send([note(1, tenant=tenant)])
        [held] = wait_until(lambda: am.alerts(tenant), 5, "the alert in Alertmanager")
        ends0 = held["endsAt"]
        time.sleep(3.0)  # longer than the first endsAt: only the re-posts keep it active
        [held] = am.alerts(tenant)
        assert held["labels"]["alert_id"] == a.alert_id and held["endsAt"] > ends0
    finally:
        first.close()
    second = AlertmanagerSink([am.url], kv=SqliteOutbox(path), resend_s=resend).start()  # a restarted daemon
    try:
        time.sleep(3.0)
        assert [x["labels"]["alert_id"] for x in am.alerts(tenant)] == [a.alert_id], "resumed from the outbox"
    finally:
        second.close()
    wait_until(lambda: not am.alerts(tenant), 6, "Alertmanager to expire the alert after the last endsAt")
    wait_until(lambda: any(n["status"] == "resolved" for n in am.webhook.for_tenant(tenant)), 6,
               "the resolved notification after expiry")
    statuses = [n["status"] for n in am.webhook.for_tenant(tenant)]
    assert statuses == ["firing", "resolved"], "no flapping while the re-posts ran"


def test_severity_change_resolves_the_previous_label_set(am: Alertmanager) -> None:
    tenant = "t_escalate"
    sink = AlertmanagerSink([am.url])
    sink.send([note(1, tenant=tenant, severity="medium")])
    wait_until(lambda: am.alerts(tenant), 5, "the medium alert")
    sink.send([note(1, reason="escalated", tenant=tenant, version=2, severity="critical")])
    wait_until(lambda: [x["labels"]["severity"] for x in am.alerts(tenant)] == ["critical"], 5,
               "only the critical label set active")
    last = wait_until(lambda: [n for n in am.webhook.for_tenant(tenant)
                               if {x["status"] for x in n["alerts"]} == {"firing", "resolved"}], 10,
                      "a notification with the critical firing and the medium resolved")[-1]
    states = {x["labels"]["severity"]: x["status"] for x in last["alerts"]}
    assert states == {"critical": "firing", "medium": "resolved"}
    assert [(e.labels["severity"], e.resolved_at is None) for e in sink.active()] == [("medium", False),
                                                                                      ("critical", True)]


def test_validation_error_is_not_retryable_and_one_instance_of_a_cluster_is_enough(am: Alertmanager) -> None:
    sink = AlertmanagerSink([am.url])
    with pytest.raises(DeliveryError) as exc:
        sink._post([{"labels": {}, "annotations": {}}])
    assert not exc.value.retryable and "400" in str(exc.value) and "at least one label pair" in str(exc.value)
    dead = f"http://127.0.0.1:{free_port()}"
    tenant = "t_cluster"
    AlertmanagerSink([dead, am.url]).send([note(1, tenant=tenant)])
    wait_until(lambda: am.alerts(tenant), 5, "the alert through the live instance")
    with pytest.raises(DeliveryError) as exc:
        AlertmanagerSink([dead]).send([note(2, tenant=tenant)])
    assert exc.value.retryable and "connection failed" in str(exc.value)


def test_active_set_retention_and_staleness_without_a_server() -> None:
    now = [T0 + 86400.0]
    sink = AlertmanagerSink(["http://127.0.0.1:9"], resend_s=60, resolved_retention_s=900, max_firing_s=3600,
                            clock=lambda: now[0])
    sink._post = lambda alerts: None  # type: ignore[method-assign]
    sink.send([note(1), note(2)])
    wire = sink.wire(sink.active()[0], now[0])
    assert (wire["startsAt"], wire["endsAt"]) == (rfc3339(T0 + 1), rfc3339(now[0] + 240))  # now + 4 x 60 s
    sink.send([note(2, reason="resolved", version=2, status="resolved", t=now[0] - 30)])
    resolved = next(e for e in sink.active() if e.resolved_at is not None)
    assert sink.wire(resolved, now[0] + 100)["endsAt"] == rfc3339(now[0] - 30)  # the resolve (event) time
    now[0] += 901
    assert [e.alert_id for e in sink.active()] == [make_alert(1).alert_id]  # resolved: retention over
    now[0] += 2700
    assert sink.active() == []  # firing but no new version for max_firing_s: left to expire
