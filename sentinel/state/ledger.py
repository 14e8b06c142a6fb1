"""The notification ledger: one record per (alert_id, version, sink), so nothing is notified twice.

The pipeline is deterministic, so after a restart (which re-reads the events
since the last checkpoint) or on the replica that takes over a partition, the
same alert versions come out again. Before a sink gets an alert version, its
record is *claimed* with a set-if-absent; after the sink has it, the record is
*confirmed*. Records expire after a TTL (30 days by default), far longer than
any replay window.

A record is ``sent`` or ``pending|<owner>|<hint>``. A claim finds one of:

* nothing: the caller sends (``Claim.NEW``);
* ``sent``: the caller skips it (``Claim.DONE``);
* ``pending``: an earlier attempt (a crashed process, or this one before a
  failed send) claimed it and may or may not have delivered it
  (``Claim.UNCERTAIN``). The caller asks the sink whether it has it -- the
  alerts-topic sink reads its partition from the offset recorded in ``hint``
  -- and sends only if not. A sink that cannot tell gets it again
  (at-least-once in that narrow crash window; Delivery's idempotency keys
  cover its own sinks).

:func:`deliver` is the guarded write: claim (one round trip for the whole
batch), write and flush each sink, confirm. :class:`RedisNotificationLedger`
does each claim with one Lua script; :class:`MemoryNotificationLedger` has the
same semantics inside one process.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol, runtime_checkable

import redis

from sentinel.alerts import Alert
from sentinel.state.checkpoints import StoreUnavailable

__all__ = [
    "AlertSink",
    "Claim",
    "ClaimResult",
    "DeliveryReport",
    "MemoryNotificationLedger",
    "NotificationLedger",
    "NotifyKey",
    "ProbingSink",
    "RedisNotificationLedger",
    "deliver",
]

NotifyKey = tuple[str, int, str]  # alert_id, version, sink
_SENT = "sent"


class Claim(IntEnum):
    DONE = 0
    NEW = 1
    UNCERTAIN = 2


@dataclass(frozen=True, slots=True)
class ClaimResult:
    status: Claim
    hint: str | None = None  # the earlier claimant's hint when UNCERTAIN


class NotificationLedger(Protocol):
    owner: str

    def claim(self, alert_id: str, version: int, sink: str) -> bool:
        """True when the caller should notify (no record, or an unconfirmed earlier claim)."""
        ...

    def claim_many(self, keys: Sequence[NotifyKey], hints: Sequence[str] | None = None) -> list[ClaimResult]: ...

    def confirm_many(self, keys: Sequence[NotifyKey]) -> None: ...

    def status(self, alert_id: str, version: int, sink: str) -> str | None:
        """``sent``, ``pending`` or None (tests, operators)."""
        ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


def _pending(owner: str, hint: str) -> str:
    return f"pending|{owner}|{hint}"


def _hint_of(record: str) -> str:
    parts = record.split("|", 2)
    return parts[2] if len(parts) == 3 else ""


class MemoryNotificationLedger:
    """In-process ledger (demo, tests without Redis)."""

    def __init__(self, ttl_s: float = 30 * 86400, owner: str | None = None) -> None:
        self.ttl_s = ttl_s
        self.owner = owner or uuid.uuid4().hex[:12]
        self._data: dict[NotifyKey, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def _get(self, key: NotifyKey, now: float) -> str | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= now:
            del self._data[key]
            return None
        return item[0]

    def claim(self, alert_id: str, version: int, sink: str) -> bool:
        return self.claim_many([(alert_id, version, sink)])[0].status != Claim.DONE

    def claim_many(self, keys: Sequence[NotifyKey], hints: Sequence[str] | None = None) -> list[ClaimResult]:
        now = time.time()
        out = []
        with self._lock:
            for i, key in enumerate(keys):
                cur = self._get(key, now)
                value = _pending(self.owner, hints[i] if hints else "")
                if cur == _SENT:
                    out.append(ClaimResult(Claim.DONE))
                    continue
                self._data[key] = (value, now + self.ttl_s)
                if cur is None:
                    out.append(ClaimResult(Claim.NEW))
                else:
                    out.append(ClaimResult(Claim.UNCERTAIN, _hint_of(cur)))
        return out

    def confirm_many(self, keys: Sequence[NotifyKey]) -> None:
        exp = time.time() + self.ttl_s
        with self._lock:
            for key in keys:
                self._data[key] = (_SENT, exp)

    def status(self, alert_id: str, version: int, sink: str) -> str | None:
        with self._lock:
            cur = self._get((alert_id, version, sink), time.time())
        return None if cur is None else cur.split("|", 1)[0]

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


# KEYS[1] = record; ARGV = pending value, ttl seconds. Returns {status, previous record}.
_CLAIM = """
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return {1, ''}
end
if v == 'sent' then
  return {0, ''}
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {2, v}
"""


class RedisNotificationLedger:
    """Ledger records in Redis, shared by every replica and every restart."""

    def __init__(self, url: str, prefix: str = "sentinel", ttl_s: int = 30 * 86400, owner: str | None = None,
                 socket_timeout_s: float = 5.0) -> None:
        self.prefix = prefix
        self.ttl_s = int(ttl_s)
        self.owner = owner or uuid.uuid4().hex[:12]
        self._redis: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=min(socket_timeout_s, 2.0),
            health_check_interval=30,
        )
        self._claim = self._redis.register_script(_CLAIM)

    def key(self, alert_id: str, version: int, sink: str) -> str:
        return f"{self.prefix}:notified:{sink}:{alert_id}:{version}"

    def claim(self, alert_id: str, version: int, sink: str) -> bool:
        return self.claim_many([(alert_id, version, sink)])[0].status != Claim.DONE

    def claim_many(self, keys: Sequence[NotifyKey], hints: Sequence[str] | None = None) -> list[ClaimResult]:
        if not keys:
            return []
        try:
            pipe = self._redis.pipeline(transaction=False)
            for i, k in enumerate(keys):
                self._claim(keys=[self.key(*k)], args=[_pending(self.owner, hints[i] if hints else ""), self.ttl_s],
                            client=pipe)
            rows: list[Any] = pipe.execute()
        except redis.RedisError as err:
            raise StoreUnavailable(f"redis: {type(err).__name__}") from None
        out = []
        for status, prev in rows:
            st = Claim(int(status))
            out.append(ClaimResult(st, _hint_of(prev.decode()) if st == Claim.UNCERTAIN else None))
        return out

    def confirm_many(self, keys: Sequence[NotifyKey]) -> None:
        if not keys:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for k in keys:
                pipe.set(self.key(*k), _SENT, ex=self.ttl_s)
            pipe.execute()
        except redis.RedisError as err:
            raise StoreUnavailable(f"redis: {type(err).__name__}") from None

    def status(self, alert_id: str, version: int, sink: str) -> str | None:
        try:
            raw = self._redis.get(self.key(alert_id, version, sink))
        except redis.RedisError as err:
            raise StoreUnavailable(f"redis: {type(err).__name__}") from None
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return text.split("|", 1)[0]

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self._redis.close()


@runtime_checkable
class AlertSink(Protocol):
    """Where the daemon writes alerts (alerts topic, JSONL file, Delivery ...).

    ``write`` may buffer; ``flush`` returns only when everything written is
    durable at the sink, or raises. Both raise on failure; the daemon retries.
    """

    name: str

    def write(self, alerts: list[Alert]) -> None: ...

    def flush(self) -> None: ...


@runtime_checkable
class ProbingSink(AlertSink, Protocol):
    """A sink that can tell whether an uncertain alert version already reached it."""

    def hint(self, alert: Alert) -> str:
        """Recorded with the claim: whatever the sink needs later to look the alert up cheaply."""
        ...

    def find_sent(self, items: Sequence[tuple[Alert, str]]) -> set[tuple[str, int]]:
        """(alert_id, version) of the items (alert, hint) the sink already holds."""
        ...


@dataclass
class DeliveryReport:
    sent: dict[str, int] = field(default_factory=dict)  # sink -> alert versions written
    skipped: int = 0  # already notified (restart, other replica)
    found: int = 0  # uncertain, but the sink had it
    resent: int = 0  # uncertain, sink cannot tell: written again
    failed: list[tuple[Alert, str]] = field(default_factory=list)  # (alert, sink) still to deliver
    errors: dict[str, str] = field(default_factory=dict)  # sink -> error type
    unconfirmed: list[NotifyKey] = field(default_factory=list)  # written, ledger not updated yet


def deliver(ledger: NotificationLedger, sinks: Sequence[AlertSink], items: Sequence[tuple[Alert, str]],
            ) -> DeliveryReport:
    """Write each (alert, sink name) at most once across restarts and replicas: claim, write, flush, confirm.

    Raises StoreUnavailable when the ledger cannot be reached for the claim (nothing written then).
    A sink that fails leaves its items in ``report.failed``; the others go on.
    """
    report = DeliveryReport()
    if not items:
        return report
    by_name = {s.name: s for s in sinks}
    hints = []
    for alert, name in items:
        sink = by_name[name]
        hints.append(sink.hint(alert) if isinstance(sink, ProbingSink) else "")
    keys: list[NotifyKey] = [(a.alert_id, a.version, name) for a, name in items]
    claims = ledger.claim_many(keys, hints)
    todo: dict[str, list[Alert]] = {}
    uncertain: dict[str, list[tuple[Alert, str]]] = {}
    for (alert, name), res in zip(items, claims, strict=True):
        if res.status == Claim.DONE:
            report.skipped += 1
        elif res.status == Claim.NEW:
            todo.setdefault(name, []).append(alert)
        else:
            uncertain.setdefault(name, []).append((alert, res.hint or ""))
    confirmed: list[NotifyKey] = []
    for name, sink in by_name.items():
        new = todo.get(name, [])
        unsure = uncertain.get(name, [])
        if not new and not unsure:
            continue
        retry = [a for a, _ in unsure]
        try:
            if unsure and isinstance(sink, ProbingSink):
                have = sink.find_sent(unsure)
                found = [a for a in retry if (a.alert_id, a.version) in have]
                retry = [a for a in retry if (a.alert_id, a.version) not in have]
                report.found += len(found)
                confirmed.extend((a.alert_id, a.version, name) for a in found)
            else:
                report.resent += len(retry)
            batch = new + retry
            if batch:
                sink.write(batch)
                sink.flush()
        except Exception as err:  # one sink failing never stops the others
            report.errors[name] = type(err).__name__
            report.failed.extend((a, name) for a in new + retry)
            continue
        report.sent[name] = report.sent.get(name, 0) + len(batch)
        confirmed.extend((a.alert_id, a.version, name) for a in batch)
    try:
        ledger.confirm_many(confirmed)
    except StoreUnavailable:
        report.unconfirmed = confirmed
    return report
