"""cache_collapse on labelled synthetic streams: each cause, each negative of issue 6, and the change detectors."""

from __future__ import annotations

import random
from typing import Any

import pytest
from river import drift

from detectors.base import DetectorContext, Finding
from detectors.cache_collapse import CacheCollapse, CacheCollapseParams
from detectors.changepoint import Cusum, PageHinkley, cusum_down, cusum_up, page_hinkley_update
from sentinel.events import UsageEvent
from sentinel.rules import Price, PricesFile, RuleSet
from tests.contract.streams.cache_collapse import cached_traffic
from tests.synth import HOUR, T0, background, merge

START = T0 + 4 * HOUR
SWITCH = T0 + 14 * HOUR  # 14:00 UTC Monday: the incident starts here in every stream below
TENANT = "t_cache"
WORKLOAD = f"{TENANT}/key_{TENANT}/gpt-4o"  # tenant / api key / family (no feature)
WORKLOAD_KEY = f"{TENANT}\x1fkey_{TENANT}\x1fgpt-4o\x1f"
GPT4O = Price(input=2.5, output=10.0, cached_input=1.25, family="gpt-4o")


def context() -> DetectorContext:
    return RuleSet(prices=PricesFile(models={"gpt-4o": GPT4O})).context()


def detector(**params: Any) -> CacheCollapse:
    return CacheCollapse(CacheCollapseParams(**params), context())


def drive(det: CacheCollapse, events: list[UsageEvent], tail_s: float = 0.0) -> list[Finding]:
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


def firing(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.status == "firing"]


def window(a: float, b: float) -> Any:
    return lambda t: a <= t < b


def hit_ratio(events: list[UsageEvent]) -> float:
    return sum(e.cached_input_tokens for e in events) / sum(e.input_tokens for e in events)


# -- causes ---------------------------------------------------------------------------------------------


def test_model_version_change_is_named_with_extra_dollars_and_resolves_on_recovery() -> None:
    back = SWITCH + 3 * HOUR
    down = window(SWITCH, back)
    ours = cached_traffic(START, 18.0, model=lambda t: "gpt-4o-2024-11-20" if down(t) else "gpt-4o-2024-08-06",
                          ratio=lambda t: 0.0 if down(t) else 0.7)
    found = drive(detector(), merge(background(days=1.0, seed=31), ours))
    assert {(f.entity_type, f.entity_id) for f in found} == {("model", WORKLOAD)}
    fired = firing(found)
    first = fired[0]
    assert 15 * 60 <= first.ts - SWITCH <= 22 * 60
    assert SWITCH <= first.first_seen <= SWITCH + 6 * 60  # the zero-hit share needs a few minutes to cross
    assert len({f.first_seen for f in found}) == 1
    ev = first.evidence
    assert ev["cause"] == "model_version_change"
    assert ev["previous_model"] == "gpt-4o-2024-08-06" and ev["new_model"] == "gpt-4o-2024-11-20"
    assert ev["new_model_hit_ratio"] < 0.05 and ev["new_model_token_share"] > 0.95
    before = [e for e in ours if SWITCH - 6 * HOUR <= e.t < SWITCH]
    recent = [e for e in ours if first.ts - 10 * 60 <= e.t < first.ts]
    assert ev["baseline_hit_ratio"] == pytest.approx(hit_ratio(before), abs=0.02)
    assert ev["hit_ratio"] == pytest.approx(hit_ratio(recent), abs=0.02)
    # Extra $/day, recomputed from the raw events: lost hits x tokens per day x (input - cached) price.
    tokens_per_day = sum(e.input_tokens for e in recent) * 144.0
    expected = (hit_ratio(before) - hit_ratio(recent)) * tokens_per_day * (2.5 - 1.25) / 1e6
    assert ev["extra_usd_per_day"] == pytest.approx(expected, rel=0.25)
    assert first.risk_usd_per_hour == pytest.approx(ev["extra_usd_per_day"] / 24.0)
    assert sum(first.signals.values()) == pytest.approx(first.score)
    resolved = [f for f in found if f.status == "resolved"]
    assert len(resolved) == 1 and found[-1] is resolved[0]
    # Resolved once the recovery has held for recover_s (30 min).
    assert 30 * 60 < resolved[0].ts - back <= 40 * 60
    assert resolved[0].evidence["reason"] == "recovered"


def test_prefix_churn_is_named() -> None:
    """From SWITCH a timestamp lands in the system prompt: every request has a new prefix and misses the cache."""
    churn = window(SWITCH, SWITCH + 2 * HOUR)
    ours = cached_traffic(START, 12.0, ratio=lambda t: 0.0 if churn(t) else 0.7,
                          prefix=lambda t, n: f"pfx_ts_{n}" if churn(t) else "pfx_t_cache_main")
    fired = firing(drive(detector(), ours))
    assert fired and fired[0].entity_id == WORKLOAD
    ev = fired[0].evidence
    assert ev["cause"] == "prefix_churn"
    assert ev["new_prefixes_per_request"] > 0.9 and ev["baseline_new_prefixes_per_request"] < 0.05
    assert 15 * 60 <= fired[0].ts - SWITCH <= 22 * 60


