"""The generic seasonal baseline/scorer: recurrences, fallback while young, scores, warm-up, NAB series."""

from __future__ import annotations

import csv
import math
import random
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from detectors.seasonal import (
    HOURS_PER_WEEK,
    SeasonalBaseline,
    SeasonalScorer,
    baseline_expect,
    baseline_is_warm,
    baseline_score,
    baseline_update,
    baseline_week_effect,
    hour_of_week_utc,
    new_baseline,
)

T0 = datetime(2026, 11, 2, tzinfo=UTC).timestamp()  # a Monday
NAB = Path("/work/shared/data/nab")


def office(how: int) -> float:
    """10 in office hours on weekdays, 1 otherwise."""
    return 10.0 if how < 120 and 9 <= how % 24 < 17 else 1.0


def test_bucket_recurrence_is_running_mean_then_ew() -> None:
    b = new_baseline()
    xs = [1.0, 3.0, 2.0, 6.0, 4.0, 5.0]
    for x in xs:
        baseline_update(b, 5, x, min_alpha=0.3)
    mean, var, n = 0.0, 0.0, 0
    for x in xs:
        n += 1
        if n == 1:
            mean, var = x, 0.0
            continue
        a = max(1.0 / n, 0.3)
        d = x - mean
        mean += a * d
        var = (1 - a) * (var + a * d * d)
    assert b.how_mean[5] == pytest.approx(mean)
    assert b.how_var[5] == pytest.approx(var)
    assert b.how_n[5] == 6 and b.hod_n[5] == 6 and b.n == 6
    assert b.how_mean[5 + 24] == 0.0


def test_ew_matches_river_after_the_running_mean_phase() -> None:
    river_stats = pytest.importorskip("river.stats")
    b = new_baseline()
    rm = river_stats.EWMean(fading_factor=0.1)
    rng = random.Random(3)
    xs = [rng.uniform(0, 10) for _ in range(200)]
    # From the 11th value on, the weight is the constant 0.1: same recurrence as river's EWMean.
    for i, x in enumerate(xs):
        baseline_update(b, 0, x, min_alpha=0.1)
        if i == 9:
            rm.update(b.how_mean[0])
        elif i > 9:
            rm.update(x)
    assert b.how_mean[0] == pytest.approx(rm.get(), rel=1e-9)


def test_young_bucket_falls_back_to_hour_of_day_then_global_then_prior() -> None:
    b = new_baseline()
    assert baseline_expect(b, 10, prior_mean=7.0, prior_var=2.0) == (7.0, 2.0, 0.0)
    for day in range(5):  # Mon-Fri 10:00 seen, never Saturday 10:00
        baseline_update(b, day * 24 + 10, 10.0)
    for how in range(HOURS_PER_WEEK):
        if how % 24 != 10:
            baseline_update(b, how, 1.0)
    saturday_10 = 5 * 24 + 10
    assert b.how_n[saturday_10] == 0
    mean, _, n = baseline_expect(b, saturday_10)
    assert n == 5.0
    assert 7.0 < mean < 10.0  # hour-of-day (10.0, five observations) shrunk a little towards the global mean
    m_night, _, _ = baseline_expect(b, 5 * 24 + 3)
    assert m_night == pytest.approx(1.0, abs=0.05)


def test_scores_spikes_for_their_hour_only() -> None:
    b = new_baseline()
    rng = random.Random(1)
    for _ in range(4):
        for how in range(HOURS_PER_WEEK):
            baseline_update(b, how, office(how) * rng.uniform(0.9, 1.1), min_alpha=0.1)
    assert baseline_score(b, 10, 10.5, var_floor=0.01) == 0.0  # office hour, usual value
    assert baseline_score(b, 3, 10.0, var_floor=0.01) == 1.0  # same value at 03:00 is a spike
    assert baseline_score(b, 10, 1.0, var_floor=0.01) == 0.0  # a drop is not an upward spike
    assert baseline_score(b, 10, 1.0, var_floor=0.01, two_sided=True) > 0.25
    mid = baseline_score(b, 3, 1.6, var_floor=0.01)
    assert 0.0 < mid < 1.0


def test_two_sided_score_of_a_drop_with_a_consistent_daily_pattern() -> None:
    b = new_baseline()
    rng = random.Random(2)
    for _ in range(3):
        for how in range(HOURS_PER_WEEK):
            baseline_update(b, how, (10.0 if 9 <= how % 24 < 17 else 1.0) * rng.uniform(0.95, 1.05))
    assert baseline_score(b, 10, 1.0, var_floor=0.01, two_sided=True) == 1.0
    assert baseline_score(b, 10, 10.0, var_floor=0.01, two_sided=True) == 0.0


