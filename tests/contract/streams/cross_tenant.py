"""cross_tenant firing stream: benign traffic, then a t_beta key reads t_alpha's and t_gamma's data."""

from __future__ import annotations

from sentinel.events import UsageEvent
from tests.synth import DAY, HOUR, T0, Factory, background, merge


def firing_stream() -> list[UsageEvent]:
    f = Factory("xt")
    start = T0 + DAY + 10 * HOUR
    attack = [
        f.event(
            start + i * 40.0,
            tenant_id="t_beta",
            api_key_id="key_beta_9",
            user_id="u_t_beta_9",
            request_id=f"r_xt_{i}",
            feature="search",
            prompt_shape="shp_t_beta_1",
            resource_tenant_id=("t_alpha", "t_gamma", "t_beta")[i % 3],
        )
        for i in range(30)
    ]
    return merge(background(days=1.5, seed=3), attack)
