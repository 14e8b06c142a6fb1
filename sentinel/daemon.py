"""The live daemon: Kafka consumer group in, alerts out, one pipeline per assigned partition.

The loop is plain: poll a batch, feed each partition's records to that
partition's :class:`~sentinel.pipeline.Pipeline` (the same code as ``sentinel
replay``), then, in this order,

1. **flush**: dead letters to the dead-letter topic; alert versions to every
   sink through the notification ledger (:func:`sentinel.state.ledger.deliver`:
   claim, write, flush, confirm), so nothing is notified twice;
2. **checkpoint** (every N records or T seconds per partition, on revoke and on
   shutdown): the pipeline snapshot and the partition's next offset in one
   atomic write (:mod:`sentinel.state.checkpoints`);
3. **commit** that offset to Kafka.

A partition is checkpointed only when everything it produced is flushed, so a
``kill -9`` anywhere loses nothing: the next owner restores the last
checkpoint, seeks to its offset and re-processes the records after it; the
alerts that come out again are recognised by the ledger.

When the broker, Redis or a sink fails, the daemon stops taking new records
(partitions paused), keeps what it holds, retries with exponential backoff,
reports not-ready and logs once per outage; it never exits on bad input.
A caught-up partition that stays quiet for ``daemon.idle_after_s`` is advanced
(``daemon.idle_advance``): on wall time in production, or drained (output
identical to replay) for demos and tests. SIGTERM finishes the batch, flushes,
checkpoints and leaves the group; SIGHUP reloads the rules after validating
them (the old ones stay on error), and hands them to ``on_reload`` (``sentinel
run``: the delivery pipeline's routes) before they take effect.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from sentinel.alerts import Alert
from sentinel.config import Settings
from sentinel.formats import Adapter, adapt_batch, get_format
from sentinel.http import Health, HealthServer
from sentinel.logs import get_logger
from sentinel.metrics import DaemonMetrics, StatsCursor
from sentinel.pipeline import DeadLetter, Pipeline, PipelineOptions
from sentinel.redact import SECRET_RE, redact_text
from sentinel.rules import RuleSet, load_rules
from sentinel.sinks.jsonl import JsonlAlertSink
from sentinel.sinks.kafka import AlertsTopicSink, DeadLetterTopic, TopicProducer
from sentinel.sources.kafka import KafkaSource, PartitionBatch, broker_reachable, tls_diagnosis
from sentinel.state.checkpoints import CheckpointStore, CheckpointWrite, StoreUnavailable
from sentinel.state.ledger import AlertSink, NotificationLedger, NotifyKey, deliver
from sentinel.state.shapes import MemoryShapeRegistry, ShapeRegistry
from sentinel.yamlfile import RulesFileError

__all__ = ["AlertSink", "Backoff", "Daemon", "PartitionState"]

log = get_logger("sentinel.daemon")


class Backoff:
    """Exponential backoff with a ceiling; ``reset`` after a success."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempts = 0
        self.until = 0.0

    def failed(self) -> float:
        delay = min(self.max_s, self.initial_s * 2.0 ** min(self.attempts, 30))
        self.attempts += 1
        self.until = time.monotonic() + delay
        return delay

    def reset(self) -> None:
        self.attempts = 0
        self.until = 0.0

    def waiting(self) -> bool:
        return time.monotonic() < self.until


@dataclass
class PartitionState:
    """One assigned partition: its pipeline and where it stands against the log and the store."""

    partition: int
    pipeline: Pipeline
    next_offset: int | None = None  # first offset not reflected in the pipeline state
    saved_offset: int | None = None  # offset of the last saved checkpoint
    saved_at: float = 0.0  # wall time of that save (0 = never)
    saved_mono: float = field(default_factory=time.monotonic)
    since_save: int = 0
    dirty: bool = False
    last_record: float = field(default_factory=time.monotonic)
    idle_at: float = 0.0  # monotonic time of the next idle advance (0 = not idle yet)
    idle_done: bool = False
    cursor: StatsCursor = field(default_factory=StatsCursor)


@dataclass
class _Outgoing:
    partition: int
    alert: Alert
    sink: str


