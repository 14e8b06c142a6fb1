"""Shared online statistics for detectors.

Plain functions over small msgspec structs, so that detector state stays
compact (a struct per key, no per-key Python objects of river's size) and
snapshots are a msgpack encode. river's ``stats.EWMean``/``EWVar`` compute the
same recurrences; they are used in tests as the reference implementation.

* :class:`Ewm` -- exponentially weighted mean and variance (West 1979,
  "Updating mean and variance estimates"; Finch 2009, "Incremental calculation
  of weighted mean and variance", eq. 143-144).
* :class:`Buckets` -- a ring of fixed-width time buckets for windowed sums over
  the last N buckets (1, 5, 15 minutes ...), robust to out-of-order events
  inside the ring.
"""

from __future__ import annotations

import math

import msgspec


class Ewm(msgspec.Struct, array_like=True, gc=False):
    """Exponentially weighted mean/variance with a sample count.

    >>> e = Ewm()
    >>> for x in [1.0, 2.0, 3.0, 4.0]:
    ...     ewm_update(e, x, 0.5)
    >>> round(e.mean, 4), round(e.var, 4), e.n
    (3.125, 1.1094, 4)
    """

    mean: float = 0.0
    var: float = 0.0
    n: int = 0


def ewm_update(e: Ewm, x: float, alpha: float) -> None:
    """Fold ``x`` into ``e`` with weight ``alpha`` (the first value sets the mean)."""
    if e.n == 0:
        e.mean = x
        e.var = 0.0
        e.n = 1
        return
    diff = x - e.mean
    incr = alpha * diff
    e.mean += incr
    e.var = (1.0 - alpha) * (e.var + diff * incr)
    e.n += 1


def ewm_z(e: Ewm, x: float, floor_std: float) -> float:
    """Standard score of ``x`` against ``e``, with the deviation floored at ``floor_std``."""
    std = math.sqrt(e.var) if e.var > 0.0 else 0.0
    if std < floor_std:
        std = floor_std
    return (x - e.mean) / std


def alpha_for_half_life(half_life: float) -> float:
    """EWM weight such that an observation's influence halves after ``half_life`` updates."""
    return 1.0 - math.exp(-math.log(2.0) / half_life)


class Buckets(msgspec.Struct, array_like=True, gc=False):
    """Sums over a ring of ``len(sums)`` buckets of ``width`` seconds.

    ``head`` is the index (time // width) of the newest bucket seen.

    >>> b = Buckets(width=60.0, sums=[0.0] * 15)
    >>> buckets_add(b, 0.0, 1.0); buckets_add(b, 61.0, 2.0); buckets_add(b, 130.0, 4.0)
    >>> buckets_sum(b, 130.0, 1), buckets_sum(b, 130.0, 2), buckets_sum(b, 130.0, 15)
    (4.0, 6.0, 7.0)
    >>> buckets_sum(b, 130.0 + 60 * 20, 15)
    0.0
    """

    width: float
    sums: list[float]
    head: int = -1


def _advance(b: Buckets, idx: int) -> None:
    n = len(b.sums)
    if b.head < 0:
        b.head = idx
        return
    gap = idx - b.head
    if gap <= 0:
        return
    if gap >= n:
        for i in range(n):
            b.sums[i] = 0.0
    else:
        for k in range(b.head + 1, idx + 1):
            b.sums[k % n] = 0.0
    b.head = idx


def buckets_add(b: Buckets, t: float, value: float) -> None:
    """Add ``value`` at time ``t``; values older than the ring are dropped."""
    idx = int(t // b.width)
    if idx > b.head:
        _advance(b, idx)
    elif b.head - idx >= len(b.sums):
        return
    b.sums[idx % len(b.sums)] += value


def buckets_sum(b: Buckets, now: float, last: int) -> float:
    """Sum of the ``last`` buckets up to and including the one containing ``now``."""
    n = len(b.sums)
    if b.head < 0:
        return 0.0
    idx = int(now // b.width)
    total = 0.0
    for k in range(idx - min(last, n) + 1, idx + 1):
        if b.head - n < k <= b.head:
            total += b.sums[k % n]
    return total
