"""cancellation_tax firing stream: a feature with a few cancelled attempts, then an hour where half are cancelled."""

from __future__ import annotations

import random

from sentinel.events import UsageEvent
from tests.synth import DAY, HOUR, T0, Factory, background, merge


def feature_traffic(start: float, end: float, *, period_s: float = 20.0, cancel_p: float = 0.04,
                    jump: tuple[float, float] | None = None, jump_p: float = 0.5,
                    tenant: str = "t_gamma", feature: str = "writer", seed: int = 6,
                    prefix: str = "ct") -> list[UsageEvent]:
    """One attempt every ``period_s``; cancelled with probability ``cancel_p`` (``jump_p`` during ``jump``)."""
    rng = random.Random(seed)
    f = Factory(prefix)
    out = []
    t = start
    i = 0
    while t < end:
        i += 1
        in_jump = jump is not None and jump[0] <= t < jump[1]
        cancelled = rng.random() < (jump_p if in_jump else cancel_p)
        out.append(f.event(
            t, tenant_id=tenant, api_key_id=f"key_{tenant[2:]}_5", feature=feature, request_id=f"{prefix}_{i}",
            model="gpt-4o", output_tokens=rng.randint(1000, 2000), cancelled=cancelled,
        ))
        t += period_s
    return out


def firing_stream() -> list[UsageEvent]:
    jump = (T0 + DAY + 15 * HOUR, T0 + DAY + 16 * HOUR)
    return merge(background(days=2.0, seed=9), feature_traffic(T0, T0 + 2.0 * DAY, jump=jump))