def test_traffic_mix_shift_that_takes_over_is_named() -> None:
    """Same key, model and prompts, but a new uncached job (one new prefix) sends 30x the volume."""
    ours = cached_traffic(START, 12.0)
    extra = cached_traffic(SWITCH, 2.0, seed=8, rate_per_min=240.0, ratio=lambda t: 0.0,
                           prefix=lambda t, n: "pfx_t_cache_bulk", prefix_id="bulk")
    fired = firing(drive(detector(), merge(ours, extra)))
    assert fired and fired[0].entity_type == "model"
    assert fired[0].evidence["cause"] == "traffic_mix"
    assert fired[0].evidence["episode_requests"] >= CacheCollapseParams().mix_min_episode_requests
    assert fired[0].evidence["hit_ratio"] == pytest.approx(0.7 / 31, abs=0.02)


def test_partial_traffic_mix_shift_does_not_fire() -> None:
    """A new uncached job at 3x the volume lowers the ratio, but most of the old requests still hit."""
    ours = cached_traffic(START, 12.0)
    extra = cached_traffic(SWITCH, 2.0, seed=8, rate_per_min=24.0, ratio=lambda t: 0.0,
                           prefix=lambda t, n: "pfx_t_cache_bulk", prefix_id="bulk")
    assert firing(drive(detector(), merge(ours, extra))) == []


def test_collapse_of_one_prefix_hidden_in_its_family_fires_on_the_prefix() -> None:
    main = cached_traffic(START, 12.0)
    side_down = window(SWITCH, SWITCH + HOUR)
    side = cached_traffic(START, 12.0, seed=9, rate_per_min=2.0, ratio=lambda t: 0.0 if side_down(t) else 0.7,
                          prefix=lambda t, n: "pfx_t_cache_side", prefix_id="side")
    found = drive(detector(), merge(main, side))
    fired = firing(found)
    assert {(f.entity_type, f.entity_id) for f in fired} == {("prefix", "pfx_t_cache_side")}
    assert fired[0].tenant_id == TENANT
    assert fired[0].evidence["hit_ratio"] < 0.05 and fired[0].evidence["cause"] == "prefix_not_cached"
    assert [f.status for f in found if f.entity_id == "pfx_t_cache_side"][-1] == "resolved"


def test_a_healthy_client_of_the_same_feature_does_not_mask_a_collapsed_one() -> None:
    """Two api keys share feature "agent": one churns its prefix, the other (a busy healthy job) keeps hitting."""
    churn = window(SWITCH, SWITCH + 2 * HOUR)
    broken = cached_traffic(START, 12.0, tenant="t_two", ratio=lambda t: 0.0 if churn(t) else 0.7,
                            prefix=lambda t, n: f"pfx_ts_{n}" if churn(t) else "pfx_agent", prefix_id="a")
    healthy = cached_traffic(START, 12.0, seed=6, tenant="t_two", rate_per_min=16.0,
                             prefix=lambda t, n: "pfx_agent", prefix_id="b")
    for e in healthy:
        e.api_key_id = "key_t_two_job"
    events = merge(broken, healthy)
    fired = firing(drive(detector(), events))
    assert fired and fired[0].entity_id == "t_two/key_t_two/gpt-4o"
    assert fired[0].evidence["cause"] == "prefix_churn"
    # Per tenant x family alone, the healthy job keeps two thirds of the requests hitting: no collapse to see.
    assert firing(drive(detector(workload_by_key=False), events)) == []


def test_prefix_keys_only_for_workloads_with_several_prefixes() -> None:
    det = detector()
    drive(det, cached_traffic(START, 2.0))
    assert det.state.prefixes == {}, "a one-prefix workload is its prefix"
    assert len(det.state.families) == 1
    drive(det, cached_traffic(START + 2 * HOUR, 1.0, seed=3, prefix=lambda t, n: f"pfx_{n % 3}", prefix_id="m"))
    assert set(det.state.prefixes) == {"pfx_0", "pfx_1", "pfx_2"}


# -- negatives --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("minutes", [5, 9])
def test_brief_dip_that_recovers_does_not_fire(minutes: int) -> None:
    dip = window(SWITCH, SWITCH + minutes * 60)
    ours = cached_traffic(START, 12.0, ratio=lambda t: 0.0 if dip(t) else 0.7)
    assert drive(detector(), ours) == []


def test_a_long_dip_does_fire() -> None:
    dip = window(SWITCH, SWITCH + 25 * 60)
    ours = cached_traffic(START, 12.0, ratio=lambda t: 0.0 if dip(t) else 0.7)
    found = drive(detector(), ours)
    assert [f.status for f in found] == ["firing", "resolved"]


def test_lower_ratio_while_requests_still_hit_does_not_fire() -> None:
    """0.70 -> 0.58: more than min_abs_drop, but the cache still serves every request: no collapse."""
    ours = cached_traffic(START, 12.0, ratio=lambda t: 0.58 if t >= SWITCH else 0.7)
    assert drive(detector(), ours) == []


