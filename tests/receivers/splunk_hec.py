"""A strict Splunk HTTP Event Collector (``/services/collector/event``).

Checks what a real HEC checks and answers with its status codes and bodies
(Splunk docs, "Troubleshoot HTTP Event Collector" / HEC error codes):
missing token 401 code 2, malformed ``Authorization`` 401 code 3, unknown
token 403 code 4, no data 400 code 5, invalid JSON 400 code 6, missing
``event`` 400 code 12, busy 503 code 9. On top of HEC, every envelope must
carry the fields sentinel promises (``time`` number, ``host``, ``source``,
``sourcetype`` strings, non-empty object ``event``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.receivers.base import Receiver, Reply

_ALLOWED = {"time", "host", "source", "sourcetype", "index", "event", "fields"}


class HecReceiver(Receiver):
    def __init__(self, token: str, certfile: Path | None = None, keyfile: Path | None = None) -> None:
        super().__init__(certfile, keyfile)
        self.token = token
        self.events: list[dict[str, Any]] = []
        self.busy = 0  # answer this many requests with 503 "Server is busy"

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if path.split("?")[0] not in ("/services/collector/event", "/services/collector/event/1.0"):
            return Reply(404, {"text": "The requested URL was not found on this server.", "code": 404})
        if method != "POST":
            return Reply(405, {"text": "Method not allowed", "code": 405})
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization")
        if not auth:
            return Reply(401, {"text": "Token is required", "code": 2})
        scheme, _, tok = auth.partition(" ")
        if scheme != "Splunk" or not tok:
            return Reply(401, {"text": "Invalid authorization", "code": 3})
        if tok != self.token:
            return Reply(403, {"text": "Invalid token", "code": 4})
        if self.busy > 0:
            self.busy -= 1
            return Reply(503, {"text": "Server is busy", "code": 9}, {"Retry-After": "1"})
        text = body.decode("utf-8", "strict").strip()
        if not text:
            return Reply(400, {"text": "No data", "code": 5})
        decoder = json.JSONDecoder()
        pos, n, batch = 0, 0, []
        while pos < len(text):
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
            if pos >= len(text):
                break
            try:
                obj, pos = decoder.raw_decode(text, pos)
            except ValueError:
                return Reply(400, {"text": "Invalid data format", "code": 6, "invalid-event-number": n})
            if not isinstance(obj, dict) or "event" not in obj or obj["event"] in ("", None, {}):
                return Reply(400, {"text": "Event field is required", "code": 12, "invalid-event-number": n})
            if set(obj) - _ALLOWED or not isinstance(obj.get("time"), (int, float)) or not all(
                    isinstance(obj.get(k), str) and obj.get(k) for k in ("host", "source", "sourcetype")):
                return Reply(400, {"text": "Invalid data format", "code": 6, "invalid-event-number": n})
            batch.append(obj)
            n += 1
        self.events.extend(batch)
        return Reply(200, {"text": "Success", "code": 0})
