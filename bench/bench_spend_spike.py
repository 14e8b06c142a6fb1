"""Time spend_spike's ``update`` (+ the 60 s ticks) over background traffic, and its state per key.

Run: ``.venv/bin/python bench/bench_spend_spike.py [--quick]``. Prints:

* µs/event over ~200k background events (costs filled from the price table, as the pipeline
  does), next to a reference loop (one dict lookup and two additions per event) measured in the
  same process, so that a loaded machine shows as a large reference number;
* state per tracked key at 100k keys with one event each (the contract's worst case: every key
  new) and at 5k keys with two days of hourly history each (profile, variance, priors all set):
  msgpack bytes of the snapshot and Python heap bytes (tracemalloc), dict entries and key
  strings included.

``make bench`` adds the same numbers to its table through :func:`rows`.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import Reference, us_per_event  # bench/ is on sys.path: the script's folder

from detectors.base import Detector, DetectorContext
from detectors.spend_spike import SpendSpike, SpendSpikeParams
from sentinel.events import UsageEvent
from tests.contract.streams.spend_spike import context
from tests.synth import HOUR, T0, Factory, background


def priced(events: list[UsageEvent], ctx: DetectorContext) -> list[UsageEvent]:
    for e in events:
        if e.cost_usd is None:
            e.cost_usd = ctx.prices.resolve(e.model).cost(e.input_tokens, e.output_tokens, e.cached_input_tokens,
                                                          e.cache_write_tokens)
    return events


def fresh_keys(n: int) -> Iterator[UsageEvent]:
    f = Factory("mem")
    for i in range(n):
        yield f.event(T0 + i * 0.01, tenant_id=f"t_mem_{i % max(1, n // 10)}", api_key_id=f"key_mem_{i:012d}",
                      source_ip=f"10.{i % 256}.{(i // 256) % 256}.1", cost_usd=0.001)


def warm_keys(n: int, hours: int) -> Iterator[UsageEvent]:
    """``n`` keys, each with one call per hour for ``hours`` hours (time-sorted)."""
    f = Factory("warm")
    step = 3000.0 / n
    for h in range(hours):
        for i in range(n):
            yield f.event(T0 + h * HOUR + i * step, tenant_id=f"t_warm_{i % max(1, n // 10)}",
                          api_key_id=f"key_warm_{i:08d}", source_ip=f"10.{i % 256}.{(i // 256) % 256}.1",
                          cost_usd=0.01 + (i % 7) * 0.003)


def state_per_key(det: Detector[Any, Any], events: Iterator[UsageEvent]) -> tuple[int, float, float]:
    """Tracked keys, snapshot bytes per key and heap bytes per key after feeding ``events``."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    next_tick: float | None = None
    for ev in events:
        if next_tick is None:
            next_tick = (ev.t // 60.0 + 1) * 60.0
        while ev.t >= next_tick:
            det.tick(next_tick)
            next_tick += 60.0
        det.update(ev)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    keys = det.tracked_keys()
    return keys, len(det.snapshot()) / keys, (after - before) / keys


def measure(quick: bool = False) -> dict[str, float]:
    ctx = context()
    days = 1.5 if quick else 7.0
    events = priced(background(days=days, seed=11, rate_per_min=20.0), ctx)
    out: dict[str, float] = {"events": float(len(events))}
    out["ref_us"] = us_per_event(Reference, events)
    out["us"] = us_per_event(lambda: SpendSpike(SpendSpikeParams(), ctx), events)
    n_fresh = 10_000 if quick else 100_000
    keys, snap, heap = state_per_key(SpendSpike(SpendSpikeParams(max_keys=2 * n_fresh), ctx), fresh_keys(n_fresh))
    out.update(fresh_keys=keys, fresh_snap=snap, fresh_heap=heap)
    n_warm, hours = (1_000, 30) if quick else (5_000, 49)
    keys, snap, heap = state_per_key(SpendSpike(SpendSpikeParams(tenant_warmup_s=HOUR), ctx), warm_keys(n_warm, hours))
    out.update(warm_keys=keys, warm_snap=snap, warm_heap=heap, warm_hours=hours)
    return out


def rows(quick: bool = False) -> list[tuple[str, str, str, str]]:
    m = measure(quick)
    return [
        ("spend_spike update+tick", f"{m['us']:.2f} µs/event", f"reference loop {m['ref_us']:.2f} µs/event",
         "< 1.5 µs/event"),
        (f"spend_spike state @{m['fresh_keys']:,.0f} new keys", f"{m['fresh_snap']:.0f} B/key snapshot",
         f"heap {m['fresh_heap']:.0f} B/key", "<= 300 B/key"),
        (f"spend_spike state @{m['warm_keys']:,.0f} keys x {m['warm_hours']:.0f} h",
         f"{m['warm_snap']:.0f} B/key snapshot", f"heap {m['warm_heap']:.0f} B/key (tenant priors incl.)",
         "<= 300 B/key"),
    ]


def main() -> int:
    quick = "--quick" in sys.argv
    m = measure(quick)
    print(f"spend_spike over {m['events']:,.0f} background events: {m['us']:.2f} µs/event "
          f"(reference loop {m['ref_us']:.2f} µs/event on this machine now)")
    print(f"state, {m['fresh_keys']:,.0f} keys with one event each: {m['fresh_snap']:.0f} B/key snapshot, "
          f"{m['fresh_heap']:.0f} B/key heap")
    print(f"state, {m['warm_keys']:,.0f} keys with {m['warm_hours']:.0f} hours of history: {m['warm_snap']:.0f} B/key "
          f"snapshot, {m['warm_heap']:.0f} B/key heap")
    return 0


if __name__ == "__main__":
    sys.exit(main())
