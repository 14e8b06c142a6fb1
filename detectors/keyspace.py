"""Bounded per-key state: idle expiry and a cap with least-recently-seen eviction.

An attacker who sends a million random api_key_ids must not make sentinel
exhaust its memory. Every detector keeps its per-key state in a plain dict
managed by these functions, which keep the dict ordered by (approximate) last
touch: a key is moved to the end when it is touched more than ``MOVE_EVERY``
seconds (event time) after its last move. Idle expiry and cap eviction then
only ever look at the front of the dict, so both cost O(removed), never a
scan of every key, and the per-event cost is one dict lookup in the common case.

The per-key struct must have a ``moved`` float field (event time of its last
move to the end) and is otherwise the detector's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import msgspec

MOVE_EVERY = 60.0


class Touchable(Protocol):
    moved: float


T = TypeVar("T", bound=Touchable)


class KeyspaceStats(msgspec.Struct):
    """Counters kept beside a keyspace, inside the detector's state."""

    evicted: int = 0
    expired: int = 0


def touch(items: dict[str, T], key: str, t: float, factory: Callable[[float], T], cap: int,
          stats: KeyspaceStats) -> T:
    """Get ``key``'s state, creating it with ``factory(t)``; keep the dict in touch order.

    >>> d: dict = {}
    >>> class K(msgspec.Struct):
    ...     moved: float
    >>> s = KeyspaceStats()
    >>> for i, k in enumerate("abcab"):
    ...     _ = touch(d, k, 100.0 * i, K, cap=2, stats=s)
    >>> list(d), s.evicted
    (['a', 'b'], 3)
    """
    st = items.get(key)
    if st is None:
        st = factory(t)
        st.moved = t
        items[key] = st
        if len(items) > cap:
            evict_oldest(items, len(items) - cap, stats)
        return st
    if t - st.moved > MOVE_EVERY:
        del items[key]
        items[key] = st
        st.moved = t
    return st


def evict_oldest(items: dict[str, T], count: int, stats: KeyspaceStats) -> None:
    """Drop the ``count`` least recently moved keys."""
    victims = []
    for key in items:
        victims.append(key)
        if len(victims) >= count:
            break
    for key in victims:
        del items[key]
    stats.evicted += len(victims)


def expire_idle(items: dict[str, T], now: float, ttl: float, stats: KeyspaceStats,
                last_seen: Callable[[T], float] | None = None) -> list[str]:
    """Forget keys idle for more than ``ttl``; returns the expired keys.

    ``last_seen`` reads a key's last event time (default: its ``moved`` time,
    which lags the true last touch by at most ``MOVE_EVERY``).
    """
    limit = now - ttl
    victims: list[str] = []
    for key, st in items.items():
        seen = last_seen(st) if last_seen is not None else st.moved
        if st.moved > limit + MOVE_EVERY:
            break
        if seen < limit:
            victims.append(key)
    for key in victims:
        del items[key]
    stats.expired += len(victims)
    return victims
