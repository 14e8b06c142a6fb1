"""quota_burn on labelled synthetic spend: each tier, notices, exhaustion, and the negative cases of the issue.

Spend is generated as one event a minute (``cost_usd`` set, +-10 %) at a rate
given as a multiple of the budget's sustainable rate (``limit / period``).
November 2026 has 30 days, so a $3000 monthly budget is sustainable at
$100/day; T0 (Monday 2026-11-02 00:00 UTC) is day 2 of that month.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from detectors.base import BudgetInfo, DetectorContext, Finding
from detectors.quota_burn import QuotaBurn, QuotaBurnParams
from sentinel.events import UsageEvent
from sentinel.rules import PricesFile, RuleSet, TenantRules, TenantsFile
from tests.contract.streams.spend_spike import PRICES
from tests.synth import DAY, HOUR, T0, Factory, merge

MINUTE = 60.0
MONTH_START = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
MONTHLY = BudgetInfo("acme-monthly", "tenant", "t_acme", "month", limit_usd=3000.0)
SUSTAIN_MONTH = 3000.0 / (30 * DAY) * HOUR  # $/h
DAILY = BudgetInfo("acme-daily", "tenant", "t_acme", "day", limit_usd=24.0)


def context(*budgets: BudgetInfo) -> DetectorContext:
    tenants = TenantsFile(tenants={"t_ny": TenantRules(timezone="America/New_York")})
    ctx = RuleSet(tenants=tenants, prices=PricesFile(models=PRICES)).context()
    return DetectorContext(calendar=ctx.calendar, prices=ctx.prices, tenants=ctx.tenants, budgets=budgets)


def detector(*budgets: BudgetInfo, **params: object) -> QuotaBurn:
    return QuotaBurn(QuotaBurnParams.model_validate(params), context(*budgets))


def spend(start: float, hours: float, usd_per_hour: float | Callable[[float], float], *, seed: int = 1,
          tenant: str = "t_acme", key: str = "k_acme_1", step: float = MINUTE, prefix: str = "sp",
          **kw: object) -> list[UsageEvent]:
    rng = random.Random(seed)
    f = Factory(prefix)
    out = []
    t = start
    end = start + hours * HOUR
    while t < end:
        rate = usd_per_hour(t) if callable(usd_per_hour) else usd_per_hour
        if rate > 0:
            out.append(f.event(t, tenant_id=tenant, api_key_id=key, cost_usd=rate * step / HOUR * rng.uniform(0.9, 1.1),
                               **kw))
        t += step
    return out


def run(det: QuotaBurn, events: list[UsageEvent], extra_s: float = 2 * HOUR) -> list[Finding]:
    out: list[Finding] = []
    next_tick: float | None = None
    for ev in events:
        t = ev.t
        if next_tick is None:
            next_tick = (t // 60.0 + 1) * 60.0
        while t >= next_tick:
            out.extend(det.tick(next_tick) or [])
            next_tick += 60.0
        out.extend(det.update(ev) or [])
    if next_tick is not None:
        end = next_tick + extra_s
        while next_tick < end:
            out.extend(det.tick(next_tick) or [])
            next_tick += 60.0
    return out


def alerts(findings: list[Finding]) -> list[Finding]:
    """Firing findings that are real alerts (not info notices)."""
    return [f for f in findings if f.status == "firing" and f.severity != "info"]


def notices(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.status == "firing" and f.severity == "info"]


def spent_until(events: list[UsageEvent], t: float) -> float:
    """Spend of the events before ``t`` (a tick at ``t`` runs before the events stamped ``t``)."""
    return sum(e.cost_usd or 0.0 for e in events if e.t < t)


# -- tiers --------------------------------------------------------------------------------------------


def test_page_fast_on_burst_once_ahead_of_pace() -> None:
    burst = MONTH_START + 9 * DAY + 12 * HOUR
    events = merge(spend(MONTH_START, 9 * 24 + 12, 0.9 * SUSTAIN_MONTH),
                   spend(burst, 2, 40 * SUSTAIN_MONTH, seed=2, prefix="burst"),
                   spend(burst + 2 * HOUR, 24, 0.9 * SUSTAIN_MONTH, seed=3, prefix="after"))
    findings = run(detector(MONTHLY), events)
    pages = alerts(findings)
    assert pages, "no page"
    first = pages[0]
    assert burst < first.ts <= burst + 45 * MINUTE
    ev = first.evidence
    assert ev["tier"] == "page_fast"
    assert first.score == pytest.approx(0.9)
    assert "page" in first.actions
    fast = ev["burn_rates"]["page_fast"]
    assert fast["long_window_s"] == 3600 and fast["short_window_s"] == 300
    assert fast["long_burn"] >= 14.4 and fast["short_burn"] >= 14.4
    assert ev["spent"] == pytest.approx(spent_until(events, first.ts), rel=1e-6)
    assert ev["remaining"] == pytest.approx(3000.0 - ev["spent"], abs=1e-3)
    assert ev["spent_fraction"] >= ev["period_elapsed_fraction"]
    eta = datetime.fromisoformat(ev["projected_exhaustion"].replace("Z", "+00:00")).timestamp()
    assert eta == pytest.approx(first.ts + ev["remaining"] / (ev["rate_per_hour"] / HOUR), abs=1.0)
    assert ev["exhausts_before_period_end"] is True
    assert first.risk_usd_per_hour == pytest.approx(ev["rate_per_hour"] - SUSTAIN_MONTH, rel=1e-3)
    # Burn falls back: one incident, resolved after the burst (the ticket tier keeps it open a few hours).
    resolved = [f for f in findings if f.status == "resolved"]
    assert len(resolved) == 1 and resolved[0].first_seen == first.first_seen
    assert burst + 3 * HOUR < resolved[0].ts <= burst + 11 * HOUR
    assert all(f.first_seen == first.first_seen for f in pages)


def test_page_slow_without_fast_page() -> None:
    burst = MONTH_START + 9 * DAY
    events = merge(spend(MONTH_START, 9 * 24, 0.9 * SUSTAIN_MONTH),
                   spend(burst, 12, 8 * SUSTAIN_MONTH, seed=2, prefix="burst"))
    findings = run(detector(MONTHLY), events)
    got = alerts(findings)
    # Once ahead of pace the ticket tier (1x over 3 d and 6 h) opens the incident; the page escalates it.
    assert [f.evidence["tier"] for f in got] == ["ticket", "page_slow"]
    page = got[1]
    assert page.score == pytest.approx(0.8) and page.first_seen == got[0].first_seen
    slow = page.evidence["burn_rates"]["page_slow"]
    assert slow["long_burn"] >= 6.0 and slow["short_burn"] >= 6.0
    assert page.evidence["burn_rates"]["page_fast"]["long_burn"] < 14.4
    assert burst + 3 * HOUR <= page.ts <= burst + 8 * HOUR


def test_ticket_on_steady_overspend_after_a_week_of_watching() -> None:
    """1.25x for a week: the ticket tier (1x over 7 d and 6 h) is judged once the week has been seen."""
    events = spend(MONTH_START, 9 * 24, 1.25 * SUSTAIN_MONTH)
    findings = run(detector(MONTHLY), events)
    got = alerts(findings)
    assert got
    assert {f.evidence["tier"] for f in got} == {"ticket"}
    assert got[0].actions == ["notify"]
    assert got[0].score == pytest.approx(0.55)
    assert MONTH_START + 7 * DAY <= got[0].ts <= MONTH_START + 7 * DAY + 2 * MINUTE
    ticket = got[0].evidence["burn_rates"]["ticket"]
    assert ticket["long_window_s"] == 604800 and ticket["long_burn"] == pytest.approx(1.25, rel=0.02)
    # Without the weekly window (the workbook's 3 days) it opens after 3 days.
    early = alerts(run(detector(MONTHLY, ticket_long_s=259200.0), events))
    assert early and MONTH_START + 3 * DAY <= early[0].ts <= MONTH_START + 3 * DAY + 2 * MINUTE


def test_weekday_heavy_spend_within_a_budget_sized_for_the_week_is_silent() -> None:
    """B2B traffic watched from a Monday: weekends at a tenth of weekdays, budget at 1.3x the month's spend.

    Weekdays then run at 1.04x the budget's pace: a 3-day ticket window (the workbook's) opens a
    ticket on the first Wednesday; the 7-day window sees the week and stays quiet.
    """
    def weekly(t: float) -> float:
        weekday = int(((t - T0) // DAY) % 7) < 5
        return SUSTAIN_MONTH / 1.3 * 7 / 5.2 * (1.0 if weekday else 0.1)

    events = spend(T0, 26 * 24, weekly)
    assert not alerts(run(detector(MONTHLY), events))
    assert [f.evidence["tier"] for f in alerts(run(detector(MONTHLY, ticket_long_s=259200.0), events))] == ["ticket"]


def test_daily_budget_burst_pages_and_resolves_when_burn_falls_back() -> None:
    burst = T0 + 10 * HOUR
    events = merge(spend(T0, 24, 0.5), spend(burst, 0.5, 30.0, seed=2, prefix="burst"))
    findings = run(detector(DAILY), events)
    pages = alerts(findings)
    assert pages and pages[0].evidence["tier"] == "page_fast"
    assert pages[0].ts <= burst + 20 * MINUTE
    assert pages[0].evidence["burn_rates"]["page_fast"]["long_window_s"] == 120
    resolved = [f for f in findings if f.status == "resolved" and f.first_seen == pages[0].first_seen]
    assert len(resolved) == 1
    assert burst + 90 * MINUTE < resolved[0].ts <= burst + 120 * MINUTE  # an hour after the last active tier


# -- notices and exhaustion ---------------------------------------------------------------------


def test_consumption_notices_once_per_period_as_info() -> None:
    events = spend(T0, 3 * 24, 0.9 * 24.0 / 24.0)
    findings = run(detector(DAILY), events)
    assert not alerts(findings)
    got = notices(findings)
    assert [f.evidence["notice_fraction"] for f in got] == [0.5, 0.8] * 3
    for day in range(3):
        on_day = [f for f in got if T0 + day * DAY <= f.ts < T0 + (day + 1) * DAY]
        assert len(on_day) == 2
        half = on_day[0]
        assert half.evidence["spent"] >= 12.0 and half.evidence["spent"] - 12.0 < 0.05
        assert half.title == "Budget acme-daily has used 50% of its daily limit"
        assert half.first_seen == half.ts
    assert len({(f.first_seen, f.entity_id) for f in got}) == len(got), "distinct alert identities"
    assert {f.entity_id for f in got} == {"acme-daily/notice-50", "acme-daily/notice-80"}
    # Each notice is its own alert, resolved when its day rolls over (the ticks run on past the last day).
    resolved = [f for f in findings if f.status == "resolved"]
    assert sorted((f.entity_id, f.ts) for f in resolved) == sorted(
        [(f"acme-daily/notice-{p}", T0 + d * DAY) for d in (1, 2, 3) for p in (50, 80)])


def test_exhausted_alert_then_renewed_at_period_end() -> None:
    events = spend(T0, 2 * 24, 1.5)  # $36/day against $24
    findings = run(detector(DAILY), events)
    exhausted = [f for f in findings if f.status == "firing" and "exhausted" in f.title]
    assert len(exhausted) == 2
    first = exhausted[0]
    assert first.severity is None and first.score == pytest.approx(0.85)
    assert first.actions == ["notify", "page"]
    assert first.evidence["spent"] >= 24.0 and first.evidence["remaining"] == 0.0
    assert T0 + 15.5 * HOUR <= first.ts <= T0 + 16.5 * HOUR
    assert first.entity_id == "acme-daily/exhausted"
    renewed = [f for f in findings if f.status == "resolved" and f.first_seen == first.first_seen]
    assert len(renewed) == 1 and renewed[0].ts == T0 + DAY and renewed[0].entity_id == "acme-daily/exhausted"
    # 50 % and 80 % notices each day, and no 100 % notice besides the exhausted alert.
    assert [f.evidence["notice_fraction"] for f in notices(findings)] == [0.5, 0.8, 0.5, 0.8]


def test_token_budget_on_one_api_key() -> None:
    budget = BudgetInfo("tok-daily", "api_key", "k_tok", "day", limit_tokens=1_000_000)
    f = Factory("tok")
    mine = [f.event(T0 + 3600 + i * 30.0, api_key_id="k_tok", tenant_id="t_tok", input_tokens=8000,
                    output_tokens=2000, model="gpt-4o") for i in range(120)]
    other = [f.event(T0 + 3600 + i * 30.0 + 1, api_key_id="k_other", tenant_id="t_tok", input_tokens=8000,
                     output_tokens=2000) for i in range(120)]
    det = detector(budget)
    findings = run(det, merge(mine, other))
    ex = [x for x in findings if x.status == "firing" and "exhausted" in x.title]
    assert len(ex) == 1
    e = ex[0]
    assert e.ts == mine[99].t  # the 100th call reaches 1M tokens
    assert e.evidence["unit"] == "tokens" and e.evidence["spent"] == 1_000_000
    assert e.api_key_id == "k_tok" and e.tenant_id == "t_tok" and e.entity_type == "budget"
    assert e.risk_usd_per_hour > 0.0  # tokens priced from the events' cost
    assert det.tracked_keys() == 1


def test_windows_scale_with_the_period() -> None:
    weekly = BudgetInfo("acme-weekly", "tenant", "t_acme", "week", limit_usd=700.0)
    events = spend(T0, 30, 30.0)
    findings = run(detector(weekly), events)
    got = alerts(findings)
    assert got
    rates = got[0].evidence["burn_rates"]
    assert rates["page_fast"]["long_window_s"] == pytest.approx(840.0)
    assert rates["page_fast"]["short_window_s"] == pytest.approx(70.0)
    assert rates["page_slow"]["long_window_s"] == pytest.approx(5040.0)
    assert rates["ticket"]["long_window_s"] == pytest.approx(141120.0)


def test_period_follows_the_tenant_time_zone() -> None:
    budget = BudgetInfo("ny-daily", "tenant", "t_ny", "day", limit_usd=10.0)
    # 04:00-06:00 UTC spans local midnight in New York (05:00 UTC in November).
    events = spend(T0 + 4 * HOUR, 2, 6.0, tenant="t_ny")
    det = detector(budget)
    findings = run(det, events, extra_s=0.0)
    half = notices(findings)
    # $6 before local midnight is 60 % of Sunday's budget; Monday starts again from 0 and reaches 50 % too.
    assert [f.evidence["period_start"] for f in half] == ["2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00"]
    assert half[0].ts < T0 + 5 * HOUR <= half[1].ts
    st = det.state.budgets["ny-daily"]
    assert st.start == T0 + 5 * HOUR
    assert st.spent == pytest.approx(spent_until(events, T0 + 6 * HOUR) - spent_until(events, T0 + 5 * HOUR - 1))


def test_late_event_of_the_previous_period_is_not_charged_to_this_one() -> None:
    f = Factory("late")
    det = detector(DAILY)
    det.update(f.event(T0 + DAY + 10.0, tenant_id="t_acme", cost_usd=1.0))
    det.update(f.event(T0 + DAY - 5.0, tenant_id="t_acme", cost_usd=5.0))
    assert det.state.budgets["acme-daily"].spent == pytest.approx(1.0)


# -- negatives ---------------------------------------------------------------------------------------


def test_steady_spend_at_80_percent_of_pace_is_silent() -> None:
    def diurnal(t: float) -> float:
        hour = ((t - MONTH_START) % DAY) / HOUR
        return 0.8 * SUSTAIN_MONTH * (1.5 if 8 <= hour < 20 else 0.5)

    events = spend(MONTH_START, 14 * 24, diurnal)
    findings = run(detector(MONTHLY), events)
    assert not alerts(findings)
    daily = spend(T0, 4 * 24, 0.8)
    assert not alerts(run(detector(DAILY), daily))


def test_short_large_batch_within_pace_is_silent() -> None:
    """5 % of the month's budget in 20 minutes, while the budget is at half its pace."""
    batch = MONTH_START + 10 * DAY + 14 * HOUR
    events = merge(spend(MONTH_START, 12 * 24, 0.5 * SUSTAIN_MONTH),
                   spend(batch, 1 / 3, 150.0 * 3, seed=2, prefix="batch"))
    assert not alerts(run(detector(MONTHLY), events))
    # The pure workbook rules (no pace gate) would have paged on it.
    assert alerts(run(detector(MONTHLY, pace_gate=0.0), events))


