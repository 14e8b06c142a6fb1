"""retry_storm on labelled synthetic streams: amplification and retry-cost jumps fire, their negatives do not."""

from __future__ import annotations

import random
from typing import Any

from detectors.retry_storm import RetryStorm, RetryStormParams
from sentinel.events import UsageEvent
from sentinel.rules import load_rules
from tests.contract.streams.retry_storm import feature_traffic
from tests.synth import DAY, HOUR, T0, Factory, background, firing, merge
from tests.synth import run_detector as run

KEY = "key_alpha_7|agent"
STORM = (T0 + 10 * HOUR, T0 + 10 * HOUR + 40 * 60)


def make(**params: Any) -> RetryStorm:
    return RetryStorm(RetryStormParams(**params), load_rules(None).context())


def test_stacked_retries_fire_within_minutes_with_status_codes_and_cost() -> None:
    det = make()
    evs = feature_traffic(T0, T0 + 14 * HOUR, storm=STORM)
    out = run(det, evs, until=T0 + 15 * HOUR)
    fired = firing(out)
    assert fired and {f.entity_id for f in fired} == {KEY}
    x = fired[0]
    assert STORM[0] <= x.ts <= STORM[0] + 6 * 60, "fires within the first window of the storm"
    assert x.entity_type == "feature" and x.api_key_id == "key_alpha_7" and x.tenant_id == "t_alpha"
    ev = x.evidence
    assert ev["amplification"] >= 3.0 and ev["baseline_amplification"] < 1.1
    assert ev["max_attempts_per_request"] >= 6
    assert ev["logical_requests"] >= 2 and ev["retried_share"] > 0.8
    assert ev["retries_per_retried_request"] >= 2.0 and ev["retried_requests"] >= 2
    assert fired[-1].evidence["peak_amplification"] > 8.0
    assert set(ev["status_counts"]) == {"503", "429", "500"}
    assert sum(ev["status_counts"].values()) >= ev["retried_attempts"] - ev["logical_requests"]
    assert ev["retry_usd_per_day"] > 5.0
    assert x.risk_usd_per_hour == round(ev["retry_usd_per_day"] / 24.0, 4)
    assert set(x.signals) == {"amplification", "retried_share", "retry_cost"}
    assert x.score == round(sum(x.signals.values()), 4) and x.score >= 0.5
    assert fired[-1].score >= 0.75 and "page" in fired[-1].actions, "escalates as the storm's cost builds up"
    assert det.is_warm(KEY)
    # Ends: one resolved finding of the same incident, within resolve_after_s + a window of the storm's end.
    resolved = [f for f in out if f.status == "resolved"]
    assert len(resolved) == 1 and resolved[0].first_seen == x.first_seen
    assert STORM[1] + 1800 <= resolved[0].ts <= STORM[1] + 1800 + 360
    assert resolved[0].evidence["retry_usd_since_first_seen"] > ev["retry_usd_in_window"]
    assert len(fired) <= 3, "one incident, a few escalations, not one finding per event"


def test_steady_single_retries_stay_silent() -> None:
    evs = feature_traffic(T0, T0 + 1.5 * DAY, retry_p=0.05)
    assert not firing(run(make(), evs))


def test_background_with_a_storm_names_only_the_stormy_key() -> None:
    evs = merge(background(days=0.7, seed=21), feature_traffic(T0, T0 + 0.7 * DAY, storm=STORM))
    out = firing(run(make(), evs))
    assert {f.entity_id for f in out} == {KEY}


def test_cold_key_fires_only_on_stacked_retries() -> None:
    # No history: 2 attempts per request is not judged, 9 is absolute.
    start = T0 + 8 * HOUR
    doubles = feature_traffic(start, start + 600, storm=(start, start + 600), storm_attempts=2, key="key_cold")
    assert not run(make(), doubles)
    nines = feature_traffic(start, start + 600, storm=(start, start + 600), storm_attempts=9, key="key_cold")
    det = make()
    out = firing(run(det, nines))
    assert out and out[0].entity_id == "key_cold|agent"
    assert not det.is_warm("key_cold|agent")
    assert out[0].evidence["baseline_windows"] == 0


def test_gateway_resetting_attempt_numbers_still_counts_by_request_id() -> None:
    # Every attempt says attempt=1 (the gateway restarts its count per SDK retry): request_id tells.
    f = Factory("reset")
    evs: list[UsageEvent] = []
    for i in range(40):
        for a in range(4):
            evs.append(f.event(T0 + i * 10.0 + a, api_key_id="key_reset", feature="chat", request_id=f"rq{i}",
                               attempt=1, status=200 if a == 3 else 502))
    out = firing(run(make(), evs))
    assert out and out[0].evidence["amplification"] >= 3.0
    assert out[0].evidence["max_attempts_per_request"] == 4
    assert out[0].evidence["status_counts"] == {"502": out[0].evidence["status_counts"]["502"]}


