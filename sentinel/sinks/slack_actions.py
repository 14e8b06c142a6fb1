"""Slack interactivity endpoint: the Acknowledge / Silence 1h / Revoke key buttons.

Slack POSTs ``application/x-www-form-urlencoded`` with a ``payload`` JSON
field to the app's Request URL. Every request is authenticated before it is
parsed: ``X-Slack-Signature`` must be ``v0=`` + HMAC-SHA256 (signing secret)
of ``v0:<X-Slack-Request-Timestamp>:<raw body>`` (checked by
``slack_sdk.signature.SignatureVerifier``, constant-time), and the timestamp
must be within 5 minutes of our clock; a signature already seen inside that
window is a replay and is rejected too. Rejections answer 401 with no
detail and log ``slack_action_rejected``.

Actions:

* ``sentinel_ack``        -- records who acknowledged the alert (outbox key-value store) and, with
  ``on_ack`` (:func:`sentinel.sinks.factory.acknowledge_hook`), acknowledges it on the pagers
  (PagerDuty, Opsgenie) through the outbox;
* ``sentinel_silence_1h`` -- adds a one-hour silence on detector + entity + tenant;
* ``sentinel_revoke``     -- a human's revoke: the revoke ladder without the
  score and signal rungs (deny/allow lists, the hourly cap and dry-run still
  hold), audited with the Slack user as actor.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from slack_sdk.signature import Clock, SignatureVerifier

from sentinel.alerting.outbox import Outbox
from sentinel.alerting.silences import Silence, SilenceStore
from sentinel.alerts import Alert, Entity, rfc3339
from sentinel.logs import get_logger
from sentinel.sinks.revoke import RevokeSink
from sentinel.sinks.slack import ACTION_ACK, ACTION_REVOKE, ACTION_SILENCE

log = get_logger("sentinel.slack_actions")
MAX_AGE_S = 300
MAX_BODY = 64 * 1024


class _Clock(Clock):
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


class SlackActions:
    """Verifies and handles one interactivity request: ``handle(body, headers) -> (status, body)``."""

    def __init__(self, signing_secret: str, silences: SilenceStore, kv: Outbox | None = None,
                 revoke: RevokeSink | None = None, clock: Callable[[], float] = time.time,
                 on_ack: Callable[[Mapping[str, Any], str, float], int] | None = None) -> None:
        self.verifier = SignatureVerifier(signing_secret, clock=_Clock(clock))
        self.silences = silences
        self.kv = kv
        self.revoke = revoke
        self.clock = clock
        self.on_ack = on_ack
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def _replayed(self, signature: str, now: float) -> bool:
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now - 2 * MAX_AGE_S:
                self._seen.popitem(last=False)
            if signature in self._seen:
                return True
            self._seen[signature] = now
            return False

    def handle(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        h = {k.lower(): v for k, v in headers.items()}
        ts = h.get("x-slack-request-timestamp", "")
        sig = h.get("x-slack-signature", "")
        now = self.clock()
        if not ts or not sig or not ts.isdigit():
            return self._reject("missing_signature_headers")
        if abs(now - int(ts)) > MAX_AGE_S:
            return self._reject("stale_timestamp")
        if not self.verifier.is_valid(body, ts, sig):
            return self._reject("bad_signature")
        if self._replayed(sig, now):
            return self._reject("replayed_request")
        try:
            form = urllib.parse.parse_qs(body.decode("utf-8"), strict_parsing=True)
            payload = json.loads(form["payload"][0])
            action = payload["actions"][0]
            value = json.loads(action["value"])
            user = str(payload.get("user", {}).get("username") or payload.get("user", {}).get("id") or "unknown")
        except (ValueError, KeyError, IndexError, TypeError):
            return 400, b"bad payload"
        return self._act(str(action.get("action_id")), value, user, now)

    def _reject(self, why: str) -> tuple[int, bytes]:
        log.warning("slack_action_rejected", reason=why)
        return 401, b"invalid request"

    def _act(self, action_id: str, v: dict[str, Any], user: str, now: float) -> tuple[int, bytes]:
        alert_id = str(v.get("alert_id", ""))
        if action_id == ACTION_ACK:
            if self.kv is not None:
                self.kv.kv_set(f"ack:{alert_id}", json.dumps({"by": user, "at": now}), 30 * 86400)
            log.info("alert_acknowledged", alert_id=alert_id, user=user)
            if self.on_ack is not None:
                try:
                    forwarded = self.on_ack(v, user, now)
                    log.info("alert_ack_forwarded", alert_id=alert_id, notifications=forwarded)
                except Exception as err:  # the outbox is down: Slack still gets its quick 200
                    log.warning("alert_ack_forward_failed", alert_id=alert_id, error=type(err).__name__)
            return 200, b""
        if action_id == ACTION_SILENCE:
            matchers = [f"detector={v['detector']}", f"entity={v['entity']}", f"tenant={v['tenant']}"]
            s = Silence.create(matchers, now, now + 3600, created_by=f"slack:{user}",
                               comment=f"Silence 1h from Slack on {alert_id}")
            self.silences.add(s)
            log.info("silence_added", silence_id=s.id, matchers=[str(m) for m in s.matchers], by=f"slack:{user}")
            return 200, b""
        if action_id == ACTION_REVOKE:
            if self.revoke is None:
                return 200, b""
            alert = Alert(alert_id=alert_id, version=int(v.get("version", 1)), status="firing",
                          detector=str(v.get("detector", "")), rule=str(v.get("detector", "")), severity="high",
                          score=0.0, entity=Entity("api_key", str(v.get("api_key") or "")),
                          tenant_id=str(v.get("tenant", "")), detected_at=rfc3339(now), title="revoke from Slack",
                          evidence={}, api_key_id=v.get("api_key"))
            try:
                self.revoke.revoke(alert, manual=True, actor=f"slack:{user}")
            except Exception as err:  # audited by the sink; Slack only needs a quick 200
                log.warning("slack_revoke_failed", alert_id=alert_id, error=type(err).__name__)
            return 200, b""
        return 400, b"unknown action"


def serve(actions: SlackActions, host: str = "127.0.0.1", port: int = 0,
          path: str = "/slack/actions") -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread; ``server.shutdown()`` stops it."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] != path:
                self._reply(404, b"not found")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._reply(413, b"too large")
                return
            status, body = actions.handle(self.rfile.read(length), dict(self.headers.items()))
            self._reply(status, body)

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="sentinel-slack-actions", daemon=True).start()
    return server