def test_new_version_that_keeps_its_cache_is_adopted_silently() -> None:
    ours = cached_traffic(START, 12.0, model=lambda t: "gpt-4o-2024-11-20" if t >= SWITCH else "gpt-4o-2024-08-06")
    det = detector()
    assert drive(det, ours) == []
    fam = det.state.families[WORKLOAD_KEY]
    assert fam.model == "gpt-4o-2024-11-20" and fam.alt is None


def test_silent_during_warm_up() -> None:
    """A collapse 20 minutes after a tenant's first request: no baseline to judge it against yet."""
    first = SWITCH - 20 * 60
    ours = cached_traffic(first, 3.0, ratio=lambda t: 0.0 if t >= SWITCH else 0.7)
    det = detector()
    key = WORKLOAD_KEY
    warm_at = None
    out: list[Finding] = []
    for ev in ours:
        out.extend(det.update(ev) or [])
        if warm_at is None and det.is_warm(key):
            warm_at = ev.t
    assert warm_at is not None and warm_at >= first + CacheCollapseParams().warm_minutes * 60
    assert all(f.ts >= warm_at + CacheCollapseParams().min_duration_s for f in out)


# -- resolution and state ---------------------------------------------------------------------------------


def test_resolves_when_traffic_stops() -> None:
    down = window(SWITCH, SWITCH + 10 * HOUR)
    ours = [e for e in cached_traffic(START, 12.0, ratio=lambda t: 0.0 if down(t) else 0.7) if e.t < SWITCH + HOUR]
    found = drive(detector(), ours, tail_s=7 * HOUR)
    assert found[0].status == "firing" and [f.status for f in found].count("resolved") == 1
    assert found[-1].status == "resolved" and found[-1].evidence["reason"] == "no_traffic"
    quiet = CacheCollapseParams().quiet_resolve_s  # silence is not recovery: hours, not minutes
    assert quiet <= found[-1].ts - ours[-1].t <= quiet + 180


def test_new_level_becomes_the_baseline_after_max_incident_s() -> None:
    ours = cached_traffic(START, 16.0, ratio=lambda t: 0.0 if t >= SWITCH else 0.7)
    found = drive(detector(max_incident_s=2 * HOUR), ours)
    assert {f.entity_type for f in found} == {"model"}, "the prefix's own episode is closed silently too"
    assert [f.status for f in found][-1] == "resolved" and [f.status for f in found].count("resolved") == 1
    assert found[-1].evidence["reason"] == "accepted_as_new_baseline"
    assert 2 * HOUR <= found[-1].ts - SWITCH <= 2 * HOUR + 10 * 60


def test_snapshot_restore_mid_incident() -> None:
    down = window(SWITCH, SWITCH + HOUR)
    ours = cached_traffic(START, 12.0, ratio=lambda t: 0.0 if down(t) else 0.7)
    cut = next(i for i, e in enumerate(ours) if e.t >= SWITCH + 30 * 60)
    det = detector()
    drive(det, ours[:cut])
    assert det.state.incidents
    clone = detector()
    clone.restore(det.snapshot())
    a = drive(det, ours[cut:])
    b = drive(clone, ours[cut:])
    assert [(f.status, f.evidence) for f in a] == [(f.status, f.evidence) for f in b]
    assert a[-1].status == "resolved"


# -- change detectors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["both", "up", "down"])
def test_page_hinkley_matches_river(mode: str) -> None:
    rng = random.Random(3)
    data = [rng.gauss(0, 1) for _ in range(400)] + [rng.gauss(2.5, 1) for _ in range(400)]
    data += [rng.gauss(-2.0, 1) for _ in range(400)]
    ref = drift.PageHinkley(min_instances=30, delta=0.005, threshold=20.0, mode=mode)
    ours = PageHinkley()
    got, want = [], []
    for x in data:
        ref.update(x)  # type: ignore[no-untyped-call]
        want.append(ref.drift_detected)
        got.append(page_hinkley_update(ours, x, 30, 0.005, 20.0, mode=mode))
    assert got == want
    assert any(want)


def test_cusum_matches_the_tabular_recurrence() -> None:
    rng = random.Random(4)
    xs = [rng.gauss(0.7, 0.05) for _ in range(50)] + [rng.gauss(0.4, 0.05) for _ in range(50)]
    c = Cusum()
    s = 0.0
    for i, x in enumerate(xs):
        s = max(0.0, s + (0.7 - x) - 0.1)
        assert cusum_down(c, x, 0.7, 0.1, float(i)) == pytest.approx(s)
    assert 50 <= c.since <= 52  # the statistic left zero where the mean shifted
    up = Cusum()
    assert cusum_up(up, 0.9, 0.7, 0.1, 1.0) == pytest.approx(0.1)


def test_rules_file_lists_every_parameter_at_its_default() -> None:
    from pathlib import Path

    import yaml

    from sentinel.rules import load_rules

    path = Path(__file__).resolve().parents[2] / "rules"
    data = yaml.safe_load((path / "detectors" / "cache_collapse.yaml").read_text())
    assert set(CacheCollapseParams.model_fields) <= set(data)
    assert load_rules(path).detectors["cache_collapse"].params == CacheCollapseParams()
