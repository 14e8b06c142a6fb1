"""A strict Opsgenie Alert API stand-in.

Endpoints: ``POST /v2/alerts`` (create), ``POST /v2/alerts/{id}/close``,
``POST /v2/alerts/{id}/acknowledge`` and ``PUT /v2/alerts/{id}/priority``,
each with ``identifierType`` id|tiny|alias (default id). Like Opsgenie:
``Authorization: GenieKey <key>`` (missing, malformed or unknown -> 401
``{"message": "Could not authenticate", ...}``); validation errors -> 422
``{"message": "Request body is not processable. Please check the errors.",
"errors": {field: text}}`` for an empty or too long ``message`` (130),
``alias`` (512), ``description`` (15000), ``entity`` (512), ``source``
(100), ``priority`` outside P1-P5, more than 20 ``tags`` or one over 50
characters, ``details`` not a string map or over 8000 characters,
``responders`` without a valid type and name/id/username; unknown fields
are rejected too. Success is 202 ``{"result": "Request will be processed",
"took": ..., "requestId": ...}``; the processing is asynchronous, so closing
an unknown alias is accepted and does nothing.

Alerts de-duplicate on ``alias`` while open (``count`` grows, the priority
does not change -- only ``PUT .../priority`` does). ``throttle`` answers that
many requests with 429, ``fail`` that many with 503.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.receivers.base import Receiver, Reply

_CREATE_FIELDS = {"message", "alias", "description", "responders", "visibleTo", "actions", "tags", "details",
                  "entity", "source", "priority", "user", "note"}
_ACTION_FIELDS = {"user", "source", "note"}
_PRIORITIES = {"P1", "P2", "P3", "P4", "P5"}
_LIMITS = {"message": 130, "alias": 512, "description": 15000, "entity": 512, "source": 100, "user": 100,
           "note": 25000}


@dataclass
class OgAlert:
    alias: str
    message: str
    priority: str
    status: str = "open"  # open | closed
    acknowledged: bool = False
    count: int = 1
    body: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _reply(status: int = 202, **extra: Any) -> Reply:
    return Reply(status, {"result": "Request will be processed", "took": 0.01, "requestId": str(uuid.uuid4()),
                          **extra} if status == 202 else {**extra, "took": 0.01, "requestId": str(uuid.uuid4())})


def _unprocessable(errors: dict[str, str]) -> Reply:
    return _reply(422, message="Request body is not processable. Please check the errors.", errors=errors)


class OpsgenieReceiver(Receiver):
    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.alerts: dict[str, OgAlert] = {}  # alias -> latest alert with that alias
        self.history: list[OgAlert] = []
        self.throttle = 0
        self.fail = 0

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        h = {k.lower(): v for k, v in headers.items()}
        scheme, _, key = h.get("authorization", "").partition(" ")
        if scheme != "GenieKey" or key != self.api_key:
            return _reply(401, message="Could not authenticate")
        if self.throttle > 0:
            self.throttle -= 1
            return _reply(429, message="You are making too many requests! To avoid errors, we recommend you "
                          "limit requests.")
        if self.fail > 0:
            self.fail -= 1
            return _reply(503, message="Service unavailable")
        if not h.get("content-type", "").startswith("application/json"):
            return _reply(415, message="Unsupported media type")
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            return _reply(400, message="Could not parse request body")
        if not isinstance(doc, dict):
            return _reply(400, message="Request body must be a JSON object")
        url = urllib.parse.urlsplit(path)
        query = urllib.parse.parse_qs(url.query)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        if parts == ["v2", "alerts"]:
            return self._create(doc) if method == "POST" else _reply(405, message="Method not allowed")
        if len(parts) == 4 and parts[:2] == ["v2", "alerts"]:
            ident_type = query.get("identifierType", ["id"])[0]
            if ident_type not in ("id", "tiny", "alias"):
                return _unprocessable({"identifierType": "Invalid identifier type"})
            ident, action = parts[2], parts[3]
            if action in ("close", "acknowledge") and method == "POST":
                return self._act(ident if ident_type == "alias" else None, action, doc)
            if action == "priority" and method == "PUT":
                if doc.get("priority") not in _PRIORITIES or set(doc) != {"priority"}:
                    return _unprocessable({"priority": "Priority should be one of P1, P2, P3, P4, P5"})
                a = self.alerts.get(ident) if ident_type == "alias" else None
                if a is not None and a.status == "open":
                    a.priority = doc["priority"]
                return _reply()
        return _reply(404, message="Not found")

    def _create(self, doc: dict[str, Any]) -> Reply:
        errors: dict[str, str] = {}
        for k in sorted(set(doc) - _CREATE_FIELDS):
            errors[k] = "Unknown field"
        msg = doc.get("message")
        if not isinstance(msg, str) or not msg.strip():
            errors["message"] = "Message can not be empty."
        for k, limit in _LIMITS.items():
            v = doc.get(k)
            if v is not None and (not isinstance(v, str) or len(v) > limit):
                errors[k] = f"{k} should be a string of at most {limit} characters"
        if "priority" in doc and doc["priority"] not in _PRIORITIES:
            errors["priority"] = "Priority should be one of P1, P2, P3, P4, P5"
        tags = doc.get("tags", [])
        if not isinstance(tags, list) or len(tags) > 20 or any(not isinstance(t, str) or len(t) > 50 for t in tags):
            errors["tags"] = "At most 20 tags of at most 50 characters"
        details = doc.get("details", {})
        if (not isinstance(details, dict) or any(not isinstance(v, str) for v in details.values())
                or sum(len(k) + len(v) for k, v in details.items() if isinstance(v, str)) > 8000):
            errors["details"] = "Details should be a map of strings of at most 8000 characters"
        for r in doc.get("responders", []):
            if (not isinstance(r, dict) or r.get("type") not in ("team", "user", "escalation", "schedule")
                    or not (r.get("id") or r.get("name") or r.get("username"))):
                errors["responders"] = "Responder should have a type and an id, name or username"
        if errors:
            return _unprocessable(errors)
        alias = doc.get("alias") or msg
        assert isinstance(alias, str)
        existing = self.alerts.get(alias)
        if existing is not None and existing.status == "open":
            existing.count += 1  # de-duplicated: nothing else changes
        else:
            a = OgAlert(alias, str(msg), doc.get("priority", "P3"), body=doc)
            self.alerts[alias] = a
            self.history.append(a)
        return _reply()

    def _act(self, alias: str | None, action: str, doc: dict[str, Any]) -> Reply:
        extra = set(doc) - _ACTION_FIELDS
        if extra:
            return _unprocessable({k: "Unknown field" for k in sorted(extra)})
        a = self.alerts.get(alias) if alias is not None else None
        if a is not None and a.status == "open":
            if action == "close":
                a.status = "closed"
            else:
                a.acknowledged = True
            if doc.get("note"):
                a.notes.append(str(doc["note"]))
        return _reply()
