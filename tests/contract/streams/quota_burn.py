"""Firing stream for quota_burn: a key drains its tenant's daily budget in a morning, over benign traffic.

Budgets: ``t_alpha`` $20/day (background uses ~$9), ``key_beta_1`` 50M tokens/week,
``t_gamma`` $100/month. On Tuesday from 09:00 UTC ``key_alpha_1`` calls the most
expensive model every 10 s ($1.5/min): the budget is ahead of pace within minutes,
burns at ~100x its sustainable rate (page), crosses 50 % and 80 % (info notices)
and is exhausted before 10:00.
"""

from __future__ import annotations

from detectors.base import BudgetInfo, DetectorContext
from sentinel.events import UsageEvent
from sentinel.rules import PricesFile, RuleSet
from tests.contract.streams.spend_spike import PRICES, attack
from tests.synth import DAY, HOUR, T0, background, merge

BUDGETS = (
    BudgetInfo("alpha-daily", "tenant", "t_alpha", "day", limit_usd=20.0),
    BudgetInfo("beta-key-weekly-tokens", "api_key", "key_beta_1", "week", limit_tokens=50_000_000),
    BudgetInfo("gamma-monthly", "tenant", "t_gamma", "month", limit_usd=100.0),
)


def context() -> DetectorContext:
    ctx = RuleSet(prices=PricesFile(models=PRICES)).context()
    return DetectorContext(calendar=ctx.calendar, prices=ctx.prices, tenants=ctx.tenants, budgets=BUDGETS)


def firing_stream() -> list[UsageEvent]:
    burst = attack(T0 + DAY + 9 * HOUR, minutes=90, period=10.0, probe=False, ip="10.0.0.1",
                   user_agent="app/1.0", prefix="burn")
    return merge(background(days=2.0, seed=5), burst)
