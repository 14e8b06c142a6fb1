"""µs/event and bytes/key of runaway_loop and cache_collapse (rows for ``make bench``).

Run alone: ``.venv/bin/python bench/bench_runaway_loop.py [events] [detector ...]``. Times ``update``
plus the 60 s ticks (as the pipeline drives them), best of 3 in process CPU time, over dense
synthetic background traffic with a live agent loop and a cache-heavy tenant in it, and over the
first events of ``replay_data/sample.jsonl.gz`` when it exists (sparse real-shaped traffic: nearly
every event opens a new minute for its keys). State per tracked key at 100k distinct keys: msgpack
bytes of the snapshot and Python heap bytes (tracemalloc; events are made and dropped one by one,
so the key strings the state keeps are counted too).
"""

from __future__ import annotations

import gc
import gzip
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import harness  # noqa: E402  (bench/ is on sys.path: the script's folder)

from detectors import registry  # noqa: E402
from detectors.base import Detector  # noqa: E402
from sentinel.decoding import EventDecoder  # noqa: E402
from sentinel.events import UsageEvent  # noqa: E402
from sentinel.rules import load_rules  # noqa: E402
from tests.contract.streams.cache_collapse import cached_traffic  # noqa: E402
from tests.contract.streams.runaway_loop import loop  # noqa: E402
from tests.synth import HOUR, T0, Factory, background, merge  # noqa: E402

NAMES = ("runaway_loop", "cache_collapse")


def make(name: str) -> Detector[Any, Any]:
    cls = registry.get(name)
    return cls(cls.Params(), load_rules(None).context())


def synthetic(n: int) -> list[UsageEvent]:
    events = merge(background(days=3.0, seed=7, rate_per_min=250.0),
                   loop(T0 + 4.5 * 86400 + 20 * HOUR, minutes=240),
                   cached_traffic(T0 + 4 * HOUR, 30.0, rate_per_min=20.0))[:n]
    for ev in events:  # the pipeline prices events before detectors see them
        if ev.cost_usd is None:
            ev.cost_usd = 0.001
    return events


def sample(n: int) -> list[UsageEvent]:
    path = REPO / "replay_data" / "sample.jsonl.gz"
    if not path.exists():
        return []
    with gzip.open(path, "rb") as fh:
        lines = [ln for _, ln in zip(range(n), fh, strict=False)]
    decoder = EventDecoder()
    events: list[UsageEvent] = []
    for i in range(0, len(lines), 4096):
        got, _ = decoder.decode_batch(lines[i:i + 4096])
        events.extend(got)
    prices = load_rules(REPO / "rules").context().prices
    for ev in events:
        if ev.cost_usd is None:
            ev.cost_usd = prices.resolve(ev.model).cost(ev.input_tokens, ev.output_tokens, ev.cached_input_tokens,
                                                        ev.cache_write_tokens)
    events.sort(key=lambda e: e.t)
    return events


def us_per_event(name: str, events: list[UsageEvent]) -> float:
    return harness.us_per_event(lambda: make(name), events)


def distinct_keys(n: int, start: float) -> Iterator[UsageEvent]:
    """``n`` events, each a new session, workload (feature) and prefix (one turn each), 5,000 tenants.

    One api key for all: the event model keeps a bounded memo of clean key ids, which is not
    detector state.
    """
    f = Factory("mem")
    for i in range(n):
        yield f.event(start + i * 0.01, tenant_id=f"t_mem_{i % 5000}", api_key_id="key_mem", feature=f"f_{i:09d}",
                      session_id=f"s_mem_{i:012d}", prompt_shape=f"shp_mem_{i % 50}",
                      prefix_hash=f"pfx_mem_{i:012d}", model=f"gpt-4o-m{i % 20}",
                      input_tokens=1200 + i % 500, cached_input_tokens=600, cost_usd=0.001)


def bytes_per_key(name: str, n: int) -> tuple[float, float, int]:
    """(snapshot bytes, heap bytes, tracked keys) per tracked key after ``n`` one-turn keys."""
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
    keys = max(1, det.tracked_keys())
    return len(det.snapshot()) / keys, (after - before) / keys, det.tracked_keys()


def rows(quick: bool = False) -> list[tuple[str, str, str, str]]:
    n, keys = (20_000, 5_000) if quick else (200_000, 100_000)
    dense = synthetic(n)
    sparse = sample(min(n, 100_000))
    out = []
    for name in NAMES:
        out.append((f"{name} update+tick", f"{us_per_event(name, dense):.2f} us/event",
                    f"{len(dense):,} background events", "well under 1.5 us/event"))
        if sparse:
            out.append((f"{name} update+tick", f"{us_per_event(name, sparse):.2f} us/event",
                        f"{len(sparse):,} sample events", "well under 1.5 us/event"))
        snap, heap, tracked = bytes_per_key(name, keys)
        out.append((f"{name} state", f"{snap:.0f} B/key snapshot", f"{heap:.0f} B/key heap, {tracked:,} keys",
                    "<= 300 B/key"))
    return out


def main() -> None:
    quick = "--quick" in sys.argv
    for row in rows(quick=quick):
        print("  ".join(row))


if __name__ == "__main__":
    main()