# -- state -------------------------------------------------------------------------------------------------


def test_warm_up_and_snapshot_round_trip() -> None:
    det = detector(DAILY)
    assert not det.is_warm("acme-daily")
    events = spend(T0, 3, 0.5)
    run(det, events[:2], extra_s=0.0)
    assert not det.is_warm("acme-daily")
    run(det, events[5:], extra_s=0.0)
    assert det.is_warm("acme-daily")
    blob = det.snapshot()
    other = detector(DAILY)
    other.restore(blob)
    assert other.snapshot() == blob
    assert len(blob) < 4096  # the snapshot of one budget: its one-minute buckets with spend


def test_budget_removed_from_rules_is_dropped() -> None:
    det = detector(DAILY)
    run(det, spend(T0, 1, 0.5), extra_s=0.0)
    assert det.tracked_keys() == 1
    again = detector()
    again.restore(det.snapshot())
    again.tick(T0 + 2 * HOUR)
    assert again.tracked_keys() == 0


def test_rules_file_lists_every_parameter_at_its_default() -> None:
    from pathlib import Path

    import yaml

    from sentinel.rules import load_rules

    path = Path(__file__).resolve().parents[2] / "rules"
    data = yaml.safe_load((path / "detectors" / "quota_burn.yaml").read_text())
    assert set(QuotaBurnParams.model_fields) <= set(data)
    assert load_rules(path).detectors["quota_burn"].params == QuotaBurnParams()


def test_watching_from_mid_period_counts_pace_from_the_first_event() -> None:
    """No snapshot from before: spend before day 16 is unknown, so pace and spend both start at the first event."""
    start = MONTH_START + 16 * DAY
    events = spend(start, 30, 8.0 * SUSTAIN_MONTH)
    got = alerts(run(detector(MONTHLY), events))
    assert got and got[0].ts <= start + 6.5 * HOUR
    assert got[0].evidence["tier"] == "page_slow"
    assert got[0].evidence["observed_since"] == "2026-11-17T00:00:00Z"
    assert got[0].evidence["spent_fraction"] < got[0].evidence["period_elapsed_fraction"]
