"""Delivery: from alert versions to sinks, through one pipeline of stages.

:meth:`Delivery.plan` is the whole notification path, top to bottom, in the
spirit of Alertmanager:

1. **route**   -- ``rules/routes.yaml`` picks the sinks (:mod:`.routes`);
2. **silence** -- an active silence mutes the page sinks (:mod:`.silences`);
3. **inhibit** -- a firing ``spend_spike`` mutes the tenant's ``quota_burn``
   page and is linked from it (:mod:`.inhibit`);
4. **group**   -- the tenant is the group: one Slack thread (:mod:`.grouping`);
5. **dedup / cooldown** -- a page sink hears about an incident once, again
   only when its severity rises, and about its end only if it heard of its
   start and supports resolves; a new incident on the same entity within
   ``realert_s`` (event time) is not paged; record sinks get every version
   once;
6. **outbox**  -- :meth:`enqueue` stores the notifications durably before it
   returns (:mod:`.outbox`);
7. **retry**   -- one worker thread per sink delivers its queue in order with
   exponential backoff and jitter; a failing sink delays only itself; after
   ``max_attempts`` (or a non-retryable error) an entry is dead-lettered and
   counted.

``Delivery`` is an ``AlertSink`` (``write`` = enqueue, ``flush`` = durable),
so the live daemon and ``sentinel replay`` plug it in the same way.
"""

from __future__ import annotations

import random
import socket
import threading
import time
import uuid
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge

from detectors.base import SEVERITIES
from sentinel.alerting.grouping import group_key
from sentinel.alerting.inhibit import Inhibitor
from sentinel.alerting.notify import (
    DeliveryError,
    Notification,
    Notifier,
    Reason,
    decode_notification,
    encode_notification,
)
from sentinel.alerting.outbox import Entry, NotifyRecord, Outbox, OutboxItem
from sentinel.alerting.routes import Router
from sentinel.alerting.silences import MemorySilenceStore, Silencer, SilenceStore
from sentinel.alerts import Alert
from sentinel.logs import get_logger
from sentinel.redact import fingerprint, redact_text
from sentinel.rules import RoutesFile

log = get_logger("sentinel.delivery")
_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}

DELIVERED = PromCounter("sentinel_sink_delivered_total", "Notifications delivered", ["sink"])
FAILURES = PromCounter("sentinel_sink_failures_total", "Failed delivery attempts (per batch)", ["sink"])
DEAD_LETTERS = PromCounter("sentinel_sink_dead_letters_total", "Notifications given up on", ["sink"])
SUPPRESSED = PromCounter("sentinel_notifications_suppressed_total", "Notifications not sent, by stage",
                         ["sink", "stage"])
OUTBOX_DEPTH = Gauge("sentinel_outbox_depth", "Notifications waiting in the outbox", ["sink"])


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter. A fixed ``seed`` makes the jitter sequence reproducible."""

    initial_s: float = 1.0
    max_s: float = 300.0
    multiplier: float = 2.0
    jitter: float = 0.2
    max_attempts: int = 12
    seed: int | None = None

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Wait before attempt ``attempt + 1`` (``attempt`` >= 1 failures so far).

        >>> p = RetryPolicy(initial_s=1, max_s=10, jitter=0)
        >>> [p.delay(a, random.Random(0)) for a in (1, 2, 3, 4, 5)]
        [1.0, 2.0, 4.0, 8.0, 10.0]
        """
        base = min(self.max_s, self.initial_s * self.multiplier ** max(0, attempt - 1))
        return max(0.0, base * (1.0 + self.jitter * (2.0 * rng.random() - 1.0)))


