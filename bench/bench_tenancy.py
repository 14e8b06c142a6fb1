"""µs/event and bytes/key of cross_tenant, retry_storm and cancellation_tax (rows for ``make bench``).

Run alone: ``.venv/bin/python bench/bench_tenancy.py [events]``. Times ``update`` plus the 60 s ticks (as
the pipeline drives them) over dense background traffic (best of 3, after a warm-up pass), and the
state per tracked key at 100k distinct keys: msgpack bytes of the snapshot and Python heap bytes
(tracemalloc, dict entries and key strings included).
"""

from __future__ import annotations

import gc
import importlib
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # bench/ is on sys.path: the script's folder

from detectors import registry
from detectors.base import Detector
from sentinel.events import UsageEvent
from sentinel.rules import load_rules
from tests.synth import T0, Factory, background

NAMES = ("cross_tenant", "retry_storm", "cancellation_tax")


def make(name: str, **params: Any) -> Detector[Any, Any]:
    importlib.import_module(f"detectors.{name}")
    cls = registry._REGISTRY[name]
    return cls(cls.Params(**params), load_rules(None).context())


def traffic(n: int) -> list[UsageEvent]:
    # Dense traffic (~250 events/min at the daily peak) so ticks cost what they cost live.
    events = background(days=3.0, seed=7, rate_per_min=250.0)[:n]
    for ev in events:  # the pipeline prices events before detectors see them
        if ev.cost_usd is None:
            ev.cost_usd = 0.001
    return events


def us_per_event(name: str, events: list[UsageEvent], repeat: int = 3) -> float:
    return harness.us_per_event(lambda: make(name), events, repeat)


def loop_overhead(events: list[UsageEvent]) -> float:
    def upd(ev: UsageEvent) -> None:
        return None
    t0 = time.process_time()
    for ev in events:
        if ev.ts >= 0.0:  # type: ignore[operator]
            upd(ev)
    return (time.process_time() - t0) / len(events) * 1e6


def bytes_per_key(name: str, keys: int) -> tuple[float, float, int]:
    det = make(name, max_keys=keys * 4)
    f = Factory("mem")
    events = [
        f.event(T0 + i * 0.01, tenant_id=f"t_{i % 1000}", api_key_id=f"key_{i}", user_id=f"u_{i}",
                request_id=f"r_{i}", feature=f"f_{i}", prompt_shape=f"shp_{i}", cost_usd=0.001,
                resource_tenant_id=f"t_{i % 1000}")
        for i in range(keys)
    ]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for ev in events:
        det.update(ev)
    gc.collect()
    heap = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    tracked = max(1, det.tracked_keys())
    return len(det.snapshot()) / tracked, heap / tracked, tracked


def rows(quick: bool = False) -> list[tuple[str, str, str, str]]:
    n, keys = (20_000, 5_000) if quick else (200_000, 100_000)
    events = traffic(n)
    out = []
    for name in NAMES:
        us = us_per_event(name, events)
        snap, heap, tracked = bytes_per_key(name, keys)
        out.append((f"{name} update+tick", f"{us:.2f} us/event", f"{n:,} background events",
                    "well under 1.5 us/event"))
        out.append((f"{name} state", f"{snap:.0f} B/key snapshot", f"{heap:.0f} B/key heap, {tracked:,} keys",
                    "<= 300 B/key"))
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    events = traffic(n)
    print(f"loop overhead {loop_overhead(events):.3f} us/event (included below)")
    for name in sys.argv[2:] or NAMES:
        us = us_per_event(name, events)
        snap, heap, tracked = bytes_per_key(name, 100_000)
        print(f"{name:18s} {us:6.3f} us/event   {snap:6.1f} B/key snapshot  {heap:6.1f} B/key heap ({tracked} keys)")


if __name__ == "__main__":
    main()
