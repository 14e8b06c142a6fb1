"""Small deterministic synthetic streams for unit and contract tests.

``background()`` makes benign traffic: a few tenants, keys with business-hours
rhythm, human chat sessions, stable IPs and models, cache reuse. Injection
helpers add one labelled anomaly each. Every stream is a list of
:class:`UsageEvent` sorted by time, built from a seeded ``random.Random``, so
tests are reproducible. Tests that need JSON lines use :func:`to_lines`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec

from sentinel.events import UsageEvent, finish_event

# Monday 2026-11-02 00:00:00 UTC
T0 = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
HOUR = 3600.0
DAY = 86400.0

TENANTS = ("t_alpha", "t_beta", "t_gamma")
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-20250514")


class Factory:
    """Builds events with sensible defaults and unique event ids."""

    def __init__(self, prefix: str = "ev") -> None:
        self.prefix = prefix
        self.n = 0

    def event(self, t: float, **kw: Any) -> UsageEvent:
        self.n += 1
        fields: dict[str, Any] = {
            "event_id": f"{self.prefix}-{self.n}",
            "ts": float(t),
            "api_key_id": "key_alpha_1",
            "tenant_id": "t_alpha",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "input_tokens": 800,
            "output_tokens": 150,
            "cached_input_tokens": 0,
            "source_ip": "10.0.0.1",
            "user_agent": "app/1.0",
        }
        fields.update(kw)
        return finish_event(UsageEvent(**fields))


def _diurnal(t: float) -> float:
    """Relative load 0.05..1 peaking mid-afternoon UTC on weekdays, quieter at weekends."""
    day = int(((t - T0) // DAY) % 7)
    hour = ((t - T0) % DAY) / HOUR
    base = 0.05 + 0.95 * max(0.0, math.sin(math.pi * (hour - 7.0) / 12.0)) if 7 <= hour <= 19 else 0.05
    return base * (0.25 if day >= 5 else 1.0)


def background(days: float = 3.0, seed: int = 1, rate_per_min: float = 4.0, start: float = T0,
               factory: Factory | None = None) -> list[UsageEvent]:
    """Benign multi-tenant traffic: chat sessions, stable keys/IPs/models, cache reuse."""
    rng = random.Random(seed)
    f = factory or Factory("bg")
    out: list[UsageEvent] = []
    t = start
    end = start + days * DAY
    sess = 0
    while t < end:
        load = _diurnal(t)
        t += rng.expovariate(rate_per_min * load / 60.0)
        if t >= end:
            break
        ti = rng.choices(range(len(TENANTS)), weights=(6, 3, 1))[0]
        tenant = TENANTS[ti]
        key_n = rng.randint(1, 2)
        sess += 1
        turns = rng.randint(1, 4)
        tt = t
        ctx = rng.randint(300, 2000)
        for turn in range(turns):
            cached = int(ctx * rng.uniform(0.3, 0.7)) if turn else 0
            out.append(
                f.event(
                    tt,
                    tenant_id=tenant,
                    api_key_id=f"key_{tenant[2:]}_{key_n}",
                    model=MODELS[(ti + key_n) % 2],
                    input_tokens=ctx,
                    cached_input_tokens=cached,
                    output_tokens=rng.randint(50, 400),
                    session_id=f"s_{tenant}_{sess}",
                    request_id=f"r_{f.n}",
                    user_id=f"u_{tenant}_{rng.randint(1, 20)}",
                    feature=("chat", "search", "summarize")[rng.randint(0, 2)],
                    source_ip=f"10.{ti}.0.{key_n}",
                    user_agent="app/1.0",
                    prompt_shape=f"shp_{tenant}_{rng.randint(1, 3)}",
                    prefix_hash=f"pfx_{tenant}",
                    resource_tenant_id=tenant if rng.random() < 0.3 else None,
                    latency_ms=rng.randint(300, 3000),
                )
            )
            ctx += rng.randint(100, 600)
            tt += rng.uniform(20.0, 300.0)
    out.sort(key=lambda e: e.t)
    return out


def merge(*streams: Iterable[UsageEvent]) -> list[UsageEvent]:
    """One time-sorted stream from several (stable for equal times)."""
    out = [e for s in streams for e in s]
    out.sort(key=lambda e: e.t)
    return out


def to_lines(events: Iterable[UsageEvent]) -> Iterator[bytes]:
    enc = msgspec.json.Encoder()
    for e in events:
        yield enc.encode(e)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def run_detector(det: Any, events: Iterable[UsageEvent], until: float | None = None,
                 tick: float = 60.0) -> list[Any]:
    """Feed a detector as the pipeline does (a tick at each ``tick`` boundary of event time) and,
    with ``until``, keep ticking to that time; returns every finding in order."""
    out: list[Any] = []
    next_tick: float | None = None
    for ev in events:
        if next_tick is None:
            next_tick = (ev.t // tick + 1) * tick
        while ev.t >= next_tick:
            out.extend(det.tick(next_tick) or [])
            next_tick += tick
        out.extend(det.update(ev) or [])
    if until is not None and next_tick is not None:
        while next_tick <= until:
            out.extend(det.tick(next_tick) or [])
            next_tick += tick
    return out


def firing(findings: Iterable[Any]) -> list[Any]:
    """The findings of status ``firing``."""
    return [f for f in findings if f.status == "firing"]
