"""spend_spike on labelled synthetic streams: every positive signal and every negative case of the issue.

Each scenario is a week or more of a key's ordinary traffic (office hours in the
tenant's time zone, a little at night, quieter weekends), then the labelled
episode. The detector is fed through :func:`run`, which ticks every 60 s of
event time like the pipeline.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import msgspec
import pytest

from detectors.base import DetectorContext, Finding
from detectors.spend_spike import SpendSpike, SpendSpikeParams, _encoder
from sentinel.events import UsageEvent
from sentinel.rules import PricesFile, RuleSet, TenantRules, TenantsFile
from tests.contract.streams.spend_spike import PRICES, attack
from tests.synth import DAY, HOUR, T0, Factory, background, merge

MINUTE = 60.0
OPUS = "claude-opus-4-20250514"


def context() -> DetectorContext:
    tenants = TenantsFile(tenants={"t_ny": TenantRules(timezone="America/New_York")})
    return RuleSet(tenants=tenants, prices=PricesFile(models=PRICES)).context()


def detector(**params: object) -> SpendSpike:
    return SpendSpike(SpendSpikeParams.model_validate(params), context())


def feed(det: SpendSpike, events: list[UsageEvent],
         next_tick: float | None = None) -> tuple[list[Finding], float | None]:
    """Events in order, with a tick at every 60 s boundary of event time (as the pipeline does)."""
    out: list[Finding] = []
    for ev in events:
        t = ev.t
        if next_tick is None:
            next_tick = (t // 60.0 + 1) * 60.0
        while t >= next_tick:
            out.extend(det.tick(next_tick) or [])
            next_tick += 60.0
        out.extend(det.update(ev) or [])
    return out, next_tick


def run(det: SpendSpike, events: list[UsageEvent], next_tick: float | None = None) -> list[Finding]:
    """:func:`feed`, then two hours of ticks so that quiet incidents resolve."""
    out, next_tick = feed(det, events, next_tick)
    if next_tick is not None:
        for _ in range(120):
            out.extend(det.tick(next_tick) or [])
            next_tick += 60.0
    return out


def office(weekday_peak: float = 100.0, night: float = 3.0, weekend: float = 10.0,
           offset_h: float = 0.0) -> Callable[[float], float]:
    """Requests per hour: office hours on weekdays, a trickle at night, quieter weekends (local clock)."""

    def rate(t: float) -> float:
        local = t + offset_h * HOUR
        day = int(((local - T0) // DAY) % 7)
        hour = ((local - T0) % DAY) / HOUR
        if day >= 5:
            return weekend if 9 <= hour < 18 else night
        if 9 <= hour < 18:
            return weekday_peak
        if 7 <= hour < 9 or 18 <= hour < 20:
            return weekday_peak * 0.3
        return night

    return rate


def traffic(key: str, start: float, hours: float, rate: Callable[[float], float], *, seed: int,
            tenant: str = "t_corp", ips: tuple[str, ...] = ("10.1.0.5", "10.1.0.6"), ua: str = "corp-app/3.2",
            model: str = "gpt-4o", cost: float = 0.05, input_tokens: int = 3000, output_tokens: int = 300,
            prefix: str | None = None, scale: Callable[[float], float] | None = None) -> list[UsageEvent]:
    """Events of one key: Poisson-like counts per hour from ``rate``, ``cost_usd`` around ``cost``."""
    rng = random.Random(seed)
    f = Factory(prefix or key)
    out = []
    for h in range(int(hours)):
        th = start + h * HOUR
        lam = rate(th) * (scale(th) if scale else 1.0)
        n = max(0, round(rng.gauss(lam, math.sqrt(lam)))) if lam > 0 else 0
        for _ in range(n):
            out.append(
                f.event(th + rng.random() * HOUR, api_key_id=key, tenant_id=tenant, model=model,
                        source_ip=rng.choice(ips), user_agent=ua, input_tokens=input_tokens,
                        output_tokens=output_tokens, cost_usd=cost * rng.uniform(0.8, 1.2))
            )
    out.sort(key=lambda e: e.t)
    return out


def history(days: float = 8.0, seed: int = 1, **kw: object) -> list[UsageEvent]:
    """Two office keys of ``t_corp`` (``k_corp_1`` is the one attacked) for ``days`` days from Monday T0."""
    return merge(
        traffic("k_corp_1", T0, days * 24, office(), seed=seed, **kw),  # type: ignore[arg-type]
        traffic("k_corp_2", T0, days * 24, office(60.0), seed=seed + 100, model="gpt-4o-mini", cost=0.02,
                ips=("10.1.0.7",)),
    )


def firing(findings: list[Finding], key: str | None = None) -> list[Finding]:
    return [f for f in findings if f.status == "firing" and (key is None or f.entity_id == key)]


def after(findings: list[Finding], t: float) -> list[Finding]:
    return [f for f in findings if f.ts >= t]


# -- positives ----------------------------------------------------------------------------------------


def test_llmjacking_burst_fires_within_minutes_with_evidence() -> None:
    start = T0 + 8 * DAY + 2 * HOUR  # Tuesday 02:00 UTC, off-hours
    events = merge(history(8.5), attack(start, minutes=45, api_key="k_corp_1", tenant="t_corp", ip="198.51.100.23",
                                        output_tokens=4000))
    findings = run(detector(), events)
    assert not firing(findings, "k_corp_2")
    assert not [f for f in firing(findings) if f.ts < start]
    hits = firing(findings, "k_corp_1")
    assert hits, "no finding for the stolen key"
    first = hits[0]
    assert first.ts - start <= 5 * MINUTE
    assert first.first_seen >= start - MINUTE
    assert {"enumeration", "novelty", "off_hours"} <= set(first.signals)
    assert first.evidence["new_ips"] == ["198.51.100.23"]
    assert max(f.evidence["models_tried_in_errors"] for f in hits) >= 4
    assert first.attack is not None and first.attack["id"] == "AML.T0034"
    assert all(f.first_seen == first.first_seen for f in hits), "one incident, one first_seen"
    top = max(hits, key=lambda f: (f.score, f.risk_usd_per_hour))
    ev = top.evidence
    assert {"spend", "novelty", "expensive_model", "output_share"} <= set(top.signals)
    assert top.score == pytest.approx(1.0)
    assert ev["ratio"] >= 20.0
    assert ev["window"] in ("15m", "3h")
    assert ev["projected_usd_per_day"] == pytest.approx(ev["observed_usd_per_hour"] * 24.0, rel=1e-3)
    assert ev["top_models"][0][0] == OPUS
    assert ev["off_hours"] is True
    assert ev["new_user_agents"] == ["python-requests/2.31"]
    assert top.risk_usd_per_hour >= 50.0
    assert "revoke" in top.actions and "page" in top.actions
    assert math.isclose(sum(top.signals.values()), top.score, abs_tol=1e-3) or top.score == 1.0
    resolved = [f for f in findings if f.status == "resolved" and f.entity_id == "k_corp_1"]
    assert len(resolved) == 1
    assert resolved[0].first_seen == first.first_seen
    assert resolved[0].ts <= start + 45 * MINUTE + 40 * MINUTE
    assert resolved[0].evidence["spend_during_incident_usd"] > 200.0
    # Escalations, not one finding per event.
    assert len(hits) <= 6


def test_low_and_slow_from_new_ip_at_night_fires() -> None:
    """3-5x the key's usual (daily mean) spend for hours, off-hours, from a new IP, same client and model."""
    base = history(9.0)
    usual_per_h = sum(e.cost_usd or 0.0 for e in base if e.api_key_id == "k_corp_1") / (9 * 24)
    start = T0 + 8 * DAY + 20 * HOUR  # Tuesday 20:00 UTC
    per_event = 0.05
    per_hour = 4.0 * usual_per_h / per_event
    slow = traffic("k_corp_1", start, 8, lambda t: per_hour, seed=9, ips=("203.0.113.50",), prefix="slow")
    findings = run(detector(), merge(base, slow))
    hits = firing(findings, "k_corp_1")
    assert hits, "low-and-slow not caught"
    first = hits[0]
    assert start < first.ts <= start + 3 * HOUR
    assert {"novelty", "off_hours", "spend"} <= set(first.signals)
    assert first.evidence["new_ips"] == ["203.0.113.50"]
    assert first.evidence["ratio"] >= 3.0
    assert not [f for f in firing(findings) if f.ts < start]


