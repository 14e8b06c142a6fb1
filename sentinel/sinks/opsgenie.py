"""Opsgenie sink: the Alert API (``/v2/alerts``), with ``alias = alert_id``.

* **new** -- ``POST /v2/alerts`` with ``message`` (title, <= 130 chars),
  ``alias`` (the alert id: Opsgenie de-duplicates on it), ``description``,
  ``priority`` (mapped below), ``source``, ``entity``, ``tags``, ``details``
  (evidence and scores as strings) and the configured ``responders``;
* **escalated** -- the same create (a no-op on an open alias, it recreates a
  closed one) then ``PUT /v2/alerts/{alias}/priority?identifierType=alias``,
  since a de-duplicated create does not change the priority;
* **resolved** -- ``POST /v2/alerts/{alias}/close?identifierType=alias``;
* **acknowledged** (Slack button) -- ``POST .../acknowledge?identifierType=alias``.

=================  ================
sentinel severity  Opsgenie priority
=================  ================
critical           P1
high               P2
medium             P3
low                P4
info               P5
=================  ================

Authentication is ``Authorization: GenieKey <key>``. Opsgenie answers 202
``{"result": "Request will be processed", "requestId": ...}`` and processes
asynchronously. 400/422 (validation) are not retryable; 401/403 are retried
(a key fixed by an operator delivers what waited) until the attempt limit;
402 (plan limit), 429 (rate limited) and 5xx are retried, ``Retry-After``
honoured when present. Error texts carry the status, Opsgenie's message and
request id, never the key.
"""

from __future__ import annotations

import json
import ssl
import urllib.parse
from pathlib import Path
from typing import Any

import msgspec

from sentinel.alerting.notify import DeliveryError, Notification
from sentinel.sinks._http import post, retry_after, tls_context

OG_PRIORITY: dict[str, str] = {"critical": "P1", "high": "P2", "medium": "P3", "low": "P4", "info": "P5"}
MESSAGE_MAX = 130
ALIAS_MAX = 512
DESCRIPTION_MAX = 15000
ENTITY_MAX = 512
SOURCE_MAX = 100
TAG_MAX = 50
TAGS_MAX = 20
DETAILS_MAX = 8000  # characters over all keys and values
_RESPONDER_TYPES = ("team", "user", "escalation", "schedule")
_enc = msgspec.json.Encoder(order="deterministic")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_responder(spec: str) -> dict[str, str]:
    """``team:SOC`` -> ``{"type": "team", "name": "SOC"}`` (``user:`` takes a username).

    >>> parse_responder("team:SOC"), parse_responder("user:alice@example.com")
    ({'type': 'team', 'name': 'SOC'}, {'type': 'user', 'username': 'alice@example.com'})
    """
    kind, _, name = spec.partition(":")
    if kind not in _RESPONDER_TYPES or not name:
        raise ValueError(f"responder {spec!r}: expected one of {', '.join(_RESPONDER_TYPES)} then ':NAME'")
    return {"type": kind, "username" if kind == "user" else "name": name}


def _as_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), sort_keys=True, default=str)


