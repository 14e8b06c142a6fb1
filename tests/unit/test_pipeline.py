"""The pipeline: dedup, enrichment, reordering, ticks, incidents, snapshots, determinism.

Uses a tiny test-only detector (not registered) so that these tests do not
depend on the real detectors' statistics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from detectors.base import Detector, DetectorParams, Finding
from sentinel.alerts import encode_alert
from sentinel.events import UsageEvent
from sentinel.pipeline import Pipeline, PipelineOptions
from sentinel.rules import load_rules
from tests.synth import T0, Factory, background, to_lines

SCHEMA = json.loads((Path(__file__).resolve().parents[3] / "shared/contracts/alert.v1.schema.json").read_text())


class BigSpendParams(DetectorParams):
    usd: float = 1.0


class BigSpendState(msgspec.Struct):
    seen: list[float] = msgspec.field(default_factory=list)
    fired: dict[str, float] = msgspec.field(default_factory=dict)


class BigSpend(Detector[BigSpendParams, BigSpendState]):
    """Fires when one event costs more than ``usd`` (test-only)."""

    name = "big_spend"
    Params = BigSpendParams
    State = BigSpendState
    resolves_incidents = False  # resolved by the incident book after resolve_after_s of quiet

    def update(self, event: UsageEvent) -> list[Finding] | None:
        self.state.seen.append(event.t)
        cost = event.cost_usd or 0.0
        if cost <= self.params.usd:
            return None
        first = self.state.fired.setdefault(event.api_key_id, event.t)
        return [Finding(detector=self.name, entity_type="api_key", entity_id=event.api_key_id,
                        tenant_id=event.tenant_id, ts=event.t, first_seen=first, score=min(1.0, cost / 10),
                        title=f"event cost ${cost:.2f}", evidence={"cost_usd": cost},
                        signals={"cost": min(1.0, cost / 10)}, api_key_id=event.api_key_id,
                        sample_event_ids=[event.event_id], risk_usd_per_hour=cost * 60)]

    def is_warm(self, key: str) -> bool:
        return False

    def tracked_keys(self) -> int:
        return len(self.state.fired)


def make(**opts: Any) -> Pipeline:
    rules = load_rules(Path(__file__).resolve().parents[2] / "rules")
    return Pipeline(rules, PipelineOptions(**opts), detectors=[BigSpend(BigSpendParams(), rules.context())])


def feed_all(p: Pipeline, lines: list[bytes], batch: int = 100) -> list[Any]:
    out = []
    for i in range(0, len(lines), batch):
        out.extend(p.feed(lines[i:i + batch], "test", range(i + 1, i + 1 + len(lines[i:i + batch]))).alerts)
    out.extend(p.drain())
    return out


def spike_stream() -> list[UsageEvent]:
    f = Factory("spk")
    bg = background(days=1.0, seed=3)
    spikes = [f.event(T0 + 10 * 3600 + i * 30, api_key_id="key_alpha_9", model="claude-opus-4",
                      input_tokens=20_000, output_tokens=30_000) for i in range(20)]
    return sorted(bg + spikes, key=lambda e: e.t)


def test_cost_is_filled_from_price_table_when_absent() -> None:
    p = make()
    f = Factory()
    ev = f.event(T0, model="gpt-4o-2024-08-06", input_tokens=1_000_000, cached_input_tokens=400_000,
                 output_tokens=100_000)
    given = f.event(T0 + 1, cost_usd=1.23)
    p.feed(list(to_lines([ev, given])), "t", [1, 2])
    p.drain()
    seen = p.detectors[0].state.seen
    assert len(seen) == 2
    # gpt-4o: 600k uncached * 2.50 + 400k cached * 1.25 + 100k out * 10.00 per 1M
    assert ev.cost_usd is None  # the original object was encoded, the pipeline decoded its own copy
    p2 = make()
    got = p2.decoder.decode_batch(list(to_lines([ev])))[0]
    p2._admit(got, "t", [], None)
    assert got[0].cost_usd == pytest.approx(1.5 + 0.5 + 1.0)


def test_duplicates_counted_once_and_accounting_adds_up() -> None:
    events = background(days=0.5, seed=4)
    lines = list(to_lines(events))
    # Redelivery within the horizon: every 10th line sent again right after, the first 50 twice.
    dup = lines[:50] + [x for i, ln in enumerate(lines) for x in ((ln, ln) if i % 10 == 0 else (ln,))]
    p = make()
    feed_all(p, dup)
    s = p.stats
    assert s.duplicates == 50 + (len(lines) + 9) // 10
    assert s.accepted == len(events)
    assert s.accepted + s.rejected_total + s.duplicates + s.blank == len(dup)


def test_events_reordered_within_lateness() -> None:
    import random

    f = Factory()
    evs = [f.event(T0 + i * 2.0) for i in range(300)]
    rng = random.Random(1)
    shuffled: list[UsageEvent] = []
    for k in range(0, 300, 10):  # shuffle within 20 s windows: every event < 30 s late
        chunk = evs[k:k + 10]
        rng.shuffle(chunk)
        shuffled.extend(chunk)
    p = make(lateness_s=30.0)
    feed_all(p, list(to_lines(shuffled)), batch=7)
    seen = p.detectors[0].state.seen
    assert seen == sorted(seen) and len(seen) == 300
    assert p.stats.late == 0


def test_events_later_than_lateness_are_still_processed_and_counted() -> None:
    f = Factory()
    evs = [f.event(T0 + i * 2.0) for i in range(300)]
    late = f.event(T0 + 100.0)  # arrives after T0+598: 498 s late
    p = make(lateness_s=30.0)
    feed_all(p, list(to_lines([*evs, late])), batch=50)
    assert p.stats.accepted == 301 and p.stats.late == 1
    assert len(p.detectors[0].state.seen) == 301


def test_far_future_and_far_past_events_are_dead_lettered() -> None:
    f = Factory()
    evs = [f.event(T0 + i) for i in range(10)]
    evs.append(f.event(T0 + 10 * 86400))
    evs.append(f.event(T0 - 10 * 86400))
    # In the first batch the batch's median is the reference ...
    p = make()
    res = p.feed(list(to_lines(evs)), "t", range(1, 13))
    assert sorted(d.reason for d in res.dead) == ["ts_in_future", "ts_too_old"]
    assert p.stats.accepted == 10
    # ... afterwards the stream's own progress.
    late = [f.event(T0 + 20), f.event(T0 + 5 * 86400), f.event(T0 - 3 * 86400)]
    res = p.feed(list(to_lines(late)), "t", range(13, 16))
    assert sorted((d.reason, d.position) for d in res.dead) == [("ts_in_future", 14), ("ts_too_old", 15)]


def test_alerts_validate_against_contract_and_are_deterministic() -> None:
    lines = list(to_lines(spike_stream()))
    a = feed_all(make(), lines)
    b = feed_all(make(), lines, batch=333)
    assert a, "the test detector should fire"
    assert [encode_alert(x) for x in a] == [encode_alert(x) for x in b]
    for alert in a:
        jsonschema.validate(json.loads(encode_alert(alert)), SCHEMA)
    statuses = [x.status for x in a]
    assert statuses[-1] == "resolved"
    assert len({x.alert_id for x in a}) == 1


def test_snapshot_restore_mid_stream_gives_identical_alerts() -> None:
    lines = list(to_lines(spike_stream()))
    full = feed_all(make(), lines)
    for cut in (len(lines) // 3, len(lines) // 2 + 17):
        p = make()
        head = []
        for i in range(0, cut, 100):
            head.extend(p.feed(lines[i:min(i + 100, cut)], "t", range(i, min(i + 100, cut))).alerts)
        blob = p.snapshot()
        q = make()
        q.restore(blob)
        assert q.snapshot() == blob
        tail = feed_all(q, lines[cut:])
        assert [encode_alert(x) for x in head + tail] == [encode_alert(x) for x in full]


def _two_detector_pipeline() -> Pipeline:
    from detectors import registry

    rules = load_rules(Path(__file__).resolve().parents[2] / "rules")
    cross = registry.get("cross_tenant")
    return Pipeline(rules, PipelineOptions(), detectors=[
        BigSpend(BigSpendParams(), rules.context()),
        cross(rules.detectors["cross_tenant"].params, rules.context())])


def _tampered(blob: bytes, **changes: Any) -> bytes:
    from sentinel.pipeline import PipelineState

    state = msgspec.msgpack.decode(blob, type=PipelineState)
    return msgspec.msgpack.encode(msgspec.structs.replace(state, **changes))


def test_restore_starts_only_the_detector_with_another_state_version_cold() -> None:
    lines = list(to_lines(spike_stream()))
    p = _two_detector_pipeline()
    feed_all(p, lines[: len(lines) // 2])
    blob = p.snapshot()
    assert p.detectors[0].tracked_keys() > 0 and p.detectors[1].tracked_keys() > 0

    # As written by a build whose big_spend state had version 7: only big_spend starts cold.
    q = _two_detector_pipeline()
    cold = q.restore(_tampered(blob, detector_versions={"big_spend": 7, "cross_tenant": 1}))
    assert cold == [("big_spend", "state version 7, this build reads 1")]
    assert q.detectors[0].tracked_keys() == 0
    assert q.detectors[1].snapshot() == p.detectors[1].snapshot()
    assert q.book.snapshot() == p.book.snapshot()

    # A snapshot from before versions were recorded counts as version 1 for every detector.
    r = _two_detector_pipeline()
    assert r.restore(_tampered(blob, detector_versions={})) == []
    assert r.snapshot() == blob


def test_restore_replaces_a_detector_whose_state_does_not_decode() -> None:
    lines = list(to_lines(spike_stream()))
    p = _two_detector_pipeline()
    alerts = feed_all(p, lines[: len(lines) // 2])
    assert alerts
    blob = p.snapshot()
    from sentinel.pipeline import PipelineState

    saved = msgspec.msgpack.decode(blob, type=PipelineState).detectors
    q = _two_detector_pipeline()
    cold = q.restore(_tampered(blob, detectors={**saved, "cross_tenant": b"\x93not-a-state"}))
    assert [name for name, _ in cold] == ["cross_tenant"] and "unreadable" in cold[0][1]
    assert q.detectors[1].tracked_keys() == 0
    assert q.detectors[0].snapshot() == p.detectors[0].snapshot()
    # the replacement is the one the pipeline now calls
    feed_all(q, lines[len(lines) // 2:])
    assert q.detectors[1].tracked_keys() > 0


def test_cardinality_flood_raises_one_alert_and_memory_stays_bounded() -> None:
    import random

    from detectors import registry

    rules = load_rules(Path(__file__).resolve().parents[2] / "rules")
    ctx = rules.context()
    cap = 1_000
    dets = [cls(cls.Params(max_keys=cap), ctx) for cls in registry.registered().values()]
    p = Pipeline(rules, PipelineOptions(), detectors=dets)
    rng = random.Random(3)
    f = Factory("flood")
    alerts = []
    for b in range(40):  # 40 batches of 2,500 events with random key ids, over ~40 minutes
        evs = [f.event(T0 + b * 60 + i * 0.02, api_key_id=f"key_rand_{rng.randrange(10**12)}",
                       tenant_id=f"t_rand_{rng.randrange(10**9)}", session_id=f"s_{rng.randrange(10**12)}",
                       request_id=f"r_{rng.randrange(10**12)}") for i in range(2_500)]
        alerts.extend(p.feed(list(to_lines(evs)), "flood", range(len(evs))).alerts)
    alerts.extend(p.drain())
    card = [a for a in alerts if a.detector == "cardinality"]
    assert card, "no cardinality alert"
    assert len({a.alert_id for a in card}) == 1
    assert all(n <= cap for n in p.tracked_keys().values()), p.tracked_keys()
    assert card[0].evidence["evicted_total"] > 0
    jsonschema.validate(json.loads(encode_alert(card[0])), SCHEMA)


def test_sparse_stream_with_long_gaps_keeps_every_event() -> None:
    # A quiet partition: a few events a day, gaps of several days, batches spanning weeks.
    f = Factory("sparse")
    times = [T0 + d * 86400 + h * 3600 for d in (0, 1, 5, 6, 20, 21, 22, 40) for h in (9, 13)]
    lines = list(to_lines([f.event(t) for t in times]))
    for batch in (3, 5, 100):
        p = make()
        feed_all(p, lines, batch=batch)
        assert p.stats.accepted == len(times) and not p.stats.rejected, (batch, p.stats.rejected)


def test_one_corrupt_future_timestamp_cannot_poison_the_stream() -> None:
    f = Factory("poison")
    evs = [f.event(T0 + i * 10) for i in range(300)]
    evs.insert(100, f.event(T0 + 200 * 86400))  # one event 200 days ahead, mid-batch
    evs.insert(250, f.event(T0 + 90 * 86400))   # and one as the last line of a batch below
    lines = list(to_lines(evs))
    p = make()
    res_dead = []
    for i in range(0, len(lines), 251 - 0):
        res_dead.extend(p.feed(lines[i:i + 251], "t", range(i + 1, i + 1 + len(lines[i:i + 251]))).dead)
    p.drain()
    assert sorted((d.reason, d.position) for d in res_dead) == [("ts_in_future", 101), ("ts_in_future", 251)]
    assert p.stats.accepted == 300 and p.stats.late == 0


def test_live_clock_bounds_the_future() -> None:
    f = Factory("live")
    evs = [f.event(T0 + i) for i in range(10)] + [f.event(T0 + 3 * 86400), f.event(T0 + 11)]
    p = make()
    res = p.feed(list(to_lines(evs)), "t", range(1, 13), now=T0 + 60)
    assert [(d.reason, d.position) for d in res.dead] == [("ts_in_future", 11)]
    # with the clock days later (a backlog being caught up) it is no longer in the future; the
    # event after it is then more than a day behind the stream, which is too late
    q = make()
    res = q.feed(list(to_lines(evs)), "t", range(1, 13), now=T0 + 5 * 86400)
    assert [(d.reason, d.position) for d in res.dead] == [("ts_too_old", 12)]


def test_gap_at_a_batch_boundary_is_judged_with_the_next_batch() -> None:
    f = Factory("edge")
    evs = [f.event(T0 + i) for i in range(10)] + [f.event(T0 + 5 * 86400 + i) for i in range(10)]
    lines = list(to_lines(evs))
    p = make()
    dead = p.feed(lines[:11], "t", range(1, 12)).dead  # ends with the first event after the gap
    blob = p.snapshot()  # the held-back event survives a checkpoint
    q = make()
    q.restore(blob)
    dead += q.feed(lines[11:], "t", range(12, 21)).dead
    q.drain()
    assert not dead and q.stats.accepted == 10  # the held-back event and the 9 after it
    assert len(q.detectors[0].state.seen) == 20
    # the same jump followed by the old time again is a corrupt timestamp
    r = make()
    r.feed(lines[:11], "t", range(1, 12))
    back = list(to_lines([f.event(T0 + 20 + i) for i in range(5)]))
    res = r.feed(back, "t", range(12, 17))
    assert [(d.reason, d.position) for d in res.dead] == [("ts_in_future", 11)]


def test_intake_noted_while_decoding_equals_the_batch_worked_out_afterwards() -> None:
    """feed() prices known models and collects ids and times per decoded chunk (Pipeline.decode);
    _admit without that note works everything out itself. Same events, costs, stats and alerts,
    over batches with duplicates (in the batch and across), unknown and new models, given costs,
    out-of-range times and a last event that jumps ahead."""
    f = Factory("intk")
    stream: list[UsageEvent] = []
    for i, ev in enumerate(background(days=1.0, seed=8)):
        stream.append(ev)
        kind = i % 200
        if kind == 0:
            stream.append(msgspec.structs.replace(ev))  # the same id again
        elif kind == 40:
            stream.append(f.event(ev.t, model=f"mystery-{i % 3}", cost_usd=None))
        elif kind == 80:
            stream.append(f.event(ev.t, model="gpt-4o-2024-08-06", input_tokens=50, cached_input_tokens=40,
                                  cache_write_tokens=30))  # cached + written > input: no uncached part
        elif kind == 120:
            stream.append(f.event(ev.t + 5 * 86400, cost_usd=None))  # far future
        elif kind == 160:
            stream.append(f.event(ev.t - 5 * 86400, cost_usd=None))  # far past
    lines = list(to_lines(stream))
    assert len(lines) > 1500, len(lines)
    lines.insert(700, lines[650])  # a duplicate line inside one batch
    lines.insert(1199, next(to_lines([f.event(T0 + 40 * 86400)])))  # a batch's last line jumps ahead

    p, q = make(), make()
    got_p: list[UsageEvent] = []
    got_q: list[UsageEvent] = []
    for i in range(0, len(lines), 600):
        batch = lines[i:i + 600]
        evs, _, seen = p.decode(batch)
        got_p += p._admit(evs, "t", [], None, seen=seen)
        evs, _ = q.decoder.decode_batch(batch)
        got_q += q._admit(evs, "t", [], None)
    assert got_p == got_q and [e.cost_usd for e in got_p] == [e.cost_usd for e in got_q]
    assert all(e.cost_usd is not None for e in got_p)
    assert p.stats == q.stats and p.stats.duplicates > 0 and p.stats.unknown_models
    assert p.stats.rejected["ts_too_old"] and p.stats.rejected["ts_in_future"]
    assert p.prices.unknown_models == q.prices.unknown_models
    assert p._dedup_cur == q._dedup_cur and p._dedup_prev == q._dedup_prev and p._max_ts == q._max_ts
