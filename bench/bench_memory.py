"""Memory at 10k / 100k / 1M tracked API keys: RSS of a fresh process running every detector.

Each run is a child process (so RSS is its own) that feeds N events with N distinct api_key_ids
(tenants: N/100; sessions, request ids and prompt shapes distinct too) through the pipeline with
every detector's ``max_keys`` raised above N, and reports peak RSS (VmHWM) and RSS per key.
Target (issue 10): 1M tracked keys under 1.5 GB RSS. ``rows()`` feeds `make bench`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, random, sys
sys.path.insert(0, sys.argv[2])
from detectors import registry
from sentinel.pipeline import Pipeline, PipelineOptions
from sentinel.rules import load_rules
from tests.synth import T0, Factory, to_lines

def hwm():
    return int([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])

n = int(sys.argv[1])
rules = load_rules(None)
ctx = rules.context()
dets = [cls(cls.Params(max_keys=int(n * 1.2) + 10), ctx) for cls in registry.registered().values()]
p = Pipeline(rules, PipelineOptions(), detectors=dets)
base = hwm()
rng = random.Random(1)
f = Factory("mem")
step = 86400.0 * 2 / n  # spread over two days of event time (keys stay within idle_ttl_s)
batch = []
for i in range(n):
    t = T0 + i * step
    batch.append(f.event(t, tenant_id=f"t_{i % max(1, n // 100)}", api_key_id=f"key_{i}",
                         session_id=f"s_{i}", request_id=f"r_{i}", prompt_shape=f"shp_{i % 5000}",
                         source_ip=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", user_id=f"u_{i}"))
    if len(batch) == 5000:
        p.feed(list(to_lines(batch)), "mem", range(len(batch)))
        batch = []
if batch:
    p.feed(list(to_lines(batch)), "mem", range(len(batch)))
p.drain()
print(json.dumps({"keys": n, "tracked": p.tracked_keys(), "base_kb": base, "peak_kb": hwm()}))
"""


def measure(n: int) -> dict[str, object]:
    res = subprocess.run([sys.executable, "-c", CHILD, str(n), str(REPO)], capture_output=True, text=True,
                         check=True, cwd=REPO)
    out: dict[str, object] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def rows(quick: bool = False) -> list[tuple[str, str, str, str]]:
    out = []
    for n in (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000):
        m = measure(n)
        peak = int(m["peak_kb"]) / 1024  # type: ignore[call-overload]
        grown = (int(m["peak_kb"]) - int(m["base_kb"])) * 1024 / n  # type: ignore[call-overload]
        target = "1M keys < 1.5 GB RSS" if n == 1_000_000 else ""
        tracked = m["tracked"]
        api_keys = tracked.get("spend_spike", 0) if isinstance(tracked, dict) else 0
        out.append((f"RSS, all detectors @{n:,} api keys", f"{peak:,.0f} MB peak", f"{grown:,.0f} B/key grown; "
                    f"spend_spike tracks {api_keys:,}", target))
    return out


if __name__ == "__main__":
    for r in rows(quick="--quick" in sys.argv):
        print("  ".join(r))
