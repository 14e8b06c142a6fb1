"""A strict revoke webhook: HMAC-SHA256 over ``timestamp + "." + body``, fresh timestamp, idempotency key.

401 for a missing/wrong signature or a timestamp more than 5 minutes off;
400 for a body that is not the revoke contract or an ``Idempotency-Key`` that
does not match the alert; the same key with the same body again is
answered 200 without revoking twice; with another body, 409.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from tests.receivers.base import Receiver, Reply


class RevokeReceiver(Receiver):
    def __init__(self, secret: str, max_skew_s: int = 300) -> None:
        super().__init__()
        self.secret = secret
        self.max_skew_s = max_skew_s
        self.revoked: list[dict[str, Any]] = []
        self.unrevoked: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        self._seen: dict[str, str] = {}

    def _reject(self, status: int, why: str) -> Reply:
        self.rejected.append(why)
        return Reply(status, {"error": why})

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        h = {k.lower(): v for k, v in headers.items()}
        if method != "POST" or path.split("?")[0] != "/revoke":
            return Reply(404, {"error": "not_found"})
        ts, sig, key = h.get("x-sentinel-timestamp", ""), h.get("x-sentinel-signature", ""), h.get("idempotency-key")
        if not ts.isdigit() or not sig.startswith("v1="):
            return self._reject(401, "missing_signature")
        if abs(time.time() - int(ts)) > self.max_skew_s:
            return self._reject(401, "stale_timestamp")
        want = hmac.new(self.secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, sig[3:]):
            return self._reject(401, "bad_signature")
        if not key:
            return self._reject(400, "missing_idempotency_key")
        if not h.get("content-type", "").startswith("application/json"):
            return self._reject(400, "bad_content_type")
        try:
            doc = json.loads(body)
        except ValueError:
            return self._reject(400, "bad_json")
        digest = hashlib.sha256(body).hexdigest()
        if key in self._seen:
            return Reply(200, {"ok": True, "replayed": True}) if self._seen[key] == digest else \
                self._reject(409, "idempotency_key_reused")
        if doc.get("action") == "revoke":
            if not doc.get("api_key_id") or doc.get("alert_id") != key:
                return self._reject(400, "bad_revoke_body")
            self.revoked.append(doc)
        elif doc.get("action") == "unrevoke":
            if not doc.get("api_key_id"):
                return self._reject(400, "bad_unrevoke_body")
            self.unrevoked.append(doc)
        else:
            return self._reject(400, "unknown_action")
        self._seen[key] = digest
        return Reply(200, {"ok": True})
