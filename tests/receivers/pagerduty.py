"""A strict PagerDuty Events API v2 stand-in (``POST /v2/enqueue``).

Checks what the Events API documents ("Send an Alert Event", "Events API v2
overview"): a JSON object; ``routing_key`` a 32-character integration key
(wrong length -> 400 with PagerDuty's error text; a well-formed key that no
service has -> 400 "Invalid routing key" in this stand-in); ``event_action``
one of trigger/acknowledge/resolve; ``dedup_key`` <= 255 characters and
required for acknowledge/resolve; for a trigger a ``payload`` with non-empty
``summary`` (<= 1024), ``source`` and ``severity`` (critical/error/warning/
info), an RFC 3339 ``timestamp`` when present, string ``component``/``group``/
``class``, an object ``custom_details``; ``links`` entries with ``href``;
no unknown top-level field. Success is 202 ``{"status": "success",
"message": "Event processed", "dedup_key": ...}``.

Alerts are de-duplicated by (routing key, dedup key) like PagerDuty: a
trigger on an open alert adds to it (``triggers`` count, latest severity), a
trigger on a resolved one opens a new alert, acknowledge/resolve of an
unknown key is accepted and changes nothing. ``throttle`` answers that many
requests with 429, ``fail`` that many with 500/502/503 in turn.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.receivers.base import Receiver, Reply

_SEVERITIES = {"critical", "error", "warning", "info"}
_ACTIONS = {"trigger", "acknowledge", "resolve"}
_TOP = {"routing_key", "event_action", "dedup_key", "payload", "links", "images", "client", "client_url"}
_PAYLOAD = {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}


@dataclass
class PdAlert:
    routing_key: str
    dedup_key: str
    status: str  # triggered | acknowledged | resolved
    severity: str
    summary: str
    triggers: int = 1
    events: list[dict[str, Any]] = field(default_factory=list)


def _invalid(*errors: str) -> Reply:
    return Reply(400, {"status": "invalid event", "message": "Event object is invalid", "errors": list(errors)})


class PagerDutyReceiver(Receiver):
    def __init__(self, routing_keys: set[str]) -> None:
        super().__init__()
        self.routing_keys = routing_keys
        self.alerts: list[PdAlert] = []
        self.accepted: list[dict[str, Any]] = []
        self.throttle = 0
        self.fail = 0
        self._fail_codes = [500, 502, 503]

    def open_alert(self, routing_key: str, dedup_key: str) -> PdAlert | None:
        for a in reversed(self.alerts):
            if a.routing_key == routing_key and a.dedup_key == dedup_key:
                return a if a.status != "resolved" else None
        return None

    def latest(self, dedup_key: str) -> PdAlert | None:
        found = [a for a in self.alerts if a.dedup_key == dedup_key]
        return found[-1] if found else None

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if path.split("?")[0] != "/v2/enqueue":
            return Reply(404, {"status": "not found"})
        if method != "POST":
            return Reply(405, {"status": "method not allowed"})
        if self.throttle > 0:
            self.throttle -= 1
            return Reply(429, {"status": "throttle event",
                               "message": "Requests for this service are arriving too quickly.  Please retry later."})
        if self.fail > 0:
            self.fail -= 1
            return Reply(self._fail_codes[self.fail % 3], {"status": "error", "message": "internal error"})
        ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        if not ctype.startswith("application/json"):
            return _invalid("Content-Type must be application/json")
        try:
            ev = json.loads(body)
        except ValueError:
            return Reply(400, {"status": "invalid event", "message": "Could not parse JSON", "errors": []})
        if not isinstance(ev, dict):
            return _invalid("Event object must be a JSON object")
        errors: list[str] = []
        extra = set(ev) - _TOP
        if extra:
            errors.append(f"Unknown fields: {sorted(extra)}")
        key = ev.get("routing_key")
        if not isinstance(key, str) or len(key) != 32:
            errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
        elif key not in self.routing_keys:
            errors.append("Invalid routing key")
        action = ev.get("event_action")
        if action not in _ACTIONS:
            errors.append("'event_action' is invalid (must be one of trigger, acknowledge, resolve)")
        dedup = ev.get("dedup_key")
        if dedup is not None and (not isinstance(dedup, str) or not dedup or len(dedup) > 255):
            errors.append("'dedup_key' must be a non-empty string of at most 255 characters")
        if action in ("acknowledge", "resolve") and not dedup:
            errors.append("'dedup_key' is required for acknowledge and resolve")
        if action == "trigger":
            errors += self._check_payload(ev.get("payload"))
        for link in ev.get("links", []) if isinstance(ev.get("links", []), list) else [None]:
            if not isinstance(link, dict) or not isinstance(link.get("href"), str) or not link["href"]:
                errors.append("'links' entries need an 'href'")
        if errors:
            return _invalid(*errors)
        assert isinstance(key, str)
        dedup = dedup or uuid.uuid4().hex
        self.accepted.append(ev)
        self._apply(key, str(action), dedup, ev)
        return Reply(202, {"status": "success", "message": "Event processed", "dedup_key": dedup})

    @staticmethod
    def _check_payload(p: Any) -> list[str]:
        if not isinstance(p, dict):
            return ["'payload' is required for trigger events"]
        errors = []
        if set(p) - _PAYLOAD:
            errors.append(f"Unknown payload fields: {sorted(set(p) - _PAYLOAD)}")
        summary = p.get("summary")
        if not isinstance(summary, str) or not summary.strip() or len(summary) > 1024:
            errors.append("'payload.summary' is required (at most 1024 characters)")
        if not isinstance(p.get("source"), str) or not p["source"]:
            errors.append("'payload.source' is required")
        if p.get("severity") not in _SEVERITIES:
            errors.append("'payload.severity' is invalid (must be one of critical, error, warning, info)")
        ts = p.get("timestamp")
        if ts is not None:
            try:
                datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
            except ValueError:
                errors.append("'payload.timestamp' is not a valid ISO 8601 timestamp")
        for k in ("component", "group", "class"):
            if k in p and not isinstance(p[k], str):
                errors.append(f"'payload.{k}' must be a string")
        if "custom_details" in p and not isinstance(p["custom_details"], dict):
            errors.append("'payload.custom_details' must be an object")
        return errors

    def _apply(self, key: str, action: str, dedup: str, ev: dict[str, Any]) -> None:
        open_ = self.open_alert(key, dedup)
        if action == "trigger":
            p = ev["payload"]
            if open_ is None:
                self.alerts.append(PdAlert(key, dedup, "triggered", p["severity"], p["summary"], events=[ev]))
            else:
                open_.triggers += 1
                open_.severity = p["severity"]
                open_.events.append(ev)
        elif open_ is not None:
            open_.status = "acknowledged" if action == "acknowledge" else "resolved"
            open_.events.append(ev)
