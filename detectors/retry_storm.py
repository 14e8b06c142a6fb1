"""retry_storm: stacked retries multiply what one logical request costs.

An SDK that retries 3 times under a gateway that retries 3 times bills up to
9 attempts for one logical request. The gateway reports every attempt with
the ``request_id`` of the logical request, so the detector counts:

* attempts per ``request_id``, in a bounded map with a short TTL
  (``request_ttl_s``, two generations dropped whole): an attempt whose request
  id is already in the map, or whose ``attempt`` field is above 1, is a
  *retried* attempt;
* per ``api_key_id`` x ``feature``, in tumbling windows of ``window_s``:
  attempts, logical requests (distinct request ids), retried attempts, their
  cost, and the HTTP status codes of failed attempts (what caused the retries);
* *retry amplification* = attempts / logical requests (1.0 means no retries),
  against the key x feature's own baseline: an exponentially weighted mean and
  variance of past windows' amplification (West 1979; see
  :mod:`detectors.stats`), and the same for the retry cost in $/day.

It alerts on either of two jumps in the current window:

* **stacked retries**: at least ``min_extra_attempts`` extra attempts
  (attempts - logical requests), retried requests retried ``min_stack`` times
  or more on average (2+ retries per retried request is retries on retries; a
  provider rate-limit blip retries each request once and stays quiet), and the
  amplification ``min_excess`` above the baseline and ``z_min`` standard
  deviations above it. Before the baseline is warm (``warm_windows`` windows)
  an amplification of ``cold_amplification`` or more stands in for the
  baseline test: that is stacked retries whatever the history.
* **retry cost**: the retry $/day ``cost_jump_ratio`` times its baseline, at
  least ``min_retry_usd_per_day``, over ``min_retried`` retried attempts, in
  windows that follow each other for ``min_cost_duration_s`` (a flood of
  single retries that lasts, not a five-minute blip).

Score, the sum of three contributions (each in the finding's ``signals``):
``amplification`` = 0.5 * min(1, log2(amp / baseline) / 3) (8x -> 0.5),
``retried_share`` = 0.2 * share of attempts that were retries, and
``retry_cost`` = 0.3 * min(1, log10(1 + retry $/day / min_retry_usd_per_day) / 2).
``risk_usd_per_hour`` is the retry spend rate. Windows of an open incident do
not feed the baseline, so a long storm does not become the new normal.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec
from pydantic import Field

from detectors.base import Detector, DetectorContext, DetectorParams, Finding
from detectors.keyspace import MOVE_EVERY, KeyspaceStats
from detectors.records import new_object, record_decoder, record_encoder
from detectors.registry import register
from detectors.stats import alpha_for_half_life
from sentinel.events import UsageEvent

_MAX_STATUSES = 8  # distinct failure status codes counted per window
_MAX_SAMPLES = 5
# A new finding when the $/day crosses 4x what was last reported: the window's $/day is extrapolated
# from a partly filled window, so it grows within the window; a factor 2 would re-report as it fills.
_COST_STEP = 4.0
_MIN_BASELINE_REQUESTS = 2  # a window with fewer logical requests does not feed the baseline


class RetryStormParams(DetectorParams):
    window_s: float = Field(300.0, gt=0, description="tumbling window for amplification and retry cost")
    request_ttl_s: float = Field(
        900.0, gt=0, description="how long a request_id is remembered to count its attempts (retries come in minutes)")
    min_extra_attempts: int = Field(
        10, ge=1, description="extra attempts (attempts - logical requests) a window needs before it is judged")
    min_stack: float = Field(
        2.0, ge=1, description="retries per retried request needed for an amplification alert: 1 is a plain "
        "retry (a rate-limit blip), 2+ is retries stacked on retries")
    min_excess: float = Field(
        0.5, gt=0, description="extra attempts per logical request above the baseline needed to alert")
    z_min: float = Field(4.0, gt=0, description="standard score of the window's amplification against the baseline")
    floor_std: float = Field(
        0.05, gt=0, description="floor on the baseline's standard deviation (a retry-free key has none)")
    min_cost_duration_s: float = Field(
        900.0, ge=0, description="a retry-cost jump without stacking must last this long (a brief blip does not)")
    min_retried: int = Field(
        10, ge=1, description="retried attempts a window needs before its retry cost is judged (fewer is noise)")
    cost_jump_ratio: float = Field(4.0, gt=1, description="retry $/day this many times the baseline is a jump")
    min_retry_usd_per_day: float = Field(5.0, ge=0, description="retry spend below this rate never alerts")
    cold_amplification: float = Field(
        3.0, gt=1, description="before warm-up only this amplification alerts (stacked retries, whatever the past)")
    warm_windows: int = Field(6, ge=1, description="windows of history before the baseline is trusted")
    half_life_windows: float = Field(48.0, gt=0, description="baseline half-life in windows (4 h of 5-min windows)")
    resolve_after_s: float = Field(1800.0, gt=0, description="an incident with no triggering window this long resolves")
    min_score: float = Field(0.2, ge=0, le=1, description="findings scoring below this are not emitted")
    score_step: float = Field(0.1, gt=0, le=1, description="a score rise this large emits an escalation finding")
    page_score: float = Field(0.75, ge=0, le=1, description="score from which the finding asks to page")


class Incident(msgspec.Struct, array_like=True, gc=False):
    first_seen: float
    last_t: float
    score: float = 0.0
    e_cost: float = 0.0
    peak_amp: float = 0.0
    retry_usd: float = 0.0
    retried: int = 0
    samples: list[str] = msgspec.field(default_factory=list)
    statuses: list[int] = msgspec.field(default_factory=list)  # flat [status, count, ...] over the incident


class FeatureKeyRecord(msgspec.Struct, array_like=True, gc=False):
    """How a :class:`FeatureKeyState` is stored in a snapshot: its fields, in this order, as one array."""

    moved: float
    tenant: str = ""
    win_end: float = 0.0
    w_att: int = 0
    w_req: int = 0
    w_retry: int = 0
    w_rreq: int = 0  # logical requests retried at least once
    w_rcost: float = 0.0
    w_cost: float = 0.0
    w_max: int = 0
    w_status: list[int] | None = None  # flat [status, count, ...] of failed attempts, made on the first
    # baselines over past windows (flat, not nested structs: this is per key): EW mean and variance
    # of the amplification, EW mean of the retry $/day, and how many windows fed them
    amp_mean: float = 0.0
    amp_var: float = 0.0
    rcost_mean: float = 0.0
    n_base: int = 0
    w_cjump: bool = False  # the retry cost jumped in this window
    cost_since: float = 0.0  # start of the current run of windows with a retry-cost jump (0: none)
    inc: Incident | None = None




class FeatureKeyState:
    """Per api key x feature: the current window's counters and the baselines (fields: see
    :class:`FeatureKeyRecord`).

    A plain ``__slots__`` class rather than a msgspec Struct: every event writes three to five of
    these fields, and CPython only specializes attribute stores for types with the default
    ``__setattr__``, which a Struct overrides (a Struct store costs ~25 ns more). Snapshots encode it
    as a :class:`FeatureKeyRecord` (same fields, same order, so the same bytes). Made by
    :func:`_new_key` or, on restore, :func:`detectors.records.record_decoder`.

    Three more slots, not snapshotted, find it per event without building its ``api_key_id|feature``
    string (see :meth:`RetryStorm._find_key`): ``key``, that string (the key in ``RetryStormState.keys``);
    ``api_key`` and ``feature``, the event fields it is indexed under (None until indexed); ``nxt``,
    the next state indexed under the same api key.
    """

    __slots__ = ("amp_mean", "amp_var", "api_key", "cost_since", "feature", "inc", "key", "moved", "n_base",
                 "nxt", "rcost_mean", "tenant", "w_att", "w_cjump", "w_cost", "w_max", "w_rcost", "w_req", "w_retry",
                 "w_rreq", "w_status", "win_end")
    moved: float
    tenant: str
    win_end: float
    w_att: int
    w_req: int
    w_retry: int
    w_rreq: int
    w_rcost: float
    w_cost: float
    w_max: int
    w_status: list[int] | None
    amp_mean: float
    amp_var: float
    rcost_mean: float
    n_base: int
    w_cjump: bool
    cost_since: float
    inc: Incident | None
    key: str
    api_key: str | None
    feature: str | None
    nxt: FeatureKeyState | None


class RetryStormState(msgspec.Struct):
    # Keys are plain objects (see FeatureKeyState): the detector snapshots and restores with hooks for them.
    keys: dict[str, FeatureKeyState] = msgspec.field(default_factory=dict)
    # request_id -> attempts seen, in two generations: ids first seen since ``gen_start`` and the
    # generation before. Every request_ttl_s / 2 the older one is dropped whole, so an id is
    # remembered for between half the TTL and the TTL, and expiry costs nothing per id.
    requests: dict[str, int] = msgspec.field(default_factory=dict)
    requests_old: dict[str, int] = msgspec.field(default_factory=dict)
    gen_start: float = 0.0
    open: dict[str, int] = msgspec.field(default_factory=dict)
    key_stats: KeyspaceStats = msgspec.field(default_factory=KeyspaceStats)
    request_stats: KeyspaceStats = msgspec.field(default_factory=KeyspaceStats)


_encoder = record_encoder((FeatureKeyState, FeatureKeyRecord))
_decoder = record_decoder(RetryStormState, (FeatureKeyState, FeatureKeyRecord))


def _new_key(key: str, t: float) -> FeatureKeyState:
    k: FeatureKeyState = new_object(FeatureKeyState)
    k.key = key
    k.api_key = k.feature = k.nxt = None
    k.moved = t
    k.tenant = ""
    k.win_end = k.w_rcost = k.w_cost = k.amp_mean = k.amp_var = k.rcost_mean = k.cost_since = 0.0
    k.w_att = k.w_req = k.w_retry = k.w_rreq = k.w_max = k.n_base = 0
    k.w_status = None
    k.w_cjump = False
    k.inc = None
    return k


def _count_status(flat: list[int], status: int, n: int = 1) -> None:
    for i in range(0, len(flat), 2):
        if flat[i] == status:
            flat[i + 1] += n
            return
    if len(flat) < 2 * _MAX_STATUSES:
        flat.append(status)
        flat.append(n)


def _status_dict(flat: list[int]) -> dict[str, int]:
    pairs = sorted(zip(flat[0::2], flat[1::2], strict=True), key=lambda p: (-p[1], p[0]))
    return {str(s): n for s, n in pairs}


def _z(x: float, mean: float, var: float, floor_std: float) -> float:
    std = math.sqrt(var) if var > 0.0 else 0.0
    return (x - mean) / (std if std > floor_std else floor_std)


def split_key(key: str) -> tuple[str, str]:
    """``api_key_id|feature`` -> (api_key_id, feature)."""
    api_key, _, feature = key.rpartition("|")
    return api_key, feature


@register
class RetryStorm(Detector[RetryStormParams, RetryStormState]):
    """Stacked retries: attempts per logical request, or the cost of retries, jump for a key and feature.

    Amplification (attempts / logical requests) and retry $/day per
    ``api_key_id`` x ``feature`` against their own baselines. See the module docstring.
    """

    name: ClassVar[str] = "retry_storm"
    Params: ClassVar[type[DetectorParams]] = RetryStormParams
    State: ClassVar[type[msgspec.Struct]] = RetryStormState
    description: ClassVar[str] = "retry amplification and retry cost jumps per key and feature"

    def __init__(self, params: RetryStormParams, context: DetectorContext,
                 tenant_params: Mapping[str, RetryStormParams] | None = None) -> None:
        super().__init__(params, context, tenant_params)
        m = params.max_keys
        self._cap_keys = max(1, m // 2)
        self._cap_generation = max(1, (m - m // 2) // 2)  # per generation: both fit in their share
        self._alpha = alpha_for_half_life(params.half_life_windows)
        # Read per event: kept as plain attributes (pydantic attribute reads are slow).
        self._window_s = params.window_s
        self._window_tenant = {tid: tp.window_s for tid, tp in self.tenant_params.items()}
        # api_key_id -> the first of its key x feature states (chained by FeatureKeyState.nxt): finds
        # an event's state without building its "api_key_id|feature" key. Derived from state.keys
        # (rebuilt as events come after a restore), never snapshotted.
        self._by_api_key: dict[str, FeatureKeyState] = {}

    def update(self, event: UsageEvent) -> list[Finding] | None:
        t: float = event.ts  # type: ignore[assignment]
        st = self.state
        attempt = event.attempt
        rid = event.request_id
        if rid is None:
            new_request = attempt == 1
            first_retry = attempt == 2
            n_att = attempt
        else:
            reqs = st.requests
            seen = reqs.get(rid)
            if seen is None:
                seen = st.requests_old.get(rid)
            if seen is not None:
                new_request = False
                n_att = seen + 1
                first_retry = n_att == 2
                reqs[rid] = n_att
                if attempt > n_att:
                    n_att = attempt
            else:
                if len(reqs) >= self._cap_generation:
                    self._rotate(t, early=True)
                    reqs = st.requests
                reqs[rid] = 1
                new_request = True
                first_retry = attempt > 1  # a retry whose earlier attempts we did not see
                n_att = attempt
        retried = not new_request or attempt > 1

        tenant = event.tenant_id
        feature = event.feature
        k = self._by_api_key.get(event.api_key_id)
        while k is not None and k.feature != feature:
            k = k.nxt
        if k is None:
            k = self._find_key(event.api_key_id, feature, t, tenant)
        elif t - k.moved > MOVE_EVERY:  # as detectors.keyspace.touch does it, inline
            keys = st.keys
            key = k.key
            del keys[key]
            keys[key] = k
            k.moved = t
            if not k.tenant:
                k.tenant = tenant
        if t >= k.win_end:
            tw = self._window_tenant
            window_s = tw.get(tenant, self._window_s) if tw else self._window_s
            self._close_window(k, window_s)
            k.win_end = (t // window_s + 1.0) * window_s
        k.w_att += 1
        if new_request:
            k.w_req += 1
        cost = event.cost_usd
        if cost is None:
            cost = self.context.prices.resolve(event.model).cost(
                event.input_tokens, event.output_tokens, event.cached_input_tokens, event.cache_write_tokens)
        k.w_cost += cost
        status = event.status
        if status >= 400:
            if k.w_status is None:
                k.w_status = []
            _count_status(k.w_status, status)
            if k.inc is not None:
                _count_status(k.inc.statuses, status)
        if not retried:
            return None
        k.w_retry += 1
        if first_retry:
            k.w_rreq += 1
        k.w_rcost += cost
        if n_att > k.w_max:
            k.w_max = n_att
        inc = k.inc
        if inc is not None:
            inc.retry_usd += cost
            inc.retried += 1
        if k.w_req == 0:
            return None
        return self._judge(k.key, k, self.params_for(tenant), t, event)

    def _find_key(self, api_key: str, feature: str | None, t: float, tenant: str) -> FeatureKeyState:
        """The state of ``api_key|feature`` as detectors.keyspace.touch gives it (created, moved,
        evicting the least recently moved beyond the cap), indexed under (api_key, feature) for the
        next events.

        A state is indexed under the first (api_key, feature) pair that finds it here; another pair
        naming the same key (a '|' inside an id, or feature None vs "") is served here every time.
        """
        key = f"{api_key}|{feature}" if feature is not None else api_key + "|"
        st = self.state
        keys = st.keys
        k = keys.get(key)
        if k is None:
            k = keys[key] = _new_key(key, t)
            excess = len(keys) - self._cap_keys
            if excess > 0:
                victims = list(itertools.islice(keys.values(), excess))
                for v in victims:
                    del keys[v.key]
                    self._unindex(v)
                st.key_stats.evicted += len(victims)
        elif t - k.moved > MOVE_EVERY:
            del keys[key]
            keys[key] = k
            k.moved = t
        if not k.tenant:
            k.tenant = tenant
        if k.api_key is None:
            k.api_key = api_key
            k.feature = feature
            by_api_key = self._by_api_key
            k.nxt = by_api_key.get(api_key)
            by_api_key[api_key] = k
        return k

    def _unindex(self, k: FeatureKeyState) -> None:
        """Take a state that left ``state.keys`` out of the api key index."""
        api_key = k.api_key
        if api_key is None:
            return
        by_api_key = self._by_api_key
        head = by_api_key[api_key]
        if head is k:
            if k.nxt is None:
                del by_api_key[api_key]
            else:
                by_api_key[api_key] = k.nxt
        else:
            prev = head
            while prev.nxt is not k:
                prev = prev.nxt  # type: ignore[assignment]
            prev.nxt = k.nxt
        k.api_key = k.feature = k.nxt = None

    def _rotate(self, t: float, early: bool = False) -> None:
        """Start a new generation of request ids; the one before the current is forgotten.

        ``early``: the current generation is full before its time (more requests per
        ``request_ttl_s`` than the cap holds), counted in ``request_stats.evicted``.
        """
        st = self.state
        dropped = len(st.requests_old)
        st.requests_old = st.requests
        st.requests = {}
        st.gen_start = t
        if early:
            st.request_stats.evicted += dropped
        else:
            st.request_stats.expired += dropped

    def _close_window(self, k: FeatureKeyState, window_s: float) -> None:
        if k.w_req >= _MIN_BASELINE_REQUESTS and k.inc is None:
            a = self._alpha
            amp = k.w_att / k.w_req
            rcost = k.w_rcost * 86400.0 / window_s
            if k.n_base == 0:
                k.amp_mean = amp
                k.rcost_mean = rcost
            else:  # West (1979) / Finch (2009) eq. 143-144, as detectors.stats.ewm_update
                diff = amp - k.amp_mean
                incr = a * diff
                k.amp_mean += incr
                k.amp_var = (1.0 - a) * (k.amp_var + diff * incr)
                k.rcost_mean += a * (rcost - k.rcost_mean)
            k.n_base += 1
        if not k.w_cjump:
            k.cost_since = 0.0
        k.w_cjump = False
        k.w_att = k.w_req = k.w_retry = k.w_rreq = k.w_max = 0
        k.w_rcost = k.w_cost = 0.0
        if k.w_status is not None:
            k.w_status = None

    def _judge(self, key: str, k: FeatureKeyState, p: RetryStormParams, t: float,
               ev: UsageEvent) -> list[Finding] | None:
        amp = k.w_att / k.w_req
        extra = k.w_att - k.w_req
        warm = k.n_base >= p.warm_windows
        base = k.amp_mean if warm and k.amp_mean > 1.0 else 1.0
        rcost_day = k.w_rcost * 86400.0 / p.window_s
        base_cost = k.rcost_mean if warm else 0.0
        stacked = extra >= p.min_extra_attempts and k.w_rreq > 0 and extra / k.w_rreq >= p.min_stack
        if warm:
            amp_jump = stacked and amp - base >= p.min_excess and _z(
                amp, k.amp_mean, k.amp_var, p.floor_std) >= p.z_min
            cost_jump = False
            if (k.w_retry >= p.min_retried and rcost_day >= p.min_retry_usd_per_day
                    and rcost_day >= p.cost_jump_ratio * base_cost):
                k.w_cjump = True
                if k.cost_since == 0.0:
                    k.cost_since = t
                cost_jump = t - k.cost_since >= p.min_cost_duration_s
        else:
            amp_jump = stacked and amp >= p.cold_amplification
            cost_jump = False
        if not (amp_jump or cost_jump):
            return None
        score, signals = self._score(amp, base, k.w_retry / k.w_att, rcost_day, p)
        inc = k.inc
        if inc is None:
            if score < p.min_score:
                return None
            inc = k.inc = Incident(first_seen=t, last_t=t)
            inc.statuses = list(k.w_status or ())
            inc.retry_usd = k.w_rcost
            inc.retried = k.w_retry
            self.state.open[key] = 1
        elif t > inc.last_t:
            inc.last_t = t
        if amp > inc.peak_amp:
            inc.peak_amp = amp
        if len(inc.samples) < _MAX_SAMPLES:
            inc.samples.append(ev.event_id)
        if inc.score and score < inc.score + p.score_step and rcost_day < _COST_STEP * inc.e_cost:
            return None
        if score < p.min_score:
            return None
        inc.score = score
        inc.e_cost = max(rcost_day, inc.e_cost)
        return [self._finding(key, k, inc, t, score, signals, p, "firing", amp, base, rcost_day, base_cost)]

    @staticmethod
    def _score(amp: float, base: float, share: float, rcost_day: float,
               p: RetryStormParams) -> tuple[float, dict[str, float]]:
        s_amp = 0.5 * min(1.0, max(0.0, math.log2(amp / base)) / 3.0)
        s_share = 0.2 * share
        ref = p.min_retry_usd_per_day if p.min_retry_usd_per_day > 0 else 1.0
        s_cost = 0.3 * min(1.0, math.log10(1.0 + rcost_day / ref) / 2.0)
        signals = {"amplification": round(s_amp, 4), "retried_share": round(s_share, 4),
                   "retry_cost": round(s_cost, 4)}
        return min(1.0, round(s_amp + s_share + s_cost, 4)), signals

    def _finding(self, key: str, k: FeatureKeyState, inc: Incident, t: float, score: float,
                 signals: dict[str, float], p: RetryStormParams, status: Any, amp: float, base: float,
                 rcost_day: float, base_cost: float) -> Finding:
        api_key, feature = split_key(key)
        codes = _status_dict(inc.statuses)
        top = ", ".join(f"{c} x{n}" for c, n in list(codes.items())[:3]) or "no failures reported"
        title = (f"retry storm on {api_key} / {feature or '(no feature)'}: "
                 f"{amp:.1f} attempts per request (baseline {base:.2f})")
        evidence: dict[str, Any] = {
            "api_key_id": api_key,
            "feature": feature or None,
            "amplification": round(amp, 4),
            "baseline_amplification": round(base, 4),
            "peak_amplification": round(inc.peak_amp, 4),
            "window_s": p.window_s,
            "logical_requests": k.w_req,
            "attempts": k.w_att,
            "retried_attempts": k.w_retry,
            "retried_share": round(k.w_retry / k.w_att, 4) if k.w_att else 0.0,
            "max_attempts_per_request": k.w_max,
            "retried_requests": k.w_rreq,
            "retries_per_retried_request": round((k.w_att - k.w_req) / k.w_rreq, 3) if k.w_rreq else 0.0,
            "retry_usd_in_window": round(k.w_rcost, 6),
            "retry_usd_per_day": round(rcost_day, 4),
            "baseline_retry_usd_per_day": round(base_cost, 4),
            "retry_usd_since_first_seen": round(inc.retry_usd, 6),
            "retried_attempts_since_first_seen": inc.retried,
            "status_counts": codes,
            "baseline_windows": k.n_base,
        }
        return Finding(
            detector=self.name, entity_type="feature", entity_id=key, tenant_id=k.tenant, ts=t,
            first_seen=inc.first_seen, score=score, title=title, evidence=evidence, status=status,
            risk_usd_per_hour=round(rcost_day / 24.0, 4),
            summary=f"{title}; retries cost ${rcost_day:.2f}/day; failures: {top}",
            signals=signals, api_key_id=api_key, sample_event_ids=list(inc.samples),
            actions=(["notify", "page"] if score >= p.page_score else ["notify"]) if status == "firing" else [],
        )

    def tick(self, now: float) -> list[Finding] | None:
        st = self.state
        out: list[Finding] | None = None
        if st.open:
            done: list[str] = []
            for key in st.open:
                k = st.keys.get(key)
                inc = k.inc if k is not None else None
                if k is None or inc is None:
                    done.append(key)
                    continue
                p = self.params_for(k.tenant)
                if now - inc.last_t < p.resolve_after_s:
                    continue
                k.inc = None
                done.append(key)
                if not inc.score:  # never emitted: nothing to resolve
                    continue
                amp = k.w_att / k.w_req if k.w_req else 1.0
                base = k.amp_mean if k.n_base >= p.warm_windows and k.amp_mean > 1.0 else 1.0
                rcost_day = k.w_rcost * 86400.0 / p.window_s
                share = k.w_retry / k.w_att if k.w_att else 0.0
                score, signals = self._score(max(amp, base), base, share, rcost_day, p)
                f = self._finding(key, k, inc, now, score, signals, p, "resolved", amp, base, rcost_day,
                                  k.rcost_mean)
                out = out or []
                out.append(f)
            for key in done:
                del st.open[key]
        ttl = self.params.request_ttl_s
        if now - st.gen_start >= ttl:
            st.request_stats.expired += len(st.requests) + len(st.requests_old)
            st.requests = {}
            st.requests_old = {}
            st.gen_start = now
        elif now - st.gen_start >= ttl / 2.0:
            self._rotate(now)
        # As detectors.keyspace.expire_idle (which stops at the first key moved after limit + MOVE_EVERY,
        # in touch order), taking the expired states out of the api key index too.
        limit = now - self.params.idle_ttl_s
        if st.keys and next(iter(st.keys.values())).moved <= limit + MOVE_EVERY:
            victims = []
            for k in st.keys.values():
                if k.moved > limit + MOVE_EVERY:
                    break
                if k.moved < limit:
                    victims.append(k)
            for k in victims:
                del st.keys[k.key]
                self._unindex(k)
            st.key_stats.expired += len(victims)
        return out

    def snapshot(self) -> bytes:
        return _encoder.encode(self.state)

    def restore(self, data: bytes) -> None:
        self.state = state = _decoder.decode(data)
        for key, k in state.keys.items():  # what the record does not hold: see FeatureKeyState
            k.key = key
            k.api_key = k.feature = k.nxt = None
        self._by_api_key = {}

    def is_warm(self, key: str) -> bool:
        k = self.state.keys.get(key)
        return k is not None and k.n_base >= self.params_for(k.tenant).warm_windows

    def tracked_keys(self) -> int:
        st = self.state
        return len(st.keys) + len(st.requests) + len(st.requests_old)

    def evicted_keys(self) -> int:
        # Request ids are a short-lived cache (see _rotate), not entity keys: only key x feature counts.
        return self.state.key_stats.evicted