def test_low_and_slow_on_flat_key_caught_only_with_new_ip() -> None:
    """A key busy around the clock; +3.5x for 8 hours at night: fires from a new IP, not from its own IPs."""
    def flat(t: float) -> float:
        return 40.0

    base = traffic("k_flat", T0, 10 * 24, flat, seed=3, tenant="t_flat", ips=("10.3.0.1",))
    start = T0 + 9 * DAY + 1 * HOUR
    extra_new = traffic("k_flat", start, 8, lambda t: 140.0, seed=4, tenant="t_flat", ips=("192.0.2.77",),
                        prefix="x")
    extra_own = traffic("k_flat", start, 8, lambda t: 140.0, seed=4, tenant="t_flat", ips=("10.3.0.1",), prefix="x")
    new_ip = firing(run(detector(), merge(base, extra_new)), "k_flat")
    own_ip = firing(run(detector(), merge(base, extra_own)), "k_flat")
    assert new_ip and new_ip[0].ts <= start + 4 * HOUR
    assert new_ip[0].evidence["new_ips"] == ["192.0.2.77"]
    assert 3.0 <= new_ip[0].evidence["ratio"] <= 6.0
    assert not own_ip, [(f.title, f.signals) for f in own_ip]


def test_model_enumeration_alone_fires_without_spend() -> None:
    start = T0 + 8 * DAY + 3 * HOUR
    probe = attack(start, minutes=0.0, api_key="k_corp_1", tenant="t_corp", ip="198.51.100.99")
    findings = run(detector(), merge(history(8.5), probe))
    hits = firing(findings, "k_corp_1")
    assert hits
    f = hits[0]
    assert "enumeration" in f.signals and "spend" not in f.signals
    assert "probing models" in f.title
    assert f.evidence["errors_403_404_15m"] >= 5
    assert f.ts - start <= 2 * MINUTE
    assert f.risk_usd_per_hour < 1.0


