"""quota_burn: a budget burning so fast that it will run out before its period ends.

Budgets come from ``rules/budgets.yaml`` (``context.budgets``): a tenant or an
API key, a limit in dollars or tokens, a day, week or month in the tenant's
time zone (:meth:`sentinel.calendar.TenantCalendar.period_bounds`).

Method: multiwindow, multi-burn-rate alerts from the Google SRE Workbook
(Beyer et al. 2018, ch. 5 "Alerting on SLOs", "Multiwindow, multi-burn-rate
alerts"). The *burn rate* over a window is the spend rate in that window
divided by the sustainable rate ``limit / period length``; burning at 1x
uses the budget exactly by the end of the period. For a 30-day budget:

====================  ==========  ===========  ============  ==============
tier                  long window  short window  burn rate     budget used
====================  ==========  ===========  ============  ==============
page (fast)           1 h          5 min        >= 14.4x      2 % in 1 h
page (slow)           6 h          30 min       >= 6x         5 % in 6 h
ticket                7 d (*)      6 h          >= 1x         23 % in 7 d
====================  ==========  ===========  ============  ==============

(*) The workbook's ticket window is 3 days. Spend, unlike an error ratio,
has a strong weekly cycle: a B2B tenant spends 1.3-1.5x its weekly average
on weekdays, so a 3-day window read on a Thursday says "1.1x" for a budget
sized at 1.3x the month's spend, and would open a ticket every week. A
week-long window averages the cycle out (``ticket_long_s`` sets it back).

A tier is active while *both* windows burn at or above its rate: the long
window makes it significant, the short one makes it stop soon after the burn
does. Windows scale with the period (a daily budget uses 1/30 of them, a
weekly one 7/30), so an alert always means the same share of the budget,
and are floored at ``min_window_s`` (one tick). Spend is kept in
``bucket_s``-wide buckets (scaled the same way: 5 minutes for a monthly
budget, whose 7-day window spans 2016 of them) only for budgets that exist,
and only the buckets that saw spend: a :func:`ring_add` ring of packed
(bucket, sum) pairs, 16 bytes per bucket with spend in the longest window
(at most ~32 KB for a budget spending every 5 minutes, a few dozen bytes
for one used now and then).

Two additions to the workbook, because a spend budget, unlike an error
budget, is only in danger if it actually runs out: a tier only alerts while
the budget is at or ahead of its linear pace (``spent >= pace_gate * limit *
elapsed / period``), so that a short large batch that leaves the budget under
pace does not page; and while, at the tier's long-window rate, the remaining
budget would be gone before the period ends (a weekday burn at 1.0x of a
budget sized for the week's average does not open a ticket).
When sentinel started watching in the middle of a period (no snapshot from
before), the spend before is unknown: the pace then counts from the first
event seen, and so does ``spent`` (reported with ``observed_since``).

Consumption notices at ``notice_fractions`` (50 % and 80 %) are emitted once
per period per budget as ``info`` findings; reaching 100 % is a real alert
(budget exhausted). Both are about entities of their own
(``<budget>/notice-50``, ``<budget>/exhausted``), so that they are alerts
apart from the burn incident (entity ``<budget>``), and are resolved when
the period rolls over. The burn incident
opens at the first active tier, re-emits when a higher tier becomes active,
and resolves ``resolve_quiet_s`` after the burn has fallen back: no tier
active and the ticket's short window (6 h) under the sustainable rate. A
tier is judged only once the budget has been watched for its long window. Evidence: spent,
remaining, every burn rate with its windows, projected exhaustion time
(RFC 3339).
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_left, bisect_right
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

import msgspec
from pydantic import Field

from detectors.base import BudgetInfo, Detector, DetectorParams, Finding
from detectors.keyspace import MOVE_EVERY, KeyspaceStats, expire_idle, touch
from detectors.records import record_decoder, record_encoder
from detectors.registry import register
from sentinel.events import UsageEvent

_NOMINAL_PERIOD_S: Final = {"day": 86400.0, "week": 7 * 86400.0, "month": 30 * 86400.0}
_TIER_NAMES: Final = ("", "ticket", "page_slow", "page_fast")
_ADJ: Final = {"day": "daily", "week": "weekly", "month": "monthly"}


class QuotaBurnParams(DetectorParams):
    reference_period_s: float = Field(
        30 * 86400.0, gt=0, description="period the windows below are written for (the workbook's 30 days)"
    )
    page_fast_burn: float = Field(14.4, gt=0, description="burn rate of the fast page tier (2% of a month in 1 h)")
    page_fast_long_s: float = Field(3600.0, gt=0, description="long window of the fast page tier")
    page_fast_short_s: float = Field(300.0, gt=0, description="short window of the fast page tier")
    page_slow_burn: float = Field(6.0, gt=0, description="burn rate of the slow page tier (5% of a month in 6 h)")
    page_slow_long_s: float = Field(21600.0, gt=0, description="long window of the slow page tier")
    page_slow_short_s: float = Field(1800.0, gt=0, description="short window of the slow page tier")
    ticket_burn: float = Field(1.0, gt=0, description="burn rate of the ticket tier (10% of a month in 3 d)")
    ticket_long_s: float = Field(
        604800.0, gt=0, description="long window of the ticket tier (7 d: a whole weekly cycle; the workbook's is 3 d)"
    )
    ticket_short_s: float = Field(21600.0, gt=0, description="short window of the ticket tier")
    bucket_s: float = Field(300.0, gt=0, description="width of a spend bucket for the reference period (scaled)")
    min_window_s: float = Field(60.0, gt=0, description="floor of scaled windows and buckets (the tick interval)")
    pace_gate: float = Field(
        1.0, ge=0, description="burn alerts need spent >= this x the linear pace (0 = pure workbook rules)"
    )
    notice_fractions: tuple[float, ...] = Field(
        (0.5, 0.8), description="consumption shares announced once per period as info findings"
    )
    resolve_quiet_s: float = Field(
        3600.0, ge=0, description="a burn incident resolves after this long with no tier active (no flapping)"
    )
    score_page_fast: float = Field(0.9, ge=0, le=1, description="score of a fast-page finding")
    score_page_slow: float = Field(0.8, ge=0, le=1, description="score of a slow-page finding")
    score_ticket: float = Field(0.55, ge=0, le=1, description="score of a ticket finding")
    score_exhausted: float = Field(0.85, ge=0, le=1, description="score of a budget-exhausted finding")
    score_notice: float = Field(0.1, ge=0, le=1, description="score of a consumption notice (severity info)")


class BudgetAlerts(msgspec.Struct, array_like=True, gc=False):
    """What a budget has raised: this period's notices and exhaustion, and its open burn incident.

    Most budgets never have any: a budget holds ``None`` instead until one of these happens, and
    goes back to ``None`` once the period has rolled over and the incident is resolved.
    """

    notices: int = 0  # bit i: notice_fractions[i] reached this period
    notice_ts: list[float] | None = None  # when each notice was announced (0: not); None until one is
    exhausted: float = 0.0  # when the limit was reached this period (0: not reached)
    inc_first: float = 0.0  # first_seen of the open burn incident (0: none)
    reported: int = 0  # highest tier reported in the open incident
    cool_since: float = 0.0  # since when no tier is active (open incident only)

    def idle(self) -> bool:
        """Nothing to remember: the budget can drop this record."""
        return not (self.notices or self.notice_ts or self.exhausted or self.inc_first)


class BudgetRecord(msgspec.Struct, array_like=True, gc=False):
    """How a :class:`BudgetState` is stored in a snapshot: its slots, in this order, as one array."""

    moved: float
    tenant: str = ""
    start: float = 0.0
    end: float = 0.0
    spent: float = 0.0
    usd: float = 0.0
    first: float = 0.0
    width: float = 300.0
    cap: int = 0
    ring: bytearray | None = None
    next_at: float = 0.0
    dirty: int = 0
    pace_k: float = 0.0
    since: float = 0.0
    cur_lo: float = 0.0
    cur_hi: float = 0.0
    cur: float = 0.0
    next_judge: float = 0.0
    alerts: BudgetAlerts | None = None


class BudgetState:
    """One budget in its current period: what every event and tick reads. Amounts are in the
    budget's unit (USD or tokens); times are event-time epoch seconds.

    Memory (a tracked budget is ~220 B with its dict entry, against 540 B before): a plain
    ``__slots__`` class (CPython specializes attribute stores only for the default
    ``__setattr__``, which a msgspec Struct overrides: ~12 ns more per store, two or three per
    event); the rarely used fields live in :class:`BudgetAlerts`, ``None`` until needed; and
    the floats that many budgets have equal (period bounds, pace slope, notice thresholds,
    bucket bounds, next judge time: all derived from the rules and the clock) are shared
    objects rather than 24-byte copies (see ``QuotaBurn._share``). Snapshots write it as a
    :class:`BudgetRecord`.
    """

    __slots__ = ("alerts", "cap", "cur", "cur_hi", "cur_lo", "dirty", "end", "first", "moved", "next_at",
                 "next_judge", "pace_k", "ring", "since", "spent", "start", "tenant", "usd", "width")

    def __init__(self, moved: float, tenant: str = "", start: float = 0.0, end: float = 0.0, spent: float = 0.0,
                 usd: float = 0.0, first: float = 0.0, width: float = 300.0, cap: int = 0,
                 ring: bytearray | None = None, next_at: float = 0.0, dirty: int = 0, pace_k: float = 0.0,
                 since: float = 0.0, cur_lo: float = 0.0, cur_hi: float = 0.0, cur: float = 0.0,
                 next_judge: float = 0.0, alerts: BudgetAlerts | None = None) -> None:
        self.moved = moved
        self.tenant = tenant
        self.start = start
        self.end = end
        self.spent = spent
        self.usd = usd
        self.first = first  # first event observed (the windows cover no more than since then)
        self.width = width  # bucket width (s) and ring length of this budget's windows, set at creation
        self.cap = cap
        self.ring = ring  # closed buckets with spend, (index, sum) float64 pairs: see ring_add
        self.next_at = next_at  # spend at which the next notice / the exhaustion happens
        self.dirty = dirty  # 1 if an event since the last tick found the budget ahead of its pace
        self.pace_k = pace_k  # pace_gate * limit / period: the pace line is pace_k * (t - since)
        self.since = since  # start of the pace line: period start, or the first event if watched from mid-period
        self.cur_lo = cur_lo  # the bucket being filled [cur_lo, cur_hi) and its sum, not yet in the ring
        self.cur_hi = cur_hi
        self.cur = cur
        self.next_judge = next_judge  # burn rates are judged once per bucket (every 5 min for a monthly budget)
        self.alerts = alerts  # notices, exhaustion, open incident; None while there are none


class QuotaBurnState(msgspec.Struct):
    # Budgets are plain objects (see BudgetState): the detector snapshots and restores with hooks for them.
    budgets: dict[str, BudgetState] = msgspec.field(default_factory=dict)
    stats: KeyspaceStats = msgspec.field(default_factory=KeyspaceStats)


_encoder = record_encoder((BudgetState, BudgetRecord))
_astuple = msgspec.structs.astuple
_decoder = record_decoder(QuotaBurnState, (BudgetState, BudgetRecord),
                          build={BudgetState: lambda r: BudgetState(*_astuple(r))})


class _Windows(msgspec.Struct, frozen=True):
    """A budget period's scaled windows (derived from params; not state)."""

    bucket: float
    ring: int
    tiers: tuple[tuple[int, str, float, float, float], ...]  # (tier, name, burn, long_s, short_s)


