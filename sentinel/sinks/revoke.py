"""The guarded revoke webhook: a ladder of rungs between an alert and a revoked key.

Revoking a key stops an attacker and can also stop a paying customer, so an
alert must climb every rung (:class:`RevokeLadder`), in this order:

1. ``firing``        -- a resolved alert never revokes;
2. ``has_key``       -- the alert names an API key;
3. ``deny``          -- the key and its tenant are not on the deny list;
4. ``allow``         -- when an allow list is set, the key or tenant is on it;
5. ``min_score``     -- score >= ``min_score`` (skipped for a human's button press);
6. ``signals``       -- >= ``min_signals`` independent signals each
   contributing >= ``signal_floor`` (skipped for a human's button press);
7. ``rate``          -- at most ``max_per_hour`` revokes in any sliding hour
   across all replicas (a Redis sorted set updated by one Lua script; in
   memory without Redis). A retried alert reuses its slot;
8. ``dry_run``       -- on by default: the decision is audited as
   ``would_revoke`` and nothing is sent (dry runs count in their own window,
   so they show what the cap would have done).

Every decision -- sent, skipped and why -- is one audit record (JSON line
in the audit file, and a ``revoke_decision`` log event). The webhook body is
JSON signed with HMAC-SHA256 over ``timestamp + "." + body``, sent as
``X-Sentinel-Signature: v1=<hex>`` with ``X-Sentinel-Timestamp`` and
``Idempotency-Key: <alert_id>``. ``sentinel unrevoke KEY`` posts the inverse
action through the same signer and audit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec

from sentinel.alerting.notify import DeliveryError, Notification
from sentinel.alerts import Alert
from sentinel.logs import get_logger
from sentinel.sinks._http import post, retry_after, tls_context

log = get_logger("sentinel.revoke")
SIGNATURE_HEADER = "X-Sentinel-Signature"
TIMESTAMP_HEADER = "X-Sentinel-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``v1=`` + hex HMAC-SHA256 over ``timestamp + "." + body``.

    >>> sign("s3cret", "1700000000", b'{"a":1}')[:11]
    'v1=5d2fa0a6'
    """
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


class RateLimiter(Protocol):
    def acquire(self, member: str, now: float) -> bool: ...


class MemoryRateLimiter:
    """Sliding window in one process (no Redis)."""

    def __init__(self, limit: int, window_s: float = 3600.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: deque[tuple[float, str]] = deque()
        self._lock = threading.Lock()

    def acquire(self, member: str, now: float) -> bool:
        with self._lock:
            while self._hits and self._hits[0][0] <= now - self.window_s:
                self._hits.popleft()
            if any(m == member for _, m in self._hits):
                return True
            if len(self._hits) >= self.limit:
                return False
            self._hits.append((now, member))
            return True


# Sliding window over a sorted set (member = alert id, score = time): drop what left the window,
# let a member already inside through again (a retry), admit a new one only under the limit.
_WINDOW_LUA = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZSCORE', key, ARGV[4]) then return 1 end
if redis.call('ZCARD', key) >= limit then return 0 end
redis.call('ZADD', key, now, ARGV[4])
redis.call('PEXPIRE', key, math.ceil(window * 1000))
return 1
"""


class RedisRateLimiter:
    """At most ``limit`` members per sliding ``window_s`` across every replica sharing the Redis."""

    def __init__(self, client: Any, key: str, limit: int, window_s: float = 3600.0) -> None:
        self.key = key
        self.limit = limit
        self.window_s = window_s
        self._script = client.register_script(_WINDOW_LUA)

    def acquire(self, member: str, now: float) -> bool:
        return bool(self._script(keys=[self.key], args=[repr(now), self.window_s, self.limit, member]))


@dataclass(frozen=True)
class Decision:
    action: str      # "revoke" | "would_revoke" | "skip"
    reason: str      # the rung that decided, or "all_rungs_passed"
    detail: str = ""


class AuditRecord(msgspec.Struct, kw_only=True):
    at: str
    decision: str    # sent | would_revoke | skipped | failed | unrevoke_sent | unrevoke_failed
    reason: str
    detail: str = ""
    alert_id: str | None = None
    version: int | None = None
    api_key_id: str | None = None
    tenant_id: str | None = None
    score: float | None = None
    signals: int | None = None
    actor: str = "sentinel"
    dry_run: bool = True


class AuditLog:
    """Append-only JSON lines (flushed and fsynced per record) plus a log event per decision."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._enc = msgspec.json.Encoder()

    def write(self, rec: AuditRecord) -> None:
        import os

        line = self._enc.encode(rec) + b"\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        log.info("revoke_decision", decision=rec.decision, reason=rec.reason, alert_id=rec.alert_id,
                 api_key_id=rec.api_key_id, tenant_id=rec.tenant_id, dry_run=rec.dry_run, actor=rec.actor)

    def records(self) -> list[AuditRecord]:
        if not self.path.exists():
            return []
        return [msgspec.json.decode(line, type=AuditRecord) for line in self.path.read_bytes().splitlines() if line]


