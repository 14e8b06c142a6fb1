"""NAB: score a streaming anomaly scorer on the Numenta Anomaly Benchmark, the published way.

Implemented here from the published description -- Lavin & Ahmad (2015),
"Evaluating Real-time Anomaly Detection Algorithms -- the Numenta Anomaly
Benchmark", and the scoring documentation of the NAB repository -- so that
our numbers sit next to the published scoreboard:

* **Windows.** Each labelled anomaly has a window (``combined_windows.json``);
  a detection inside it is a true positive, and **only the earliest** one
  counts. Its value is the scaled sigmoid of its relative position ``y`` in
  the window, ``sigma(y) = 2 / (1 + e^(5y)) - 1``, where ``y = -1`` at the
  window's left edge and ``y = 0`` just past its right edge, divided by
  ``sigma(-1)`` so that the earliest detection is worth exactly ``A_TP``.
* **False positives.** Every detection outside a window costs ``A_FP``
  weighted by how far it is past the end of the preceding window
  (``sigma(|i - right| / (width - 1))``, nearly -1 beyond one window width), or
  the full ``-A_FP`` before the first window.
* **Misses.** Each window without a detection scores ``-A_FN``.
* **Probation.** The first ``min(floor(0.15 n), 0.15 * 5000)`` points of each
  series are a learning period and are not scored.
* **Profiles.** ``standard`` (A_FP 0.11, A_FN 1), ``reward_low_FP_rate``
  (A_FP 0.22) and ``reward_low_FN_rate`` (A_FN 2), from ``config/profiles.json``.
* **Threshold.** A point is a detection when its anomaly score is at or above
  a threshold; per profile, the one threshold that maximises the raw score
  over the whole corpus is used (every distinct score value is tried).
* **Normalisation.** ``100 * (raw - null) / (perfect - null)``: the null
  detector (no detection) scores ``-A_FN * windows``, the perfect one (each
  window detected at its first point) ``A_TP * windows``.

The scorer under test is any function ``series -> scores`` (one score per
point, computed online: learn-then-score, no look-ahead).
:func:`seasonal_scores` runs :class:`detectors.seasonal.SeasonalScorer`.
"""

from __future__ import annotations

import csv
import json
import math
import os
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

PROBATION_FRACTION = 0.15
FLOOR_POINTS = 150
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


@dataclass(frozen=True)
class CostMatrix:
    tp: float = 1.0
    fp: float = 0.11
    fn: float = 1.0


DEFAULT_PROFILES = {"standard": CostMatrix(1.0, 0.11, 1.0), "reward_low_FP_rate": CostMatrix(1.0, 0.22, 1.0),
                    "reward_low_FN_rate": CostMatrix(1.0, 0.11, 2.0)}


@dataclass
class Series:
    name: str
    ts: list[float]
    values: list[float]
    windows: list[tuple[int, int]]  # inclusive point indices

    def __len__(self) -> int:
        return len(self.ts)


def _parse(text: str) -> float:
    """NAB timestamps (``YYYY-MM-DD HH:MM:SS[.ffffff]``, no zone) as UTC epoch seconds."""
    return datetime.fromisoformat(text.strip()).replace(tzinfo=UTC).timestamp()


