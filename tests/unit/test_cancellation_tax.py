"""cancellation_tax on labelled synthetic streams: a jump in cancelled spend fires, its negatives do not."""

from __future__ import annotations

from typing import Any

from detectors.cancellation_tax import CancellationTax, CancellationTaxParams
from sentinel.rules import load_rules
from tests.contract.streams.cancellation_tax import feature_traffic
from tests.synth import DAY, HOUR, T0, background, firing, merge
from tests.synth import run_detector as run

JUMP = (T0 + DAY + 9 * HOUR, T0 + DAY + 10 * HOUR)


def make(**params: Any) -> CancellationTax:
    return CancellationTax(CancellationTaxParams(**params), load_rules(None).context())


def test_jump_in_cancelled_spend_fires_with_dollars_per_day_lost() -> None:
    det = make()
    evs = feature_traffic(T0, T0 + DAY + 12 * HOUR, jump=JUMP)
    out = run(det, evs, until=T0 + DAY + 13 * HOUR)
    fired = firing(out)
    assert fired and {f.entity_id for f in fired} == {"t_gamma|writer"}
    x = fired[0]
    assert JUMP[0] <= x.ts <= JUMP[0] + 15 * 60, "fires within the first window of the jump"
    assert (x.entity_type, x.tenant_id) == ("feature", "t_gamma")
    ev = x.evidence
    assert ev["feature"] == "writer"
    assert ev["cancelled_share"] > 0.3 and ev["baseline_cancelled_share"] < 0.06
    assert ev["cancelled_share_of_spend"] > 0.3
    assert 0.75 <= ev["billed_output_ratio"] <= 1.3, "the provider billed full outputs"
    assert ev["usd_per_day"] >= 5.0 and ev["usd_per_day"] >= 2 * ev["baseline_usd_per_day"]
    assert abs(ev["excess_usd_per_day"] - (ev["usd_per_day"] - ev["baseline_usd_per_day"])) < 1e-3
    assert x.risk_usd_per_hour == round(ev["excess_usd_per_day"] / 24.0, 4)
    assert ev["cancelled_in_window"] >= 8 and ev["p_value_bound"] <= 1e-4
    assert ev["cancelled_output_tokens_since_first_seen"] > 10_000
    assert [f["feature"] for f in ev["features_involved"]] == ["writer"]
    assert set(x.signals) == {"cancelled_share", "cancelled_spend", "billed_in_full"}
    assert x.score == round(sum(x.signals.values()), 4)
    assert det.is_warm("t_gamma|writer")
    resolved = [f for f in out if f.status == "resolved"]
    assert len(resolved) == 1 and resolved[0].first_seen == x.first_seen
    assert resolved[0].ts >= JUMP[1]
    assert resolved[0].evidence["lost_usd_since_first_seen"] > ev["cancelled_usd_in_window"]
    assert len(fired) <= 4, "one incident, a few escalations, not one finding per event"


def test_two_features_of_a_tenant_are_listed_together() -> None:
    writer = feature_traffic(T0, T0 + DAY + 12 * HOUR, jump=JUMP)
    chat = feature_traffic(T0, T0 + DAY + 12 * HOUR, jump=(JUMP[0] + 1200, JUMP[1]), feature="chat", seed=9,
                           prefix="ct2")
    fired = firing(run(make(), merge(writer, chat)))
    later = [f for f in fired if f.entity_id == "t_gamma|chat"]
    assert later, "the second feature fires too"
    involved = {f["feature"] for f in later[0].evidence["features_involved"]}
    assert involved == {"writer", "chat"}
    assert "writer" in later[0].summary and "chat" in later[0].summary


def test_steady_cancellation_rate_stays_silent() -> None:
    evs = feature_traffic(T0, T0 + 2 * DAY, cancel_p=0.1)
    assert not firing(run(make(), evs))


def test_more_traffic_at_the_same_cancellation_rate_is_not_a_jump() -> None:
    # Daytime triples the traffic: the cancelled $/day triples too, but its share of spend does not move.
    quiet = feature_traffic(T0, T0 + DAY, period_s=30.0, cancel_p=0.08)
    busy = feature_traffic(T0 + DAY, T0 + 1.5 * DAY, period_s=10.0, cancel_p=0.08, seed=12, prefix="busy")
    assert not firing(run(make(), merge(quiet, busy)))


def test_cold_feature_is_not_judged() -> None:
    evs = feature_traffic(T0, T0 + HOUR, cancel_p=0.6)
    det = make()
    assert not run(det, evs)
    assert not det.is_warm("t_gamma|writer")


def test_cheap_feature_jump_below_the_dollar_floor_is_silent() -> None:
    evs = feature_traffic(T0, T0 + DAY + 12 * HOUR, jump=JUMP)
    for ev in evs:
        ev.cost_usd = 0.000001  # $0.09/day even if every attempt were cancelled
    assert not firing(run(make(), evs))
    assert firing(run(make(min_usd_per_day=0.0001), evs))


def test_few_cancellations_in_a_quiet_window_are_noise() -> None:
    # One attempt every 10 minutes: 6 per window, under min_attempts even when nearly all are cancelled.
    evs = feature_traffic(T0, T0 + DAY + 12 * HOUR, period_s=600.0, jump=JUMP, jump_p=0.9)
    assert not firing(run(make(), evs))
    assert firing(run(make(min_attempts=4, min_cancelled=3, max_p_value=0.01), evs)), "judged on fewer attempts"


def test_honoured_stops_with_cut_outputs_are_not_the_tax() -> None:
    # Slow responses make users press stop far more often, but the provider stops: outputs are cut short.
    evs = feature_traffic(T0, T0 + DAY + 12 * HOUR, jump=JUMP)
    for ev in evs:
        if ev.cancelled:
            ev.output_tokens = ev.output_tokens // 4
    assert not firing(run(make(), evs))
    assert firing(run(make(min_billed_ratio=0.1), evs))


def test_background_with_a_jump_names_only_that_feature() -> None:
    evs = merge(background(days=1.5, seed=23), feature_traffic(T0, T0 + 1.5 * DAY, jump=JUMP))
    assert {f.entity_id for f in firing(run(make(), evs))} == {"t_gamma|writer"}
