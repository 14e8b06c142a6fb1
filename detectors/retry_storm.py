"""retry_storm: stacked retries multiply what one logical request costs.

An SDK that retries 3 times under a gateway that retries 3 times bills up to
9 attempts for one logical request. The gateway reports every attempt with
the ``request_id`` of the logical request, so the detector counts:

* attempts per ``request_id``, in a bounded map with a short TTL
  (``request_ttl_s``): an attempt whose request id is already in the map, or
  whose ``attempt`` field is above 1, is a *retried* attempt;
* per ``api_key_id`` x ``feature``, in tumbling windows of ``window_s``:
  attempts, logical requests (distinct request ids), retried attempts, their
  cost, and the HTTP status codes of failed attempts (what caused the retries);
* *retry amplification* = attempts / logical requests (1.0 means no retries),
  against the key x feature's own baseline: an exponentially weighted mean and
  variance of past windows' amplification (West 1979; see
  :mod:`detectors.stats`), and the same for the retry cost in $/day.

It alerts when, in the current window (with ``min_requests`` logical
requests at least), either the **amplification jumps** (``min_excess`` extra
attempts per request above the baseline, and ``z_min`` standard deviations)
or the **retry cost jumps** (``cost_jump_ratio`` times the baseline $/day,
at least ``min_retry_usd_per_day``, over ``min_retried`` retried attempts at least). Before the baseline is warm
(``warm_windows`` windows), only an amplification of ``cold_amplification``
or more alerts: that is stacked retries whatever the history.

Score, the sum of three contributions (each in the finding's ``signals``):
``amplification`` = 0.5 * min(1, log2(amp / baseline) / 3) (8x -> 0.5),
``retried_share`` = 0.2 * share of attempts that were retries, and
``retry_cost`` = 0.3 * min(1, log10(1 + retry $/day / min_retry_usd_per_day) / 2).
``risk_usd_per_hour`` is the retry spend rate. Windows of an open incident do
not feed the baseline, so a long storm does not become the new normal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec
from pydantic import Field

from detectors.base import Detector, DetectorContext, DetectorParams, Finding
from detectors.keyspace import MOVE_EVERY, KeyspaceStats, expire_idle, touch
from detectors.registry import register
from detectors.stats import Ewm, alpha_for_half_life, ewm_update, ewm_z
from sentinel.events import UsageEvent

_MAX_STATUSES = 8  # distinct failure status codes counted per window
_MAX_SAMPLES = 5
_MIN_BASELINE_REQUESTS = 5  # a window with fewer logical requests does not feed the baseline


class RetryStormParams(DetectorParams):
    window_s: float = Field(300.0, gt=0, description="tumbling window for amplification and retry cost")
    request_ttl_s: float = Field(
        900.0, gt=0, description="how long a request_id is remembered to count its attempts (retries come in minutes)")
    min_requests: int = Field(20, ge=1, description="logical requests a window needs before it is judged")
    min_excess: float = Field(
        0.5, gt=0, description="extra attempts per logical request above the baseline needed to alert")
    z_min: float = Field(4.0, gt=0, description="standard score of the window's amplification against the baseline")
    floor_std: float = Field(
        0.05, gt=0, description="floor on the baseline's standard deviation (a retry-free key has none)")
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


class FeatureKeyState(msgspec.Struct, array_like=True, gc=False):
    """Per api key x feature: the current window's counters and the baselines."""

    moved: float
    tenant: str = ""
    win: int = -1
    w_att: int = 0
    w_req: int = 0
    w_retry: int = 0
    w_rcost: float = 0.0
    w_cost: float = 0.0
    w_max: int = 0
    w_status: list[int] = msgspec.field(default_factory=list)  # flat [status, count, ...]
    amp: Ewm = msgspec.field(default_factory=Ewm)
    rcost: Ewm = msgspec.field(default_factory=Ewm)
    inc: Incident | None = None


class RequestState(msgspec.Struct, array_like=True, gc=False):
    moved: float
    n: int = 0


class RetryStormState(msgspec.Struct):
    keys: dict[str, FeatureKeyState] = msgspec.field(default_factory=dict)
    requests: dict[str, RequestState] = msgspec.field(default_factory=dict)
    open: dict[str, int] = msgspec.field(default_factory=dict)
    key_stats: KeyspaceStats = msgspec.field(default_factory=KeyspaceStats)
    request_stats: KeyspaceStats = msgspec.field(default_factory=KeyspaceStats)


def _new_key(t: float) -> FeatureKeyState:
    return FeatureKeyState(t)


