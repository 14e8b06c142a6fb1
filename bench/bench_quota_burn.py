"""Time quota_burn's ``update`` (+ the 60 s ticks) over background traffic with budgets, and its state per budget.

Run: ``.venv/bin/python bench/bench_quota_burn.py [--quick]``. The background's three tenants
each have a budget (daily $, weekly tokens on one key, monthly $) sized at about twice their
spend, so every event is charged to a budget and the ticks judge them; a reference loop
measured in the same process shows how loaded the machine is. ``make bench`` adds the numbers
to its table through :func:`rows`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import Reference, drive  # bench/ is on sys.path: the script's folder

from detectors.base import BudgetInfo, DetectorContext
from detectors.quota_burn import QuotaBurn, QuotaBurnParams
from tests.contract.streams.spend_spike import context as priced_context
from tests.synth import background

BUDGETS = (
    BudgetInfo("alpha-daily", "tenant", "t_alpha", "day", limit_usd=90.0),
    BudgetInfo("beta-key-weekly-tokens", "api_key", "key_beta_1", "week", limit_tokens=60_000_000),
    BudgetInfo("gamma-monthly", "tenant", "t_gamma", "month", limit_usd=400.0),
)


def context() -> DetectorContext:
    ctx = priced_context()
    return DetectorContext(calendar=ctx.calendar, prices=ctx.prices, tenants=ctx.tenants, budgets=BUDGETS)


def measure(quick: bool = False) -> dict[str, float]:
    ctx = context()
    events = background(days=1.5 if quick else 7.0, seed=11, rate_per_min=20.0)
    for e in events:
        e.cost_usd = ctx.prices.resolve(e.model).cost(e.input_tokens, e.output_tokens, e.cached_input_tokens,
                                                      e.cache_write_tokens)
    ref = min(drive(Reference(), events) for _ in range(3))
    best = float("inf")
    det = QuotaBurn(QuotaBurnParams(), ctx)
    for _ in range(3):
        det = QuotaBurn(QuotaBurnParams(), ctx)
        best = min(best, drive(det, events))
    n = len(events)
    return {"events": float(n), "ref_us": ref / n * 1e6, "us": best / n * 1e6,
            "budgets": float(det.tracked_keys()), "snap": len(det.snapshot()) / max(1, det.tracked_keys())}


def rows(quick: bool = False) -> list[tuple[str, str, str, str]]:
    m = measure(quick)
    return [
        ("quota_burn update+tick", f"{m['us']:.2f} µs/event", f"reference loop {m['ref_us']:.2f} µs/event",
         "every event charged to a budget"),
        ("quota_burn state", f"{m['snap']:,.0f} B/budget snapshot", f"{m['budgets']:.0f} budgets",
         "state only for budgets in the rules"),
    ]


def main() -> int:
    m = measure("--quick" in sys.argv)
    print(f"quota_burn over {m['events']:,.0f} background events, all charged to a budget: {m['us']:.2f} µs/event "
          f"(reference loop {m['ref_us']:.2f} µs/event on this machine now)")
    print(f"state: {m['snap']:,.0f} B per budget ({m['budgets']:.0f} budgets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
