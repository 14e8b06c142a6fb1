"""Prometheus Alertmanager sink: ``POST /api/v2/alerts``, re-posted while firing, as Prometheus does.

Teams that already page through Alertmanager keep their routing tree,
grouping, silences and inhibition: sentinel becomes one more alert source.
Each alert version becomes an Alertmanager alert

* ``labels`` (identity; Alertmanager de-duplicates on them): ``alertname``
  (the rule), ``detector``, ``severity`` (sentinel's: info..critical),
  ``tenant``, ``entity`` (``type:id``), ``alert_id`` and ``source="sentinel"``;
* ``annotations`` (latest wins): ``summary`` (title), ``description``,
  ``evidence`` (canonical JSON), ``score``, ``risk_usd_per_hour``,
  ``signals``, ``version`` and ``explain_url`` when configured;
* ``startsAt`` = incident start (event time, never later than now),
  ``generatorURL`` = the explain view when configured.

**Cadence.** Alertmanager expects clients to re-send active alerts
"continuously ... usually on the order of 30 seconds to 3 minutes"
(prometheus.io/docs/alerting/latest/clients). We copy Prometheus' own rule
manager (``rules/alerting.go``, ``sendAlerts``): an active alert is re-sent
every ``resend_delay`` (``--rules.alert.resend-delay``, default **1m**) with
``endsAt = now + 4 * max(evaluation interval, resend_delay)`` (**4m** here;
"allow for two Eval or Alertmanager send failures"), and a resolved alert
keeps being sent with its ``endsAt`` = resolve time for ``resolvedRetention``
(**15m**), so an Alertmanager that was down or restarted still learns of the
end. If sentinel stops, Alertmanager resolves its alerts by itself 4 minutes
after the last post. A severity change changes the labels, so the old label
set is sent resolved at the same moment the new one fires.

The first post of every version goes through the durable outbox (retries,
dead letters); the periodic re-posts run on a small timer thread from the
set of active alerts, which is kept in the outbox key-value store so a
restarted daemon (or another replica, through Redis) resumes them. A failed
re-post is only counted and logged: the next tick sends again.

This is a **record** sink: it gets every version (updates refresh the
annotations) and sentinel's own silences do not apply -- silences live in
Alertmanager. With several Alertmanager URLs (an HA cluster) every one is
posted to and one accepting is enough, as in Prometheus (they gossip).
Responses: 200 OK; 400 (validation) is not retryable; anything else retries.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client import Counter

from sentinel.alerting.notify import DeliveryError, Notification
from sentinel.alerting.outbox import Outbox
from sentinel.alerts import Alert, rfc3339
from sentinel.logs import get_logger
from sentinel.sinks._http import post, tls_context

log = get_logger("sentinel.sinks.alertmanager")

API_PATH = "/api/v2/alerts"
RESEND_S = 60.0           # Prometheus --rules.alert.resend-delay default
VALID_FOR_RESENDS = 4     # endsAt = now + 4 * resend (Prometheus rules/alerting.go)
RESOLVED_RETENTION_S = 900.0  # Prometheus resolvedRetention (15m)
MAX_ENTRIES = 10_000
POST_CHUNK = 500
STATE_KEY = "alertmanager:active"

RESENDS = Counter("sentinel_alertmanager_resends_total", "Periodic Alertmanager re-posts by result (ok, failed)",
                  ["result"])


class ActiveAlert(msgspec.Struct, kw_only=True):
    """One Alertmanager alert (one label set) that is still re-posted."""

    alert_id: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    generator_url: str = ""
    resolved_at: float | None = None
    updated_at: float = 0.0  # wall time of the last version that touched it


_state_enc = msgspec.json.Encoder(order="deterministic")
_state_dec = msgspec.json.Decoder(dict[str, ActiveAlert])
_body_enc = msgspec.json.Encoder(order="deterministic")


def _epoch(ts: str | None) -> float | None:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def label_key(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


def _link(template: str | None, alert_id: str) -> str:
    return template.replace("{alert_id}", urllib.parse.quote(alert_id, safe="")) if template else ""


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, separators=(",", ":"), default=str)


class AlertmanagerSink:
    name = "alertmanager"
    record = True
    supports_resolve = True
    max_batch = 100

    def __init__(self, urls: Sequence[str], *, kv: Outbox | None = None, bearer_token: str | None = None,
                 verify_tls: bool = True, ca_file: Path | str | None = None, resend_s: float = RESEND_S,
                 resolved_retention_s: float = RESOLVED_RETENTION_S, max_firing_s: float = 7 * 86400.0,
                 alert_url_template: str | None = None, timeout: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        if not urls:
            raise ValueError("at least one Alertmanager URL is required")
        self.urls = [u.rstrip("/") if u.rstrip("/").endswith(API_PATH) else u.rstrip("/") + API_PATH for u in urls]
        self.kv = kv
        self._token = bearer_token
        self._ctx: ssl.SSLContext | None = tls_context(verify_tls, ca_file) if any(
            u.startswith("https") for u in self.urls) else None
        self.resend_s = resend_s
        self.resolved_retention_s = resolved_retention_s
        self.max_firing_s = max_firing_s
        self.alert_url_template = alert_url_template
        self.timeout = timeout
        self.clock = clock
        self._lock = threading.Lock()
        self._active: dict[str, ActiveAlert] = {}
        self._loaded = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- mapping ------------------------------------------------------------------------------------
    def labels(self, a: Alert) -> dict[str, str]:
        return {"alertname": a.rule, "detector": a.detector, "severity": a.severity, "tenant": a.tenant_id,
                "entity": f"{a.entity.type}:{a.entity.id}", "alert_id": a.alert_id, "source": "sentinel"}

    def annotations(self, n: Notification) -> dict[str, str]:
        a = n.alert
        out = {"summary": a.title, "description": a.summary or a.title, "evidence": _text(a.evidence),
               "score": f"{a.score:.3f}", "risk_usd_per_hour": f"{a.risk_usd_per_hour:.2f}",
               "signals": _text(a.signals), "version": str(a.version), "detected_at": a.detected_at}
        link = _link(self.alert_url_template, a.alert_id)
        if link:
            out["explain_url"] = link
        if n.inhibited_by:
            out["inhibited_by"] = n.inhibited_by
        return out

    def wire(self, e: ActiveAlert, now: float) -> dict[str, Any]:
        """The API v2 object for one active alert at wall time ``now``."""
        starts = min(e.starts_at, now)
        if e.resolved_at is None:
            ends = now + VALID_FOR_RESENDS * self.resend_s
        else:
            ends = max(starts, min(e.resolved_at, now))
        out: dict[str, Any] = {"labels": e.labels, "annotations": e.annotations, "startsAt": rfc3339(starts),
                               "endsAt": rfc3339(ends)}
        if e.generator_url:
            out["generatorURL"] = e.generator_url
        return out

    # -- state --------------------------------------------------------------------------------------
    def _load(self) -> dict[str, ActiveAlert]:
        """The active set: from the key-value store when there is one (shared by replicas)."""
        if self.kv is None:
            return self._active
        raw = self.kv.kv_get(STATE_KEY)
        if raw is None:
            return {} if self._loaded else self._active
        try:
            return _state_dec.decode(raw)
        except msgspec.DecodeError:
            log.warning("alertmanager_state_unreadable")
            return {}

    def _save(self, active: dict[str, ActiveAlert]) -> None:
        self._active = active
        self._loaded = True
        if self.kv is not None:
            ttl = self.max_firing_s + self.resolved_retention_s + 86400.0
            self.kv.kv_set(STATE_KEY, _state_enc.encode(active).decode(), ttl)

    def _live(self, e: ActiveAlert, now: float) -> bool:
        if e.resolved_at is not None:
            return now - max(e.resolved_at, e.updated_at) <= self.resolved_retention_s
        return now - e.updated_at <= self.max_firing_s

    def active(self) -> list[ActiveAlert]:
        """What the next re-post would send (pruned view)."""
        now = self.clock()
        with self._lock:
            return [e for e in self._load().values() if self._live(e, now)]

    # -- Notifier -----------------------------------------------------------------------------------
    def send(self, batch: list[Notification]) -> None:
        now = self.clock()
        with self._lock:
            active = {k: v for k, v in self._load().items() if self._live(v, now)}
            touched: dict[str, ActiveAlert] = {}
            for n in batch:
                if n.reason == "acknowledged":
                    continue  # Alertmanager has no acknowledgement; its silences play that role
                a = n.alert
                labels = self.labels(a)
                key = label_key(labels)
                for k, old in active.items():  # a severity change: the previous label set ends now
                    if old.alert_id == a.alert_id and k != key and old.resolved_at is None:
                        ended = msgspec.structs.replace(old, resolved_at=now, updated_at=now)
                        active[k] = touched[k] = ended
                prev = active.get(key)
                starts = _epoch(a.first_seen) or _epoch(a.detected_at) or now
                if prev is not None:
                    starts = prev.starts_at
                resolved_at = None
                if a.status == "resolved":
                    resolved_at = min(_epoch(a.detected_at) or now, now)
                e = ActiveAlert(alert_id=a.alert_id, labels=labels, annotations=self.annotations(n),
                                starts_at=starts, generator_url=_link(self.alert_url_template, a.alert_id),
                                resolved_at=resolved_at, updated_at=now)
                active[key] = touched[key] = e
            if touched:
                self._post([self.wire(e, now) for e in touched.values()])
            self._save(self._cap(active))

    def _cap(self, active: dict[str, ActiveAlert]) -> dict[str, ActiveAlert]:
        if len(active) <= MAX_ENTRIES:
            return active
        # Drop resolved ones first, then the least recently updated.
        order = sorted(active.items(), key=lambda kv: (kv[1].resolved_at is None, kv[1].updated_at))
        dropped = len(active) - MAX_ENTRIES
        log.warning("alertmanager_active_capped", dropped=dropped, kept=MAX_ENTRIES)
        return dict(order[dropped:])

    def _post(self, alerts: list[dict[str, Any]]) -> None:
        """POST to every URL; one success is enough. Raises when none accepted."""
        for i in range(0, len(alerts), POST_CHUNK):
            self._post_chunk(alerts[i:i + POST_CHUNK])

    def _post_chunk(self, alerts: list[dict[str, Any]]) -> None:
        body = _body_enc.encode(alerts)
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        errors: list[DeliveryError] = []
        accepted = 0
        for url in self.urls:  # every instance, as Prometheus does; they also gossip among themselves
            try:
                resp = post(url, body, headers, self.timeout, self._ctx)
            except DeliveryError as err:
                errors.append(err)
                continue
            if resp.status == 200:
                accepted += 1
                continue
            detail = resp.body[:300].decode("utf-8", "replace").strip()
            errors.append(DeliveryError(f"Alertmanager {resp.status}: {detail}", retryable=resp.status != 400))
        if accepted:
            for failure in errors:
                log.warning("alertmanager_instance_failed", error=str(failure))
            return
        text = "; ".join(str(e) for e in errors)
        raise DeliveryError(text, retryable=any(e.retryable for e in errors))

    # -- re-posting -----------------------------------------------------------------------------------
    def resend(self) -> int:
        """Re-post every active alert now; returns how many were sent (raises on failure)."""
        now = self.clock()
        with self._lock:
            current = [e for e in self._load().values() if self._live(e, now)]
        if current:
            self._post([self.wire(e, now) for e in current])
        return len(current)

    def start(self) -> AlertmanagerSink:
        """Start the re-post timer (idempotent)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="sentinel-alertmanager-resend", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.resend_s):
            try:
                if self.resend():
                    RESENDS.labels("ok").inc()
            except Exception as err:  # never let the timer die; the next tick tries again
                RESENDS.labels("failed").inc()
                log.warning("alertmanager_resend_failed", error=str(err)[:300])

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