def test_enumeration_from_known_ip_in_office_hours_is_not_enough() -> None:
    """A misconfigured deploy: 404s on a few names from the key's own IP, during the day."""
    start = T0 + 8 * DAY + 11 * HOUR
    probe = attack(start, minutes=0.0, api_key="k_corp_1", tenant="t_corp", ip="10.1.0.5", user_agent="corp-app/3.2")
    findings = run(detector(), merge(history(8.5), probe))
    assert not firing(findings, "k_corp_1")


def test_switch_to_most_expensive_model_with_long_outputs_fires() -> None:
    """Usual IP, office hours; the key moves from gpt-4o-mini to the top tier with long outputs (10x spend)."""
    base = traffic("k_mini", T0, 8 * 24 + 10, office(), seed=5, tenant="t_mini", model="gpt-4o-mini", cost=0.05,
                   ips=("10.5.0.1",))
    start = T0 + 8 * DAY + 10 * HOUR
    switch = traffic("k_mini", start, 4, lambda t: 100.0, seed=6, tenant="t_mini", model=OPUS, cost=0.5,
                     output_tokens=6000, ips=("10.5.0.1",), prefix="sw")
    findings = run(detector(), merge([e for e in base if e.t < start], switch))
    hits = firing(findings, "k_mini")
    assert hits
    top = max(hits, key=lambda f: f.score)
    assert {"spend", "expensive_model", "output_share"} <= set(top.signals)
    assert top.evidence["expensive_tier_share_pct"] >= 80
    assert top.evidence["usual_expensive_tier_share_pct"] <= 5
    assert top.evidence["output_share_pct"] >= 50
    assert hits[0].ts - start <= 2 * HOUR


def test_request_rate_signal_on_cheap_flood_from_new_ip() -> None:
    start = T0 + 8 * DAY + 22 * HOUR
    flood = traffic("k_corp_1", start, 2, lambda t: 3000.0, seed=7, ips=("198.51.100.5",), model="gpt-4o-mini",
                    cost=0.004, prefix="fl")
    findings = run(detector(), merge(history(9.0), flood))
    hits = firing(findings, "k_corp_1")
    assert hits
    assert any("rate" in f.signals for f in hits)
    assert any(f.evidence["requests_per_hour"] > 1000 for f in hits)


