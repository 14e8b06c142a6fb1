"""Seasonal baseline: is this value unusual for this hour of the week?

A generic spike scorer for a series with daily and weekly rhythm (spend per
hour of an API key, requests per 5 minutes, a NAB benchmark series). Plain
floats in, a score in 0..1 out; nothing here knows about usage events.

Method. The baseline keeps an exponentially weighted (EW) mean and variance
of the value in three layers:

* one bucket per **hour of the week** (168; 0 = Monday 00:00-01:00 in
  whatever clock the caller uses),
* one bucket per **hour of the day** (24), which every hour-of-week bucket of
  that hour also feeds, so it fills seven times faster,
* one **global** mean and variance,

and, below all three, an optional *prior* supplied by the caller (e.g. the
baseline of the population an entity belongs to). A young bucket is not
trusted alone: its estimate is shrunk towards the layer below with the
credibility weight ``n / (n + shrink)`` (Bühlmann 1967, "Experience rating
and credibility"; the empirical-Bayes partial pooling of Gelman & Hill 2007,
ch. 12), so the expectation moves smoothly from "what hours like this look
like everywhere" to "what this hour of the week looks like" as history
accumulates. The variance is blended with the same weights (a young bucket,
whose own variance is still unknown, borrows the spread of the layer below).

Each bucket's mean/variance follows the EW recurrences of West (1979) and
Finch (2009, "Incremental calculation of weighted mean and variance",
eq. 143-144), with weight ``max(1/n, min_alpha)``: a plain running mean for
the first ``1/min_alpha`` observations (unbiased while young), an EW average
with that weight afterwards (tracks drift).

The score of an observation ``x`` is a linear ramp of its standard score
``z = (x - mean) / sqrt(var + var_floor)``: 0 below ``z_low``, 1 above
``z_high``. Warm-up is explicit (:func:`baseline_is_warm`), never hidden in
a score of 0.

>>> b = new_baseline()
>>> for week in range(3):
...     for how in range(168):
...         baseline_update(b, how, 10.0 if 9 <= how % 24 < 17 else 1.0, min_alpha=0.1)
>>> mean, var, n = baseline_expect(b, 10)
>>> round(mean, 1), baseline_is_warm(b, 10, min_n=3)  # 3 weeks of 10.0, shrunk a little towards the day
(9.8, True)
>>> baseline_score(b, 10, 10.5), baseline_score(b, 3, 10.0) == 1.0
(0.0, True)
"""

from __future__ import annotations

import math
from typing import Final

import msgspec

HOURS_PER_WEEK: Final = 168
HOURS_PER_DAY: Final = 24
_WEEK_S: Final = 7 * 86400
# 1970-01-01 was a Thursday: shift so that hour-of-week 0 is Monday 00:00.
_EPOCH_MONDAY_SHIFT: Final = 3 * 86400


class SeasonalBaseline(msgspec.Struct, array_like=True, gc=False):
    """EW mean/variance per hour of week, per hour of day, and overall.

    Plain lists of floats so that a snapshot is one msgpack encode (about 4 KB).
    """

    how_mean: list[float]
    how_var: list[float]
    how_n: list[int]
    hod_mean: list[float]
    hod_var: list[float]
    hod_n: list[int]
    mean: float = 0.0
    var: float = 0.0
    n: int = 0


def new_baseline() -> SeasonalBaseline:
    """An empty baseline (no observation yet: everything comes from the prior)."""
    return SeasonalBaseline(
        [0.0] * HOURS_PER_WEEK, [0.0] * HOURS_PER_WEEK, [0] * HOURS_PER_WEEK,
        [0.0] * HOURS_PER_DAY, [0.0] * HOURS_PER_DAY, [0] * HOURS_PER_DAY,
    )


