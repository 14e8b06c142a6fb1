"""retry_storm firing stream: a key x feature with rare single retries, then 40 minutes of 3x3 stacked retries."""

from __future__ import annotations

import random

from sentinel.events import UsageEvent
from tests.synth import DAY, HOUR, T0, Factory, background, merge


def feature_traffic(start: float, end: float, *, period_s: float = 15.0, retry_p: float = 0.03,
                    storm: tuple[float, float] | None = None, storm_attempts: int = 9,
                    key: str = "key_alpha_7", feature: str = "agent", seed: int = 4,
                    prefix: str = "rs") -> list[UsageEvent]:
    """One logical request every ``period_s``; a few retried once (429), all retried ``storm_attempts`` times
    during ``storm`` (failures 503/429/500, last attempt 200)."""
    rng = random.Random(seed)
    f = Factory(prefix)
    out = []
    t = start
    i = 0
    while t < end:
        i += 1
        rid = f"{prefix}_{key}_{i}"
        in_storm = storm is not None and storm[0] <= t < storm[1]
        attempts = storm_attempts if in_storm else (2 if rng.random() < retry_p else 1)
        for a in range(1, attempts + 1):
            last = a == attempts
            out.append(f.event(
                t + (a - 1) * 1.5, tenant_id="t_alpha", api_key_id=key, feature=feature, request_id=rid,
                attempt=((a - 1) % 3) + 1, status=200 if last else (503, 429, 500)[a % 3],
                output_tokens=rng.randint(100, 400) if last else 0, user_id="u_t_alpha_7",
            ))
        t += period_s
    return out


def firing_stream() -> list[UsageEvent]:
    storm = (T0 + DAY + 14 * HOUR, T0 + DAY + 14 * HOUR + 40 * 60)
    return merge(background(days=2.0, seed=5), feature_traffic(T0, T0 + 2.0 * DAY, storm=storm))
