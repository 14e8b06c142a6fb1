"""The benchmark input: the sample week as raw lines, repeated past its end as one forward-moving stream."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

REPO = Path(__file__).resolve().parents[1]


def _epoch(ts: Any) -> float:
    if isinstance(ts, str):
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    return float(ts) / 1000.0 if ts >= 1e11 else float(ts)


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def load_lines(n: int) -> tuple[list[bytes], str]:
    """``n`` raw lines and where they came from: replay_data/sample.jsonl.gz when it exists (else
    synthetic background traffic).

    Past the sample's end it repeats as one forward-moving stream: each copy gets fresh event ids (else
    dedup drops it) and timestamps shifted by the sample's span (else the copies are week-old, dead-lettered
    as too old, and the rates count events that never reached the detectors). ``ts`` stays RFC 3339, so
    decoding a copy costs what decoding the original does.
    """
    sample = REPO / "replay_data" / "sample.jsonl.gz"
    if sample.exists():
        with gzip.open(sample, "rb") as fh:
            base = [ln.rstrip(b"\n") for ln in fh if ln.strip()]
        origin = f"replay_data/sample.jsonl.gz ({len(base):,} lines)"
    else:
        from tests.synth import background, to_lines

        base = list(to_lines(background(days=7, rate_per_min=12)))
        origin = f"synthetic background ({len(base):,} lines)"
    lines = list(base[:n])
    if len(lines) < n:
        rows = [msgspec.json.decode(ln) for ln in base]
        times = [_epoch(r["ts"]) for r in rows]
        span = max(times) - min(times) + 3600.0
        rep = 1
        while len(lines) < n:
            for r, t in zip(rows[: n - len(lines)], times, strict=False):
                lines.append(msgspec.json.encode(dict(r, event_id=f"r{rep}-{r['event_id']}",
                                                      ts=_rfc3339(t + rep * span))))
            rep += 1
    return lines[:n], origin