def test_fast_path_fires_during_warm_up() -> None:
    """A brand-new tenant's key spending $40/min: absolute evidence, no baseline needed."""
    f = Factory("fp")
    start = T0 + 3600.0
    events = [f.event(start + i * 3.0, api_key_id="k_new", tenant_id="t_brand_new", cost_usd=2.0, model=OPUS)
              for i in range(60)]
    det = detector()
    findings = run(det, events)
    hits = firing(findings, "k_new")
    assert hits
    assert not det.is_warm("k_new")
    assert "fast_path" in hits[0].signals
    assert hits[0].score >= 0.9
    assert hits[0].ts - start <= MINUTE
    assert hits[0].evidence["usd_last_minute"] >= 25.0
    assert hits[0].risk_usd_per_hour >= 25.0 * 60 * 0.9


def test_fast_path_limit_is_a_tenant_override() -> None:
    f = Factory("fpo")
    events = [f.event(T0 + i * 3.0, api_key_id="k_big", tenant_id="t_big", cost_usd=2.0) for i in range(60)]
    params = SpendSpikeParams()
    det = SpendSpike(params, context(), {"t_big": params.model_copy(update={"fast_path_usd_per_min": 100.0})})
    assert not firing(run(det, events))
    assert firing(run(detector(), events))


def test_tenant_local_time_decides_off_hours() -> None:
    """Same attack at 16:00 UTC: office hours in UTC, but 11:00 in New York is too; 04:00 UTC is night in NY."""
    def ny_history() -> list[UsageEvent]:
        return traffic("k_ny", T0, 8 * 24 + 12, office(offset_h=-5.0), seed=8, tenant="t_ny", ips=("10.8.0.1",))

    night_ny = T0 + 8 * DAY + 4 * HOUR  # 23:00 in New York
    hits = firing(run(detector(), merge(ny_history(), attack(night_ny, 20, api_key="k_ny", tenant="t_ny"))), "k_ny")
    assert hits and hits[0].evidence["off_hours"] is True
    assert hits[0].evidence["local_time"].endswith("-05:00")
    assert hits[0].evidence["local_time"].startswith("2026-11-09T23:")


# -- negatives --------------------------------------------------------------------------------------