class OpsgenieSink:
    """A page sink (silences, inhibition, cooldown apply) that supports close and acknowledge."""

    name = "opsgenie"
    record = False
    supports_resolve = True
    supports_ack = True
    max_batch = 1

    def __init__(self, api_key: str, *, base_url: str = "https://api.opsgenie.com",
                 responders: tuple[str, ...] = (), tags: tuple[str, ...] = ("sentinel",),
                 alert_url_template: str | None = None, verify_tls: bool = True,
                 ca_file: Path | str | None = None, timeout: float = 10.0, source: str = "sentinel") -> None:
        self.base = base_url.rstrip("/")
        self._key = api_key
        self.responders = [parse_responder(r) for r in responders]
        self.tags = tuple(tags)
        self.alert_url_template = alert_url_template
        self._ctx: ssl.SSLContext | None = tls_context(verify_tls, ca_file) if self.base.startswith("https") else None
        self.timeout = timeout
        self.source = source

    # -- bodies -------------------------------------------------------------------------------------
    def create_body(self, n: Notification) -> dict[str, Any]:
        a = n.alert
        tags = [*self.tags, a.detector, a.severity, f"tenant:{a.tenant_id}"]
        details: dict[str, str] = {
            "alert_id": a.alert_id, "version": str(a.version), "severity": a.severity, "score": f"{a.score:.3f}",
            "risk_usd_per_hour": f"{a.risk_usd_per_hour:.2f}", "tenant_id": a.tenant_id, "rule": a.rule,
            "detected_at": a.detected_at,
        }
        link = self._link(a.alert_id)
        if link:
            details["explain_url"] = link
        if a.api_key_id:
            details["api_key_id"] = a.api_key_id
        if a.signals:
            details["signals"] = _as_text(a.signals)
        used = sum(len(k) + len(v) for k, v in details.items())
        for k, v in a.evidence.items():  # evidence last: it is what gets cut when the map is too large
            text = _as_text(v)
            key = f"evidence.{k}"
            if used + len(key) + len(text) > DETAILS_MAX:
                details["evidence_truncated"] = "true"
                break
            details[key] = text
            used += len(key) + len(text)
        description = a.summary or a.title
        if link:
            description += f"\n\nExplain: {link}"
        body: dict[str, Any] = {
            "message": _cut(f"[{a.severity.upper()}] {a.title}", MESSAGE_MAX),
            "alias": a.alert_id[:ALIAS_MAX],
            "description": _cut(description, DESCRIPTION_MAX),
            "priority": OG_PRIORITY[a.severity],
            "source": _cut(self.source, SOURCE_MAX),
            "entity": _cut(f"{a.entity.type}:{a.entity.id}", ENTITY_MAX),
            "tags": list(dict.fromkeys(_cut(t, TAG_MAX) for t in tags))[:TAGS_MAX],
            "details": details,
        }
        if self.responders:
            body["responders"] = self.responders
        return body

    def _link(self, alert_id: str) -> str | None:
        t = self.alert_url_template
        return t.replace("{alert_id}", urllib.parse.quote(alert_id, safe="")) if t else None

    def _alert_path(self, alias: str, action: str) -> str:
        return f"/v2/alerts/{urllib.parse.quote(alias, safe='')}/{action}?identifierType=alias"

    # -- Notifier -----------------------------------------------------------------------------------
    def send(self, batch: list[Notification]) -> None:
        for n in batch:
            a = n.alert
            if n.reason == "acknowledged":
                self._call("POST", self._alert_path(a.alert_id, "acknowledge"),
                           {"source": self.source, "note": _cut(a.title, 25000)})
            elif a.status == "resolved" or n.reason == "resolved":
                self._call("POST", self._alert_path(a.alert_id, "close"),
                           {"source": self.source, "note": _cut(f"Resolved by sentinel: {a.summary or a.title}",
                                                                 25000)})
            else:
                self._call("POST", "/v2/alerts", self.create_body(n))
                if n.reason == "escalated":
                    self._call("PUT", self._alert_path(a.alert_id, "priority"),
                               {"priority": OG_PRIORITY[a.severity]})

    def _call(self, method: str, path: str, body: dict[str, Any]) -> None:
        headers = {"Authorization": f"GenieKey {self._key}", "Content-Type": "application/json"}
        resp = post(self.base + path, _enc.encode(body), headers, self.timeout, self._ctx, method=method)
        if resp.status == 202 or resp.status == 200:
            return
        text = f"Opsgenie {resp.status}"
        try:
            doc = json.loads(resp.body)
            if isinstance(doc, dict):
                text += f": {doc.get('message', '')}"
                if doc.get("requestId"):
                    text += f" (request {doc['requestId']})"
        except ValueError:
            text += f": {resp.body[:200]!r}"
        if resp.status in (400, 413, 422):
            raise DeliveryError(text, retryable=False)
        raise DeliveryError(text, retryable=True, retry_after_s=retry_after(resp.headers))

    def close(self) -> None:
        return None
