"""Time ``update`` of runaway_loop (and cache_collapse) over background traffic, and measure state per key.

Run: ``.venv/bin/python bench/bench_runaway_loop.py [events] [detector ...]``. Prints, per detector,
µs/event (update plus the 60 s ticks, as the pipeline drives them) over ~200k background events with
a live agent loop in them, then the state per tracked key at 100k keys: msgpack bytes of the
snapshot and Python heap bytes (tracemalloc, dict entries and key strings included).
"""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

from detectors import registry
from detectors.base import Detector
from sentinel.events import UsageEvent
from sentinel.rules import load_rules
from tests.contract.streams.cache_collapse import cached_traffic
from tests.contract.streams.runaway_loop import loop
from tests.synth import HOUR, T0, Factory, background, merge

NAMES = ("runaway_loop", "cache_collapse")


def make(name: str) -> Detector[Any, Any]:
    cls = registry.get(name)
    return cls(cls.Params(), load_rules(None).context())


def drive(det: Detector[Any, Any], events: list[UsageEvent]) -> float:
    upd = det.update
    tick = det.tick
    next_tick = (events[0].t // 60.0 + 1) * 60.0
    t0 = time.process_time()
    for ev in events:
        if ev.ts >= next_tick:  # type: ignore[operator]
            while ev.ts >= next_tick:  # type: ignore[operator]
                tick(next_tick)
                next_tick += 60.0
        upd(ev)
    return time.process_time() - t0


def distinct_keys(n: int, start: float) -> Iterator[UsageEvent]:
    """``n`` events, each a new session, tenant x model family and prefix (one turn each)."""
    f = Factory("mem")
    for i in range(n):
        yield f.event(start + i * 0.01, tenant_id=f"t_mem_{i % 5000}", session_id=f"s_mem_{i:012d}",
                      prompt_shape=f"shp_mem_{i % 50}", prefix_hash=f"pfx_mem_{i:012d}", model=f"gpt-4o-m{i % 20}",
                      input_tokens=1200 + i % 500, cached_input_tokens=600, cost_usd=0.001)


def per_key(name: str, n: int) -> tuple[int, float, float]:
    """Keys tracked after ``n`` one-turn keys, msgpack bytes per key, and heap bytes per key.

    Events are made and dropped one by one, so the heap growth is what the state keeps:
    structs, numbers, dict slots and the key strings.
    """
    det = make(name)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for ev in distinct_keys(n, T0):
        det.update(ev)
    del ev
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    keys = det.tracked_keys()
    return keys, len(det.snapshot()) / keys, (after - before) / keys


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    names = sys.argv[2:] or list(NAMES)
    bg = background(days=3.0, seed=7, rate_per_min=250.0)
    events = merge(bg, loop(T0 + 4.5 * 86400 + 20 * HOUR, minutes=240),
                   cached_traffic(T0 + 4 * HOUR, 30.0, rate_per_min=20.0))[:n]
    for ev in events:  # the pipeline prices events before detectors see them
        if ev.cost_usd is None:
            ev.cost_usd = 0.001
    print(f"{len(events)} events")
    base = time.process_time()
    for _ in events:
        pass
    loop_s = time.process_time() - base
    for name in names:
        best = min(drive(make(name), events) for _ in range(3))
        print(f"{name:16s} {(best - loop_s) / len(events) * 1e6:6.3f} us/event")
    for name in names:
        keys, mp, heap = per_key(name, 100_000)
        print(f"{name:16s} {keys} keys: {mp:6.1f} msgpack bytes/key, {heap:6.1f} heap bytes/key")


if __name__ == "__main__":
    main()
