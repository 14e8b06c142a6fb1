"""Scoring definitions on hand-made alerts and labels: every number checked by hand."""

from __future__ import annotations

from typing import Any

import pytest

from sentinel.alerts import Alert, Entity, rfc3339
from sentinel.tuning.labels import Label
from sentinel.tuning.scoring import RunRecord, cost_between, incidents_from_alerts, merge_scores, score

T0 = 1793577600.0  # 2026-11-02T00:00:00Z
H = 3600.0


def alert(aid: str, t: float, detector: str = "spend_spike", tenant: str = "t_a", key: str = "key_a",
          version: int = 1, severity: str = "high", status: str = "firing", **kw: Any) -> Alert:
    return Alert(alert_id=aid, version=version, status=status, detector=detector, rule=detector,  # type: ignore[arg-type]
                 severity=severity, score=0.8, entity=Entity("api_key", key), tenant_id=tenant,  # type: ignore[arg-type]
                 detected_at=rfc3339(t), title=f"{detector} on {key}", evidence={}, api_key_id=key, **kw)


def label(detector: str, kind: str, start: float, end: float, idx: int, **entities: Any) -> Label:
    return Label(detector, kind, start, end, entities, also_expected=("quota_burn",) if kind == "llmjacking" else (),
                 index=idx)


LABELS = [
    label("spend_spike", "llmjacking", T0 + 10 * H, T0 + 12 * H, 0, tenant_id="t_a", api_key_id="key_a"),
    label("spend_spike", "low_and_slow", T0 + 30 * H, T0 + 36 * H, 1, tenant_id="t_b", api_key_id="key_b"),
    label("spend_spike", "negative:nightly_batch", T0 + 20 * H, T0 + 21 * H, 2, tenant_id="t_c", api_key_id="key_c"),
    label("runaway_loop", "weekend_runaway_loop", T0 + 40 * H, T0 + 44 * H, 3, tenant_id="t_d", session_id="s_1"),
]


def record() -> RunRecord:
    # Label 0's events: $1 every 10 minutes from its start; label 3 (a session): $0.5 per 30 minutes.
    series0 = [(T0 + 10 * H + 600 * i, 1.0) for i in range(14)]  # the 14th is after the end
    series3 = [(T0 + 40 * H + 1800 * i, 0.5) for i in range(10)]
    return RunRecord(events=2_000_000, first_ts=T0, last_ts=T0 + 4 * 86400, cost_series=[series0, [], [], series3])


def test_outcomes_counts_and_rates() -> None:
    alerts = [
        alert("al_tp", T0 + 10 * H + 1500),                           # 25 min into label 0: TP
        alert("al_tp2", T0 + 11 * H, key="key_a2", tenant="t_a"),      # same tenant, same window: also matches
        alert("al_late", T0 + 12 * H + 1800),                          # inside the grace hour after the end: matches
        alert("al_fp", T0 + 14 * H),                                    # after the grace: FP
        alert("al_hard", T0 + 20 * H + 600, tenant="t_c", key="key_c"),  # inside the hard negative: hard FP
        alert("al_wrong_det", T0 + 41 * H, detector="cache_collapse", tenant="t_d", key="key_d"),  # other detector
        alert("al_exp", T0 + 10 * H + 60, detector="quota_burn"),      # also_expected on label 0: neither
        alert("al_rl", T0 + 42 * H, detector="runaway_loop", tenant="t_d", key="key_d", session_id="s_1"),
    ]
    incidents = incidents_from_alerts(alerts)
    sc = score(incidents, LABELS, record(), detectors=["spend_spike", "runaway_loop", "cache_collapse", "quota_burn"])
    ss = sc.by_detector["spend_spike"]
    assert (ss.labels, ss.detected, ss.incidents, ss.matching, ss.fp, ss.hard_negative_fp) == (2, 1, 5, 3, 2, 1)
    assert ss.recall == 0.5
    assert ss.precision == 3 / 5
    assert ss.fp_per_day == pytest.approx(2 / 4)
    assert ss.fp_per_million == pytest.approx(1.0)
    assert ss.ttd_s == [pytest.approx(1500.0)]
    # $ before detection: events at +0, +10, +20 min (<= 25 min) -> $3.
    assert ss.usd_before == [pytest.approx(3.0)]
    assert ss.usd_missed == 0.0  # label 1 has no recorded events
    assert sc.outcomes == {"al_tp": "tp", "al_tp2": "tp", "al_late": "tp", "al_fp": "fp", "al_hard": "hard_negative_fp",
                           "al_wrong_det": "fp", "al_exp": "expected", "al_rl": "tp"}
    assert sc.label_of["al_hard"] == "spend_spike:negative:nightly_batch#2"
    qb = sc.by_detector["quota_burn"]
    assert (qb.expected, qb.fp, qb.precision, qb.recall) == (1, 0, None, None)
    rl = sc.by_detector["runaway_loop"]
    assert (rl.detected, rl.ttd_s) == (1, [2 * H])
    assert rl.usd_before == pytest.approx([2.5])  # 5 x $0.5 up to +2h
    cc = sc.by_detector["cache_collapse"]
    assert (cc.fp, cc.labels, cc.recall, cc.precision) == (1, 0, None, 0.0)
    [lr0, lr1, lr3] = sc.labels
    assert lr0.detected and lr0.incident is not None and lr0.incident.alert_id == "al_tp" and lr0.matches == 3
    assert not lr1.detected and lr1.ttd_s is None and lr1.usd_before_detection is None
    assert lr3.usd_total == pytest.approx(9 * 0.5)  # +0h .. +4h inclusive; the 10th is after the end


