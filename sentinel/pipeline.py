"""The pipeline: raw lines in, alerts and dead letters out. One code path for live and replay.

For each batch of raw lines (from a file, stdin or a Kafka partition):

1. **decode + validate** (:mod:`sentinel.decoding`); bad lines become
   :class:`DeadLetter` records with a precise reason, never an exception;
2. **de-duplicate** by ``event_id`` within ``dedup_horizon_s`` of event time
   (Kafka redelivery and gateway retries of the *same* attempt reuse the id);
3. **enrich**: ``cost_usd`` from the price table when the gateway left it out;
4. **reorder** within ``lateness_s``: events wait in a small buffer until the
   watermark (newest event time minus the allowed lateness) passes them, then
   go to the detectors in event-time order. An event later than the watermark
   is still processed (counted as ``late``); one more than ``max_late_s`` behind
   or ``max_future_s`` ahead of the stream is dead-lettered;
5. **detect**: every enabled detector sees every event; at each ``tick_s``
   boundary of event time the detectors and the incident book are ticked;
6. **alert**: findings go through the :class:`IncidentBook` into versioned alerts.

The pipeline does no I/O and reads no clock: callers write the alerts and
dead letters it returns. Its whole state -- dedup sets, the reorder buffer,
detector states, open incidents -- round-trips through :meth:`snapshot`, which
is what the live daemon checkpoints per partition.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Final

import msgspec

from detectors import registry
from detectors.base import Detector, Finding
from sentinel.alerting.incidents import IncidentBook
from sentinel.alerts import Alert
from sentinel.decoding import DECODE_CHUNK, EventDecoder, Rejection
from sentinel.events import UsageEvent
from sentinel.redact import redact_text
from sentinel.rules import RuleSet

_ts = attrgetter("ts")
_event_id = attrgetter("event_id")
_MAX_DEAD_RAW: Final = 64 * 1024
# Ticks are never skipped over a gap (resolution times must not depend on how events are
# split into partitions), up to this many (~70 days at 60 s); beyond that only the gap's ends.
_MAX_CATCHUP_TICKS: Final = 100_000


class DeadLetter(msgspec.Struct, kw_only=True):
    """One rejected line: why, where it came from, and its (redacted) content."""

    reason: str
    field: str | None
    message: str
    value: str | None
    source: str
    position: int | str
    raw: str
    raw_bytes: int


@dataclass
class PipelineStats:
    """Counters for the run summary and metrics. Plain ints: cheap on the hot path."""

    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    blank: int = 0
    late: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    alerts: Counter[str] = field(default_factory=Counter)
    findings: int = 0
    #: events priced at the fallback price because their model is not in prices.yaml
    unknown_models: Counter[str] = field(default_factory=Counter)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass(frozen=True)
class PipelineOptions:
    lateness_s: float = 30.0
    tick_s: float = 60.0
    dedup_horizon_s: float = 900.0
    max_late_s: float = 86400.0
    max_future_s: float = 86400.0
    max_line_bytes: int = 64 * 1024


class Suspect(msgspec.Struct):
    """The last event of a batch that jumped far ahead: accepted or rejected with the next batch."""

    event: UsageEvent
    raw: bytes
    position: int | str
    source: str


class PipelineState(msgspec.Struct):
    max_ts: float = 0.0
    released_to: float = 0.0
    next_tick: float = 0.0
    dedup_bucket: int = 0
    dedup_current: list[str] = msgspec.field(default_factory=list)
    dedup_previous: list[str] = msgspec.field(default_factory=list)
    pending: list[UsageEvent] = msgspec.field(default_factory=list)
    detectors: dict[str, bytes] = msgspec.field(default_factory=dict)
    book: bytes = b""
    evicted_seen: int = 0
    cardinality_since: float = 0.0
    cardinality_last: float = 0.0
    suspect: Suspect | None = None
    #: each detector's ``state_version`` when the snapshot was taken (absent in old snapshots: 1)
    detector_versions: dict[str, int] = msgspec.field(default_factory=dict)


@dataclass
class BatchResult:
    alerts: list[Alert]
    dead: list[DeadLetter]


@dataclass(slots=True)
class Intake:
    """What :meth:`Pipeline.decode` noted about a batch's events while they were in the CPU cache."""

    ids: set[str]  # their event ids (fewer than the events when one repeats); _admit may keep the set
    lo: float  # their earliest and latest ts
    hi: float
    unpriced: list[UsageEvent]  # those left without cost_usd: no memoised price row for the model


