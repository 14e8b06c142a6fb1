"""PagerDuty sink: Events API v2 (``POST /v2/enqueue``), one event per notification.

An incident is one PagerDuty alert: ``dedup_key`` is the ``alert_id``, so a
new incident *triggers*, an escalation triggers again under the same key
(PagerDuty de-duplicates it into the open alert), an acknowledgement in Slack
*acknowledges* (:func:`sentinel.sinks.factory.acknowledge_hook`) and the
resolved version *resolves*. The trigger carries ``summary`` (the title),
``source`` (the entity), ``severity`` (mapped below), ``timestamp`` (event
time), ``component`` (detector), ``group`` (tenant), ``class`` (rule),
``custom_details`` (the evidence, plus a ``sentinel`` block with score, $/h,
signals and ids) and, when ``alert_url_template`` is set, a link back to the
explain view.

=================  ==================
sentinel severity  PagerDuty severity
=================  ==================
critical           critical
high               error
medium             warning
low, info          info
=================  ==================

Routing keys are secrets: the default one comes from the settings, a route
may name the environment variable holding its own
(``pagerduty_routing_key_env`` in ``rules/routes.yaml``). The route of the
trigger is remembered (outbox key-value store) so the acknowledge and the
resolve reach the same PagerDuty service even if the severity moved the alert
to another route since.

Responses (PagerDuty "Events API v2 overview", response codes and retry
logic): 202 accepted; 400 invalid event -- not retryable (dead letter); 429
throttled and 5xx -- retried by the delivery worker, ``Retry-After`` honoured
when present; anything else is retried too. Error texts carry the status and
PagerDuty's message/errors, never the routing key.

The maintained ``pagerduty`` client (7.x) was considered and not used: it
retries and sleeps inside the call (429 without limit by default), which
would block this sink's worker and hide throttling from the outbox's retry
policy, and it brings an HTTP client for one POST.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from sentinel.alerting.notify import DeliveryError, Notification
from sentinel.alerting.outbox import Outbox
from sentinel.alerting.routes import CompiledMatcher, routes_or_default
from sentinel.alerts import Alert
from sentinel.logs import get_logger
from sentinel.rules import RoutesFile
from sentinel.sinks._http import post, retry_after, tls_context

log = get_logger("sentinel.sinks.pagerduty")

ENQUEUE_PATH = "/v2/enqueue"
PD_SEVERITY: dict[str, str] = {"critical": "critical", "high": "error", "medium": "warning", "low": "info",
                               "info": "info"}
SUMMARY_MAX = 1024
DEDUP_KEY_MAX = 255
_enc = msgspec.json.Encoder(order="deterministic")


def alert_link(template: str | None, alert_id: str) -> str | None:
    """The explain-view URL of an alert, or None when no template is configured."""
    return template.replace("{alert_id}", urllib.parse.quote(alert_id, safe="")) if template else None


class PagerDutyRouting:
    """Which routing key an alert uses: the first matching route that lists the sink, else the default.

    Routes are walked as the router walks them (first match stops unless ``continue``); a route
    whose ``pagerduty_routing_key_env`` is unset or empty in the environment uses the default key.
    """

    def __init__(self, routes: RoutesFile | None, default_key: str | None, sink: str = "pagerduty",
                 environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.environ = env
        r = routes_or_default(routes)
        self.sink = sink
        self.default_key = default_key or None
        self._routes: list[tuple[CompiledMatcher, str, bool, bool]] = []
        self._keys: dict[str, str] = {}
        for route in r.routes:
            self._routes.append((CompiledMatcher.compile(route.match), route.name, sink in route.sinks,
                                 route.continue_))
            if route.pagerduty_routing_key_env and sink in route.sinks:
                key = env.get(route.pagerduty_routing_key_env, "")
                if key:
                    self._keys[route.name] = key
                else:
                    log.warning("pagerduty_route_key_missing", route=route.name,
                                env=route.pagerduty_routing_key_env, fallback="default" if default_key else "none")

    @property
    def keys(self) -> list[str]:
        return [k for k in (self.default_key, *self._keys.values()) if k]

    def route_for(self, alert: Alert) -> str:
        """Name of the route that pages this alert ("" = no route: the default key)."""
        for matcher, name, lists_sink, cont in self._routes:
            if matcher.matches(alert.detector, alert.severity, alert.tenant_id):
                if lists_sink:
                    return name
                if not cont:
                    break
        return ""

    def key(self, route: str) -> str | None:
        return self._keys.get(route) or self.default_key

    def rerouted(self, routes: RoutesFile | None) -> PagerDutyRouting:
        """The routing for new routes (rules reload), keeping the key of every route they no longer have:
        incidents triggered on such a route are acknowledged and resolved on its service."""
        new = PagerDutyRouting(routes, self.default_key, self.sink, self.environ)
        names = {r.name for r in routes_or_default(routes).routes}
        for name, key in self._keys.items():
            if name not in names:
                new._keys[name] = key
        return new


class PagerDutySink:
    """A page sink (silences, inhibition, cooldown apply) that supports resolve and acknowledge."""

    name = "pagerduty"
    record = False
    supports_resolve = True
    supports_ack = True
    max_batch = 1  # one event per request: a failure retries only that event

    def __init__(self, routing: PagerDutyRouting, *, base_url: str = "https://events.pagerduty.com",
                 kv: Outbox | None = None, alert_url_template: str | None = None, verify_tls: bool = True,
                 ca_file: Path | str | None = None, timeout: float = 10.0, client: str = "sentinel") -> None:
        base = base_url.rstrip("/")
        self.url = base if base.endswith(ENQUEUE_PATH) else base + ENQUEUE_PATH
        self.routing = routing
        self.kv = kv
        self.alert_url_template = alert_url_template
        self._ctx: ssl.SSLContext | None = tls_context(verify_tls, ca_file) if self.url.startswith("https") else None
        self.timeout = timeout
        self.client = client

    def reroute(self, routes: RoutesFile | None) -> None:
        """New routes (rules reload): new incidents are routed by them; the default key stays.

        Incidents already triggered keep their service (see :meth:`_route_of`): the key of a route the
        new rules no longer have is kept for them, so their acknowledge and resolve still reach it.
        """
        self.routing = self.routing.rerouted(routes)

    # -- building events --------------------------------------------------------------------------
    def event(self, n: Notification, routing_key: str) -> dict[str, Any]:
        a = n.alert
        action = ("acknowledge" if n.reason == "acknowledged"
                  else "resolve" if a.status == "resolved" or n.reason == "resolved" else "trigger")
        ev: dict[str, Any] = {"routing_key": routing_key, "event_action": action,
                              "dedup_key": a.alert_id[:DEDUP_KEY_MAX]}
        if action != "trigger":
            return ev  # acknowledge/resolve need only the key (PagerDuty ignores a payload there)
        sentinel = {"alert_id": a.alert_id, "version": a.version, "severity": a.severity, "score": a.score,
                    "risk_usd_per_hour": a.risk_usd_per_hour, "signals": a.signals, "tenant_id": a.tenant_id,
                    "entity": f"{a.entity.type}:{a.entity.id}", "api_key_id": a.api_key_id,
                    "session_id": a.session_id, "reason": n.reason, "previous_severity": n.previous_severity,
                    "inhibited_by": n.inhibited_by, "first_seen": a.first_seen, "summary": a.summary}
        details: dict[str, Any] = dict(a.evidence)
        details["sentinel"] = {k: v for k, v in sentinel.items() if v not in (None, "", {})}
        summary = f"[{a.severity.upper()}] {a.title} (tenant {a.tenant_id})"
        ev["payload"] = {
            "summary": summary if len(summary) <= SUMMARY_MAX else summary[: SUMMARY_MAX - 1] + "…",
            "source": f"{a.entity.type}:{a.entity.id}",
            "severity": PD_SEVERITY[a.severity],
            "timestamp": a.detected_at,
            "component": a.detector,
            "group": a.tenant_id,
            "class": a.rule,
            "custom_details": details,
        }
        link = alert_link(self.alert_url_template, a.alert_id)
        ev["client"] = self.client
        if link:
            ev["client_url"] = link
            ev["links"] = [{"href": link, "text": "Explain in sentinel"}]
        return ev

    def _route_of(self, n: Notification) -> str:
        """The route the incident was first triggered on (remembered), else the one it matches now.

        One incident stays one PagerDuty alert on one service: an escalation that would match
        another route still goes where the trigger went, and so do the acknowledge and resolve.
        """
        key = f"{self.name}:route:{n.alert.alert_id}"
        stored = self.kv.kv_get(key) if self.kv is not None and n.reason != "new" else None
        if stored is not None:
            return stored
        route = self.routing.route_for(n.alert)
        if self.kv is not None and n.alert.status == "firing" and n.reason in ("new", "escalated"):
            self.kv.kv_set(key, route, 30 * 86400.0)
        return route

    # -- Notifier ---------------------------------------------------------------------------------
    def send(self, batch: list[Notification]) -> None:
        for n in batch:
            route = self._route_of(n)
            key = self.routing.key(route)
            if not key:
                raise DeliveryError(f"no PagerDuty routing key for route {route or '(default)'!r}", retryable=False)
            self._post(self.event(n, key))

    def _post(self, event: dict[str, Any]) -> None:
        resp = post(self.url, _enc.encode(event), {"Content-Type": "application/json"}, self.timeout, self._ctx)
        if resp.status == 202:
            return
        text = f"PagerDuty {resp.status}"
        try:
            body = json.loads(resp.body)
            if isinstance(body, dict):
                parts = [str(body.get("status") or ""), str(body.get("message") or "")]
                errors = body.get("errors")
                if isinstance(errors, list) and errors:
                    parts.append("; ".join(str(e) for e in errors[:5]))
                text += ": " + " - ".join(p for p in parts if p)
        except ValueError:
            text += f": {resp.body[:200]!r}"
        if resp.status in (400, 413):
            raise DeliveryError(text, retryable=False)
        raise DeliveryError(text, retryable=True, retry_after_s=retry_after(resp.headers))

    def close(self) -> None:
        return None