class RevokeLadder:
    """The rungs 1-8 above, as one pure-ish function (the rate rung consumes a slot)."""

    def __init__(self, *, dry_run: bool = True, allow: Iterable[str] = (), deny: Iterable[str] = (),
                 min_score: float = 0.9, min_signals: int = 2, signal_floor: float = 0.05,
                 limiter: RateLimiter | None = None, dry_limiter: RateLimiter | None = None,
                 max_per_hour: int = 5) -> None:
        self.dry_run = dry_run
        self.allow = frozenset(allow)
        self.deny = frozenset(deny)
        self.min_score = min_score
        self.min_signals = min_signals
        self.signal_floor = signal_floor
        self.limiter = limiter or MemoryRateLimiter(max_per_hour)
        self.dry_limiter = dry_limiter or MemoryRateLimiter(max_per_hour)

    def independent_signals(self, alert: Alert) -> int:
        return sum(1 for v in alert.signals.values() if v >= self.signal_floor)

    def decide(self, alert: Alert, now: float, manual: bool = False) -> Decision:
        key, tenant = alert.api_key_id, alert.tenant_id
        if alert.status != "firing":
            return Decision("skip", "not_firing")
        if not key:
            return Decision("skip", "no_api_key")
        if key in self.deny or tenant in self.deny:
            return Decision("skip", "deny_list", "key" if key in self.deny else "tenant")
        if self.allow and key not in self.allow and tenant not in self.allow:
            return Decision("skip", "not_in_allow_list")
        if not manual:
            if alert.score < self.min_score:
                return Decision("skip", "below_min_score", f"{alert.score:g} < {self.min_score:g}")
            n = self.independent_signals(alert)
            if n < self.min_signals:
                return Decision("skip", "too_few_signals", f"{n} < {self.min_signals}")
        limiter = self.dry_limiter if self.dry_run else self.limiter
        if not limiter.acquire(alert.alert_id, now):
            return Decision("skip", "rate_limited", "max revokes per hour reached")
        if self.dry_run:
            return Decision("would_revoke", "dry_run")
        return Decision("revoke", "all_rungs_passed")


def revoke_body(alert: Alert, action: str = "revoke", actor: str = "sentinel") -> dict[str, Any]:
    return {
        "action": action, "api_key_id": alert.api_key_id, "tenant_id": alert.tenant_id,
        "alert_id": alert.alert_id, "version": alert.version, "detector": alert.detector, "score": alert.score,
        "severity": alert.severity, "signals": alert.signals, "reason": alert.title,
        "detected_at": alert.detected_at, "actor": actor,
    }


