"""What the per-detector benchmark scripts share: driving a detector over events as the pipeline
does (update per event, a tick at each 60 s boundary of event time), timed in CPU seconds, and a
reference detector that calibrates the machine."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from sentinel.events import UsageEvent


def drive(det: Any, events: list[UsageEvent]) -> float:
    """CPU seconds of this process for ``update`` of every event plus a tick at each 60 s boundary."""
    upd = det.update
    tick = det.tick
    next_tick = (events[0].t // 60.0 + 1) * 60.0
    gc.collect()
    t0 = time.process_time()
    for ev in events:
        if ev.ts >= next_tick:  # type: ignore[operator]
            while ev.ts >= next_tick:  # type: ignore[operator]
                tick(next_tick)
                next_tick += 60.0
        upd(ev)
    return time.process_time() - t0


def us_per_event(make: Callable[[], Any], events: list[UsageEvent], repeat: int = 3) -> float:
    """Best of ``repeat`` fresh detectors from ``make()``, in microseconds per event."""
    return min(drive(make(), events) for _ in range(repeat)) / len(events) * 1e6


class Reference:
    """The cheapest keyed detector imaginable (a dict lookup and two adds per event): the floor
    against which a detector's cost on this machine is read."""

    def __init__(self) -> None:
        self.d: dict[str, list[float]] = {}

    def update(self, e: UsageEvent) -> None:
        st = self.d.get(e.api_key_id)
        if st is None:
            st = self.d[e.api_key_id] = [0.0, 0.0]
        st[0] += e.cost_usd or 0.0
        st[1] += 1.0

    def tick(self, now: float) -> None:
        return None