def _event_time(a: Alert) -> float:
    try:
        return datetime.fromisoformat(a.detected_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def entity_key(a: Alert) -> str:
    return f"{a.detector}|{a.rule}|{a.entity.type}|{a.entity.id}"


@dataclass
class DeliveryStats:
    enqueued: Counter[str] = field(default_factory=Counter)
    delivered: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    suppressed: Counter[str] = field(default_factory=Counter)  # "sink/stage"


class _StateCache:
    """Write-through cache of notify records in front of the outbox (bounded LRU)."""

    def __init__(self, outbox: Outbox, size: int = 50_000) -> None:
        self.outbox = outbox
        self.size = size
        self._recs: OrderedDict[tuple[str, str], NotifyRecord | None] = OrderedDict()

    def get(self, sink: str, alert_id: str) -> NotifyRecord | None:
        k = (sink, alert_id)
        if k in self._recs:
            self._recs.move_to_end(k)
            return self._recs[k]
        rec = self.outbox.notify_record(sink, alert_id)
        self.put(sink, alert_id, rec)
        return rec

    def put(self, sink: str, alert_id: str, rec: NotifyRecord | None) -> None:
        self._recs[(sink, alert_id)] = rec
        self._recs.move_to_end((sink, alert_id))
        if len(self._recs) > self.size:
            self._recs.popitem(last=False)

    def prefetch(self, sinks: Iterable[str], alert_ids: Sequence[str]) -> None:
        """Load the records of a batch in one round trip per sink (absent ones cached as None)."""
        for sink in sinks:
            missing = [a for a in alert_ids if (sink, a) not in self._recs]
            if missing:
                found = self.outbox.notify_records(sink, missing)
                for a in missing:
                    self.put(sink, a, found.get(a))

    def forget(self, sink: str, alert_id: str) -> None:
        self._recs.pop((sink, alert_id), None)


class Delivery:
    """Plans notifications, stores them in the outbox, and runs one delivery worker per sink."""

    name = "delivery"

    def __init__(
        self,
        notifiers: Sequence[Notifier],
        outbox: Outbox,
        router: Router | None = None,
        silences: SilenceStore | None = None,
        inhibitor: Inhibitor | None = None,
        retry: RetryPolicy | None = None,
        realert_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
        lease_s: float = 15.0,
        idle_poll_s: float = 1.0,
        secrets: Iterable[str] = (),
    ) -> None:
        self.notifiers = {n.name: n for n in notifiers}
        self.outbox = outbox
        self.router = router or Router()
        self.silence_store = silences if silences is not None else MemorySilenceStore()
        self.silencer = Silencer(self.silence_store)
        self.inhibitor = inhibitor or Inhibitor()
        self.retry = retry or RetryPolicy()
        self.realert_s = realert_s
        self.clock = clock
        self.owner = owner or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.lease_s = lease_s
        self.idle_poll_s = idle_poll_s
        self.stats = DeliveryStats()
        self._secrets = tuple(s for s in secrets if s)
        self._state = _StateCache(outbox)
        self._plan_lock = threading.Lock()
        self._wake = {name: threading.Event() for name in self.notifiers}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._busy: set[str] = set()
        self._log_unconfigured()

    def _log_unconfigured(self) -> None:
        for missing in sorted(self.router.referenced_sinks() - set(self.notifiers)):
            log.info("route_sink_not_configured", sink=missing)

    def set_routes(self, routes: RoutesFile | None) -> None:
        """Route by ``routes`` from now on (``sentinel run`` on SIGHUP, once the new rules are validated).

        The router is compiled first and swapped whole, between two :meth:`enqueue` batches, together
        with the route-dependent state of the sinks (PagerDuty's routing keys per route, re-read from
        the environment). What is already in the outbox is delivered as it was planned; dedup, cooldown
        and thread state are kept, so an incident paged under the old routes is told of its end only if
        the new routes still send it to that sink. The set of sinks comes from the settings, not the
        rules: a route naming a sink that is not configured is logged, as at start.
        """
        router = Router(routes)
        reroutes = [fn for n in self.notifiers.values() if (fn := getattr(n, "reroute", None)) is not None]
        with self._plan_lock:
            self.router = router
            for reroute in reroutes:
                reroute(routes)
        self._log_unconfigured()

    # -- the notification path ------------------------------------------------------------------
    def plan(self, alert: Alert, now: float) -> list[Notification]:
        """Stages 1-5 for one alert version: which sinks get it and why. Updates dedup state."""
        self.inhibitor.observe(alert)
        sinks = self.router.route(alert)                                   # 1 route
        silence = self.silencer.silenced_by(alert, now)                    # 2 silence
        inhibitor = self.inhibitor.inhibited_by(alert)                     # 3 inhibit
        group = group_key(alert)                                           # 4 group
        out = []
        for name in sinks:
            notifier = self.notifiers.get(name)
            if notifier is None:
                continue
            if not notifier.record and (silence or inhibitor):
                self._suppress(name, "silenced" if silence else "inhibited", alert)
                continue
            reason, stage = self._dedup(notifier, alert)                   # 5 dedup / cooldown
            if reason is None:
                self._suppress(name, stage, alert)
                continue
            prev = self._state.get(name, alert.alert_id)
            out.append(Notification(alert=alert, sink=name, reason=reason, group_key=group,
                                    previous_severity=prev.severity if prev else None,
                                    inhibited_by=inhibitor, enqueued_at=now))
        return out

    def _dedup(self, notifier: Notifier, alert: Alert) -> tuple[Reason | None, str]:
        """Why to notify this sink of this version, or ``(None, stage)`` when it must not hear of it."""
        rec = self._state.get(notifier.name, alert.alert_id)
        if rec is not None and rec.version >= alert.version:
            return None, "duplicate"
        if alert.status == "resolved":
            if notifier.record:
                return "resolved", ""
            if rec is None or rec.status != "firing":
                return None, "not_notified"
            return ("resolved", "") if notifier.supports_resolve else (None, "no_resolve_support")
        if rec is None or rec.status == "resolved":
            if not notifier.record and self.realert_s > 0:
                last = self.outbox.cooldown_since(notifier.name, entity_key(alert))
                t = _event_time(alert)
                if last is not None and 0 <= t - last < self.realert_s:
                    return None, "cooldown"
            return "new", ""
        if _RANK[alert.severity] > _RANK.get(rec.severity, 0):
            return "escalated", ""
        return ("update", "") if notifier.record else (None, "no_severity_rise")

    def _suppress(self, sink: str, stage: str, alert: Alert) -> None:
        self.stats.suppressed[f"{sink}/{stage}"] += 1
        SUPPRESSED.labels(sink, stage).inc()

    def enqueue(self, alerts: Sequence[Alert]) -> int:
        """Plan and store ``alerts``; returns the number of notifications stored. Durable on return."""
        if not alerts:
            return 0
        with self._plan_lock:
            now = self.clock()
            self._state.prefetch(self.notifiers, [a.alert_id for a in alerts])
            notes: list[Notification] = []
            for a in alerts:
                planned = self.plan(a, now)
                for n in planned:  # later versions in the same batch see this one as notified
                    self._state.put(n.sink, a.alert_id, self._record(n))
                notes.extend(planned)
            items = [
                OutboxItem(sink=n.sink, alert_id=n.alert.alert_id, version=n.alert.version,
                           payload=encode_notification(n), record=self._record(n),
                           entity_key=entity_key(n.alert) if n.reason == "new" else "",
                           event_at=_event_time(n.alert))
                for n in notes
            ]
            try:
                accepted = self.outbox.enqueue(items)                      # 6 outbox (durable)
            except Exception:
                for n in notes:
                    self._state.forget(n.sink, n.alert.alert_id)
                raise
            if len(accepted) != len(items):
                ok = set(accepted)
                for i, it in enumerate(items):
                    if i not in ok:
                        self._state.forget(it.sink, it.alert_id)
                        self._suppress(it.sink, "claimed_elsewhere", notes[i].alert)
        for i in accepted:
            sink = items[i].sink
            self.stats.enqueued[sink] += 1
            self._wake[sink].set()                                         # 7 per-sink retry (workers)
        return len(accepted)

    @staticmethod
    def _record(n: Notification) -> NotifyRecord:
        return NotifyRecord(n.alert.version, n.alert.severity, n.alert.status)

    # AlertSink protocol: the daemon and replay write alerts and flush at checkpoints.
    def write(self, alerts: list[Alert]) -> None:
        self.enqueue(alerts)

    def flush(self) -> None:
        """Nothing to do: every ``write`` is durable when it returns."""

    # -- workers --------------------------------------------------------------------------------
    def start(self) -> Delivery:
        if self._threads:
            return self
        self._stop.clear()
        for name in self.notifiers:
            t = threading.Thread(target=self._worker, args=(name,), name=f"sentinel-sink-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("delivery_started", sinks=sorted(self.notifiers), owner=self.owner,
                 outbox=type(self.outbox).__name__)
        return self

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for ev in self._wake.values():
            ev.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
        for name, n in self.notifiers.items():
            self.outbox.release(name, self.owner)
            n.close()

    def pending(self) -> dict[str, int]:
        return {name: self.outbox.depth(name) for name in self.notifiers}

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every sink's queue is empty (delivered or dead-lettered)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(self.pending().values()) and not self._busy:
                return True
            time.sleep(0.02)
        return False

    def _worker(self, sink: str) -> None:
        notifier = self.notifiers[sink]
        wake = self._wake[sink]
        seed = self.retry.seed
        rng = random.Random(None if seed is None else seed + zlib.crc32(sink.encode()))
        not_before = 0.0
        while not self._stop.is_set():
            wait = not_before - time.monotonic()
            if wait > 0:
                self._stop.wait(min(wait, self.idle_poll_s))
                continue
            try:
                if not self.outbox.acquire(sink, self.owner, self.lease_s):
                    self._stop.wait(min(self.lease_s / 3, 2.0))
                    continue
                entries = self.outbox.head(sink, notifier.max_batch)
                OUTBOX_DEPTH.labels(sink).set(self.outbox.depth(sink))
            except Exception as err:  # the store itself is down: wait and try again
                log.warning("outbox_unavailable", sink=sink, error=self._safe(err))
                self._stop.wait(1.0)
                continue
            if not entries:
                wake.wait(self.idle_poll_s)
                wake.clear()
                continue
            self._busy.add(sink)
            try:
                delay = self._deliver(notifier, entries, rng)
            finally:
                self._busy.discard(sink)
            not_before = time.monotonic() + delay if delay else 0.0

    def _deliver(self, notifier: Notifier, entries: list[Entry], rng: random.Random) -> float:
        """Send one batch; returns the backoff before the next attempt (0 = go on)."""
        sink = notifier.name
        try:
            notifier.send([decode_notification(e.payload) for e in entries])
        except DeliveryError as err:
            return self._failed(notifier, entries, self._safe(err), err.retryable, err.retry_after_s, rng)
        except Exception as err:  # a bug or an unexpected transport error: retry, never crash the worker
            return self._failed(notifier, entries, f"{type(err).__name__}: {self._safe(err)}", True, None, rng)
        self.outbox.ack(sink, [e.id for e in entries])
        self.stats.delivered[sink] += len(entries)
        DELIVERED.labels(sink).inc(len(entries))
        log.info("alerts_delivered", sink=sink, count=len(entries),
                 retried=sum(1 for e in entries if e.attempts))
        return 0.0

    def _failed(self, notifier: Notifier, entries: list[Entry], error: str, retryable: bool,
                retry_after: float | None, rng: random.Random) -> float:
        sink = notifier.name
        self.stats.failures[sink] += 1
        FAILURES.labels(sink).inc()
        if not retryable and len(entries) > 1:
            # One bad entry must not take its batch with it: send them one at a time.
            log.warning("sink_batch_rejected", sink=sink, count=len(entries), error=error)
            for e in entries:
                d = self._deliver(notifier, [e], rng)
                if d:
                    return d
            return 0.0
        attempts = self.outbox.failed(sink, [e.id for e in entries])
        counted = [Entry(e.id, e.payload, a) for e, a in zip(entries, attempts, strict=True)]
        worst = max(attempts) if attempts else 0
        if not retryable or worst >= self.retry.max_attempts:
            why = "rejected" if not retryable else f"gave up after {worst} attempts"
            self.outbox.bury(sink, counted, f"{why}: {error}")
            self.stats.dead[sink] += len(counted)
            DEAD_LETTERS.labels(sink).inc(len(counted))
            log.error("alerts_dead_lettered", sink=sink, count=len(counted), attempts=worst, error=error)
            return 0.0
        delay = self.retry.delay(worst, rng)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry.max_s))
        log.warning("sink_delivery_failed", sink=sink, count=len(entries), attempt=worst,
                    retry_in_s=round(delay, 3), error=error)
        return delay

    def _safe(self, err: BaseException | str) -> str:
        """An error text fit for logs: configured secrets and credential-looking tokens replaced."""
        text = str(err)
        for s in self._secrets:
            if s in text:
                text = text.replace(s, f"[REDACTED {fingerprint(s)}]")
        return redact_text(text)[:500]