def test_warm_up_is_explicit() -> None:
    b = new_baseline()
    assert not baseline_is_warm(b) and not baseline_is_warm(b, 10)
    for day in range(3):
        baseline_update(b, day * 24 + 10, 5.0)
    assert baseline_is_warm(b, 10, min_n=3) and baseline_is_warm(b, 34, min_n=3)
    assert not baseline_is_warm(b, 11, min_n=3)
    assert baseline_is_warm(b, None, min_n=3)


def test_week_effect_separates_weekend_from_weekday() -> None:
    b = new_baseline()
    for _ in range(3):
        for how in range(HOURS_PER_WEEK):
            baseline_update(b, how, 1.0 if how >= 120 else 3.0)
    # Saturday noon: 1.0 against an hour-of-day mean of (5 * 3 + 2 * 1) / 7, shrunk by 3 / (3 + 2).
    assert baseline_week_effect(b, 5 * 24 + 12) == pytest.approx((1.0 - 17 / 7) * 0.6, rel=0.01)
    assert baseline_week_effect(b, 12) == pytest.approx((3.0 - 17 / 7) * 0.6, rel=0.01)
    assert baseline_week_effect(new_baseline(), 12) == 0.0


def test_snapshot_is_plain_msgpack() -> None:
    b = new_baseline()
    baseline_update(b, 3, 2.0)
    blob = msgspec.msgpack.encode(b)
    assert msgspec.msgpack.decode(blob, type=SeasonalBaseline) == b
    assert len(blob) < 5000


def test_hour_of_week_in_local_clock() -> None:
    assert hour_of_week_utc(T0) == 0
    assert hour_of_week_utc(T0 + 3600 * 30) == 30
    assert hour_of_week_utc(T0, utc_offset_s=-5 * 3600) == 6 * 24 + 19  # Sunday 19:00 in New York


def test_scorer_on_a_five_minute_series_with_an_injected_spike() -> None:
    rng = random.Random(7)
    s = SeasonalScorer(log=True, var_floor=0.01)
    scores = []
    spike_at = 3 * 7 * 24 * 12 + 3 * 12  # week 4, Monday 03:00
    for i in range(4 * 7 * 24 * 12):
        t = T0 + 300 * i
        how = hour_of_week_utc(t)
        x = 100.0 * office(how) * rng.uniform(0.85, 1.15)
        if i == spike_at:
            x = 5000.0
        if s.is_warm(t):
            scores.append((s.score_one(t, x), i))
        s.learn_one(t, x)
    best = max(scores)
    assert best[1] == spike_at and best[0] == 1.0
    assert sum(1 for sc, _ in scores if sc >= 0.5) <= 3
    mean, sd = s.expect(T0 + 10 * 3600)
    assert math.exp(mean) == pytest.approx(1000.0, rel=0.1)
    assert sd < 0.2


@pytest.mark.skipif(not NAB.is_dir(), reason="NAB data not available")
@pytest.mark.parametrize(
    ("name", "two_sided"),
    [("artificialWithAnomaly/art_daily_jumpsup.csv", False), ("artificialWithAnomaly/art_daily_jumpsdown.csv", True)],
)
def test_nab_artificial_anomalies_score_inside_their_window(name: str, two_sided: bool) -> None:
    import json

    windows = json.loads((NAB / "labels" / "combined_windows.json").read_text())[name]
    start, end = (datetime.fromisoformat(w).replace(tzinfo=UTC).timestamp() for w in windows[0])
    s = SeasonalScorer(two_sided=two_sided, var_floor=1.0)
    hits = []
    with (NAB / "data" / name).open() as fh:
        for row in csv.DictReader(fh):
            t = datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC).timestamp()
            x = float(row["value"])
            if s.is_warm(t) and s.score_one(t, x) >= 0.5:
                hits.append(t)
            s.learn_one(t, x)
    assert hits
    assert all(start <= t <= end for t in hits)


@pytest.mark.skipif(not NAB.is_dir(), reason="NAB data not available")
def test_nab_series_without_anomaly_stays_quiet() -> None:
    s = SeasonalScorer(two_sided=True, var_floor=1.0)
    with (NAB / "data" / "artificialNoAnomaly" / "art_daily_small_noise.csv").open() as fh:
        for row in csv.DictReader(fh):
            t = datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC).timestamp()
            x = float(row["value"])
            if s.is_warm(t):
                assert s.score_one(t, x) < 0.5
            s.learn_one(t, x)
