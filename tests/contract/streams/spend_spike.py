"""Firing stream for spend_spike: a stolen key used at night from a new address, over benign traffic.

Four and a half days of background (the tenants' warm-up is three); on Friday
01:30 UTC (off-hours) ``key_alpha_1`` is probed from a new IP (404s on six model
names), then used for an hour to call the most expensive model with long outputs.
"""

from __future__ import annotations

from detectors.base import DetectorContext
from sentinel.events import UsageEvent
from sentinel.rules import Price, PricesFile, RuleSet
from tests.synth import DAY, HOUR, T0, Factory, background, merge

PRICES = {
    "gpt-4o": Price(input=2.5, output=10.0, cached_input=1.25),
    "gpt-4o-mini": Price(input=0.15, output=0.6, cached_input=0.075),
    "claude-sonnet-4": Price(input=3.0, output=15.0, cached_input=0.3, cache_write=3.75),
    "claude-opus-4": Price(input=15.0, output=75.0, cached_input=1.5, cache_write=18.75),
}


def context() -> DetectorContext:
    return RuleSet(prices=PricesFile(models=PRICES)).context()


def attack(start: float, minutes: float = 60.0, api_key: str = "key_alpha_1", tenant: str = "t_alpha",
           ip: str = "203.0.113.7", period: float = 2.0, probe: bool = True, prefix: str = "atk",
           model: str = "claude-opus-4-20250514", user_agent: str = "python-requests/2.31",
           output_tokens: int = 3000) -> list[UsageEvent]:
    """Model enumeration (404s over several names), then steady calls to the most expensive model."""
    f = Factory(prefix)
    out = []
    t = start
    if probe:
        for i, m in enumerate(("gpt-4-32k", "claude-3-opus", "claude-opus-4", "o1-pro", "gpt-4.5", "claude-2")):
            for _ in range(3):
                out.append(f.event(t, api_key_id=api_key, tenant_id=tenant, model=m, status=404, input_tokens=0,
                                   output_tokens=0, cost_usd=0.0, source_ip=ip, user_agent=user_agent,
                                   request_id=f"probe-{i}"))
                t += 1.0
    end = start + minutes * 60.0
    while t < end:
        out.append(f.event(t, api_key_id=api_key, tenant_id=tenant, model=model, input_tokens=2000,
                           output_tokens=output_tokens, source_ip=ip, user_agent=user_agent))
        t += period
    return out


def firing_stream() -> list[UsageEvent]:
    return merge(background(days=4.5, seed=3), attack(T0 + 4 * DAY + 1.5 * HOUR))
