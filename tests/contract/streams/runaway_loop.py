"""Firing stream for runaway_loop: an agent loop starting Friday 19:30 UTC, over benign traffic."""

from __future__ import annotations

import random

from sentinel.events import UsageEvent
from tests.synth import DAY, HOUR, T0, Factory, background, merge


def loop(start: float, minutes: float, period: float = 30.0, session: str | None = "s_agent_loop_1",
         seed: int = 7, tenant: str = "t_alpha", api_key: str = "key_alpha_1", shape: str = "shp_agent_step",
         model: str = "gpt-4o", growth: tuple[int, int] = (150, 400), prefix: str = "loop") -> list[UsageEvent]:
    """An agent calling the model every ``period`` s (+-8 %) with its context growing each turn."""
    rng = random.Random(seed)
    f = Factory(prefix)
    out = []
    t = start
    ctx = 2_000
    while t < start + minutes * 60.0:
        out.append(
            f.event(
                t,
                tenant_id=tenant,
                api_key_id=api_key,
                session_id=session,
                prompt_shape=shape,
                prefix_hash="pfx_agent",
                model=model,
                input_tokens=ctx,
                cached_input_tokens=int(ctx * 0.5),
                output_tokens=rng.randint(150, 300),
                user_agent="agent-sdk/2.1",
            )
        )
        ctx += rng.randint(*growth)
        t += period * rng.uniform(0.92, 1.08)
    return out


FRIDAY = T0 + 4 * DAY


def firing_stream() -> list[UsageEvent]:
    return merge(
        background(days=1.5, seed=21, start=FRIDAY),
        loop(FRIDAY + 19.5 * HOUR, minutes=120),
    )