def _new_request(t: float) -> RequestState:
    return RequestState(t)


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
        self._cap_requests = max(1, m - m // 2)
        self._alpha = alpha_for_half_life(params.half_life_windows)

    def update(self, event: UsageEvent) -> list[Finding] | None:
        t: float = event.ts  # type: ignore[assignment]
        st = self.state
        attempt = event.attempt
        rid = event.request_id
        if rid is None:
            new_request = attempt == 1
            n_att = attempt
        else:
            reqs = st.requests
            r = reqs.get(rid)
            if r is None:
                r = touch(reqs, rid, t, _new_request, self._cap_requests, st.request_stats)
                new_request = r.n == 0
            else:
                new_request = False
            r.n += 1
            n_att = r.n if r.n > attempt else attempt
        retried = not new_request or attempt > 1

        tenant = event.tenant_id
        tp = self.tenant_params
        p: RetryStormParams = tp.get(tenant, self.params) if tp else self.params
        feature = event.feature
        key = event.api_key_id + "|" + (feature if feature is not None else "")
        keys = st.keys
        k = keys.get(key)
        if k is None or t - k.moved > MOVE_EVERY:
            k = touch(keys, key, t, _new_key, self._cap_keys, st.key_stats)
            if not k.tenant:
                k.tenant = tenant
        w = int(t // p.window_s)
        if w > k.win:
            self._close_window(k, p)
            k.win = w
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
            _count_status(k.w_status, status)
            if k.inc is not None:
                _count_status(k.inc.statuses, status)
        if not retried:
            return None
        k.w_retry += 1
        k.w_rcost += cost
        if n_att > k.w_max:
            k.w_max = n_att
        inc = k.inc
        if inc is not None:
            inc.retry_usd += cost
            inc.retried += 1
        if k.w_req < p.min_requests:
            return None
        return self._judge(key, k, p, t, event)

    def _close_window(self, k: FeatureKeyState, p: RetryStormParams) -> None:
        if k.w_req >= _MIN_BASELINE_REQUESTS and k.inc is None:
            a = self._alpha
            ewm_update(k.amp, k.w_att / k.w_req, a)
            ewm_update(k.rcost, k.w_rcost * 86400.0 / p.window_s, a)
        k.w_att = k.w_req = k.w_retry = k.w_max = 0
        k.w_rcost = k.w_cost = 0.0
        if k.w_status:
            k.w_status = []

    def _judge(self, key: str, k: FeatureKeyState, p: RetryStormParams, t: float,
               ev: UsageEvent) -> list[Finding] | None:
        amp = k.w_att / k.w_req
        warm = k.amp.n >= p.warm_windows
        base = k.amp.mean if warm and k.amp.mean > 1.0 else 1.0
        rcost_day = k.w_rcost * 86400.0 / p.window_s
        base_cost = k.rcost.mean if warm else 0.0
        if warm:
            amp_jump = amp - base >= p.min_excess and ewm_z(k.amp, amp, p.floor_std) >= p.z_min
            cost_jump = (k.w_retry >= p.min_retried and rcost_day >= p.min_retry_usd_per_day
                         and rcost_day >= p.cost_jump_ratio * base_cost)
        else:
            amp_jump = amp >= p.cold_amplification
            cost_jump = False
        if not (amp_jump or cost_jump):
            return None
        score, signals = self._score(amp, base, k.w_retry / k.w_att, rcost_day, p)
        inc = k.inc
        if inc is None:
            if score < p.min_score:
                return None
            inc = k.inc = Incident(first_seen=t, last_t=t)
            inc.statuses = list(k.w_status)
            inc.retry_usd = k.w_rcost
            inc.retried = k.w_retry
            self.state.open[key] = 1
        elif t > inc.last_t:
            inc.last_t = t
        if amp > inc.peak_amp:
            inc.peak_amp = amp
        if len(inc.samples) < _MAX_SAMPLES:
            inc.samples.append(ev.event_id)
        if inc.score and score < inc.score + p.score_step and rcost_day < 2.0 * inc.e_cost:
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
            "retry_usd_in_window": round(k.w_rcost, 6),
            "retry_usd_per_day": round(rcost_day, 4),
            "baseline_retry_usd_per_day": round(base_cost, 4),
            "retry_usd_since_first_seen": round(inc.retry_usd, 6),
            "retried_attempts_since_first_seen": inc.retried,
            "status_counts": codes,
            "baseline_windows": k.amp.n,
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
                base = k.amp.mean if k.amp.n >= p.warm_windows and k.amp.mean > 1.0 else 1.0
                rcost_day = k.w_rcost * 86400.0 / p.window_s
                share = k.w_retry / k.w_att if k.w_att else 0.0
                score, signals = self._score(max(amp, base), base, share, rcost_day, p)
                f = self._finding(key, k, inc, now, score, signals, p, "resolved", amp, base, rcost_day,
                                  k.rcost.mean)
                out = out or []
                out.append(f)
            for key in done:
                del st.open[key]
        expire_idle(st.requests, now, self.params.request_ttl_s, st.request_stats)
        expire_idle(st.keys, now, self.params.idle_ttl_s, st.key_stats)
        return out

    def is_warm(self, key: str) -> bool:
        k = self.state.keys.get(key)
        return k is not None and k.amp.n >= self.params_for(k.tenant).warm_windows

    def tracked_keys(self) -> int:
        return len(self.state.keys) + len(self.state.requests)

    def evicted_keys(self) -> int:
        return self.state.key_stats.evicted + self.state.request_stats.evicted