def build_delivery(settings: Any, routes: Any = None, redis_client: Any = None, clock: Callable[[], float] = time.time,
                   start: bool = True) -> Delivery:
    """Wire a :class:`Delivery` from :class:`sentinel.config.Settings` (used by ``sentinel run`` and replay)."""
    from sentinel.alerting.outbox import RedisOutbox, SqliteOutbox
    from sentinel.alerting.silences import RedisSilenceStore
    from sentinel.sinks.factory import build_notifiers, secrets_of

    s = settings.sinks
    prefix = settings.state.key_prefix
    outbox: Outbox
    silences: SilenceStore
    if redis_client is not None:
        outbox = RedisOutbox(redis_client, prefix, record_ttl_s=settings.state.notify_record_ttl_s,
                             cooldown_ttl_s=int(max(s.realert_s, 1) * 2), clock=clock)
        silences = RedisSilenceStore(redis_client, prefix)
    else:
        outbox = SqliteOutbox(s.outbox_path, record_ttl_s=settings.state.notify_record_ttl_s, clock=clock)
        silences = MemorySilenceStore()
    r = s.retry
    delivery = Delivery(
        build_notifiers(settings, outbox, silences, redis_client, clock, routes=routes), outbox,
        Router(routes), silences, Inhibitor(),
        RetryPolicy(r.initial_s, r.max_s, r.multiplier, r.jitter, r.max_attempts, r.seed),
        realert_s=s.realert_s, clock=clock, secrets=secrets_of(settings),
    )
    return delivery.start() if start else delivery