def price_known(events: list[UsageEvent], rows: dict[str, tuple[float, float, float, float]]) -> list[UsageEvent]:
    """Set ``cost_usd`` of the events without one whose model has a price row in ``rows``
    (per-million rates: input, cached input, cache write, output); returns the others, in order.

    Input tokens include cached ones (contract): the uncached part is input - cached - written.
    """
    rest = []
    for ev in events:
        if ev.cost_usd is None:
            p = rows.get(ev.model)
            if p is None:
                rest.append(ev)
                continue
            cached = ev.cached_input_tokens
            written = ev.cache_write_tokens
            uncached = ev.input_tokens - cached - written
            ev.cost_usd = (
                (uncached if uncached > 0 else 0) * p[0] + cached * p[1] + written * p[2] + ev.output_tokens * p[3]
            ) * 1e-6
    return rest


def build_detectors(rules: RuleSet) -> list[Detector[Any, Any]]:
    """One instance per enabled detector, in registry (name) order."""
    context = rules.context()
    out: list[Detector[Any, Any]] = []
    for rule in rules.enabled_detectors():
        cls = registry.get(rule.detector)
        out.append(cls(rule.params, context, rule.tenant_params))
    return out


class Pipeline:
    """Decode, dedup, enrich, reorder, detect, alert. See the module docstring."""

    def __init__(self, rules: RuleSet, options: PipelineOptions | None = None,
                 detectors: Sequence[Detector[Any, Any]] | None = None) -> None:
        self.rules = rules
        self.options = options or PipelineOptions()
        self.decoder = EventDecoder(self.options.max_line_bytes)
        self.context = rules.context()
        self.prices = self.context.prices
        self.detectors = list(detectors) if detectors is not None else build_detectors(rules)
        self._updates: list[Callable[[UsageEvent], list[Finding] | None]] = [d.update for d in self.detectors]
        self.book = IncidentBook(
            rules.alerting,
            {d.detector: d.rule for d in rules.detectors.values()},
            frozenset(d.name for d in self.detectors if d.resolves_incidents),
        )
        self.stats = PipelineStats()
        self._max_ts = 0.0
        self._released_to = 0.0
        self._next_tick = 0.0
        self._dedup_bucket = 0
        self._dedup_cur: set[str] = set()
        self._dedup_prev: set[str] = set()
        self._pending: list[UsageEvent] = []
        self._evicted_seen = 0
        self._cardinality_since = 0.0
        self._cardinality_last = 0.0
        self._suspect: Suspect | None = None
        self._price_of: dict[str, tuple[float, float, float, float]] = {}

    # -- intake ---------------------------------------------------------------------------------

    def feed(self, lines: Sequence[bytes], source: str, positions: Sequence[int],
             now: float | None = None) -> BatchResult:
        """Process one batch of raw lines; ``positions[i]`` is line i's line number or offset.

        ``now`` is the caller's wall clock (live daemon): events more than ``max_future_s``
        ahead of it are rejected. Replay passes nothing and far-future outliers are
        recognised from their neighbours instead (see :meth:`_drop_out_of_range`).
        """
        stats = self.stats
        stats.lines += len(lines)
        events, rejected, seen = self.decode(lines)
        dead: list[DeadLetter] = []
        if rejected:
            for i, why in rejected:
                dead.append(self._dead(lines[i], why, source, positions[i]))
                stats.rejected[why.code] += 1
        if len(events) + len(rejected) != len(lines):
            stats.blank += sum(1 for ln in lines if not ln.strip())
        alerts: list[Alert] = []
        if events:

            def locate(j: int) -> tuple[bytes, int | str]:
                # Only on the slow path: map the j-th decoded event back to its raw line.
                bad = {i for i, _ in rejected}
                good = [i for i in range(len(lines)) if i not in bad and lines[i].strip()]
                return lines[good[j]], positions[good[j]]

            fresh = self._admit(events, source, dead, locate, now, seen=seen)
            if fresh:
                self._pending.extend(fresh)
                alerts = self._release(self._max_ts - self.options.lateness_s)
        return BatchResult(alerts, dead)

    def decode(self, lines: Sequence[bytes]) -> tuple[list[UsageEvent], list[tuple[int, Rejection]], Intake]:
        """Decode ``lines`` (as :meth:`EventDecoder.decode_batch`) and note what :meth:`_admit` needs.

        Lines go to the decoder in chunks of :data:`DECODE_CHUNK`, and each chunk's events are
        looked at right away, while they are still in the CPU cache: their ids and times are
        collected and those without ``cost_usd`` whose model has a memoised price row are priced
        (pure: the price of a known model depends on nothing else). Going over the whole batch's
        events once more later costs a cache miss per event and field.
        """
        decode_batch = self.decoder.decode_batch
        events: list[UsageEvent] = []
        rejected: list[tuple[int, Rejection]] = []
        ids: set[str] = set()
        unpriced: list[UsageEvent] = []
        lo = float("inf")
        hi = -lo
        for start in range(0, len(lines), DECODE_CHUNK):
            got, bad = decode_batch(lines[start:start + DECODE_CHUNK])
            if bad:
                rejected += [(start + i, why) for i, why in bad]
            if got:
                for ev in got:  # a loop: its float compares are specialised, min(map(...)) calls per event
                    t: float = ev.ts  # type: ignore[assignment]
                    if t < lo:
                        lo = t
                    if t > hi:
                        hi = t
                ids.update(map(_event_id, got))
                unpriced += price_known(got, self._price_of)
                events += got
        return events, rejected, Intake(ids, lo, hi, unpriced)

    def feed_events(self, events: list[UsageEvent]) -> list[Alert]:
        """Process already-decoded events (adapters, tests)."""
        self.stats.lines += len(events)
        dead: list[DeadLetter] = []
        fresh = self._admit(events, "events", dead, None)
        self._pending.extend(fresh)
        return self._release(self._max_ts - self.options.lateness_s)

    def _admit(self, events: list[UsageEvent], source: str, dead: list[DeadLetter],
               locate: Callable[[int], tuple[bytes, int | str]] | None, now: float | None = None,
               check_range: bool = True, seen: Intake | None = None) -> list[UsageEvent]:
        """Range checks, dedup and cost enrichment; returns the events to buffer.

        Works on the whole batch with C-level set and min/max operations; only a
        batch holding an out-of-range or duplicate event takes the per-event path.
        ``seen``: what :meth:`decode` noted about exactly these events (ids, time range,
        those it could not price); without it (or once the batch changes) it is worked out here.
        """
        opts = self.options
        future, late = opts.max_future_s, opts.max_late_s
        if self._suspect is not None:
            sus = self._suspect
            events = self._settle_suspect(events, dead)
            seen = None
            if locate is not None and events and events[0] is sus.event:
                inner = locate

                def locate(j: int) -> tuple[bytes, int | str]:
                    return (sus.raw, sus.position) if j == 0 else inner(j - 1)

        if seen is None:
            times: list[float] = [ev.ts for ev in events]  # type: ignore[misc]
            lo = min(times)
            hi = max(times)
        else:
            lo = seen.lo
            hi = seen.hi
        max_ts = self._max_ts
        suspicious = check_range and (
            hi - lo > min(future, late)
            or (max_ts and (hi > max_ts + future or lo < max_ts - late))
            or (now is not None and hi > now + future)
        )
        if suspicious:
            events = self._drop_out_of_range(events, now, source, dead, locate)
            if not events:
                return events
            hi = max(e.t for e in events)
            seen = None
        cur = self._dedup_cur
        prev = self._dedup_prev
        if seen is not None and len(seen.ids) == len(events):
            ids: set[str] | list[str] = seen.ids
            unique = True
        else:
            ids = [ev.event_id for ev in events]
            unique = len(set(ids)) == len(ids)
        if not unique or not cur.isdisjoint(ids) or not prev.isdisjoint(ids):
            events = self._drop_duplicates(events)
            seen = None
        elif not cur and seen is not None:
            # The generation is empty (just rotated): it becomes decode()'s set of ids. Copying
            # them would touch every id string again, long out of the CPU cache by now.
            self._dedup_cur = seen.ids
        else:
            cur.update(ids)
        if hi > self._max_ts:
            self._max_ts = hi
            bucket = int(hi // opts.dedup_horizon_s)
            if bucket != self._dedup_bucket:
                # Rotate at batch granularity; the generation just filled (it holds this batch)
                # always survives, so two generations cover at least one horizon.
                self._dedup_prev = self._dedup_cur
                self._dedup_cur = set()
                self._dedup_bucket = bucket
        # Price what decode() did not: events whose model had no memoised row (new or unknown
        # models: _price_row counts an unknown one per event), or all when the batch changed.
        rest = price_known(events, self._price_of) if seen is None else seen.unpriced
        if rest:
            rows = {}
            for ev in rest:
                row = self._price_of.get(ev.model)
                rows[ev.model] = row if row is not None else self._price_row(ev.model)
            price_known(rest, rows)
        self.stats.accepted += len(events)
        return events

    def _drop_out_of_range(self, events: list[UsageEvent], now: float | None, source: str,
                           dead: list[DeadLetter], locate: Callable[[int], tuple[bytes, int | str]] | None,
                           ) -> list[UsageEvent]:
        """Dead-letter events too far behind the stream or too far in the future.

        *Too old*: more than ``max_late_s`` behind the newest accepted event.
        *Future*: with a wall clock (live), more than ``max_future_s`` ahead of it.
        Without one (replay), an event is a future outlier when it jumps more than
        ``max_future_s`` ahead of the newest accepted event and the next event of
        the batch does not follow it there (or it is the batch's last): a sparse
        stream with a long gap keeps its events, while one corrupt timestamp
        cannot drag the stream's clock forward and turn everything after it into
        "too old". Decisions depend only on the input order, so replay is stable.
        """
        opts = self.options
        future, late = opts.max_future_s, opts.max_late_s
        newest = self._max_ts or None
        keep = []
        n = len(events)
        for j, ev in enumerate(events):
            t: float = ev.ts  # type: ignore[assignment]
            why: Rejection | None = None
            if newest is not None and t < newest - late:
                why = Rejection("ts_too_old", "ts", f"more than {late:.0f}s behind the stream", str(t))
            elif now is not None:
                if t > now + future:
                    why = Rejection("ts_in_future", "ts", f"more than {future:.0f}s ahead of the clock", str(t))
            else:
                nxt: float | None = events[j + 1].ts if j + 1 < n else None  # type: ignore[assignment]
                ref = newest if newest is not None else nxt
                if ref is not None and t > ref + future:
                    if nxt is None:
                        # The batch's last event jumped ahead: the next batch tells whether the
                        # stream follows it (a gap) or not (a corrupt timestamp).
                        raw, position = locate(j) if locate is not None else (msgspec.json.encode(ev), ev.event_id)
                        self._suspect = Suspect(ev, raw, position, source)
                        continue
                    if nxt < t - future:
                        why = Rejection("ts_in_future", "ts", f"more than {future:.0f}s ahead of the stream",
                                        str(t))
            if why is None:
                keep.append(ev)
                if newest is None or t > newest:
                    newest = t
                continue
            raw, position = locate(j) if locate is not None else (msgspec.json.encode(ev), ev.event_id)
            dead.append(self._dead(raw, why, source, position))
            self.stats.rejected[why.code] += 1
        return keep

    def _settle_suspect(self, events: list[UsageEvent], dead: list[DeadLetter]) -> list[UsageEvent]:
        """Accept the held-back jump if this batch follows it, else dead-letter it."""
        sus = self._suspect
        assert sus is not None
        self._suspect = None
        first: float = events[0].ts  # type: ignore[assignment]
        t: float = sus.event.ts  # type: ignore[assignment]
        if first >= t - self.options.max_future_s:
            return [sus.event, *events]
        why = Rejection("ts_in_future", "ts", f"more than {self.options.max_future_s:.0f}s ahead of the stream",
                        str(t))
        dead.append(self._dead(sus.raw, why, sus.source, sus.position))
        self.stats.rejected[why.code] += 1
        return events

    def _drop_duplicates(self, events: list[UsageEvent]) -> list[UsageEvent]:
        cur = self._dedup_cur
        prev = self._dedup_prev
        keep = []
        for ev in events:
            eid = ev.event_id
            if eid in cur or eid in prev:
                self.stats.duplicates += 1
            else:
                cur.add(eid)
                keep.append(ev)
        return keep

    def _price_row(self, model: str) -> tuple[float, float, float, float]:
        """Per-token-million rates of a model, memoised (bounded) for the hot loop."""
        mp = self.prices.resolve(model)
        row = (mp.input, mp.cached_input, mp.cache_write, mp.output)
        if mp.known:
            if len(self._price_of) < 10_000:
                self._price_of[model] = row
        else:
            unknown = self.stats.unknown_models
            unknown[model if model in unknown or len(unknown) < 1_000 else "(other)"] += 1
        return row

    @staticmethod
    def _dead(line: bytes, why: Rejection, source: str, position: int | str) -> DeadLetter:
        text = line[:_MAX_DEAD_RAW].decode("utf-8", "backslashreplace")
        return DeadLetter(
            reason=why.code, field=why.field, message=why.message, value=why.value,
            source=source, position=position, raw=redact_text(text), raw_bytes=len(line),
        )

    # -- release to detectors -------------------------------------------------------------------

    def _release(self, watermark: float) -> list[Alert]:
        pend = self._pending
        if not pend:
            return []
        pend.sort(key=_ts)
        cut = bisect_right(pend, watermark, key=_ts)
        if cut == 0:
            return []
        ready = pend[:cut]
        self._pending = pend[cut:]
        return self._detect(ready)

    def _detect(self, ready: list[UsageEvent]) -> list[Alert]:
        findings: list[Finding] = []
        extend = findings.extend
        updates = self._updates
        next_tick = self._next_tick
        released_to = self._released_to
        alerts: list[Alert] = []
        late = 0
        for ev in ready:
            t: float = ev.ts  # type: ignore[assignment]
            if t >= next_tick:
                if findings:
                    alerts.extend(self._to_alerts(findings))
                    findings.clear()
                next_tick = self._tick_until(t, next_tick, alerts)
            if t < released_to:
                late += 1
            else:
                released_to = t
            for update in updates:
                got = update(ev)
                if got:
                    extend(got)
        self._next_tick = next_tick
        self._released_to = released_to
        self.stats.late += late
        if findings:
            alerts.extend(self._to_alerts(findings))
        return alerts

    def _tick_until(self, t: float, next_tick: float, alerts: list[Alert]) -> float:
        step = self.options.tick_s
        if next_tick == 0.0:
            return (t // step + 1) * step
        boundaries = int((t - next_tick) // step) + 1
        if boundaries > _MAX_CATCHUP_TICKS:
            # A long gap: tick at its start and end only; expiry and resolution are idempotent in time.
            self._tick(next_tick, alerts)
            next_tick += (boundaries - 1) * step
        for _ in range(min(boundaries, _MAX_CATCHUP_TICKS)):
            self._tick(next_tick, alerts)
            next_tick += step
            if next_tick > t:
                break
        return next_tick

    def _tick(self, now: float, alerts: list[Alert]) -> None:
        findings: list[Finding] = []
        for det in self.detectors:
            got = det.tick(now)
            if got:
                findings.extend(got)
        card = self._cardinality(now)
        if card is not None:
            findings.append(card)
        if findings:
            alerts.extend(self._to_alerts(findings))
        alerts.extend(self.book.tick(now))

    def _cardinality(self, now: float) -> Finding | None:
        """One meta finding while detectors evict keys at their ``max_keys`` cap.

        A flood of random api_key_ids (a cardinality attack, or a gateway bug) must
        cost bounded memory and raise one alert, not a million: detectors evict
        their least recently seen keys and count them; here the counts become one
        incident that stays open while evictions continue.
        """
        evicted = 0
        for d in self.detectors:
            evicted += d.evicted_keys()
        if evicted <= self._evicted_seen:
            return None
        by_det = {d.name: d.evicted_keys() for d in self.detectors}
        new = evicted - self._evicted_seen
        self._evicted_seen = evicted
        if now - self._cardinality_last >= self.rules.alerting.resolve_after_s:
            self._cardinality_since = now  # a new incident: the previous one was resolved as quiet
        self._cardinality_last = now
        tracked = self.tracked_keys()
        caps = {d.name: d.params.max_keys for d in self.detectors}
        return Finding(
            detector="cardinality", entity_type="tenant", entity_id="*", tenant_id="*", ts=now,
            first_seen=self._cardinality_since, score=0.8,
            title=f"key cardinality cap reached: {new:,} keys evicted in the last minute",
            summary="Detectors are evicting their least recently seen keys; a flood of distinct ids "
            "(api keys, sessions, tenants) is arriving. Memory stays bounded; detection for evicted "
            "keys restarts from their priors.",
            evidence={"evicted_last_tick": new, "evicted_total": evicted,
                      "evicted_by_detector": {k: v for k, v in by_det.items() if v},
                      "tracked_keys": tracked, "max_keys": caps},
            signals={"evictions": 0.8}, actions=["notify"],
        )

    def _to_alerts(self, findings: list[Finding]) -> list[Alert]:
        self.stats.findings += len(findings)
        out = []
        for f in findings:
            alert = self.book.on_finding(f)
            if alert is not None:
                out.append(alert)
                self.stats.alerts[alert.detector] += 1
        return out

    def drain(self) -> list[Alert]:
        """End of input: release every buffered event (the watermark goes to +inf).

        A held-back jump (see :meth:`_drop_out_of_range`) is accepted: nothing follows
        it that it could push out of range.
        """
        if self._suspect is not None:
            sus, self._suspect = self._suspect, None
            self._pending.extend(self._admit([sus.event], sus.source, [], None, check_range=False))
            self._max_ts = max(self._max_ts, sus.event.t)
        return self._release(float("inf"))

    def advance_to(self, now: float) -> list[Alert]:
        """Move event time forward without events (live daemon, idle stream): release and tick."""
        alerts = self._release(now - self.options.lateness_s)
        if self._next_tick and now >= self._next_tick:
            self._next_tick = self._tick_until(now, self._next_tick, alerts)
        return alerts

    # -- state ----------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        state = PipelineState(
            max_ts=self._max_ts,
            released_to=self._released_to,
            next_tick=self._next_tick,
            dedup_bucket=self._dedup_bucket,
            dedup_current=sorted(self._dedup_cur),
            dedup_previous=sorted(self._dedup_prev),
            pending=self._pending,
            detectors={d.name: d.snapshot() for d in self.detectors},
            detector_versions={d.name: d.state_version for d in self.detectors},
            book=self.book.snapshot(),
            evicted_seen=self._evicted_seen,
            cardinality_since=self._cardinality_since,
            cardinality_last=self._cardinality_last,
            suspect=self._suspect,
        )
        return msgspec.msgpack.encode(state)

    def restore(self, data: bytes) -> list[tuple[str, str]]:
        """Load a :meth:`snapshot`; returns ``(detector, reason)`` for each detector that starts cold.

        A detector whose saved state has another ``state_version`` (an upgrade changed its
        encoding) or does not decode starts with empty state; the rest of the pipeline -- dedup
        sets, reorder buffer, open incidents, the other detectors -- is restored as saved. The
        caller logs the list. A snapshot that does not decode at all raises.
        """
        state = msgspec.msgpack.decode(data, type=PipelineState)
        self._max_ts = state.max_ts
        self._released_to = state.released_to
        self._next_tick = state.next_tick
        self._dedup_bucket = state.dedup_bucket
        self._dedup_cur = set(state.dedup_current)
        self._dedup_prev = set(state.dedup_previous)
        self._pending = state.pending
        self._evicted_seen = state.evicted_seen
        self._cardinality_since = state.cardinality_since
        self._cardinality_last = state.cardinality_last
        self._suspect = state.suspect
        cold: list[tuple[str, str]] = []
        for i, det in enumerate(self.detectors):
            blob = state.detectors.get(det.name)
            if blob is None:
                continue
            saved = state.detector_versions.get(det.name, 1)
            if saved != det.state_version:
                cold.append((det.name, f"state version {saved}, this build reads {det.state_version}"))
                continue
            try:
                det.restore(blob)
            except Exception as err:  # a snapshot this build cannot read must not block the partition
                cold.append((det.name, f"unreadable state ({type(err).__name__})"))
                fresh = type(det)(det.params, det.context, det.tenant_params)
                self.detectors[i] = fresh
                self._updates[i] = fresh.update
        if state.book:
            self.book.restore(state.book)
        return cold

    def tracked_keys(self) -> dict[str, int]:
        return {d.name: d.tracked_keys() for d in self.detectors}