def test_month_end_ramp_with_usual_sources_is_silent() -> None:
    """Last three days of the month at 1.5x, 2x and 3x, office hours, usual IPs and models."""
    ramp_start = T0 + 9 * DAY

    def scale(t: float) -> float:
        if t < ramp_start:
            return 1.0
        return (1.5, 2.0, 3.0, 3.0)[min(3, int((t - ramp_start) // DAY))]

    events = merge(history(13.0), traffic("k_corp_1", ramp_start, 4 * 24, office(), seed=11, scale=scale,
                                          prefix="ramp"))
    assert not firing(run(detector(), events))


def test_monday_ramp_after_quiet_weekend_is_silent() -> None:
    """Weekends near zero; Mondays at 3x the other weekdays."""
    def monday(t: float) -> float:
        return 3.0 if int(((t - T0) // DAY) % 7) == 0 else 1.0

    events = traffic("k_corp_1", T0, 16 * 24, office(weekend=0.0, night=1.0), seed=12, scale=monday)
    assert not firing(run(detector(), events))


def test_new_tenant_onboarding_is_silent() -> None:
    """A new tenant: keys appear over days, traffic grows 2x a day, servers (IPs) added as it grows."""
    start = T0 + 2 * DAY

    def growth(t: float) -> float:
        return min(32.0, float(2.0 ** ((t - start) / DAY))) / 8.0

    keys = []
    for i in range(3):
        ips = tuple(f"172.16.{i}.{j}" for j in range(1, 2 + i))
        keys.append(traffic(f"k_onb_{i}", start + i * DAY, (8 - i) * 24, office(), seed=20 + i, tenant="t_onboard",
                            ips=ips, model=("gpt-4o", "claude-sonnet-4")[i % 2], scale=growth))
    findings = run(detector(), merge(history(10.0), *keys))
    assert not firing(findings), [(f.entity_id, f.title, f.signals) for f in firing(findings)][:3]


def test_key_rotation_is_silent() -> None:
    """The old key stops, a new key takes over the same pattern, sources and model."""
    rotate = T0 + 8 * DAY + 12 * HOUR
    old = [e for e in traffic("k_old", T0, 12 * 24, office(), seed=30, tenant="t_rot", ips=("10.6.0.1",))
           if e.t < rotate]
    new = [e for e in traffic("k_new", T0, 12 * 24, office(), seed=31, tenant="t_rot", ips=("10.6.0.1",))
           if e.t >= rotate]
    det = detector()
    findings = run(det, merge(old, new))
    assert not firing(findings)
    assert det.is_warm("k_new")


def test_nightly_batch_job_is_silent() -> None:
    """The key runs a batch every night at ~02:00 (start jitter +-10 min) from its batch host: 40x its day rate."""
    rng = random.Random(40)
    f = Factory("batch")
    batch = []
    for day in range(12):
        t = T0 + day * DAY + 2 * HOUR + rng.uniform(-600.0, 600.0)
        end = t + rng.uniform(35.0, 50.0) * 60.0
        while t < end:
            batch.append(f.event(t, api_key_id="k_corp_1", tenant_id="t_corp", model="gpt-4o", source_ip="10.1.9.9",
                                 user_agent="batch-runner/1.4", cost_usd=0.08 * rng.uniform(0.8, 1.2)))
            t += rng.uniform(1.0, 2.0)
    findings = run(detector(), merge(history(12.0), batch))
    assert not firing(findings), [(f.entity_id, f.title, f.signals) for f in firing(findings)][:3]


def test_new_ip_at_usual_spend_is_silent() -> None:
    """The office moves to a new VPN egress: every call from a new IP for two days, at the usual volume."""
    move = T0 + 8 * DAY
    old = [e for e in history(10.0) if e.api_key_id != "k_corp_1" or e.t < move]
    new = traffic("k_corp_1", move, 2 * 24, office(), seed=50, ips=("100.64.7.7",), prefix="vpn")
    findings = run(detector(), merge(old, new))
    assert not firing(findings), [(f.title, f.signals) for f in firing(findings)][:3]


def test_benign_background_week_is_silent() -> None:
    assert not firing(run(detector(), background(days=7.0, seed=13)))


# -- state ------------------------------------------------------------------------------------------------


def test_warm_up_and_priors() -> None:
    det = detector()
    run(det, history(4.0))
    assert det.is_warm("k_corp_1")
    assert not det.is_warm("k_unknown")
    cold = detector()
    run(cold, history(1.0))
    assert not cold.is_warm("k_corp_1")


def test_state_is_small_per_key() -> None:
    """Snapshot bytes per warm key (the issue's budget is 300)."""
    events = []
    for i in range(200):
        events.extend(traffic(f"k_many_{i}", T0, 2 * 24, office(20.0), seed=i, tenant=f"t_many_{i % 20}",
                              ips=(f"10.9.{i % 250}.1",)))
    events.sort(key=lambda e: e.t)
    det = detector()
    run(det, events)
    st = det.state
    per_key = len(_encoder.encode(st.keys)) / len(st.keys)
    assert per_key <= 300, per_key


def test_snapshot_restore_mid_incident_continues_identically() -> None:
    start = T0 + 8 * DAY + 2 * HOUR
    events = merge(history(8.5), attack(start, minutes=45, api_key="k_corp_1", tenant="t_corp"))
    cut = next(i for i, e in enumerate(events) if e.t >= start + 10 * MINUTE)
    full = run(detector(), events)
    a = detector()
    head, tick = feed(a, events[:cut])
    b = detector()
    b.restore(a.snapshot())
    assert b.snapshot() == a.snapshot()
    tail = run(b, events[cut:], tick)
    enc = msgspec.json.encode
    assert [enc(f) for f in head + tail] == [enc(f) for f in full]


def test_rules_file_lists_every_parameter_at_its_default() -> None:
    from pathlib import Path

    import yaml

    from sentinel.rules import load_rules

    path = Path(__file__).resolve().parents[2] / "rules"
    data = yaml.safe_load((path / "detectors" / "spend_spike.yaml").read_text())
    assert set(SpendSpikeParams.model_fields) <= set(data)
    assert load_rules(path).detectors["spend_spike"].params == SpendSpikeParams()