_PAIR: Final = struct.Struct("=dd")
_KEY: Final = struct.Struct("=d")  # the bucket index of a pair


def ring_add(ring: bytearray, idx: int, value: float, cap: int) -> None:
    """Add ``value`` to bucket ``idx`` of a ring of ``cap`` buckets, as :func:`detectors.stats.buckets_add`.

    The ring keeps only the buckets that were added to: ``ring`` is a flat run of native float64
    (bucket index, sum) pairs in increasing index order, so a budget costs 16 bytes per bucket
    with spend in its longest window instead of ``cap`` slots (2018 for a monthly budget, most of
    them 0 for a key used now and then). As in a ring of ``cap`` slots, a newer bucket drops those
    ``cap`` or more behind it, and a bucket ``cap`` or more behind the newest is ignored. Each
    bucket's sum is built by the same additions in the same order as in the slots. Pairs that
    fell out are cut off in batches (once ``cap // 8`` of them are out: one memmove every 252
    buckets for a full monthly ring, not one per bucket); until then no sum reads them.

    >>> from detectors.stats import Buckets, buckets_add, buckets_sum
    >>> b, r = Buckets(width=1.0, sums=[0.0] * 5), bytearray()
    >>> for i in (0, 2, 3, 1, 3, 9, 6, 4, 12, 12, 5):
    ...     buckets_add(b, float(i), i + 0.5); ring_add(r, i, i + 0.5, 5)
    >>> [window_sum(r, 13, k, 5) for k in (1, 3, 5)] == [buckets_sum(b, 13.0, k) for k in (1, 3, 5)]
    True
    >>> len(r) // 16  # buckets 9 and 12: those before 8 fell out when 12 came
    2
    """
    end = len(ring)
    if end:
        head = _KEY.unpack_from(ring, end - 16)[0]
        if idx <= head:
            if head - idx >= cap:
                return
            at = _pair_at(ring, idx)
            if at < end and _KEY.unpack_from(ring, at)[0] == idx:
                _, old = _PAIR.unpack_from(ring, at)
                _PAIR.pack_into(ring, at, idx, old + value)
            else:
                ring[at:at] = _PAIR.pack(idx, value)
            return
        if _KEY.unpack_from(ring, 0)[0] <= idx - cap - (cap >> 3):
            del ring[:_pair_at(ring, idx - cap + 1)]
    ring += _PAIR.pack(idx, value)


