"""Firing stream for cache_collapse: a model version change that leaves the prompt cache cold for 3 hours."""

from __future__ import annotations

import random
from collections.abc import Callable

from sentinel.events import UsageEvent
from tests.synth import DAY, HOUR, T0, Factory, background, merge


def cached_traffic(start: float, hours: float, seed: int = 5, rate_per_min: float = 8.0, tenant: str = "t_cache",
                   model: Callable[[float], str] | None = None, ratio: Callable[[float], float] | None = None,
                   prefix: Callable[[float, int], str] | None = None, prefix_id: str = "cc") -> list[UsageEvent]:
    """Steady traffic with a shared system prompt; ``model``/``ratio``/``prefix`` vary with time."""
    rng = random.Random(seed)
    f = Factory(prefix_id)
    out = []
    t = start
    n = 0
    while True:
        t += rng.expovariate(rate_per_min / 60.0)
        if t >= start + hours * HOUR:
            break
        n += 1
        inp = rng.randint(3_000, 9_000)
        r = ratio(t) if ratio else 0.7
        noise = rng.uniform(-0.1, 0.1)
        # A collapsed cache serves nothing at all (ratio 0): exactly zero cached tokens.
        cached = min(inp, max(0, int(inp * (r + noise)))) if r > 0 else 0
        out.append(
            f.event(
                t,
                tenant_id=tenant,
                api_key_id=f"key_{tenant}",
                session_id=f"s_{prefix_id}_{n}",
                model=model(t) if model else "gpt-4o-2024-08-06",
                input_tokens=inp,
                cached_input_tokens=cached,
                output_tokens=rng.randint(100, 400),
                prompt_shape=f"shp_{tenant}",
                prefix_hash=prefix(t, n) if prefix else f"pfx_{tenant}_main",
            )
        )
    return out


SWITCH = T0 + 14 * HOUR
BACK = SWITCH + 3 * HOUR


def firing_stream() -> list[UsageEvent]:
    def model(t: float) -> str:
        return "gpt-4o-2024-11-20" if SWITCH <= t < BACK else "gpt-4o-2024-08-06"

    def ratio(t: float) -> float:
        return 0.0 if SWITCH <= t < BACK else 0.7

    return merge(background(days=1.0, seed=31), cached_traffic(T0 + 4 * HOUR, 18.0, model=model, ratio=ratio))


__all__ = ["DAY", "cached_traffic", "firing_stream"]