class Daemon:
    """See the module doc. ``sentinel run`` builds it from settings (:func:`build_stores`,
    :func:`build_shape_registry`); tests and benchmarks pass the pieces."""

    def __init__(self, settings: Settings, rules: RuleSet, store: CheckpointStore, ledger: NotificationLedger,
                 *, sinks: Sequence[AlertSink] = (), rules_dir: Path | None = None,
                 metrics: DaemonMetrics | None = None, clock: Callable[[], float] = time.time,
                 http: bool = True, shapes: ShapeRegistry | None = None,
                 on_reload: Callable[[RuleSet], None] | None = None) -> None:
        self.settings = settings
        self.kafka = settings.kafka
        self.rules = rules
        self.rules_dir = rules_dir
        self.store = store
        self.ledger = ledger
        self.owner = ledger.owner
        self.extra_sinks = list(sinks)
        # Called with the new rules on a SIGHUP reload, once they are validated and before they take effect
        # (``sentinel run``: the delivery pipeline's routes); raising keeps the current rules everywhere.
        self.on_reload = on_reload
        # What detectors must see across partitions/replicas (cross_tenant's shape -> tenants view) is
        # exchanged with this registry at each checkpoint; Redis-backed when state is in Redis.
        self.shapes: ShapeRegistry = shapes if shapes is not None else MemoryShapeRegistry()
        self._shape_backlog: dict[tuple[int, str], dict[str, list[str]]] = {}
        self.metrics = metrics or DaemonMetrics()
        self.clock = clock
        # KafkaSettings.input_format: records in another format (litellm, otel-genai, bedrock) are
        # mapped to usage-v1 lines before the pipeline; usage-v1 itself needs no adapter.
        adapter = get_format(self.kafka.input_format, settings.mapping)
        self._adapter: Adapter | None = None if adapter.identity else adapter
        self.options = PipelineOptions(lateness_s=settings.lateness_s, tick_s=settings.tick_s,
                                       dedup_horizon_s=settings.dedup_horizon_s)
        self.health = Health()
        self._http_enabled = http
        self.http: HealthServer | None = None
        self.source: KafkaSource | None = None
        self.sinks: list[AlertSink] = []
        self._alert_producer: TopicProducer | None = None
        self._dlq: DeadLetterTopic | None = None
        self._jsonl: JsonlAlertSink | None = None
        self._parts: dict[int, PartitionState] = {}
        self._parked: dict[int, PartitionState] = {}
        self._to_restore: set[int] = set()
        self._outbox: list[_Outgoing] = []
        self._dead: list[tuple[int, DeadLetter, bytes, int]] = []
        self._dead_resend = False
        self._unconfirmed: list[NotifyKey] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._reload = False
        self._closing = False
        self._paused_all = False
        self._blocked: str | None = None
        self._connect_backoff = Backoff(settings.daemon.retry_initial_s, settings.daemon.retry_max_s)
        self._flush_backoff = Backoff(settings.daemon.retry_initial_s, settings.daemon.retry_max_s)
        self._restore_backoff = Backoff(settings.daemon.retry_initial_s, settings.daemon.retry_max_s)
        self._keys_at = 0.0
        self._gauged: set[int] = set()
        self._probe_thread: threading.Thread | None = None
        self.alerts_out = 0  # alert versions produced by the pipelines (before the ledger)
        self.records_in = 0  # records fed to the pipelines (re-reads after a restore count again)

    # -- lifecycle ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload = True

    def install_signals(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal_received", signal=signal.Signals(signum).name)
            self.request_stop()

        def reload(_signum: int, _frame: FrameType | None) -> None:
            self.request_reload()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def run(self) -> int:
        """Run until SIGTERM (or ``exit_when_idle_s``). Returns the exit code."""
        s = self.settings
        if self._http_enabled:
            self.http = HealthServer(self.health, self.metrics.registry, s.http_host, s.http_port,
                                     on_scrape=self._on_scrape)
            self.http.start()
            log.info("http_listening", host=s.http_host, port=self.http.port)
        self._probe_thread = threading.Thread(target=self._probe_loop, name="sentinel-probe", daemon=True)
        self._probe_thread.start()
        log.info("daemon_started", topic=self.kafka.topic, group=self.kafka.group_id, owner=self.owner,
                 rules=self.rules.source, rules_digest=self.rules.digest, idle_advance=s.daemon.idle_advance)
        code = 0
        try:
            while not self._stop.is_set():
                self.health.beat()
                self._step()
        except Exception as err:  # a bug, not bad input (that is dead-lettered): fail loudly, after cleanup
            log.exception("daemon_failed", error=type(err).__name__)
            code = 1
        finally:
            self._shutdown(failed=code != 0)
        return code

    def _probe_loop(self) -> None:
        """Dependency probes for /readyz, off the hot path."""
        while not self._stop.is_set():
            kafka_ok = broker_reachable(self.kafka.bootstrap_servers)
            redis_ok = self.store.ping() and self.ledger.ping()
            self.health.kafka_ok = kafka_ok and self.source is not None
            self.health.redis_ok = redis_ok
            self.metrics.up.labels("kafka").set(1 if kafka_ok else 0)
            self.metrics.up.labels("redis").set(1 if redis_ok else 0)
            self.metrics.ready.set(1 if self.health.ready() else 0)
            self._stop.wait(1.0)

    # -- one round ------------------------------------------------------------------------------

    def _step(self) -> None:
        if self.source is None:
            if self._connect_backoff.waiting() or not self._connect():
                self._stop.wait(0.1)
            return
        if self._reload:
            self._reload = False
            self._reload_rules()
        if self._to_restore and not self._restore_backoff.waiting():
            self._restore()
        try:
            batches = self.source.poll(timeout_ms=self.kafka.poll_timeout_ms)
        except Exception as err:  # the client retries connections itself; this is anything else
            log.warning("kafka_poll_failed", error=type(err).__name__, detail=str(err)[:200])
            self.metrics.retries.labels("poll").inc()
            self._stop.wait(self._connect_backoff.failed())
            return
        if self._connect_backoff.attempts:
            self._connect_backoff.reset()
        started = time.perf_counter()
        with self._lock:
            n = self._feed(batches) if batches else 0
            self._idle(n)
            if (self._outbox or self._dead or self._unconfirmed) and not self._flush_backoff.waiting():
                self._flush()
            commit = self._checkpoint(force=False)
            self._update_gauges()
        self._commit(commit)
        if n:
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            self.metrics.batch_events.observe(n)
        with self._lock:
            self._maybe_exit_when_idle()

    def _feed(self, batches: list[PartitionBatch]) -> int:
        now = time.monotonic()
        topic = self.kafka.topic
        n = 0
        for b in batches:
            part = self._parts.get(b.partition)
            if part is None:  # not restored yet: fetched again after the seek
                continue
            values, offsets = b.values, b.offsets
            if part.next_offset is not None and offsets[0] < part.next_offset:
                k = bisect_left(offsets, part.next_offset)  # already in the state (seek race): skip
                values, offsets = values[k:], offsets[k:]
                if not values:
                    continue
            source = f"{topic}/{b.partition}"
            feed_values, feed_offsets = values, offsets
            if self._adapter is not None:  # another input format: records -> usage-v1 lines, offsets kept
                adapted = adapt_batch(self._adapter, values, offsets, source, part.pipeline.stats)
                if adapted.dead:
                    self._dead_letters(b.partition, adapted.dead, values, offsets)
                feed_values, feed_offsets = adapted.lines, adapted.positions
            res = part.pipeline.feed(feed_values, source, feed_offsets, now=self.clock())
            if res.dead:
                self._dead_letters(b.partition, res.dead, feed_values, feed_offsets)
            if res.alerts:
                self._queue(b.partition, res.alerts)
            part.next_offset = offsets[-1] + 1
            part.since_save += len(values)
            part.dirty = True
            part.last_record = now
            part.idle_at = 0.0
            part.idle_done = False
            self.metrics.observe_stats(part.pipeline.stats, part.cursor)
            n += len(values)
        self.records_in += n
        return n

    def _dead_letters(self, partition: int, dead: list[DeadLetter], values: list[bytes], offsets: list[int]) -> None:
        index = {o: i for i, o in enumerate(offsets)}
        for d in dead:
            pos = d.position
            i = index.get(pos) if isinstance(pos, int) else None
            raw = values[i] if i is not None else d.raw.encode()
            if d.reason == "secret_in_api_key_id" or SECRET_RE.search(raw.decode("utf-8", "replace")):
                # Original bytes, except a credential: it must not be copied to another topic in clear.
                raw = d.raw.encode()
            offset = pos if isinstance(pos, int) else -1
            self._dead.append((partition, d, raw, offset))
            if self._dlq is not None and not self._dead_resend:
                try:
                    self._dlq.send(d, raw, self.kafka.topic, partition, offset)
                except Exception:  # e.g. producer buffer full: the flush resends everything held
                    self._dead_resend = True

    def _queue(self, partition: int, alerts: list[Alert]) -> None:
        self.alerts_out += len(alerts)
        self.metrics.observe_alerts(alerts)
        for a in alerts:
            for sink in self.sinks:
                self._outbox.append(_Outgoing(partition, a, sink.name))

    def _idle(self, fed: int) -> None:
        """Advance caught-up partitions that stayed quiet (see ``daemon.idle_advance``)."""
        cfg = self.settings.daemon
        if cfg.idle_advance == "off" or self.source is None:
            return
        now = time.monotonic()
        for p, part in self._parts.items():
            if part.idle_done or now - part.last_record < cfg.idle_after_s or not self._caught_up(part):
                continue
            if part.idle_at and now < part.idle_at:
                continue
            if cfg.idle_advance == "drain":
                alerts = part.pipeline.drain()
                part.idle_done = True
            else:
                alerts = part.pipeline.advance_to(self.clock())
                part.idle_at = now + cfg.idle_after_s
            part.dirty = True
            if alerts:
                self._queue(p, alerts)
            log.debug("partition_idle_advanced", partition=p, mode=cfg.idle_advance, alerts=len(alerts))

    def _caught_up(self, part: PartitionState) -> bool:
        assert self.source is not None
        hw = self.source.highwater(part.partition)
        if hw is None:
            return False
        return (part.next_offset if part.next_offset is not None else 0) >= hw

    # -- flush: dead letters, then alerts through the ledger --------------------------------------

    def _flush(self) -> bool:
        """Deliver what is pending. True when nothing is left."""
        ok = True
        if self._dead and self._dlq is not None:
            try:
                if self._dead_resend:
                    for partition, d, raw, offset in self._dead:
                        self._dlq.send(d, raw, self.kafka.topic, partition, offset)
                    self._dead_resend = False
                self._dlq.flush()
                self.metrics.dead_letters.inc(len(self._dead))
                self._dead.clear()
            except Exception as err:
                ok = False
                self._dead_resend = True
                self._blocked_by("dead_letter_topic_failing", err)
        elif self._dead:  # no dead-letter topic configured: counted and logged only
            log.warning("dead_letters_dropped", count=len(self._dead), reason="no dead_letter_topic configured")
            self._dead.clear()
        if self._outbox:
            items = [(o.alert, o.sink) for o in self._outbox]
            try:
                report = deliver(self.ledger, self.sinks, items)
            except StoreUnavailable as err:
                ok = False
                self._blocked_by("redis_unavailable", err)
            else:
                for name, n in report.sent.items():
                    self.metrics.notifications.labels(name, "sent").inc(n)
                if report.skipped:
                    self.metrics.notifications.labels("all", "skipped").inc(report.skipped)
                if report.found:
                    self.metrics.notifications.labels("all", "found").inc(report.found)
                if report.skipped or report.found:
                    log.info("notifications_deduplicated", already_sent=report.skipped, found_at_sink=report.found)
                if report.resent:
                    log.warning("notifications_resent_after_crash", count=report.resent)
                self._unconfirmed.extend(report.unconfirmed)
                if report.failed:
                    ok = False
                    where = {(o.alert.alert_id, o.alert.version, o.sink): o.partition for o in self._outbox}
                    self._outbox = [_Outgoing(where[(a.alert_id, a.version, s)], a, s) for a, s in report.failed]
                    for name, err_name in report.errors.items():
                        self.metrics.notifications.labels(name, "failed").inc()
                        self._blocked_by(f"sink_failing:{name}", err_name)
                else:
                    self._outbox = []
        if self._unconfirmed:
            try:
                self.ledger.confirm_many(self._unconfirmed)
                self._unconfirmed = []
            except StoreUnavailable as err:
                ok = False
                self._blocked_by("redis_unavailable", err)
        if ok:
            self._unblock()
        else:
            self._flush_backoff.failed()
        return ok

    def _blocked_by(self, reason: str, err: object) -> None:
        detail = err if isinstance(err, str) else type(err).__name__
        if self._blocked != reason:
            log.error("processing_blocked", reason=reason, error=detail,
                      pending_alerts=len(self._outbox), pending_dead_letters=len(self._dead))
        else:
            log.warning("retry_failed", reason=reason, error=detail, attempt=self._flush_backoff.attempts + 1)
        self.metrics.retries.labels(reason.split(":", 1)[0]).inc()
        self._blocked = reason
        self.health.blocked = reason
        if self.source is not None and not self._paused_all:
            self.source.pause(list(self._parts))
            self._paused_all = True

    def _unblock(self) -> None:
        if self._blocked is not None:
            log.info("processing_resumed", after=self._blocked)
        self._blocked = None
        self.health.blocked = None
        self._flush_backoff.reset()
        if self.source is not None and self._paused_all:
            self.source.resume(list(self._parts))
            self._paused_all = False

    # -- checkpoint: state + offset in one write, then the Kafka commit ---------------------------

    def _checkpoint(self, force: bool, partitions: Sequence[int] | None = None) -> dict[int, int]:
        """Save due checkpoints; returns the offsets to commit to Kafka. The caller commits them *after*
        releasing the lock: a synchronous commit waits for the Kafka IO thread, which may itself be waiting
        for the lock in a rebalance hook."""
        cfg = self.settings.state
        now = time.monotonic()
        held = {o.partition for o in self._outbox} | {d[0] for d in self._dead}
        due: list[PartitionState] = []
        for p in partitions if partitions is not None else list(self._parts):
            part = self._parts.get(p)
            if part is None or part.next_offset is None or not part.dirty or p in held:
                continue
            if force or part.since_save >= cfg.checkpoint_every_events or now - part.saved_mono >= \
                    cfg.checkpoint_every_s:
                due.append(part)
        if not due or (self._blocked and not force and self._flush_backoff.waiting()):
            return {}
        started = time.perf_counter()
        try:
            self._share_state(due)
        except StoreUnavailable as err:
            self.metrics.checkpoints.labels("error").inc(len(due))
            self._blocked_by("redis_unavailable", err)
            self._flush_backoff.failed()
            return {}
        writes = []
        for part in due:
            assert part.next_offset is not None
            writes.append(CheckpointWrite(part.partition, part.pipeline.snapshot(), part.next_offset))
        try:
            results = self.store.save_many(self.kafka.group_id, self.kafka.topic, writes, self.owner)
        except StoreUnavailable as err:
            self.metrics.checkpoints.labels("error").inc(len(writes))
            self._blocked_by("redis_unavailable", err)
            self._flush_backoff.failed()
            return {}
        wall = self.clock()
        commit: dict[int, int] = {}
        for part, w, ok in zip(due, writes, results, strict=True):
            if not ok:
                self.metrics.checkpoints.labels("fenced").inc()
                log.warning("checkpoint_fenced", partition=part.partition, offset=w.offset,
                            reason="stored offset is ahead: another replica owns this partition")
                continue
            part.saved_offset = w.offset
            part.saved_at = wall
            part.saved_mono = now
            part.since_save = 0
            part.dirty = False
            commit[part.partition] = w.offset
            self.metrics.checkpoints.labels("ok").inc()
            self.metrics.checkpoint_bytes.labels(self.kafka.topic, str(part.partition)).set(len(w.state))
        self.metrics.checkpoint_seconds.observe(time.perf_counter() - started)
        if self._blocked == "redis_unavailable":
            self._unblock()
        return commit

    def _share_state(self, parts: Sequence[PartitionState]) -> None:
        """Publish each detector's shared delta and fold the global view back in, before the snapshot.

        A delta that could not be published is kept and sent with the next one (publishing is idempotent);
        the checkpoint waits until it went out, so a saved state never hides an unpublished delta.
        """
        for part in parts:
            for det in part.pipeline.detectors:
                delta_of = getattr(det, "shared_delta", None)
                merge = getattr(det, "merge_shared", None)
                if delta_of is None or merge is None:
                    continue
                key = (part.partition, det.name)
                delta = self._shape_backlog.pop(key, {})
                for shape, tenants in delta_of().items():
                    have = delta.setdefault(shape, [])
                    have.extend(t for t in tenants if t not in have)
                if not delta:
                    continue
                try:
                    view = self.shapes.publish(delta)
                except StoreUnavailable:
                    self._shape_backlog[key] = delta
                    raise
                merge(view)

    def _commit(self, offsets: dict[int, int], wait: bool = True) -> None:
        """Kafka offset commit, after the checkpoint. Redis holds the truth; the committed offsets serve
        lag tools and a restart without a store."""
        if not offsets or self.source is None:
            return
        try:
            if wait:
                self.source.commit(offsets)
            else:
                self.source.commit_async(offsets)
        except Exception as err:
            log.warning("offset_commit_failed", error=type(err).__name__, partitions=sorted(offsets))

    # -- rebalance hooks (Kafka IO thread, while poll() blocks) -----------------------------------

    def on_assigned(self, partitions: list[int]) -> None:
        with self._lock:
            log.info("partitions_assigned", partitions=partitions)
            self._to_restore.update(partitions)
            self._restore_backoff.reset()

    def on_revoked(self, partitions: list[int]) -> None:
        with self._lock:
            mine = [p for p in partitions if p in self._parts]
            if mine and not self._closing:
                if self._outbox or self._dead:
                    self._flush()
                # Non-blocking commit: this hook runs on the Kafka IO thread.
                self._commit(self._checkpoint(force=True, partitions=mine), wait=False)
            self._drop(partitions, park=True)
            log.info("partitions_revoked", partitions=partitions)

    def on_lost(self, partitions: list[int]) -> None:
        with self._lock:
            self._drop(partitions, park=False)
            log.warning("partitions_lost", partitions=partitions)

    def _drop(self, partitions: Sequence[int], park: bool) -> None:
        gone = set(partitions)
        # Unflushed output of a dropped partition is not lost: it is not checkpointed either, so the
        # next owner re-processes those records and produces it again.
        self._outbox = [o for o in self._outbox if o.partition not in gone]
        self._dead = [d for d in self._dead if d[0] not in gone]
        self._shape_backlog = {k: v for k, v in self._shape_backlog.items() if k[0] not in gone}
        for p in gone:
            self._to_restore.discard(p)
            part = self._parts.pop(p, None)
            if part is not None and park and not part.dirty and part.saved_offset is not None:
                self._parked[p] = part
            if p in self._gauged:
                self._gauged.discard(p)
                self.metrics.lag.remove(self.kafka.topic, str(p))
                self.metrics.checkpoint_age.remove(self.kafka.topic, str(p))
        self.health.partitions = len(self._parts)
        self.metrics.assigned.set(len(self._parts))

    def _restore(self) -> None:
        """Restore newly assigned partitions from their checkpoints, seek, resume."""
        assert self.source is not None
        with self._lock:
            parts = sorted(self._to_restore)
            try:
                cps = self.store.load_many(self.kafka.group_id, self.kafka.topic, parts)
            except StoreUnavailable as err:
                delay = self._restore_backoff.failed()
                log.error("checkpoint_restore_failed", error=str(err), partitions=parts, retry_in_s=round(delay, 2))
                self.health.blocked = "redis_unavailable"
                return
            self._restore_backoff.reset()
            for p in parts:
                cp = cps.get(p)
                parked = self._parked.pop(p, None)
                if parked is not None and cp is not None and cp.owner == self.owner and cp.offset == \
                        parked.saved_offset:
                    part = parked  # our own last checkpoint: the state in memory is that checkpoint
                else:
                    pipeline = Pipeline(self.rules, self.options)
                    if cp is not None:
                        try:
                            for detector, why in pipeline.restore(cp.state):
                                log.warning("detector_state_reset", partition=p, detector=detector, reason=why,
                                            action="detector starts cold; the rest of the checkpoint is restored")
                        except Exception as err:
                            log.error("checkpoint_unreadable", partition=p, offset=cp.offset,
                                      error=type(err).__name__, action="starting from empty state at that offset")
                            pipeline = Pipeline(self.rules, self.options)
                    part = PartitionState(p, pipeline)
                    if cp is not None:
                        part.saved_offset = cp.offset
                        part.saved_at = cp.saved_at
                if cp is not None:
                    part.next_offset = cp.offset
                    self.source.seek(p, cp.offset)
                part.last_record = time.monotonic()
                self._parts[p] = part
                log.info("partition_restored", partition=p, offset=cp.offset if cp else None,
                         state_bytes=len(cp.state) if cp else 0, reused=part is parked)
            self._to_restore.difference_update(parts)
            if not self._paused_all:
                self.source.resume(parts)
            self.health.partitions = len(self._parts)
            self.health.blocked = self._blocked
            self.metrics.assigned.set(len(self._parts))

    # -- connect, reload, gauges, stop ------------------------------------------------------------

    def _connect(self) -> bool:
        s = self.settings
        try:
            source = KafkaSource(self.kafka, self, client_id=s.daemon.client_id)
        except Exception as err:
            delay = self._connect_backoff.failed()
            extra = {}
            if self._connect_backoff.attempts <= 3 or self._connect_backoff.attempts % 10 == 0:
                tls_error = tls_diagnosis(self.kafka)
                if tls_error:
                    extra["tls_error"] = tls_error
            log.error("kafka_unavailable", error=type(err).__name__, bootstrap=self.kafka.bootstrap_servers,
                      attempt=self._connect_backoff.attempts, retry_in_s=round(delay, 2), **extra)
            self.metrics.retries.labels("kafka_connect").inc()
            return False
        sinks: list[AlertSink] = []
        try:
            if self.kafka.alerts_topic:
                self._alert_producer = TopicProducer(self.kafka, s.daemon.client_id)
                sinks.append(AlertsTopicSink(self._alert_producer, self.kafka.alerts_topic, self.kafka))
            if self.kafka.dead_letter_topic:
                self._dlq = DeadLetterTopic(TopicProducer(self.kafka, f"{s.daemon.client_id}-dlq"),
                                            self.kafka.dead_letter_topic)
        except Exception as err:
            with contextlib.suppress(Exception):
                source.close()
            delay = self._connect_backoff.failed()
            log.error("kafka_unavailable", error=type(err).__name__, bootstrap=self.kafka.bootstrap_servers,
                      attempt=self._connect_backoff.attempts, retry_in_s=round(delay, 2), client="producer")
            return False
        if s.alerts_file is not None:
            self._jsonl = JsonlAlertSink(s.alerts_file, append=True)
            sinks.append(self._jsonl)
        self.sinks = sinks + self.extra_sinks
        self.source = source
        self.health.kafka_ok = True
        if self._connect_backoff.attempts:
            log.info("kafka_connected", after_attempts=self._connect_backoff.attempts)
        self._connect_backoff.reset()
        log.info("consumer_subscribed", topic=self.kafka.topic, group=self.kafka.group_id,
                 sinks=[k.name for k in self.sinks])
        return True

    def _reload_rules(self) -> None:
        if self.rules_dir is None:
            log.warning("rules_reload_skipped", reason="no rules directory configured")
            return
        try:
            rules = load_rules(self.rules_dir)
        except RulesFileError as err:
            self.metrics.reloads.labels("invalid").inc()
            log.error("rules_reload_failed", errors=len(err.errors), detail=str(err)[:2000],
                      action="keeping the current rules")
            return
        with self._lock:
            fresh: dict[int, Pipeline] = {}
            try:
                for p, part in self._parts.items():
                    pipeline = Pipeline(rules, self.options)
                    pipeline.restore(part.pipeline.snapshot())
                    fresh[p] = pipeline
            except Exception as err:
                self.metrics.reloads.labels("incompatible").inc()
                log.error("rules_reload_failed", error=type(err).__name__, action="keeping the current rules")
                return
            if self.on_reload is not None:
                try:
                    self.on_reload(rules)
                except Exception as err:
                    self.metrics.reloads.labels("error").inc()
                    log.error("rules_reload_failed", error=type(err).__name__, stage="on_reload",
                              detail=redact_text(str(err))[:500], action="keeping the current rules")
                    return
            for p, pipeline in fresh.items():
                self._parts[p].pipeline = pipeline
                self._parts[p].cursor = StatsCursor()
            self._parked.clear()
            self.rules = rules
        self.metrics.reloads.labels("ok").inc()
        log.info("rules_reloaded", rules=rules.source, rules_digest=rules.digest,
                 detectors=sorted(d.detector for d in rules.enabled_detectors()))

    def _update_gauges(self) -> None:
        if self.source is None:
            return
        topic = self.kafka.topic
        wall = self.clock()
        for p, part in self._parts.items():
            hw = self.source.highwater(p)
            if hw is not None and part.next_offset is not None:
                self.metrics.lag.labels(topic, str(p)).set(max(0, hw - part.next_offset))
                self._gauged.add(p)
            if part.saved_at:
                self.metrics.checkpoint_age.labels(topic, str(p)).set(max(0.0, wall - part.saved_at))
                self._gauged.add(p)

    def _on_scrape(self) -> None:
        """Tracked keys are counted when Prometheus asks (at most once a second), not per batch."""
        mono = time.monotonic()
        if mono - self._keys_at < 1.0:
            return
        self._keys_at = mono
        totals: dict[str, int] = {}
        with self._lock:
            for part in self._parts.values():
                for det, n in part.pipeline.tracked_keys().items():
                    totals[det] = totals.get(det, 0) + n
        for det, n in totals.items():
            self.metrics.tracked_keys.labels(det).set(n)

    def _maybe_exit_when_idle(self) -> None:
        quiet = self.settings.daemon.exit_when_idle_s
        if quiet is None or self.source is None or not self._parts or self._to_restore:
            return
        if self._outbox or self._dead or self._unconfirmed or self._blocked:
            return
        now = time.monotonic()
        mode = self.settings.daemon.idle_advance
        for part in self._parts.values():
            if now - part.last_record < quiet or not self._caught_up(part):
                return
            if mode == "drain" and not part.idle_done:
                return
        log.info("exit_when_idle", partitions=sorted(self._parts), quiet_s=quiet)
        self._stop.set()

    def _shutdown(self, failed: bool = False) -> None:
        log.info("daemon_stopping", partitions=sorted(self._parts), pending_alerts=len(self._outbox))
        self.health.stopping = True
        self._stop.set()
        deadline = time.monotonic() + 15.0
        commit: dict[int, int] = {}
        with self._lock:
            if failed:
                # A batch may have been half applied: save nothing, the next run re-reads from the last
                # checkpoint (and the ledger recognises what was already sent).
                self._outbox, self._dead = [], []
                self._parts.clear()
            while (self._outbox or self._dead or self._unconfirmed) and time.monotonic() < deadline:
                if self._flush():
                    break
                time.sleep(min(1.0, max(0.0, self._flush_backoff.until - time.monotonic())))
            if self._outbox or self._dead:
                log.error("shutdown_with_pending_output", pending_alerts=len(self._outbox),
                          pending_dead_letters=len(self._dead),
                          note="not checkpointed: the next run re-processes those records")
            commit = self._checkpoint(force=True)
            self._closing = True
        self._commit(commit)
        if self.source is not None:
            try:
                self.source.close()
            except Exception as err:
                log.warning("consumer_close_failed", error=type(err).__name__)
        for closer in (self._alert_producer, self._dlq.producer if self._dlq else None):
            if closer is not None:
                try:
                    closer.close()
                except Exception as err:
                    log.warning("producer_close_failed", error=type(err).__name__)
        if self._jsonl is not None:
            self._jsonl.close()
        if self.http is not None:
            self.http.stop()
        self.store.close()
        self.ledger.close()
        log.info("daemon_stopped", records=self.records_in, alerts=self.alerts_out)


def build_shape_registry(settings: Settings) -> ShapeRegistry:
    """The cross-replica shape view: Redis when ``state.redis_url`` is set, else in-process."""
    import redis

    from sentinel.state.shapes import RedisShapeRegistry

    st = settings.state
    if st.redis_url is None:
        return MemoryShapeRegistry()
    client = redis.Redis.from_url(st.redis_url.get_secret_value(), socket_timeout=5.0, socket_connect_timeout=2.0)
    return RedisShapeRegistry(client, st.key_prefix)


def build_stores(settings: Settings) -> tuple[CheckpointStore, NotificationLedger]:
    """Redis-backed when ``state.redis_url`` is set, else in-memory (demo, tests)."""
    from sentinel.state.checkpoints import MemoryCheckpointStore, RedisCheckpointStore
    from sentinel.state.ledger import MemoryNotificationLedger, RedisNotificationLedger

    st = settings.state
    if st.redis_url is None:
        return MemoryCheckpointStore(), MemoryNotificationLedger(ttl_s=st.notify_record_ttl_s)
    url = st.redis_url.get_secret_value()
    return (RedisCheckpointStore(url, st.key_prefix),
            RedisNotificationLedger(url, st.key_prefix, ttl_s=st.notify_record_ttl_s))