def hour_of_week_utc(t: float, utc_offset_s: float = 0.0) -> int:
    """Hour of the week (0 = Monday 00:00) of epoch seconds ``t`` on a clock ``utc_offset_s`` ahead of UTC.

    >>> from datetime import UTC, datetime
    >>> hour_of_week_utc(datetime(2026, 11, 2, 13, 30, tzinfo=UTC).timestamp())
    13
    """
    return int(((t + utc_offset_s + _EPOCH_MONDAY_SHIFT) % _WEEK_S) // 3600)


def _fold(mean: float, var: float, n: int, x: float, min_alpha: float) -> tuple[float, float]:
    """One EW step; ``n`` counts the observations including ``x``."""
    if n <= 1:
        return x, 0.0
    alpha = 1.0 / n
    if alpha < min_alpha:
        alpha = min_alpha
    diff = x - mean
    incr = alpha * diff
    return mean + incr, (1.0 - alpha) * (var + diff * incr)


def baseline_update(b: SeasonalBaseline, how: int, x: float, min_alpha: float = 0.05) -> None:
    """Fold observation ``x`` taken in hour-of-week ``how`` into all three layers.

    ``min_alpha`` is the EW weight once a bucket has more than ``1/min_alpha``
    observations (see :func:`alpha_for_half_life` in :mod:`detectors.stats`).
    """
    how %= HOURS_PER_WEEK
    hod = how % HOURS_PER_DAY
    n = b.how_n[how] + 1
    b.how_n[how] = n
    b.how_mean[how], b.how_var[how] = _fold(b.how_mean[how], b.how_var[how], n, x, min_alpha)
    n = b.hod_n[hod] + 1
    b.hod_n[hod] = n
    b.hod_mean[hod], b.hod_var[hod] = _fold(b.hod_mean[hod], b.hod_var[hod], n, x, min_alpha)
    b.n += 1
    b.mean, b.var = _fold(b.mean, b.var, b.n, x, min_alpha)


def _blend(m1: float, v1: float, n1: float, m0: float, v0: float, shrink: float) -> tuple[float, float]:
    """Credibility blend of a bucket (``n1`` observations) with the layer below, weight ``n1 / (n1 + shrink)``."""
    if n1 <= 0:
        return m0, v0
    w = n1 / (n1 + shrink)
    return m0 + w * (m1 - m0), w * v1 + (1.0 - w) * v0


def baseline_expect(b: SeasonalBaseline, how: int, prior_mean: float = 0.0, prior_var: float = 1.0,
                    prior_n: float = 0.0, shrink: float = 2.0) -> tuple[float, float, float]:
    """Expected mean and variance at hour-of-week ``how``, and the evidence behind them.

    The prior (``prior_mean``, ``prior_var``, worth ``prior_n`` observations)
    sits under the global layer; with no prior and no data the expectation
    is ``(prior_mean, prior_var)``. The third value is the number of
    observations in the hour-of-week bucket plus its hour-of-day bucket (a
    measure of how much the answer is this series' own).
    """
    how %= HOURS_PER_WEEK
    hod = how % HOURS_PER_DAY
    if b.n > 0:
        if prior_n > 0:
            m, v = _blend(b.mean, b.var, b.n, prior_mean, prior_var, prior_n)
        else:
            m, v = b.mean, b.var
    else:
        m, v = prior_mean, prior_var
    m, v = _blend(b.hod_mean[hod], b.hod_var[hod], b.hod_n[hod], m, v, shrink)
    m, v = _blend(b.how_mean[how], b.how_var[how], b.how_n[how], m, v, shrink)
    return m, v, float(b.how_n[how] + b.hod_n[hod])


def baseline_week_effect(b: SeasonalBaseline, how: int, shrink: float = 2.0) -> float:
    """How far hour-of-week ``how`` sits from its hour of day (weekday vs weekend), shrunk while young."""
    how %= HOURS_PER_WEEK
    n = b.how_n[how]
    if n <= 0 or b.hod_n[how % HOURS_PER_DAY] <= n:
        return 0.0
    return (b.how_mean[how] - b.hod_mean[how % HOURS_PER_DAY]) * (n / (n + shrink))


def baseline_z(b: SeasonalBaseline, how: int, x: float, var_floor: float = 1e-9, prior_mean: float = 0.0,
               prior_var: float = 1.0, prior_n: float = 0.0, shrink: float = 2.0) -> float:
    """Standard score of ``x`` against the expectation at ``how``."""
    m, v, _ = baseline_expect(b, how, prior_mean, prior_var, prior_n, shrink)
    return (x - m) / math.sqrt(v + var_floor)


def ramp(z: float, z_low: float, z_high: float) -> float:
    """0 below ``z_low``, 1 above ``z_high``, linear in between."""
    if z <= z_low:
        return 0.0
    if z >= z_high:
        return 1.0
    return (z - z_low) / (z_high - z_low)


def baseline_score(b: SeasonalBaseline, how: int, x: float, *, two_sided: bool = False, var_floor: float = 1e-9,
                   z_low: float = 2.0, z_high: float = 6.0, prior_mean: float = 0.0, prior_var: float = 1.0,
                   prior_n: float = 0.0, shrink: float = 2.0) -> float:
    """Anomaly score in 0..1 of ``x`` at hour-of-week ``how`` (upward spikes only unless ``two_sided``)."""
    z = baseline_z(b, how, x, var_floor, prior_mean, prior_var, prior_n, shrink)
    if two_sided:
        z = abs(z)
    return ramp(z, z_low, z_high)


def baseline_is_warm(b: SeasonalBaseline, how: int | None = None, min_n: int = 3) -> bool:
    """Whether the hour-of-day bucket of ``how`` (or, without ``how``, the global layer) has ``min_n`` observations."""
    if how is None:
        return b.n >= min_n
    return b.hod_n[(how % HOURS_PER_WEEK) % HOURS_PER_DAY] >= min_n


class SeasonalScorer:
    """Learn-then-score wrapper of :class:`SeasonalBaseline` for timestamped series (river style).

    ``half_life`` counts observations of one hour-of-week bucket. With
    ``log=True`` values are scored as ``log1p(max(x, 0))``, which suits
    counts and amounts (spend, requests) whose spikes are multiplicative.
    ``var_floor`` is in the scored unit (after the log); give it in the
    series' own scale, e.g. ``(0.01 * typical value) ** 2`` for raw values.

    >>> import random
    >>> from datetime import UTC, datetime
    >>> rng = random.Random(1)
    >>> s = SeasonalScorer(log=True, var_floor=0.01)
    >>> t0 = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
    >>> for i in range(2 * 7 * 24 * 12):  # two weeks at 5-minute steps
    ...     t = t0 + 300 * i
    ...     s.learn_one(t, (100.0 if 9 <= (i // 12) % 24 < 17 else 10.0) * rng.uniform(0.8, 1.2))
    >>> t = t0 + 300 * (2 * 7 * 24 * 12) + 3 * 3600  # Monday 03:00, usually ~10
    >>> s.is_warm(t), s.score_one(t, 11.0), s.score_one(t, 400.0)
    (True, 0.0, 1.0)
    """

    __slots__ = ("baseline", "log", "min_alpha", "min_n", "shrink", "two_sided", "utc_offset_s", "var_floor",
                 "z_high", "z_low")

    def __init__(self, half_life: float = 8.0, shrink: float = 2.0, z_low: float = 2.0, z_high: float = 6.0,
                 two_sided: bool = False, log: bool = False, var_floor: float = 1e-6, min_n: int = 3,
                 utc_offset_s: float = 0.0) -> None:
        self.min_alpha = 1.0 - math.exp(-math.log(2.0) / half_life)
        self.shrink = shrink
        self.z_low = z_low
        self.z_high = z_high
        self.two_sided = two_sided
        self.log = log
        self.var_floor = var_floor
        self.min_n = min_n
        self.utc_offset_s = utc_offset_s
        self.baseline = new_baseline()

    def _value(self, x: float) -> float:
        return math.log1p(x if x > 0.0 else 0.0) if self.log else x

    def learn_one(self, t: float, x: float) -> None:
        baseline_update(self.baseline, hour_of_week_utc(t, self.utc_offset_s), self._value(x), self.min_alpha)

    def score_one(self, t: float, x: float) -> float:
        b = self.baseline
        if b.n == 0:
            return 0.0
        return baseline_score(b, hour_of_week_utc(t, self.utc_offset_s), self._value(x), two_sided=self.two_sided,
                              var_floor=self.var_floor, z_low=self.z_low, z_high=self.z_high, shrink=self.shrink)

    def is_warm(self, t: float | None = None) -> bool:
        how = None if t is None else hour_of_week_utc(t, self.utc_offset_s)
        return baseline_is_warm(self.baseline, how, self.min_n)

    def expect(self, t: float) -> tuple[float, float]:
        """Expected value and standard deviation at ``t`` (in the scored unit)."""
        m, v, _ = baseline_expect(self.baseline, hour_of_week_utc(t, self.utc_offset_s), shrink=self.shrink)
        return m, math.sqrt(v)