def load_series(root: Path, name: str, windows: Sequence[Sequence[str]]) -> Series:
    ts: list[float] = []
    values: list[float] = []
    with (root / "data" / name).open(newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        for row in reader:
            ts.append(_parse(row[0]))
            values.append(float(row[1]))
    idx = []
    for start, end in windows:
        a, b = bisect_left(ts, _parse(start)), bisect_right(ts, _parse(end)) - 1
        if a <= b:
            idx.append((a, b))
    return Series(name, ts, values, idx)


def load_corpus(root: str | Path, only: Iterable[str] = ()) -> list[Series]:
    """All series with labels in ``root`` (the NAB layout: data/, labels/combined_windows.json)."""
    base = Path(root)
    windows = json.loads((base / "labels" / "combined_windows.json").read_text())
    names = sorted(windows)
    wanted = list(only)
    if wanted:
        names = [n for n in names if n in wanted or Path(n).stem in wanted]
    return [load_series(base, n, windows[n]) for n in names]


def load_profiles(root: str | Path) -> dict[str, CostMatrix]:
    path = Path(root) / "config" / "profiles.json"
    if not path.exists():
        return dict(DEFAULT_PROFILES)
    data = json.loads(path.read_text())
    return {name: CostMatrix(float(p["CostMatrix"]["tpWeight"]), float(p["CostMatrix"]["fpWeight"]),
                             float(p["CostMatrix"]["fnWeight"])) for name, p in data.items()}


def probation_length(n: int, fraction: float = PROBATION_FRACTION) -> float:
    """Points ``i < probation_length(n)`` are not scored (NAB: at most 15% of 5000)."""
    return min(math.floor(fraction * n), fraction * 5000)


def scaled_sigmoid(y: float) -> float:
    """``2 / (1 + e^(5y)) - 1``: 0.987 at the window's left edge (y=-1), 0 at its end, -1 far past it.

    >>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), scaled_sigmoid(3.0)
    (0.98661, 0.0, -1.0)
    """
    if y >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


_MAX_TP = scaled_sigmoid(-1.0)


def point_table(corpus: Sequence[Series], fraction: float = PROBATION_FRACTION) -> tuple[list[list[int]],
                                                                                           list[list[float]], int]:
    """For every series: per point, window id (-1 outside, -2 probation) and the unweighted TP/FP value.

    Inside a window the value is ``sigma(y) / sigma(-1)`` (to be multiplied by A_TP); outside it is
    ``sigma(position past the previous window)`` (to be multiplied by A_FP; -1 before any window).
    """
    kinds: list[list[int]] = []
    values: list[list[float]] = []
    wid = 0
    for s in corpus:
        n = len(s)
        prob = probation_length(n, fraction)
        k = [-1] * n
        v = [-1.0] * n
        prev_right: int | None = None
        prev_width = 0.0
        wins = sorted(s.windows)
        wi = 0
        i = 0
        while i < n:
            if wi < len(wins) and i == wins[wi][0]:
                left, right = wins[wi]
                width = float(right - left + 1)
                for j in range(left, right + 1):
                    k[j] = wid
                    v[j] = scaled_sigmoid(-(right - j + 1) / width) / _MAX_TP
                wid += 1
                wi += 1
                prev_right, prev_width = right, width
                i = right + 1
                continue
            if prev_right is not None:
                v[i] = scaled_sigmoid(abs(prev_right - i) / max(prev_width - 1.0, 1.0))
            i += 1
        for j in range(n):
            if j < prob:
                k[j] = -2
        kinds.append(k)
        values.append(v)
    return kinds, values, wid


@dataclass(frozen=True)
class ProfileResult:
    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    tp: int
    fp: int
    fn: int

    @property
    def normalized(self) -> float:
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def optimize(scores: Sequence[Sequence[float]], kinds: Sequence[Sequence[int]], values: Sequence[Sequence[float]],
             n_windows: int, cost: CostMatrix, profile: str = "") -> ProfileResult:
    """The threshold maximising the corpus raw score for one profile (every distinct score is tried)."""
    points: list[tuple[float, int, float]] = []
    for sc, ks, vs in zip(scores, kinds, values, strict=True):
        for s, k, v in zip(sc, ks, vs, strict=True):
            if k != -2:
                points.append((s, k, v))
    points.sort(key=lambda p: -p[0])
    null = -cost.fn * n_windows
    best_w = [-cost.fn] * n_windows
    total = null
    tp = fp = 0
    best = ProfileResult(profile, math.inf, total, null, cost.tp * n_windows, 0, 0, n_windows)
    i = 0
    n = len(points)
    while i < n:
        thr = points[i][0]
        while i < n and points[i][0] == thr:
            _, k, v = points[i]
            if k >= 0:
                w = v * cost.tp
                if best_w[k] == -cost.fn:
                    tp += 1
                    total += cost.fn + w
                    best_w[k] = w
                elif w > best_w[k]:
                    total += w - best_w[k]
                    best_w[k] = w
            else:
                fp += 1
                total += v * cost.fp
            i += 1
        if total > best.raw:
            best = ProfileResult(profile, thr, total, null, cost.tp * n_windows, tp, fp, n_windows - tp)
    return best


# -- the scorer under test ------------------------------------------------------------------------


@dataclass(frozen=True)
class SeasonalConfig:
    """How :class:`~detectors.seasonal.SeasonalScorer` is set up for NAB (the same for every series).

    ``z_low=0, z_high=z_scale`` makes the score a linear map of the standard score ``z``, so the
    threshold search picks the ``z`` cut-off. The variance floor is scaled to each series from its
    first ``FLOOR_POINTS`` points only, inside every series' probation period (NAB gives detectors
    the whole data range up front; we use less, and nothing that depends on the series' length).
    ``suppress_s > 0`` reports a point only when its score beats every score of the previous
    ``suppress_s`` seconds (:func:`suppress_repeats`), the way an open incident absorbs repeated
    findings in the daemon.
    """

    half_life: float = 8.0
    shrink: float = 2.0
    two_sided: bool = True
    log: bool = False
    z_scale: float = 20.0
    floor_fraction: float = 0.05
    min_n: int = 3
    suppress_s: float = 0.0


def seasonal_scores(series: Series, cfg: SeasonalConfig = SeasonalConfig()) -> list[float]:
    """Learn-then-score over the series; 0 while the hour's bucket is not warm."""
    from detectors.seasonal import SeasonalScorer

    head = series.values[:FLOOR_POINTS]
    if cfg.log:
        head = [math.log1p(max(x, 0.0)) for x in head]
    mean = sum(head) / len(head)
    sd = math.sqrt(sum((x - mean) ** 2 for x in head) / len(head))
    floor = (cfg.floor_fraction * (sd if sd > 0 else max(abs(mean), 1.0))) ** 2
    sc = SeasonalScorer(half_life=cfg.half_life, shrink=cfg.shrink, z_low=0.0, z_high=cfg.z_scale,
                        two_sided=cfg.two_sided, log=cfg.log, var_floor=floor, min_n=cfg.min_n)
    out = []
    for t, x in zip(series.ts, series.values, strict=True):
        out.append(sc.score_one(t, x) if sc.is_warm(t) else 0.0)
        sc.learn_one(t, x)
    return suppress_repeats(series.ts, out, cfg.suppress_s) if cfg.suppress_s > 0 else out


def suppress_repeats(ts: Sequence[float], scores: Sequence[float], window_s: float) -> list[float]:
    """Keep a score only where it exceeds every score of the previous ``window_s`` seconds (else 0).

    Online (looks back only). For any threshold, the first crossing after ``window_s`` of lower scores
    survives, and so does an escalation; a plateau of repeats does not.

    >>> suppress_repeats([0, 60, 120, 180, 4000], [0.2, 0.9, 0.9, 0.95, 0.9], 3600)
    [0.2, 0.9, 0.0, 0.95, 0.9]
    """
    out: list[float] = []
    window: deque[tuple[float, float]] = deque()  # decreasing scores: the front is the window's maximum
    for t, v in zip(ts, scores, strict=True):
        while window and window[0][0] < t - window_s:
            window.popleft()
        out.append(v if not window or v > window[0][1] else 0.0)
        while window and window[-1][1] <= v:
            window.pop()
        window.append((t, v))
    return out


def _score_one(args: tuple[Series, SeasonalConfig]) -> list[float]:
    return seasonal_scores(*args)


@dataclass
class NabResult:
    series: int
    points: int
    windows: int
    profiles: dict[str, ProfileResult]


def run_nab(corpus: Sequence[Series], profiles: dict[str, CostMatrix],
            scorer: Callable[[Series], list[float]] | SeasonalConfig = SeasonalConfig(),
            workers: int | None = None, on_series: Callable[[Series], None] | None = None) -> NabResult:
    """Score every series, then optimise the threshold per profile over the whole corpus."""
    if isinstance(scorer, SeasonalConfig):
        cfg = scorer
        n = workers if workers is not None else min(len(corpus), os.cpu_count() or 1)
        if n > 1 and len(corpus) > 1:
            with ProcessPoolExecutor(max_workers=n) as pool:
                scores = []
                for s, sc in zip(corpus, pool.map(_score_one, [(s, cfg) for s in corpus]), strict=True):
                    scores.append(sc)
                    if on_series is not None:
                        on_series(s)
        else:
            scores = []
            for s in corpus:
                scores.append(seasonal_scores(s, cfg))
                if on_series is not None:
                    on_series(s)
    else:
        scores = []
        for s in corpus:
            scores.append(scorer(s))
            if on_series is not None:
                on_series(s)
    kinds, values, n_windows = point_table(corpus)
    results = {name: optimize(scores, kinds, values, n_windows, cost, name) for name, cost in profiles.items()}
    return NabResult(len(corpus), sum(len(s) for s in corpus), n_windows, results)


def published_scores(root: str | Path) -> dict[str, dict[str, float]]:
    """``results/final_results.json``: detector -> profile -> normalised score."""
    path = Path(root) / "results" / "final_results.json"
    if not path.exists():
        return {}
    data: dict[str, dict[str, float]] = json.loads(path.read_text())
    return data
