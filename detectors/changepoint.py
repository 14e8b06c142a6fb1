"""Online change detectors on small msgspec structs (snapshot-friendly).

river's ``drift.PageHinkley`` and ``drift.ADWIN`` keep their state in Python
objects that msgpack cannot encode, so detectors that need a change test keep
the recurrence here, on a struct that lives inside their ``State``.

* :class:`Cusum` -- Page's one-sided cumulative-sum scheme (E. S. Page, 1954,
  "Continuous inspection schemes", Biometrika 41(1/2), 100-115; see also
  Montgomery, "Introduction to Statistical Quality Control", ch. 9.1, the
  tabular CUSUM). Against a known in-control level ``target`` and a reference
  value (allowance) ``k``, the statistic of a *drop* is
  ``S_t = max(0, S_{t-1} + (target - x_t) - k)``; it signals when
  ``S_t > h``. ``k`` is usually half the smallest shift worth detecting. The
  last time ``S`` left zero estimates when the shift began.
* :class:`PageHinkley` -- the Page-Hinkley test as river implements it
  (cumulative mean, fading factor ``alpha``, tolerance ``delta``), for when
  no in-control level is known in advance. ``tests/unit/test_cache_collapse.py``
  checks it against ``river.drift.PageHinkley`` value for value.
"""

from __future__ import annotations

import math

import msgspec


class Cusum(msgspec.Struct, array_like=True, gc=False):
    """One-sided CUSUM statistic and the time it last left zero.

    >>> c = Cusum()
    >>> for t, x in enumerate([0.5, 0.52, 0.1, 0.12, 0.08]):
    ...     _ = cusum_down(c, x, target=0.5, k=0.1, t=float(t))
    >>> round(c.s, 2), c.since
    (0.9, 2.0)
    """

    s: float = 0.0
    since: float = 0.0


def cusum_down(c: Cusum, x: float, target: float, k: float, t: float) -> float:
    """Fold ``x`` into the statistic of a drop below ``target``; returns the new statistic."""
    s = c.s + (target - x) - k
    if s <= 0.0:
        c.s = 0.0
        return 0.0
    if c.s == 0.0:
        c.since = t
    c.s = s
    return s


def cusum_up(c: Cusum, x: float, target: float, k: float, t: float) -> float:
    """Fold ``x`` into the statistic of a rise above ``target``; returns the new statistic."""
    return cusum_down(c, -x, -target, k, t)


def cusum_reset(c: Cusum) -> None:
    c.s = 0.0
    c.since = 0.0


class PageHinkley(msgspec.Struct, array_like=True, gc=False):
    """Page-Hinkley test state (river's recurrence: cumulative mean, fading sums).

    ``drift`` is set by :func:`page_hinkley_update` when the test fires; the
    next update starts afresh, as in river.

    >>> ph = PageHinkley()
    >>> fired = [i for i, x in enumerate([0.0] * 40 + [5.0] * 40)
    ...          if page_hinkley_update(ph, x, min_instances=30, delta=0.005, threshold=50.0)]
    >>> fired[0]
    51
    """

    n: int = 0
    mean: float = 0.0
    sum_increase: float = 0.0
    sum_decrease: float = 0.0
    min_increase: float = math.inf
    max_decrease: float = -1.0
    drift: bool = False


def page_hinkley_update(ph: PageHinkley, x: float, min_instances: int = 30, delta: float = 0.005,
                        threshold: float = 50.0, alpha: float = 1 - 0.0001, mode: str = "both") -> bool:
    """Fold ``x`` into the test; True when a change is detected (``mode``: up, down or both)."""
    if ph.drift:
        ph.n = 0
        ph.mean = 0.0
        ph.sum_increase = 0.0
        ph.sum_decrease = 0.0
        ph.min_increase = math.inf
        ph.max_decrease = -1.0
        ph.drift = False
    ph.n += 1
    ph.mean += (x - ph.mean) / ph.n
    dev = x - ph.mean
    ph.sum_increase = alpha * ph.sum_increase + dev - delta
    ph.sum_decrease = alpha * ph.sum_decrease + dev + delta
    if ph.sum_increase < ph.min_increase:
        ph.min_increase = ph.sum_increase
    if ph.sum_decrease > ph.max_decrease:
        ph.max_decrease = ph.sum_decrease
    if ph.n >= min_instances:
        up = ph.sum_increase - ph.min_increase > threshold
        down = ph.max_decrease - ph.sum_decrease > threshold
        ph.drift = (up or down) if mode == "both" else (up if mode == "up" else down)
    return ph.drift