def test_without_request_id_the_attempt_field_counts() -> None:
    f = Factory("noid")
    evs = [f.event(T0 + i * 10.0 + a, api_key_id="key_noid", feature="chat", request_id=None, attempt=a + 1,
                   status=200 if a == 2 else 429) for i in range(40) for a in range(3)]
    evs.sort(key=lambda e: e.t)
    out = firing(run(make(), evs))
    assert out and out[0].evidence["amplification"] >= 3.0
    assert out[0].evidence["status_counts"].keys() == {"429"}


def test_retry_cost_jump_fires_without_an_amplification_jump() -> None:
    # Amplification stays ~1.1-1.3 (under min_excess), but the retried attempts turn huge (expensive).
    rng = random.Random(8)
    f = Factory("cost")
    evs: list[UsageEvent] = []
    t, i = T0, 0
    end = T0 + 12 * HOUR
    jump = T0 + 10 * HOUR
    while t < end:
        i += 1
        retry = rng.random() < (0.45 if t >= jump else 0.1)
        big = t >= jump
        evs.append(f.event(t, api_key_id="key_cost", feature="rag", request_id=f"c{i}", status=500 if retry else 200,
                           output_tokens=200))
        if retry:
            evs.append(f.event(t + 2.0, api_key_id="key_cost", feature="rag", request_id=f"c{i}", attempt=2,
                               input_tokens=60_000 if big else 800, output_tokens=4000 if big else 200))
        t += 10.0
    det = make()
    out = firing(run(det, evs))
    assert out, "retry $/day jumped ~100x"
    x = out[0]
    assert x.ts >= jump
    assert x.evidence["amplification"] - x.evidence["baseline_amplification"] < 0.5
    assert x.evidence["retry_usd_per_day"] >= 4 * x.evidence["baseline_retry_usd_per_day"]
    # The same stream without the price jump is quiet.
    cheap = [e for e in evs if e.input_tokens != 60_000]
    assert not firing(run(make(), cheap))


def test_one_retried_request_is_not_a_storm() -> None:
    # 9 attempts on one request per 10 minutes: 8 extra attempts per window, under min_extra_attempts.
    evs = feature_traffic(T0, T0 + 8 * HOUR, period_s=600.0, storm=(T0 + 6 * HOUR, T0 + 8 * HOUR), key="key_slow")
    assert not firing(run(make(), evs))
    assert firing(run(make(min_extra_attempts=5), evs))


def rate_limit_blip(start: float, minutes: float, *, period_s: float = 5.0) -> list[UsageEvent]:
    """Every request retried once after a 429 (normal backoff, no stacking)."""
    f = Factory("blip")
    out = []
    for i in range(int(minutes * 60 / period_s)):
        t = start + i * period_s
        out.append(f.event(t, api_key_id="key_alpha_7", feature="agent", request_id=f"b{i}", status=429,
                           output_tokens=0, input_tokens=20_000))
        out.append(f.event(t + 2.0, api_key_id="key_alpha_7", feature="agent", request_id=f"b{i}", attempt=2,
                           input_tokens=20_000, output_tokens=1500))
    return out


def test_brief_rate_limit_blip_is_not_a_storm() -> None:
    normal = feature_traffic(T0, T0 + 12 * HOUR)
    blip = rate_limit_blip(T0 + 10 * HOUR, minutes=5)
    out = firing(run(make(), merge(normal, blip)))
    assert not out, [(f.title, f.signals) for f in out]


def test_lasting_flood_of_single_retries_fires_on_retry_cost() -> None:
    normal = feature_traffic(T0, T0 + 12 * HOUR)
    flood = rate_limit_blip(T0 + 10 * HOUR, minutes=40, period_s=15.0)
    out = firing(run(make(), merge(normal, flood)))
    assert out and out[0].entity_id == KEY
    x = out[0]
    assert T0 + 10 * HOUR + 900 <= x.ts <= T0 + 10 * HOUR + 1500, "after min_cost_duration_s of jumping cost"
    assert x.evidence["retries_per_retried_request"] < 1.5
    assert x.evidence["retry_usd_per_day"] >= 4 * x.evidence["baseline_retry_usd_per_day"]


def test_state_is_bounded_and_request_ids_expire() -> None:
    det = make(max_keys=100, request_ttl_s=120.0)
    f = Factory("many")
    evs = [f.event(T0 + i * 0.5, api_key_id=f"key_{i % 7}", feature="f", request_id=f"rid{i}") for i in range(2000)]
    run(det, evs)
    assert det.tracked_keys() <= 100
    assert len(det.state.requests) + len(det.state.requests_old) <= 50
    assert det.evicted_keys() == 0, "request ids dropped at the cap are not entity keys"
    assert det.state.request_stats.evicted > 0
    end = T0 + 2000 * 0.5
    det.tick(end + 61.0)  # half the TTL: the older generation goes
    det.tick(end + 200.0)  # the whole TTL: both go
    assert not det.state.requests and not det.state.requests_old
    assert det.tracked_keys() == 7
