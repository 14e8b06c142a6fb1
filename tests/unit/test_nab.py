"""NAB scoring on hand-made cases (every number by hand), and the seasonal scorer on 3 real NAB series."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sentinel.tuning.nab import (
    DEFAULT_PROFILES,
    CostMatrix,
    SeasonalConfig,
    Series,
    load_corpus,
    load_profiles,
    optimize,
    point_table,
    probation_length,
    run_nab,
    scaled_sigmoid,
    seasonal_scores,
    suppress_repeats,
)

NAB = Path(__file__).resolve().parents[3] / "shared" / "data" / "nab"
THREE = ["realKnownCause/nyc_taxi.csv", "artificialWithAnomaly/art_daily_jumpsup.csv",
         "realAdExchange/exchange-2_cpc_results.csv"]
STD = CostMatrix(1.0, 0.11, 1.0)


def series(n: int, windows: list[tuple[int, int]], name: str = "s") -> Series:
    return Series(name, [float(300 * i) for i in range(n)], [0.0] * n, windows)


def score_of(detections: list[int], s: Series, cost: CostMatrix = STD) -> float:
    kinds, values, nw = point_table([s])
    scores = [[1.0 if i in detections else 0.0 for i in range(len(s))]]
    return optimize(scores, kinds, values, nw, cost).normalized


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_scaled_sigmoid_matches_the_published_formula() -> None:
    for y in (-1.0, -0.5, 0.0, 0.4, 1.0, 2.9):
        assert scaled_sigmoid(y) == pytest.approx(2 * sigmoid(-5 * y) - 1)
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(3.0) == scaled_sigmoid(10.0) == -1.0


def test_probation_length() -> None:
    assert probation_length(100) == 15
    assert probation_length(4032) == 604  # floor(0.15 * 4032)
    assert probation_length(10_320) == 750  # capped at 15% of 5000


def test_perfect_is_100_and_null_is_0() -> None:
    s1 = series(200, [(50, 59), (120, 139)])
    s2 = series(100, [(60, 69)])
    kinds, values, nw = point_table([s1, s2])
    assert nw == 3
    perfect = [[1.0 if i in (50, 120) else 0.0 for i in range(200)], [1.0 if i == 60 else 0.0 for i in range(100)]]
    null = [[0.0] * 200, [0.0] * 100]
    for name, cost in DEFAULT_PROFILES.items():
        assert optimize(perfect, kinds, values, nw, cost, name).normalized == pytest.approx(100.0)
        res = optimize(null, kinds, values, nw, cost, name)
        assert res.normalized == pytest.approx(0.0) and (res.tp, res.fn) == (0, 3)
        assert (res.null, res.perfect) == (-cost.fn * 3, cost.tp * 3)


def test_window_fp_and_probation_arithmetic() -> None:
    # n=100: probation 15 points; one window [40, 49] (width 10).
    s = series(100, [(40, 49)])
    tp = scaled_sigmoid(-(49 - 45 + 1) / 10) / scaled_sigmoid(-1.0)  # detection at 45: y = -0.5
    assert tp == pytest.approx((2 * sigmoid(2.5) - 1) / (2 * sigmoid(5) - 1))
    fp_after = scaled_sigmoid(abs(49 - 60) / (10 - 1))  # at 60, 11 points past a 10-wide window
    fp_before = -1.0  # at 20, before any window
    raw = tp + 0.11 * fp_after + 0.11 * fp_before
    assert score_of([45, 60, 20], s) == pytest.approx(100 * (raw + 1) / 2)
    # Only the earliest detection in a window counts; a detection in probation counts for nothing.
    assert score_of([45, 47, 49, 5], s) == pytest.approx(100 * (tp + 1) / 2)
    early = scaled_sigmoid(-(49 - 40 + 1) / 10) / scaled_sigmoid(-1.0)
    assert early == pytest.approx(1.0)
    assert score_of([40, 45], s) == pytest.approx(100.0)
    # The reward_low_FN profile doubles misses; reward_low_FP doubles the false positives' cost.
    fn2 = CostMatrix(1.0, 0.11, 2.0)
    assert score_of([45, 20], s, fn2) == pytest.approx(100 * (tp - 0.11 + 2) / (1 + 2))
    assert score_of([20], s, fn2) == 0.0  # a lone false positive: the best threshold detects nothing
    fp2 = CostMatrix(1.0, 0.22, 1.0)
    assert score_of([45, 20], s, fp2) == pytest.approx(100 * (tp - 0.22 + 1) / 2)


def test_threshold_is_optimized_over_the_corpus() -> None:
    s = series(300, [(100, 119), (200, 219)])
    kinds, values, nw = point_table([s])
    sc = [0.0] * 300
    sc[100] = sc[200] = 0.9  # both anomalies, at their windows' start
    for i in (30, 60, 90, 150, 250):  # noise, scored higher than one anomaly ...
        sc[i] = 0.5
    sc[210] = 0.95  # ... and a late detection scored highest
    res = optimize([sc], kinds, values, nw, STD)
    # Threshold 0.9 detects both windows at their first point with no FP: the perfect score.
    assert (res.threshold, res.tp, res.fp, res.fn) == (0.9, 2, 0, 0)
    assert res.normalized == pytest.approx(100.0)


def test_suppress_repeats_is_online_and_keeps_escalations() -> None:
    ts = [0.0, 60.0, 120.0, 180.0, 240.0, 4000.0]
    assert suppress_repeats(ts, [0.1, 0.8, 0.8, 0.7, 0.9, 0.8], 3600) == [0.1, 0.8, 0.0, 0.0, 0.9, 0.8]
    assert suppress_repeats(ts, [0.5] * 6, 100) == [0.5, 0.0, 0.0, 0.0, 0.0, 0.5]


@pytest.fixture(scope="module")
def three() -> list[Series]:
    if not (NAB / "labels" / "combined_windows.json").is_file():
        pytest.fail(f"NAB data missing at {NAB} (see ../shared/data/README.md)")
    return load_corpus(NAB, THREE)


def test_load_corpus_maps_windows_to_points(three: list[Series]) -> None:
    assert [s.name for s in three] == sorted(THREE)
    labels = json.loads((NAB / "labels" / "combined_windows.json").read_text())
    for s in three:
        assert len(s.windows) == len(labels[s.name]) >= 1
        for (a, b), (start, end) in zip(s.windows, labels[s.name], strict=True):
            assert 0 < a < b < len(s)
            # The window's edges are data points with exactly the labelled timestamps.
            from datetime import UTC, datetime

            def iso(t: float) -> str:
                return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")

            assert (iso(s.ts[a]), iso(s.ts[b])) == (start[:19], end[:19])
            assert a >= probation_length(len(s))  # NAB keeps windows out of the probation period
    assert load_profiles(NAB) == DEFAULT_PROFILES


def test_seasonal_scorer_on_three_series(three: list[Series]) -> None:
    res = run_nab(three, load_profiles(NAB), SeasonalConfig(), workers=1)
    again = run_nab(three, load_profiles(NAB), SeasonalConfig(), workers=2)
    assert {p: r.normalized for p, r in res.profiles.items()} == {p: r.normalized for p, r in again.profiles.items()}
    std = res.profiles["standard"]
    assert std.tp + std.fn == res.windows == sum(len(s.windows) for s in three)
    assert 0.0 < std.normalized < 100.0  # better than no detector, short of perfect
    assert res.profiles["reward_low_FN_rate"].normalized >= std.normalized - 1e-9 or std.fn == 0
    # Scores are online: the scores of a prefix do not depend on what follows.
    s = three[0]
    cut = Series(s.name, s.ts[:3000], s.values[:3000], [])
    assert seasonal_scores(cut)[:2500] == seasonal_scores(s)[:2500]
    # Cheating with the labels gives 100: the scoring, not the scorer, is what is checked here.
    perfect = run_nab(three, load_profiles(NAB), lambda x: [1.0 if any(i == a for a, _ in x.windows) else 0.0
                                                            for i in range(len(x))])
    assert perfect.profiles["standard"].normalized == pytest.approx(100.0)