def _pair_at(ring: bytearray, idx: int) -> int:
    """Byte offset of the first pair of ``ring`` whose bucket index is >= ``idx``."""
    return 16 * bisect_left(memoryview(ring).cast("d")[::2], idx)


def window_sum(ring: bytearray | None, idx: int, last: int, cap: int) -> float:
    """Sum of the ``last`` buckets up to bucket ``idx`` of a :func:`ring_add` ring, as
    :func:`detectors.stats.buckets_sum` over a ring of ``cap`` slots.

    Added in the slots' order (oldest first, and in two sums split where the slots wrap around),
    buckets without spend adding nothing, so the result is the same float to the last bit.
    Summed over memoryview slices (C speed), since a monthly budget's 7-day window spans 2016
    buckets; the pairs are only searched for when some bucket of the window had no spend.
    """
    if not ring:
        return 0.0
    end = len(ring)
    head = int(_KEY.unpack_from(ring, end - 16)[0])
    lo = idx - (last if last < cap else cap) + 1
    hi = idx if idx < head else head
    if lo <= head - cap:
        lo = head - cap + 1
    if hi < lo:
        return 0.0
    wrap = (lo // cap + 1) * cap  # where a ring of cap slots starts again from slot 0
    v = memoryview(ring).cast("d")
    k = head - lo + 1  # keys are distinct integers: at most the last k pairs are >= lo
    if 16 * k <= end and v[-2 * k] == lo:
        # The last k pairs are the buckets lo..head, all with spend (a busy budget): no search.
        a = len(v) - 2 * k + 1  # value of bucket lo
        b = a + 2 * (hi - lo + 1)
        if wrap <= hi:
            m = a + 2 * (wrap - lo)
            return sum(v[a:m:2], 0.0) + sum(v[m:b:2], 0.0)
        return sum(v[a:b:2], 0.0)
    keys = v[::2]
    vals = v[1::2]
    a = bisect_left(keys, lo)
    b = bisect_right(keys, hi)
    if wrap <= hi:
        m = bisect_left(keys, wrap, a, b)
        return sum(vals[a:m], 0.0) + sum(vals[m:b], 0.0)
    return sum(vals[a:b], 0.0)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _r(x: float, nd: int = 4) -> float:
    return float(round(x, nd))


@register
class QuotaBurn(Detector[QuotaBurnParams, QuotaBurnState]):
    """A budget (tenant or key; $ or tokens; day, week or month) burning fast enough to run out early.

    SRE-workbook multiwindow burn-rate tiers (page 14.4x over 1 h & 5 min,
    page 6x over 6 h & 30 min, ticket 1x over 7 d & 6 h, scaled to the
    period), while the budget is ahead of its pace and would run out early;
    50/80 % consumption notices (info) and a budget-exhausted alert.
    """

    name: ClassVar[str] = "quota_burn"
    Params: ClassVar[type[DetectorParams]] = QuotaBurnParams
    State: ClassVar[type[msgspec.Struct]] = QuotaBurnState
    description: ClassVar[str] = "budgets burning fast enough to run out before the period ends"
    # 2: budgets as BudgetRecord arrays with a sparse packed bucket ring and BudgetAlerts (was a 2018-slot list).
    state_version: ClassVar[int] = 2

    def __init__(self, params: QuotaBurnParams, context: Any, tenant_params: Any = None) -> None:
        super().__init__(params, context, tenant_params)
        # The budgets of each tenant and API key, and by name. This is configuration, not state: a
        # pure function of the rules context, which is fixed for the detector's life, so it is built
        # here once (a dict entry per budget in the rules, whether or not it ever sees an event)
        # rather than on the first event, and the hot path has no "built yet?" test.
        by_tenant: dict[str, list[BudgetInfo]] = {}
        by_key: dict[str, list[BudgetInfo]] = {}
        self._by_name: dict[str, BudgetInfo] = {}
        for b in context.budgets:
            (by_tenant if b.scope == "tenant" else by_key).setdefault(b.id, []).append(b)
            self._by_name[b.name] = b
        self._by_key = {k: tuple(v) for k, v in by_key.items()}
        self._by_tenant = {k: tuple(v) for k, v in by_tenant.items()}
        # Derived on first use (pure functions of the rules and the clock, never state).
        self._windows: dict[tuple[str, int], _Windows] = {}  # by (period, id of the tenant's params)
        self._periods: dict[tuple[Any, str], tuple[float, float]] = {}  # last bounds by (time zone, period)
        self._buckets: dict[float, tuple[float, float]] = {}  # last bucket [lo, hi) started, by width
        self._floats: dict[float, float] = {}  # see _share
        # Earliest tick at which some budget may need judging (derived, not state; see tick).
        self._wake = -math.inf
        self._wake_state: QuotaBurnState | None = None

    def _share(self, x: float) -> float:
        """``x``, or an equal float object some budget already holds.

        Pace slopes and notice thresholds are the same for every budget with the same limit and
        period length: one shared object instead of a 24-byte float each. Zero (equal to -0.0 as
        a key) is never swapped; the cache is dropped when large (sharing is only a saving).
        """
        if not x:
            return x
        got = self._floats.get(x)
        if got is None:
            if len(self._floats) >= 4096:
                self._floats.clear()
            self._floats[x] = got = x
        return got

    def _period_bounds(self, tenant: str, t: float, period: str) -> tuple[float, float]:
        """The calendar's period bounds around ``t``; the same objects for every tenant of a time zone
        while ``t`` stays in the period (every budget of the zone holds the two floats, not copies)."""
        cal = self.context.calendar
        key = (cal.clock(tenant).zone, period)
        got = self._periods.get(key)
        if got is not None and got[0] <= t < got[1]:
            return got
        got = cal.period_bounds(tenant, t, period)
        self._periods[key] = got
        return got

    def _win(self, b: BudgetInfo, tenant: str) -> _Windows:
        p = self.params_for(tenant)
        w = self._windows.get((b.period, id(p)))  # params live as long as the detector: ids stay theirs
        if w is not None:
            return w
        scale = _NOMINAL_PERIOD_S[b.period] / p.reference_period_s
        lo = p.min_window_s
        bucket = max(lo, p.bucket_s * scale)
        tiers = tuple(
            (level, name, burn, max(lo, long_s * scale), max(lo, short_s * scale))
            for level, name, burn, long_s, short_s in (
                (3, "page_fast", p.page_fast_burn, p.page_fast_long_s, p.page_fast_short_s),
                (2, "page_slow", p.page_slow_burn, p.page_slow_long_s, p.page_slow_short_s),
                (1, "ticket", p.ticket_burn, p.ticket_long_s, p.ticket_short_s),
            )
        )
        longest = max(max(tier[3], tier[4]) for tier in tiers)
        w = _Windows(bucket, math.ceil(longest / bucket) + 2, tiers)
        self._windows[(b.period, id(p))] = w
        return w

    # -- hot path ---------------------------------------------------------------------------------

    def update(self, event: UsageEvent) -> list[Finding] | None:
        bt = self._by_tenant.get(event.tenant_id)
        bk = self._by_key.get(event.api_key_id) if self._by_key else None
        if bt is None:
            if bk is None:
                return None
            todo = bk
        else:
            todo = bt if bk is None else bt + bk
        out: list[Finding] | None = None
        cost = event.cost_usd
        if cost is None:
            cost = self.context.prices.resolve(event.model).cost(
                event.input_tokens, event.output_tokens, event.cached_input_tokens, event.cache_write_tokens
            )
        t: float = event.ts  # type: ignore[assignment]
        budgets = self.state.budgets
        for b in todo:
            name = b.name
            bs = budgets.get(name)
            # _spend inline for the common case: a known budget and an event of its current period.
            if bs is None or t >= bs.end or t < bs.start:
                got = self._spend(b, event, cost)
                if got:
                    out = got if out is None else out + got
                continue
            if t - bs.moved > MOVE_EVERY:  # keep the dict in touch order (see detectors.keyspace)
                del budgets[name]
                budgets[name] = bs
                bs.moved = t
            if b.limit_usd is not None:
                amount = cost
            else:
                amount = float(event.input_tokens + event.output_tokens)
                bs.usd += cost
            if bs.cur_lo <= t < bs.cur_hi:
                bs.cur += amount
            else:
                self._to_ring(bs, t, amount)
            spent = bs.spent + amount
            bs.spent = spent
            if spent >= bs.next_at:
                got = self._crossed(b, bs, t, event)
                if got:
                    out = got if out is None else out + got
            if not bs.dirty and spent >= bs.pace_k * (t - bs.since):
                bs.dirty = 1
                if bs.next_judge < self._wake:
                    self._wake = bs.next_judge
        return out

    def _spend(self, b: BudgetInfo, event: UsageEvent, cost: float) -> list[Finding] | None:
        st = self.state
        t: float = event.ts  # type: ignore[assignment]
        budgets = st.budgets
        bs = budgets.get(b.name)
        if bs is None:
            bs = self._touch(b, event, t)
        elif t - bs.moved > MOVE_EVERY:  # keep the dict in touch order (see detectors.keyspace), inline
            del budgets[b.name]
            budgets[b.name] = bs
            bs.moved = t
        out: list[Finding] | None = None
        if t >= bs.end:
            out = self._new_period(b, bs, t)
        if bs.end < self._wake:
            self._wake = bs.end
        # A period's first amounts are the event's own floats (0.0 + x is x for any x but a zero),
        # not copies: 24 B less each for a budget seen once.
        if b.limit_usd is not None:
            amount = cost
        else:
            amount = float(event.input_tokens + event.output_tokens)
            usd = bs.usd
            bs.usd = usd + cost if usd or not cost else cost
        if bs.cur_lo <= t < bs.cur_hi:
            bs.cur += amount
        else:
            self._to_ring(bs, t, amount)
        if t < bs.start:
            return out  # late event of the previous period: counts for burn rates, not for this period
        spent = bs.spent
        spent = spent + amount if spent or not amount else amount
        bs.spent = spent
        if spent >= bs.next_at:
            got = self._crossed(b, bs, t, event)
            if got:
                out = got if out is None else out + got
        if not bs.dirty and spent >= bs.pace_k * (t - bs.since):
            bs.dirty = 1
            if bs.next_judge < self._wake:
                self._wake = bs.next_judge
        return out

    def _to_ring(self, bs: BudgetState, t: float, amount: float) -> None:
        """An event outside the bucket being filled: a later bucket starts, or a late event goes to the ring.

        A new bucket's bounds are the objects of the last bucket started with the same width when
        equal (budgets that spend in the same minutes share them: 48 B each)."""
        if t >= bs.cur_hi:
            _flush(bs)
            w = bs.width
            lo = (t // w) * w
            last = self._buckets.get(w)
            if last is None or last[0] != lo:
                last = self._buckets[w] = (lo, lo + w)
            bs.cur_lo, bs.cur_hi = last
            bs.cur = amount
        else:
            if bs.ring is None:
                bs.ring = bytearray()
            ring_add(bs.ring, int(t // bs.width), amount, bs.cap)

    def _touch(self, b: BudgetInfo, event: UsageEvent, t: float) -> BudgetState:
        st = self.state
        new = b.name not in st.budgets
        bs = touch(st.budgets, b.name, t, _new_budget, self.params.max_keys, st.stats)
        if new:
            tenant = b.id if b.scope == "tenant" else event.tenant_id
            bs.tenant = tenant
            bs.first = t
            w = self._win(b, tenant)
            bs.width = w.bucket
            bs.cap = w.ring
            bs.start, bs.end = self._period_bounds(tenant, t, b.period)
            self._set_pace(b, bs)
            bs.next_at = self._next_at(b, bs)
        return bs

    def _set_pace(self, b: BudgetInfo, bs: BudgetState) -> None:
        """The pace line of this period (from the first event seen if that came after the period began)."""
        limit, _ = self._unit(b)
        period = bs.end - bs.start
        bs.since = bs.first if bs.first > bs.start else bs.start
        bs.pace_k = self._share(self.params_for(bs.tenant).pace_gate * limit / period if period > 0.0 else 0.0)

    def _next_at(self, b: BudgetInfo, bs: BudgetState) -> float:
        """Spend at which the next notice or the exhaustion of this period happens."""
        limit, _ = self._unit(b)
        a = bs.alerts
        if (a is not None and a.exhausted) or limit <= 0.0:
            return math.inf
        notices = a.notices if a is not None else 0
        nxt = limit
        for i, f in enumerate(self.params_for(bs.tenant).notice_fractions):
            if not notices & (1 << i) and f * limit < nxt:
                nxt = f * limit
        return self._share(nxt)

    def _crossed(self, b: BudgetInfo, bs: BudgetState, t: float, event: UsageEvent) -> list[Finding] | None:
        """Spend reached ``next_at``: the notices crossed (the highest one is announced) or exhaustion."""
        limit, _ = self._unit(b)
        p = self.params_for(bs.tenant)
        frac = bs.spent / limit
        out: list[Finding] | None = None
        a = bs.alerts
        if frac >= 1.0:
            if a is None or not a.exhausted:
                if a is None:
                    a = bs.alerts = BudgetAlerts()
                a.exhausted = t
                a.notices = (1 << len(p.notice_fractions)) - 1
                out = [self._exhausted(b, bs, t, event)]
        else:
            fractions = p.notice_fractions
            crossed = -1
            for i, f in enumerate(fractions):
                if frac >= f and (a is None or not a.notices & (1 << i)):
                    if a is None:
                        a = bs.alerts = BudgetAlerts()
                    a.notices |= 1 << i
                    if crossed < 0 or f > fractions[crossed]:
                        crossed = i
            if a is not None and crossed >= 0:
                if a.notice_ts is None:
                    a.notice_ts = []
                if len(a.notice_ts) < len(fractions):
                    a.notice_ts.extend([0.0] * (len(fractions) - len(a.notice_ts)))
                a.notice_ts[crossed] = t
                out = [self._notice(b, bs, t, fractions[crossed], event)]
        bs.next_at = self._next_at(b, bs)
        return out

    def _new_period(self, b: BudgetInfo, bs: BudgetState, t: float) -> list[Finding] | None:
        """The period rolled over: reset the spend; notices and exhaustion of the old period are resolved."""
        out: list[Finding] = []
        p = self.params_for(bs.tenant)
        a = bs.alerts
        if a is not None:
            for i, ts in enumerate(a.notice_ts or ()):
                if ts and i < len(p.notice_fractions):
                    pct = round(p.notice_fractions[i] * 100)
                    out.append(self._finding(b, bs, bs.end, ts, p.score_notice, f"Budget {b.name}: new {b.period}",
                                             "resolved", {}, "info", entity_id=f"{b.name}/notice-{pct}"))
            if a.exhausted:
                out.append(self._finding(b, bs, bs.end, a.exhausted, p.score_exhausted,
                                         f"Budget {b.name} renewed for a new {b.period}", "resolved", {}, None,
                                         entity_id=f"{b.name}/exhausted"))
            a.notices = 0
            a.notice_ts = None
            a.exhausted = 0.0
            if a.idle():
                bs.alerts = None
        bs.start, bs.end = self._period_bounds(bs.tenant, t, b.period)
        bs.spent = bs.usd = 0.0
        self._set_pace(b, bs)
        bs.next_at = self._next_at(b, bs)
        return out or None

    # -- findings --------------------------------------------------------------------------------------

    def _unit(self, b: BudgetInfo) -> tuple[float, str]:
        if b.limit_usd is not None:
            return b.limit_usd, "usd"
        return float(b.limit_tokens or 0), "tokens"

    def _usd_per_unit(self, b: BudgetInfo, bs: BudgetState) -> float:
        if b.limit_usd is not None:
            return 1.0
        return bs.usd / bs.spent if bs.spent > 0.0 else 0.0

    def _rate(self, bs: BudgetState, now: float, window: float) -> float:
        """Spend per second over the last ``window`` seconds (the current bucket partly)."""
        w = bs.width
        cap = bs.cap
        n = round(window / w)
        if n < 1:
            n = 1
        if n + 1 > cap:
            n = cap - 1
        dur = n * w + (now - math.floor(now / w) * w)
        return window_sum(bs.ring, int(now // w), n + 1, cap) / dur if dur > 0.0 else 0.0

    def _any_tier(self, b: BudgetInfo, bs: BudgetState, now: float) -> bool:
        """Whether some tier is active; short windows first (few buckets), long ones only if needed."""
        _flush(bs)
        limit, _ = self._unit(b)
        period = bs.end - bs.start
        if period <= 0.0 or limit <= 0.0:
            return False
        sustain = limit / period
        left = limit - bs.spent
        seen = now - bs.first
        for _, _, burn, long_s, short_s in self._win(b, bs.tenant).tiers:
            if seen >= long_s and self._rate(bs, now, short_s) >= burn * sustain:
                rl = self._rate(bs, now, long_s)
                if rl >= burn * sustain and left < rl * (bs.end - now):
                    return True
        return False

    def _tier(self, b: BudgetInfo, bs: BudgetState, now: float) -> tuple[int, bool]:
        """The tier of :meth:`_burns` without its evidence (long windows only summed when they can
        decide), and whether the ticket's short window burns at its rate as reported (rounded)."""
        _flush(bs)
        limit, _ = self._unit(b)
        period = bs.end - bs.start
        sustain = limit / period if period > 0.0 else 0.0
        seen = now - bs.first
        left = limit - bs.spent
        tier = 0
        ticket_short = False
        for level, _, burn, long_s, short_s in self._win(b, bs.tenant).tiers:
            rs = self._rate(bs, now, short_s)
            bsh = rs / sustain if sustain > 0.0 else 0.0
            if level == 1:
                ticket_short = _r(bsh, 3) >= burn
            if level > tier and seen >= long_s and bsh >= burn:
                rl = self._rate(bs, now, long_s)
                bl = rl / sustain if sustain > 0.0 else 0.0
                if bl >= burn and left < rl * (bs.end - now):
                    tier = level
        return tier, ticket_short

    def _burns(self, b: BudgetInfo, bs: BudgetState, now: float) -> tuple[int, dict[str, Any], float]:
        """Highest active tier (0: none), the burn-rate evidence, and the fast-tier long-window rate/s."""
        _flush(bs)
        limit, _ = self._unit(b)
        period = bs.end - bs.start
        sustain = limit / period if period > 0.0 else 0.0
        win = self._win(b, bs.tenant)
        tier = 0
        rates: dict[str, Any] = {}
        fast_rate = 0.0
        for level, name, burn, long_s, short_s in win.tiers:
            rl = self._rate(bs, now, long_s)
            rs = self._rate(bs, now, short_s)
            bl = rl / sustain if sustain > 0.0 else 0.0
            bsh = rs / sustain if sustain > 0.0 else 0.0
            if level == 3:
                fast_rate = rl
            # A tier is judged once its long window has been watched (warm-up), and only if at the
            # long-window rate the rest of the budget is gone before the period ends.
            active = (now - bs.first >= long_s and bl >= burn and bsh >= burn
                      and (limit - bs.spent) < rl * (bs.end - now))
            if active and level > tier:
                tier = level
            rates[name] = {
                "threshold": burn,
                "long_window_s": _r(long_s, 1),
                "long_burn": _r(bl, 3),
                "short_window_s": _r(short_s, 1),
                "short_burn": _r(bsh, 3),
                "active": active,
            }
        return tier, rates, fast_rate

    def _evidence(self, b: BudgetInfo, bs: BudgetState, now: float, rate_per_s: float) -> dict[str, Any]:
        limit, unit = self._unit(b)
        remaining = limit - bs.spent
        period = bs.end - bs.start
        elapsed = (now - bs.start) / period if period > 0.0 else 0.0
        eta = now + remaining / rate_per_s if rate_per_s > 0.0 and remaining > 0.0 else None
        cal = self.context.calendar
        return {
            "budget": b.name,
            "scope": b.scope,
            "scope_id": b.id,
            "period": b.period,
            "period_start": cal.local_iso(bs.tenant, bs.start),
            "period_end": cal.local_iso(bs.tenant, bs.end),
            "unit": unit,
            "limit": limit,
            "spent": _r(bs.spent, 4),
            "remaining": _r(remaining if remaining > 0.0 else 0.0, 4),
            "spent_fraction": _r(bs.spent / limit if limit > 0.0 else 0.0, 4),
            "period_elapsed_fraction": _r(elapsed, 4),
            "spent_usd": _r(bs.spent if b.limit_usd is not None else bs.usd, 4),
            "observed_since": _iso(bs.first),
            "rate_per_hour": _r(rate_per_s * 3600.0, 4),
            "sustainable_per_hour": _r(limit / period * 3600.0 if period > 0.0 else 0.0, 4),
            "projected_exhaustion": _iso(eta) if eta is not None else None,
            "projected_exhaustion_local": cal.local_iso(bs.tenant, eta) if eta is not None else None,
            "exhausts_before_period_end": eta is not None and eta < bs.end,
        }

    def _finding(self, b: BudgetInfo, bs: BudgetState, ts: float, first_seen: float, score: float, title: str,
                 status: Any, evidence: dict[str, Any], severity: Any, risk: float = 0.0, summary: str = "",
                 signals: dict[str, float] | None = None, actions: list[Any] | None = None,
                 samples: list[str] | None = None, entity_id: str | None = None) -> Finding:
        """A finding about budget ``b``: the burn incident is the budget itself, notices and
        exhaustion are ``<name>/notice-<pct>`` and ``<name>/exhausted`` (separate alerts)."""
        return Finding(
            detector=self.name,
            entity_type="budget",
            entity_id=entity_id or b.name,
            tenant_id=bs.tenant,
            ts=ts,
            first_seen=first_seen,
            score=score,
            title=title,
            evidence=evidence,
            status=status,
            risk_usd_per_hour=_r(risk, 2),
            summary=summary,
            signals=signals or {},
            api_key_id=b.id if b.scope == "api_key" else None,
            sample_event_ids=samples or [],
            actions=actions or [],
            severity=severity,
        )

    def _notice(self, b: BudgetInfo, bs: BudgetState, t: float, fraction: float, event: UsageEvent) -> Finding:
        p = self.params_for(bs.tenant)
        _, _, rate = self._burns(b, bs, t)
        ev = self._evidence(b, bs, t, rate)
        ev["notice_fraction"] = fraction
        pct = round(fraction * 100)
        return self._finding(
            b, bs, t, t, p.score_notice, f"Budget {b.name} has used {pct}% of its {_ADJ[b.period]} limit", "firing", ev,
            "info", summary=f"{ev['spent']:g} of {ev['limit']:g} {ev['unit']} spent, "
                            f"{ev['period_elapsed_fraction'] * 100:.0f}% of the {b.period} elapsed",
            signals={"consumption": p.score_notice}, actions=["notify"], samples=[event.event_id],
            entity_id=f"{b.name}/notice-{pct}",
        )

    def _exhausted(self, b: BudgetInfo, bs: BudgetState, t: float, event: UsageEvent) -> Finding:
        p = self.params_for(bs.tenant)
        _, rates, rate = self._burns(b, bs, t)
        ev = self._evidence(b, bs, t, rate)
        ev["burn_rates"] = rates
        risk = rate * 3600.0 * self._usd_per_unit(b, bs)
        return self._finding(
            b, bs, t, t, p.score_exhausted, f"Budget {b.name} exhausted ({_ADJ[b.period]} limit reached)", "firing", ev,
            None, risk=risk,
            summary=f"{ev['spent']:g} of {ev['limit']:g} {ev['unit']} spent with "
                    f"{(1.0 - ev['period_elapsed_fraction']) * 100:.0f}% of the {b.period} left",
            signals={"exhausted": p.score_exhausted}, actions=["notify", "page"], samples=[event.event_id],
            entity_id=f"{b.name}/exhausted",
        )

    # -- time ------------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Finding] | None:
        """Judge the budgets due; expire idle ones.

        A budget is due at its period's end, and once its bucket has passed if it was ahead of pace
        since (``dirty``) or has an open incident. ``_wake`` is a lower bound of the next such time
        over all budgets, kept by this loop and lowered by ``update`` (a budget turning dirty, a
        new budget or period), so that most ticks skip the loop. A restored state is looped over at
        once (and budgets no longer in the rules dropped).
        """
        st = self.state
        if now < self._wake and st is self._wake_state:
            self._expire(st, now)
            return None
        out: list[Finding] | None = None
        gone: list[str] = []
        by_name = self._by_name
        wake = math.inf
        judge_at: dict[float, float] = {}  # next judge time by bucket width: one float for all budgets judged now
        for name, bs in st.budgets.items():
            b = by_name.get(name)
            if b is None:
                gone.append(name)  # the budget left the rules
                continue
            a = bs.alerts
            open_ = a is not None and a.inc_first
            if now < bs.end and (now < bs.next_judge or (not bs.dirty and not open_)):
                # Judged less than a bucket ago, or not ahead of pace since and nothing open: nothing to do.
                pass
            else:
                w = bs.width
                nj = judge_at.get(w)
                if nj is None:
                    nj = judge_at[w] = now + w - 1.0
                bs.next_judge = nj
                got = self._judge(b, bs, now)
                if got:
                    if out is None:
                        out = []
                    out.extend(got)
                a = bs.alerts
                open_ = a is not None and a.inc_first
            due = bs.next_judge if (bs.dirty or open_) and bs.next_judge < bs.end else bs.end
            if due < wake:
                wake = due
        self._wake = wake
        self._wake_state = st
        for name in gone:
            del st.budgets[name]
        self._expire(st, now)
        return out

    def _expire(self, st: QuotaBurnState, now: float) -> None:
        """Expire idle budgets; skips the call when expire_idle would stop at the first budget (touch
        order: none moved before it), as it does on almost every tick."""
        idle = self.params.idle_ttl_s
        budgets = st.budgets
        if budgets and next(iter(budgets.values())).moved <= now - idle + MOVE_EVERY:
            expire_idle(budgets, now, idle, st.stats)

    def _judge(self, b: BudgetInfo, bs: BudgetState, now: float) -> list[Finding] | None:
        out: list[Finding] | None = None
        if now >= bs.end:
            out = self._new_period(b, bs, now)
        p = self.params_for(bs.tenant)
        limit, _ = self._unit(b)
        period = bs.end - bs.start
        pace = bs.pace_k * (now - bs.since)  # from the first event if watched since mid-period
        dirty = bs.dirty
        bs.dirty = 0
        a = bs.alerts
        endangered = bs.spent >= pace and (a is None or not a.exhausted)
        # Without an open incident: no new spend (burn rates only fall), under pace (not endangered) or
        # exhausted (that alert says it all) means nothing to judge; else short windows first.
        if (a is None or not a.inc_first) and (not dirty or not endangered or not self._any_tier(b, bs, now)):
            return out
        tier = 0
        ticket_short = False
        if endangered:
            tier, ticket_short = self._tier(b, bs, now)
        if tier:
            if a is None:
                a = bs.alerts = BudgetAlerts()
            a.cool_since = 0.0
            if a.inc_first and tier <= a.reported:
                return out
            _, rates, _ = self._burns(b, bs, now)
            if not a.inc_first:
                a.inc_first = now
            a.reported = tier
            name = _TIER_NAMES[tier]
            long_s = next(x[3] for x in self._win(b, bs.tenant).tiers if x[0] == tier)
            rate = self._rate(bs, now, long_s)
            ev = self._evidence(b, bs, now, rate)
            ev["burn_rates"] = rates
            ev["tier"] = name
            ev["pace"] = _r(pace, 4)
            score = (p.score_ticket, p.score_page_slow, p.score_page_fast)[tier - 1]
            sustain = limit / period if period > 0.0 else 0.0
            risk = max(0.0, rate - sustain) * 3600.0 * self._usd_per_unit(b, bs)
            r = rates[name]
            title = (f"Budget {b.name} burning {r['long_burn']:.1f}x its sustainable rate "
                     f"({'page' if tier > 1 else 'ticket'})")
            eta = ev["projected_exhaustion_local"]
            summary = (f"{r['long_burn']:.1f}x over {r['long_window_s']:g}s and {r['short_burn']:.1f}x over "
                       f"{r['short_window_s']:g}s; {ev['spent_fraction'] * 100:.0f}% spent at "
                       f"{ev['period_elapsed_fraction'] * 100:.0f}% of the {b.period}"
                       + (f"; exhausted by {eta} at this rate" if eta else ""))
            f = self._finding(b, bs, now, a.inc_first, score, title, "firing", ev, None, risk=risk,
                              summary=summary, signals={name: score},
                              actions=["notify", "page"] if tier > 1 else ["notify"])
            return (out or []) + [f]
        if a is None or not a.inc_first:
            return out
        if endangered and ticket_short:
            a.cool_since = 0.0  # no tier active, but still burning above the sustainable rate (6 h): not over
            return out
        if not a.cool_since:
            a.cool_since = now
        if now - a.cool_since >= p.resolve_quiet_s:
            _, rates, fast_rate = self._burns(b, bs, now)
            ev = self._evidence(b, bs, now, fast_rate)
            ev["burn_rates"] = rates
            f = self._finding(b, bs, now, a.inc_first,
                              (p.score_ticket, p.score_page_slow, p.score_page_fast)[a.reported - 1],
                              f"Budget {b.name} burn back under its thresholds", "resolved", ev, None,
                              summary="no burn-rate tier active")
            a.inc_first = 0.0
            a.reported = 0
            a.cool_since = 0.0
            if a.idle():
                bs.alerts = None
            return (out or []) + [f]
        return out

    # -- introspection ---------------------------------------------------------------------------------

    def is_warm(self, key: str) -> bool:
        """Whether budget ``key`` (its name) has been observed for the fast tier's long window."""
        bs = self.state.budgets.get(key)
        if bs is None:
            return False
        b = self._by_name.get(key)
        if b is None:
            return False
        return bs.moved - bs.first >= self._win(b, bs.tenant).tiers[0][3]

    def snapshot(self) -> bytes:
        return _encoder.encode(self.state)

    def restore(self, data: bytes) -> None:
        self.state = _decoder.decode(data)

    def tracked_keys(self) -> int:
        return len(self.state.budgets)

    def evicted_keys(self) -> int:
        return self.state.stats.evicted


def _new_budget(t: float) -> BudgetState:
    return BudgetState(moved=t)


def _flush(bs: BudgetState) -> None:
    """Move the bucket being filled into the ring (before windows are summed)."""
    if bs.cur:
        if bs.ring is None:
            bs.ring = bytearray()
        ring_add(bs.ring, int(bs.cur_lo // bs.width), bs.cur, bs.cap)
        bs.cur = 0.0