class RevokeWebhook:
    """Signs and posts revoke / unrevoke requests."""

    def __init__(self, url: str, secret: str, *, verify_tls: bool = True, ca_file: Path | str | None = None,
                 timeout: float = 10.0, clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self._secret = secret
        self._ctx = tls_context(verify_tls, ca_file) if url.startswith("https") else None
        self.timeout = timeout
        self.clock = clock

    def post(self, body: dict[str, Any], idempotency_key: str) -> int:
        """POST signed; returns the status (2xx, or 409 = this idempotency key was already used)."""
        data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        ts = str(int(self.clock()))
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: ts,
                   SIGNATURE_HEADER: sign(self._secret, ts, data), "Idempotency-Key": idempotency_key}
        resp = post(self.url, data, headers, self.timeout, self._ctx)
        if 200 <= resp.status < 300 or resp.status == 409:
            return resp.status
        text = f"revoke webhook {resp.status}: {resp.body[:200].decode('utf-8', 'replace')}"
        retryable = resp.status >= 500 or resp.status in (408, 425, 429)
        raise DeliveryError(text, retryable=retryable, retry_after_s=retry_after(resp.headers))


class RevokeSink:
    """The revoke webhook as a delivery sink: every notification climbs the ladder, and is audited."""

    name = "revoke"
    record = False
    supports_resolve = False
    max_batch = 1

    def __init__(self, ladder: RevokeLadder, webhook: RevokeWebhook | None, audit: AuditLog,
                 clock: Callable[[], float] = time.time) -> None:
        self.ladder = ladder
        self.webhook = webhook
        self.audit = audit
        self.clock = clock

    def _record(self, alert: Alert, decision: str, reason: str, detail: str = "", actor: str = "sentinel") -> None:
        from sentinel.alerts import rfc3339

        self.audit.write(AuditRecord(
            at=rfc3339(self.clock()), decision=decision, reason=reason, detail=detail, alert_id=alert.alert_id,
            version=alert.version, api_key_id=alert.api_key_id, tenant_id=alert.tenant_id, score=alert.score,
            signals=self.ladder.independent_signals(alert), actor=actor, dry_run=self.ladder.dry_run))

    def revoke(self, alert: Alert, manual: bool = False, actor: str = "sentinel") -> Decision:
        d = self.ladder.decide(alert, self.clock(), manual=manual)
        if d.action == "skip":
            self._record(alert, "skipped", d.reason, d.detail, actor)
            return d
        if d.action == "would_revoke" or self.webhook is None:
            self._record(alert, "would_revoke", d.reason if self.webhook else "no_webhook_configured", d.detail, actor)
            return d
        try:
            status = self.webhook.post(revoke_body(alert, actor=actor), alert.alert_id)
        except DeliveryError as err:
            self._record(alert, "failed", "webhook_error", str(err), actor)
            raise
        if status == 409:  # a later version of an alert whose key the receiver already revoked
            self._record(alert, "skipped", "already_revoked", "idempotency key used before", actor)
            return Decision("skip", "already_revoked")
        self._record(alert, "sent", d.reason, d.detail, actor)
        return d

    def send(self, batch: list[Notification]) -> None:
        for n in batch:
            if "revoke" in n.alert.actions or not n.alert.actions:
                self.revoke(n.alert)
            else:
                self._record(n.alert, "skipped", "detector_does_not_ask_revoke")

    def close(self) -> None:
        return None


def unrevoke(webhook: RevokeWebhook, audit: AuditLog, api_key_id: str, actor: str, reason: str = "",
             clock: Callable[[], float] = time.time) -> None:
    """Ask the webhook to restore a key; audited whatever the outcome (raises DeliveryError on failure)."""
    from sentinel.alerts import rfc3339

    now = clock()
    body = {"action": "unrevoke", "api_key_id": api_key_id, "actor": actor, "reason": reason}
    rec = AuditRecord(at=rfc3339(now), decision="unrevoke_sent", reason=reason or "manual", api_key_id=api_key_id,
                      actor=actor, dry_run=False)
    try:
        webhook.post(body, f"unrevoke:{api_key_id}:{int(now)}")
    except DeliveryError as err:
        rec.decision, rec.detail = "unrevoke_failed", str(err)
        audit.write(rec)
        raise
    audit.write(rec)