def test_grace_zero_turns_late_alert_into_fp() -> None:
    incidents = incidents_from_alerts([alert("al_late", T0 + 12 * H + 1800)])
    assert score(incidents, LABELS, record(), grace_s=0.0).outcomes["al_late"] == "fp"
    assert score(incidents, LABELS, record(), grace_s=3600.0).outcomes["al_late"] == "tp"


def test_missed_label_dollars_and_ttd_of_earliest_match() -> None:
    incidents = incidents_from_alerts([alert("b", T0 + 11 * H), alert("a", T0 + 10 * H + 600)])
    sc = score(incidents, LABELS, record())
    ss = sc.by_detector["spend_spike"]
    assert ss.ttd_s == [600.0] and ss.usd_before == [2.0]  # the earlier of the two counts
    assert sc.labels[0].incident is not None and sc.labels[0].incident.alert_id == "a"
    none = score([], LABELS, record())
    assert none.by_detector["spend_spike"].usd_missed == pytest.approx(13.0)  # +0 .. +120 min inclusive
    assert none.by_detector["runaway_loop"].recall == 0.0


def test_incident_counts_from_first_version_at_min_severity() -> None:
    versions = [
        alert("al_1", T0 + 10 * H, severity="info"),
        alert("al_1", T0 + 10 * H + 900, severity="medium", version=2),
        alert("al_1", T0 + 10 * H + 1800, severity="critical", version=3),
        alert("al_1", T0 + 13 * H, severity="critical", version=4, status="resolved"),
        alert("al_2", T0 + 14 * H, severity="low"),
    ]
    [a1, a2] = incidents_from_alerts(versions)
    assert (a1.detected_at, a1.versions, a1.max_severity, a1.last.version) == (T0 + 10 * H, 4, "critical", 4)
    [m1] = incidents_from_alerts(versions, "medium")
    assert (m1.alert_id, m1.detected_at, m1.versions, m1.first.version) == ("al_1", T0 + 10 * H + 900, 4, 2)
    assert incidents_from_alerts(versions, "critical")[0].detected_at == T0 + 10 * H + 1800
    # A resolved version never opens an incident.
    assert incidents_from_alerts([alert("r", T0, status="resolved", severity="critical")], "info") == []
    assert a2.alert_id == "al_2"


def test_merge_scores_sums_days_and_lists() -> None:
    a = score(incidents_from_alerts([alert("x", T0 + 10 * H + 60)]), LABELS, record()).by_detector
    b = score(incidents_from_alerts([alert("y", T0 + 5 * H)]), LABELS, record()).by_detector
    m = merge_scores([a, b])["spend_spike"]
    assert (m.labels, m.detected, m.fp, m.days, m.events) == (4, 1, 1, 8.0, 4_000_000)
    assert m.fp_per_day == pytest.approx(1 / 8) and m.ttd_s == [60.0]


def test_cost_between_inclusive_bounds() -> None:
    s = [(1.0, 1.0), (2.0, 2.0), (3.0, 4.0)]
    assert (cost_between(s, 1.0, 3.0), cost_between(s, 1.5, 2.0), cost_between(s, 4.0, 9.0)) == (7.0, 2.0, 0.0)
