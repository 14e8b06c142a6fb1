"""runaway_loop on labelled synthetic streams: each positive signal and each negative case of issue 6."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest

from detectors.base import DetectorContext, Finding
from detectors.runaway_loop import RunawayLoop, RunawayLoopParams
from sentinel.events import UsageEvent
from sentinel.rules import Price, PricesFile, RuleSet, TenantRules, TenantsFile
from tests.contract.streams.runaway_loop import loop
from tests.synth import DAY, HOUR, Factory, background, merge

NY = "t_ny"
# Friday 2026-11-06 19:30 in New York (EST, UTC-5) = Saturday 00:30 UTC.
FRIDAY_1930_NY = datetime(2026, 11, 7, 0, 30, tzinfo=UTC).timestamp()
MONDAY_0800_NY = datetime(2026, 11, 9, 13, 0, tzinfo=UTC).timestamp()
TUESDAY_1100_NY = datetime(2026, 11, 3, 16, 0, tzinfo=UTC).timestamp()
SATURDAY_1400_NY = datetime(2026, 11, 7, 19, 0, tzinfo=UTC).timestamp()
NIGHT_NY = datetime(2026, 11, 4, 3, 0, tzinfo=UTC).timestamp()  # Tuesday 22:00 in New York

GPT4O = Price(input=2.5, output=10.0, cached_input=1.25)


def context() -> DetectorContext:
    rules = RuleSet(
        tenants=TenantsFile(tenants={NY: TenantRules(timezone="America/New_York")}),
        prices=PricesFile(models={"gpt-4o": GPT4O, "gpt-4o-mini": Price(input=0.15, output=0.6)}),
    )
    return rules.context()


def detector(**params: Any) -> RunawayLoop:
    return RunawayLoop(RunawayLoopParams(**params), context())


def drive(det: RunawayLoop, events: list[UsageEvent], tail_s: float = 3 * HOUR) -> list[Finding]:
    """Feed events and the 60 s ticks as the pipeline does, then tick on for ``tail_s`` of quiet."""
    out: list[Finding] = []
    next_tick = (events[0].t // 60.0 + 1) * 60.0
    for ev in events:
        while ev.t >= next_tick:
            out.extend(det.tick(next_tick) or [])
            next_tick += 60.0
        out.extend(det.update(ev) or [])
    end = next_tick + tail_s
    while next_tick < end:
        out.extend(det.tick(next_tick) or [])
        next_tick += 60.0
    return out


def firing(findings: list[Finding], entity: str | None = None) -> list[Finding]:
    return [f for f in findings if f.status == "firing" and (entity is None or f.entity_id == entity)]


def ny_loop(start: float, minutes: float, **kw: Any) -> list[UsageEvent]:
    kw.setdefault("tenant", NY)
    kw.setdefault("api_key", "key_ny_agent")
    return loop(start, minutes, **kw)


def price(ev: UsageEvent) -> float:
    return context().prices.resolve(ev.model).cost(ev.input_tokens, ev.output_tokens, ev.cached_input_tokens, 0)


# -- positive signals --------------------------------------------------------------------------------


def test_friday_evening_loop_fires_within_15_minutes_with_cost_projection() -> None:
    agent = ny_loop(FRIDAY_1930_NY, minutes=90)
    events = merge(background(days=1.0, seed=4, start=FRIDAY_1930_NY - 12 * HOUR), agent)
    found = drive(detector(), events)
    assert {f.entity_id for f in firing(found)} == {"s_agent_loop_1"}, "only the loop fires"
    first = firing(found)[0]
    assert first.ts - FRIDAY_1930_NY <= 15 * 60
    assert first.first_seen == agent[0].t
    assert first.entity_type == "session" and first.tenant_id == NY and first.api_key_id == "key_ny_agent"
    assert first.session_id == "s_agent_loop_1"
    ev = first.evidence
    so_far = [e for e in agent if e.t <= first.ts]
    assert ev["turns"] == len(so_far)
    assert ev["cost_so_far_usd"] == pytest.approx(sum(price(e) for e in so_far), rel=1e-6)
    gaps = [b.t - a.t for a, b in pairwise(so_far)]
    assert ev["period_s"] == pytest.approx(sum(gaps) / len(gaps), rel=0.05)
    assert ev["gap_cv"] < 0.1
    assert ev["tokens_per_turn_first"] == so_far[2].input_tokens  # statistics start at the third turn
    assert ev["tokens_per_turn_last"] == so_far[-1].input_tokens
    assert 150 <= ev["tokens_per_turn_slope"] <= 400  # the stream grows the context by 150..400 per turn
    assert ev["repeat_share"] == 1.0 and ev["growth_share"] == 1.0
    assert ev["local_time"].startswith("2026-11-06T19:") and ev["local_time"].endswith("-05:00")
    assert ev["off_hours"] is True
    assert ev["projected_until"] == "2026-11-09T08:00:00-05:00"
    hours = (MONDAY_0800_NY - first.ts) / 3600.0
    assert ev["hours_until_business"] == pytest.approx(hours, abs=0.01)
    assert ev["projected_cost_usd"] == pytest.approx(ev["burn_usd_per_hour"] * hours, rel=1e-3)
    # The burn rate is the recent cost per turn times turns per hour.
    recent = sum(price(e) for e in so_far[-5:]) / 5
    assert ev["burn_usd_per_hour"] == pytest.approx(recent * 3600.0 / ev["period_s"], rel=0.15)
    assert first.risk_usd_per_hour == pytest.approx(ev["burn_usd_per_hour"])
    assert sum(first.signals.values()) == pytest.approx(first.score)
    assert first.signals["off_hours"] > 0 and first.signals["periodic"] > 0.2
    assert "page" in first.actions
    assert first.attack is not None and first.attack["id"] == "LLM10"


def test_escalates_as_cost_accumulates_then_resolves_when_quiet() -> None:
    agent = ny_loop(FRIDAY_1930_NY, minutes=150)
    found = drive(detector(), agent)
    fired = firing(found)
    assert len(fired) >= 3, "the incident is re-emitted as the cost grows"
    assert len({f.first_seen for f in found}) == 1, "one incident, one first_seen"
    for prev, cur in pairwise(fired):
        grew = cur.evidence["cost_so_far_usd"] >= 2.0 * prev.evidence["cost_so_far_usd"]
        assert grew or cur.score >= prev.score + 0.1
        assert cur.title.endswith("(escalated)")
        assert cur.score >= prev.score
    assert fired[-1].evidence["cost_so_far_usd"] > 8 * fired[0].evidence["cost_so_far_usd"]
    resolved = [f for f in found if f.status == "resolved"]
    assert len(resolved) == 1 and found[-1] is resolved[0]
    assert resolved[0].ts == pytest.approx(agent[-1].t + 900.0)
    assert resolved[0].evidence["turns"] == len(agent)
    assert resolved[0].evidence["cost_so_far_usd"] == pytest.approx(sum(price(e) for e in agent), rel=1e-6)


def test_weekend_loop_fires_with_projection_to_monday() -> None:
    found = drive(detector(), ny_loop(SATURDAY_1400_NY, minutes=40))
    first = firing(found)[0]
    assert first.ts - SATURDAY_1400_NY <= 15 * 60
    assert first.evidence["off_hours"] is True
    assert first.evidence["projected_until"] == "2026-11-09T08:00:00-05:00"
    assert first.evidence["hours_until_business"] > 40


def test_off_hours_weighs_up_the_same_loop() -> None:
    night = firing(drive(detector(), ny_loop(FRIDAY_1930_NY, minutes=60)))
    day = firing(drive(detector(), ny_loop(TUESDAY_1100_NY, minutes=60)))
    assert night[0].ts - FRIDAY_1930_NY <= 15 * 60
    assert day, "a loop during business hours is still a loop"
    assert day[0].ts - TUESDAY_1100_NY > 15 * 60, "but nobody needs paging for it right away"
    assert day[0].evidence["projected_cost_usd"] == 0.0 and day[0].evidence["off_hours"] is False
    assert day[0].signals["off_hours"] == 0.0
    assert "page" not in day[0].actions
    at_same_age = [f for f in night if f.ts - FRIDAY_1930_NY <= day[0].ts - TUESDAY_1100_NY][-1]
    assert at_same_age.score > day[0].score


def test_loop_without_session_is_followed_by_key_and_prompt_shape() -> None:
    found = drive(detector(), ny_loop(FRIDAY_1930_NY, minutes=40, session=None))
    fired = firing(found)
    assert fired and fired[0].entity_id == "key_ny_agent/shp_agent_step"
    assert fired[0].session_id is None and fired[0].api_key_id == "key_ny_agent"
    assert fired[0].ts - FRIDAY_1930_NY <= 15 * 60


def test_same_session_id_in_two_tenants_is_two_sessions() -> None:
    a = ny_loop(FRIDAY_1930_NY, minutes=40, session="s_shared", seed=1, prefix="a")
    b = loop(FRIDAY_1930_NY + 7.0, minutes=40, session="s_shared", seed=2, prefix="b", tenant="t_other")
    fired = firing(drive(detector(), merge(a, b)))
    assert {f.tenant_id for f in fired} == {NY, "t_other"}
    for f in fired:
        mine = a if f.tenant_id == NY else b
        assert f.evidence["turns"] == len([e for e in mine if e.t <= f.ts])


def test_warm_up_is_explicit() -> None:
    det = detector()
    agent = ny_loop(FRIDAY_1930_NY, minutes=10)
    for ev in agent[:14]:
        assert det.update(ev) is None
    assert not det.is_warm("s_agent_loop_1")
    det.update(agent[14])
    assert det.is_warm("s_agent_loop_1")


# -- negatives ---------------------------------------------------------------------------------------


def human_conversation(start: float, turns: int, seed: int, sigma: float = 0.9) -> list[UsageEvent]:
    """One person chatting late: same chat template, growing context, think times log-normal (median 70 s)."""
    rng = random.Random(seed)
    f = Factory(f"human{seed}")
    out = []
    t = start
    ctx = 1500
    for _ in range(turns):
        out.append(f.event(t, tenant_id=NY, api_key_id="key_ny_app", session_id=f"s_chat_{seed}",
                           prompt_shape="shp_chat", model="gpt-4o", input_tokens=ctx,
                           output_tokens=rng.randint(100, 600)))
        ctx += rng.randint(100, 700)
        t += rng.lognormvariate(math.log(70.0), sigma)
    return out


@pytest.mark.parametrize("sigma", [0.7, 0.9])
def test_long_human_conversations_do_not_fire(sigma: float) -> None:
    """Think times of people are heavy-tailed (log-normal sigma 0.9: CV ~1.1; 0.7 is an unusually steady person)."""
    chats = [human_conversation(NIGHT_NY + i * 60, turns=200, seed=i, sigma=sigma) for i in range(40)]
    assert all(c[-1].t - c[0].t > 3 * HOUR for c in chats)
    assert firing(drive(detector(), merge(*chats))) == []


def test_batch_job_over_many_sessions_does_not_fire() -> None:
    """A nightly batch: one item per session, 1-3 calls each, back to back at a steady cadence."""
    rng = random.Random(3)
    f = Factory("batch")
    events = []
    t = NIGHT_NY
    for item in range(3000):
        for _ in range(rng.randint(1, 3)):
            events.append(f.event(t, tenant_id=NY, api_key_id="key_ny_batch", session_id=f"s_item_{item}",
                                  prompt_shape="shp_classify", model="gpt-4o",
                                  input_tokens=rng.randint(2000, 4000), output_tokens=50))
            t += 2.0 * rng.uniform(0.95, 1.05)
    det = detector()
    assert firing(drive(det, events)) == []
    assert det.tracked_keys() == 0, "finished items are forgotten after quiet_s"


def test_sequential_batch_worker_without_sessions_does_not_fire() -> None:
    """No session ids, one key and template, metronomic: but the context does not grow from call to call."""
    rng = random.Random(4)
    f = Factory("worker")
    events = [
        f.event(NIGHT_NY + i * 5.0 * rng.uniform(0.97, 1.03), tenant_id=NY, api_key_id="key_ny_worker",
                prompt_shape="shp_extract", model="gpt-4o", input_tokens=rng.randint(1000, 6000), output_tokens=200)
        for i in range(2000)
    ]
    events.sort(key=lambda e: e.t)
    assert firing(drive(detector(), events)) == []


def nightly(runs: int, minutes: float, every: float, start: float = NIGHT_NY) -> list[list[UsageEvent]]:
    return [ny_loop(start + i * every, minutes=minutes, session=f"s_nightly_{i}", seed=i, prefix=f"n{i}")
            for i in range(runs)]


def test_short_scheduled_agent_runs_do_not_fire() -> None:
    """An agent run every 30 min for 8 min: periodic and growing, but never long enough to be a runaway."""
    assert firing(drive(detector(), merge(*nightly(16, minutes=8, every=1800)))) == []


def test_scheduled_agent_with_consistent_cost_is_learned_and_a_runaway_run_still_fires() -> None:
    runs = nightly(12, minutes=20, every=HOUR)
    long_start = NIGHT_NY + 12 * HOUR
    runaway = ny_loop(long_start, minutes=120, session="s_nightly_runaway", seed=99, prefix="rw")
    p = RunawayLoopParams()
    found = drive(detector(), merge(*runs, runaway))
    by_run = {f"s_nightly_{i}": firing(found, f"s_nightly_{i}") for i in range(12)}
    # No history yet: the first runs look exactly like runaways and are reported ...
    assert all(by_run[f"s_nightly_{i}"] for i in range(p.min_runs))
    # ... once min_runs runs of consistent cost are known, the schedule is routine.
    assert all(by_run[f"s_nightly_{i}"] == [] for i in range(p.min_runs, 12))
    late = firing(found, "s_nightly_runaway")
    assert late, "a run of the same agent going far past its usual cost fires"
    typical = sum(price(e) for e in runs[5])
    assert late[0].evidence["typical_run_cost_usd"] == pytest.approx(typical, rel=0.1)
    assert late[0].evidence["cost_so_far_usd"] > p.run_cost_factor * late[0].evidence["typical_run_cost_usd"]
    assert late[0].evidence["cost_so_far_usd"] < 1.5 * p.run_cost_factor * late[0].evidence["typical_run_cost_usd"]
    assert late[0].ts - long_start < 60 * 60
    # And the runaway did not become the agent's new normal.
    det = detector()
    drive(det, merge(*runs, runaway, *nightly(2, minutes=20, every=HOUR, start=long_start + 4 * HOUR)))
    agent = det.state.agents[f"{NY}\x1fshp_agent_step"]
    assert agent.cost.mean == pytest.approx(typical, rel=0.1)


def test_cheap_loop_below_min_at_risk_does_not_fire() -> None:
    cheap = ny_loop(TUESDAY_1100_NY, minutes=60, model="gpt-4o-mini", growth=(0, 1))
    assert firing(drive(detector(), cheap)) == []


def test_quiet_runs_are_forgotten_and_snapshot_restores() -> None:
    det = detector()
    events = ny_loop(FRIDAY_1930_NY, minutes=30)
    half = len(events) // 2
    a = drive(det, events[:half], tail_s=0)
    clone = detector()
    clone.restore(det.snapshot())
    assert clone.snapshot() == det.snapshot()
    b1 = drive(det, events[half:])
    b2 = drive(clone, events[half:])
    assert [f.evidence for f in b1] == [f.evidence for f in b2]
    assert firing(a + b1)
    assert len(det.state.runs) == 0 and len(det.state.incidents) == 0


def test_snapshot_writes_runs_as_run_records() -> None:
    """Runs live as plain objects but snapshot as RunRecord arrays (the layout of earlier snapshots)."""
    import msgspec

    from detectors.runaway_loop import RunRecord

    det = detector()
    drive(det, ny_loop(FRIDAY_1930_NY, minutes=20), tail_s=0)
    (key, run), = det.state.runs.items()
    raw = msgspec.msgpack.decode(det.snapshot())
    record = msgspec.convert(raw["runs"][key], RunRecord)
    assert msgspec.structs.astuple(record) == tuple(getattr(run, f) for f in RunRecord.__struct_fields__)
    assert run.n > 15 and run.shape == "shp_agent_step"
    clone = detector()
    clone.restore(det.snapshot())
    assert clone.snapshot() == det.snapshot()
    assert type(clone.state.runs[key]) is type(run)


def test_firing_run_counts_turns_and_still_escalates_on_cost() -> None:
    """A firing run near the score ceiling is only counted on most turns; cost growth still re-emits."""
    det = detector()
    agent = ny_loop(FRIDAY_1930_NY, minutes=150)
    found = drive(det, agent, tail_s=0)
    fired = firing(found)
    assert len(fired) >= 3
    assert fired[-1].score > 0.9, "the score is within score_step of 1: further turns are only counted"
    (inc,) = det.state.incidents.values()
    assert inc.turns == len(agent) and inc.last == agent[-1].t


def test_late_turns_within_lateness_keep_the_loop_visible() -> None:
    agent = ny_loop(FRIDAY_1930_NY, minutes=40, period=20.0)
    rng = random.Random(9)
    shuffled = sorted(agent, key=lambda e: e.t + rng.uniform(0.0, 25.0))
    fired = firing(drive(detector(), shuffled))
    assert fired and fired[0].ts - FRIDAY_1930_NY <= 20 * 60


def test_days_of_background_stay_silent() -> None:
    events = background(days=3.0, seed=8, start=FRIDAY_1930_NY - 2 * DAY, rate_per_min=20.0)
    assert firing(drive(detector(), events)) == []


def test_rules_file_lists_every_parameter_at_its_default() -> None:
    from pathlib import Path

    import yaml

    from sentinel.rules import load_rules

    path = Path(__file__).resolve().parents[2] / "rules"
    data = yaml.safe_load((path / "detectors" / "runaway_loop.yaml").read_text())
    assert set(RunawayLoopParams.model_fields) <= set(data)
    assert load_rules(path).detectors["runaway_loop"].params == RunawayLoopParams()
