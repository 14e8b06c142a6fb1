"""Tenant calendar: local time, business hours and budget periods.

A runaway loop at 21:00 on a Friday in New York is an emergency that nobody
will see until Monday 08:00; the same loop at 11:00 on a Tuesday is a demo.
Detectors ask this calendar for the tenant's local view of an event time.

Converting with zoneinfo costs about a microsecond, too much per event per
detector, so the UTC offset is cached per tenant and UTC hour: offsets change
only at DST transitions, which (outside a handful of zones with half-hour
shifts) fall on whole UTC hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEK: Final = 7 * 86400
# 1970-01-01 was a Thursday: shift so that hour-of-week 0 is Monday 00:00.
_EPOCH_MONDAY_SHIFT: Final = 3 * 86400


@dataclass(frozen=True, slots=True)
class WorkWeek:
    """Business hours: the weekdays (0 = Monday) and the local start/end minute."""

    days: frozenset[int] = frozenset(range(5))
    start_minute: int = 8 * 60
    end_minute: int = 19 * 60


@dataclass(frozen=True, slots=True)
class TenantClock:
    zone: ZoneInfo
    week: WorkWeek


class TenantCalendar:
    """Local-time questions about event times, per tenant.

    >>> cal = TenantCalendar({"t_ny": ("America/New_York", WorkWeek())}, default=("UTC", WorkWeek()))
    >>> t = 1793999700.0  # 2026-11-06 21:15 UTC = Friday 16:15 in New York
    >>> cal.is_business_hours("t_ny", t), cal.local_iso("t_ny", t)
    (True, '2026-11-06T16:15:00-05:00')
    >>> datetime.fromtimestamp(cal.next_business_start("t_ny", t + 3 * 3600), UTC).isoformat()
    '2026-11-09T13:00:00+00:00'
    """

    __slots__ = ("_clocks", "_default", "_next_start", "_offsets")

    def __init__(self, tenants: dict[str, tuple[str, WorkWeek]], default: tuple[str, WorkWeek]) -> None:
        self._clocks = {tid: TenantClock(ZoneInfo(tz), week) for tid, (tz, week) in tenants.items()}
        self._default = TenantClock(ZoneInfo(default[0]), default[1])
        self._offsets: dict[str, tuple[int, float]] = {}
        # Per tenant, the last off-hours answer of next_business_start: (asked at, next start).
        self._next_start: dict[str, tuple[float, float]] = {}

    def clock(self, tenant_id: str) -> TenantClock:
        return self._clocks.get(tenant_id, self._default)

    def utc_offset(self, tenant_id: str, t: float) -> float:
        """Seconds to add to UTC epoch seconds to get the tenant's wall clock."""
        hour = int(t // 3600)
        cached = self._offsets.get(tenant_id)
        if cached is not None and cached[0] == hour:
            return cached[1]
        zone = self.clock(tenant_id).zone
        off = zone.utcoffset(datetime.fromtimestamp(hour * 3600, UTC).replace(tzinfo=None))
        offset = off.total_seconds() if off is not None else 0.0
        if len(self._offsets) > 100_000:  # tenant ids are bounded in practice; stay bounded anyway
            self._offsets.clear()
        self._offsets[tenant_id] = (hour, offset)
        return offset

    def local_seconds(self, tenant_id: str, t: float) -> float:
        """The tenant's wall-clock time as if it were UTC epoch seconds."""
        return t + self.utc_offset(tenant_id, t)

    def hour_of_week(self, tenant_id: str, t: float) -> int:
        """0 = Monday 00:00-01:00 local, 167 = Sunday 23:00-24:00 local."""
        local = t + self.utc_offset(tenant_id, t)
        return int(((local + _EPOCH_MONDAY_SHIFT) % _WEEK) // 3600)

    def is_business_hours(self, tenant_id: str, t: float) -> bool:
        clock = self.clock(tenant_id)
        local = t + self.utc_offset(tenant_id, t)
        week_s = (local + _EPOCH_MONDAY_SHIFT) % _WEEK
        day = int(week_s // 86400)
        minute = int((week_s % 86400) // 60)
        return day in clock.week.days and clock.week.start_minute <= minute < clock.week.end_minute

    def local_datetime(self, tenant_id: str, t: float) -> datetime:
        return datetime.fromtimestamp(t, self.clock(tenant_id).zone)

    def local_iso(self, tenant_id: str, t: float) -> str:
        return self.local_datetime(tenant_id, t).isoformat(timespec="seconds")

    def next_business_start(self, tenant_id: str, t: float) -> float:
        """Epoch seconds of the next business-hours start after ``t`` (``t`` itself if inside)."""
        clock = self.clock(tenant_id)
        if not clock.week.days:
            return t + _WEEK
        if self.is_business_hours(tenant_id, t):
            return t
        # Off hours, the answer is the first business start after t: the same for every later
        # off-hours t before that start (runaway_loop asks on every turn of a night-long loop).
        memo = self._next_start.get(tenant_id)
        if memo is not None and memo[0] <= t < memo[1]:
            return memo[1]
        local = self.local_datetime(tenant_id, t)
        day = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        for i in range(8):
            cand_naive = day + timedelta(days=i, minutes=clock.week.start_minute)
            if cand_naive.weekday() not in clock.week.days:
                continue
            cand = cand_naive.replace(tzinfo=clock.zone).timestamp()
            if cand > t:
                if len(self._next_start) > 100_000:
                    self._next_start.clear()
                self._next_start[tenant_id] = (t, cand)
                return cand
        return t + _WEEK  # pragma: no cover - unreachable with at least one business day

    def period_bounds(self, tenant_id: str, t: float, period: str) -> tuple[float, float]:
        """Start and end (epoch seconds) of the day/week/month containing ``t`` in local time."""
        zone = self.clock(tenant_id).zone
        local = datetime.fromtimestamp(t, zone).replace(tzinfo=None)
        if period == "day":
            start = local.replace(hour=0, minute=0, second=0, microsecond=0)
            end = start + timedelta(days=1)
        elif period == "week":
            start = local.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=local.weekday())
            end = start + timedelta(days=7)
        elif period == "month":
            start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(
                month=start.month + 1
            )
        else:
            raise ValueError(f"unknown period {period!r}")
        return start.replace(tzinfo=zone).timestamp(), end.replace(tzinfo=zone).timestamp()
