"""cancellation_tax: spend on attempts the user cancelled, per feature, jumps.

When a user presses stop, the client goes away but the provider may keep
generating, and bill, until the completion ends (a proxy that does not
propagate the disconnect, a UI that closes only its own stream). The gateway
marks such attempts ``cancelled: true``. Per ``tenant_id`` x ``feature``, in
tumbling windows of ``window_s``, the detector sums attempts and cancelled
attempts, their cost and their output tokens, and keeps exponentially
weighted baselines over past windows (West 1979; see :mod:`detectors.stats`)
of the *cancelled share* of attempts and of the cancelled spend in $/day.

It alerts when, in the current window (``min_attempts`` attempts and
``min_cancelled`` cancelled ones at least, looked at after every cancelled
attempt), all of these hold:

* the cancelled share jumps: ``share_jump_ratio`` times its baseline,
  ``min_share_excess`` above it, and unlikely under it: the
  Chernoff-Hoeffding bound exp(-n KL(share || baseline)) over the window's
  n attempts is at most ``max_p_value`` (Hoeffding 1963), so that a handful
  of stops in a quiet window is not a jump;
* the spend on cancelled attempts jumps: at least ``min_usd_per_day`` and
  ``spend_jump_ratio`` times its baseline $/day;
* the provider kept generating: cancelled attempts billed on average at least
  ``min_billed_ratio`` of a completed attempt's output tokens (the feature's
  EW mean over past windows). When the stop
  is honoured, outputs are cut short and billed partially: users pressing
  stop more often (slow responses) is a latency problem, not this tax.

Score, the sum of three contributions (in the finding's ``signals``):
``cancelled_share`` = 0.4 * min(1, (share - baseline share) / 0.4),
``cancelled_spend`` = 0.4 * min(1, log10(1 + $/day / min_usd_per_day) / 2) and
``billed_in_full`` = 0.2 * min(1, billed output ratio).
``risk_usd_per_hour`` is the cancelled spend above the baseline rate. The
evidence gives the $/day lost, and the features of the same tenant that are
in an open incident too (a frontend release usually hits several at once).
Windows of an open incident do not feed the baselines.
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
from detectors.stats import alpha_for_half_life
from sentinel.events import UsageEvent

_MAX_SAMPLES = 5
# A new finding when the $/day crosses 4x what was last reported: the window's $/day is extrapolated
# from a partly filled window, so it grows within the window; a factor 2 would re-report as it fills.
_COST_STEP = 4.0
_MAX_FEATURES_LISTED = 10
_MIN_BASELINE_ATTEMPTS = 5  # a window with fewer attempts does not feed the baselines


class CancellationTaxParams(DetectorParams):
    window_s: float = Field(3600.0, gt=0, description="tumbling window over which attempts and spend are summed")
    min_attempts: int = Field(20, ge=1, description="attempts a window needs before its cancelled share is judged")
    share_jump_ratio: float = Field(
        3.0, gt=1, description="the cancelled share of attempts must be this many times its baseline")
    min_share_excess: float = Field(
        0.1, gt=0, le=1, description="... and this much above it (absolute), so 1% -> 3% is not a jump")
    spend_jump_ratio: float = Field(
        2.0, ge=1, description="the cancelled $/day must also be this many times its baseline")
    min_usd_per_day: float = Field(0.5, ge=0, description="a cancelled spend rate below this never alerts")
    min_billed_ratio: float = Field(
        0.75, ge=0, description="cancelled attempts must bill at least this share of a completed attempt's output "
        "tokens on average (the provider kept generating)")
    min_cancelled: int = Field(
        8, ge=1, description="cancelled attempts a window needs before it is judged (small counts are noise)")
    max_p_value: float = Field(
        1e-4, gt=0, lt=1, description="Chernoff bound on the chance of the window's cancelled share under the "
        "baseline share must be below this (about one false look per 10k windows)")
    warm_windows: int = Field(4, ge=1, description="windows with traffic before the baselines are trusted (4 h)")
    half_life_windows: float = Field(24.0, gt=0, description="baseline half-life in windows (1 day of 1-h windows)")
    resolve_after_s: float = Field(
        7200.0, gt=0, description="an incident with no triggering window this long resolves (two windows)")
    min_score: float = Field(0.2, ge=0, le=1, description="findings scoring below this are not emitted")
    score_step: float = Field(0.1, gt=0, le=1, description="a score rise this large emits an escalation finding")


class Incident(msgspec.Struct, array_like=True, gc=False):
    first_seen: float
    last_t: float
    score: float = 0.0
    e_cost: float = 0.0
    peak_share: float = 0.0
    lost_usd: float = 0.0
    peak_usd_per_day: float = 0.0
    cancelled: int = 0
    cancelled_output_tokens: int = 0
    samples: list[str] = msgspec.field(default_factory=list)


class FeatureState(msgspec.Struct, array_like=True, gc=False):
    """Per tenant x feature: the current window's sums and the baselines."""

    moved: float
    win_end: float = 0.0
    w_n: int = 0
    w_cn: int = 0
    w_cost: float = 0.0
    w_ccost: float = 0.0
    w_out: int = 0  # output tokens billed on completed attempts
    w_cout: int = 0  # output tokens billed on cancelled attempts
    # baselines over past windows (flat: this is per key): EW means of the cancelled share of attempts
    # and of the cancelled $/day, and how many windows fed them
    base_share: float = 0.0
    base_spend: float = 0.0
    base_out: float = 0.0  # EW mean output tokens of a completed attempt
    n_base: int = 0
    inc: Incident | None = None


class CancellationTaxState(msgspec.Struct):
    features: dict[str, FeatureState] = msgspec.field(default_factory=dict)
    open: dict[str, int] = msgspec.field(default_factory=dict)
    stats: KeyspaceStats = msgspec.field(default_factory=KeyspaceStats)


def _new_feature(t: float) -> FeatureState:
    return FeatureState(t)


def _p_value_bound(share: float, base: float, n: int) -> float:
    """Chernoff-Hoeffding bound on P(share >= observed) over ``n`` attempts at the base rate (floored at 1%).

    P(X/n >= q) <= exp(-n KL(q || p)) for q > p (Hoeffding 1963, Theorem 1).

    >>> round(_p_value_bound(0.5, 0.035, 20), 12) < 1e-8
    True
    >>> 1e-3 < _p_value_bound(0.2252, 0.064, 45) < 1e-2
    True
    """
    p0 = base if base > 0.01 else 0.01
    q = share if share < 1.0 - 1e-12 else 1.0 - 1e-12
    if q <= p0 or n <= 0:
        return 1.0
    kl = q * math.log(q / p0) + (1.0 - q) * math.log((1.0 - q) / (1.0 - p0))
    return math.exp(-n * kl)


def _billed_ratio(s: FeatureState) -> float:
    """Mean output tokens of the window's cancelled attempts over a completed attempt's.

    The completed side is the baseline mean (stable; the window's own completed
    attempts are few early in a window), else the window's.
    """
    if s.w_cn == 0:
        return 0.0
    ref = s.base_out
    if ref <= 0.0:
        done = s.w_n - s.w_cn
        if done == 0 or s.w_out == 0:
            return 1.0
        ref = s.w_out / done
    return (s.w_cout / s.w_cn) / ref


def split_key(key: str) -> tuple[str, str]:
    """``tenant_id|feature`` -> (tenant_id, feature)."""
    tenant, _, feature = key.partition("|")
    return tenant, feature


@register
class CancellationTax(Detector[CancellationTaxParams, CancellationTaxState]):
    """Spend on cancelled attempts (billed after the user pressed stop) jumps for a feature.

    Cancelled share of attempts and cancelled $/day per ``tenant_id`` x
    ``feature`` against their own baselines, for cancelled attempts billed
    (nearly) in full. See the module docstring.
    """

    name: ClassVar[str] = "cancellation_tax"
    Params: ClassVar[type[DetectorParams]] = CancellationTaxParams
    State: ClassVar[type[msgspec.Struct]] = CancellationTaxState
    description: ClassVar[str] = "spend on cancelled attempts per feature jumps above its baseline"

    def __init__(self, params: CancellationTaxParams, context: DetectorContext,
                 tenant_params: Mapping[str, CancellationTaxParams] | None = None) -> None:
        super().__init__(params, context, tenant_params)
        self._alpha = alpha_for_half_life(params.half_life_windows)
        # Read per event: kept as plain attributes (pydantic attribute reads are slow).
        self._window_s = params.window_s
        self._window_tenant = {tid: tp.window_s for tid, tp in self.tenant_params.items()}

    def update(self, event: UsageEvent) -> list[Finding] | None:
        t: float = event.ts  # type: ignore[assignment]
        st = self.state
        tenant = event.tenant_id
        feature = event.feature
        key = f"{tenant}|{feature}" if feature is not None else tenant + "|"
        s = st.features.get(key)
        if s is None or t - s.moved > MOVE_EVERY:
            s = touch(st.features, key, t, _new_feature, self.params.max_keys, st.stats)
        if t >= s.win_end:
            tw = self._window_tenant
            window_s = tw.get(tenant, self._window_s) if tw else self._window_s
            if s.w_n >= _MIN_BASELINE_ATTEMPTS and s.inc is None:
                share = s.w_cn / s.w_n
                spend = s.w_ccost * 86400.0 / window_s
                done = s.w_n - s.w_cn
                if s.n_base == 0:
                    s.base_share = share
                    s.base_spend = spend
                else:
                    a = self._alpha
                    s.base_share += a * (share - s.base_share)
                    s.base_spend += a * (spend - s.base_spend)
                if done > 0:
                    out = s.w_out / done
                    s.base_out = out if s.base_out == 0.0 else s.base_out + self._alpha * (out - s.base_out)
                s.n_base += 1
            s.win_end = (t // window_s + 1.0) * window_s
            s.w_n = s.w_cn = s.w_out = s.w_cout = 0
            s.w_cost = s.w_ccost = 0.0
        cost = event.cost_usd
        if cost is None:
            cost = self.context.prices.resolve(event.model).cost(
                event.input_tokens, event.output_tokens, event.cached_input_tokens, event.cache_write_tokens)
        s.w_n += 1
        s.w_cost += cost
        if not event.cancelled:
            s.w_out += event.output_tokens
            return None
        s.w_cn += 1
        s.w_ccost += cost
        s.w_cout += event.output_tokens
        inc = s.inc
        if inc is not None:
            inc.lost_usd += cost
            inc.cancelled += 1
            inc.cancelled_output_tokens += event.output_tokens
        p = self.params_for(tenant)
        if s.w_cn < p.min_cancelled or s.w_n < p.min_attempts or s.n_base < p.warm_windows:
            return None
        share = s.w_cn / s.w_n
        base_share = s.base_share
        usd_day = s.w_ccost * 86400.0 / p.window_s
        base_usd = s.base_spend
        billed = _billed_ratio(s)
        if not (share >= p.share_jump_ratio * base_share and share - base_share >= p.min_share_excess
                and usd_day >= p.min_usd_per_day and usd_day >= p.spend_jump_ratio * base_usd
                and billed >= p.min_billed_ratio
                and _p_value_bound(share, base_share, s.w_n) <= p.max_p_value):
            return None
        score, signals = self._score(share, base_share, usd_day, billed, p)
        if inc is None:
            if score < p.min_score:
                return None
            inc = s.inc = Incident(first_seen=t, last_t=t, lost_usd=s.w_ccost, cancelled=s.w_cn,
                                   cancelled_output_tokens=s.w_cout)
            st.open[key] = 1
        elif t > inc.last_t:
            inc.last_t = t
        if share > inc.peak_share:
            inc.peak_share = share
        if usd_day > inc.peak_usd_per_day:
            inc.peak_usd_per_day = usd_day
        if len(inc.samples) < _MAX_SAMPLES:
            inc.samples.append(event.event_id)
        if inc.score and score < inc.score + p.score_step and usd_day < _COST_STEP * inc.e_cost:
            return None
        if score < p.min_score:
            return None
        inc.score = score
        inc.e_cost = max(usd_day, inc.e_cost)
        return [self._finding(key, s, inc, t, score, signals, p, "firing", share, base_share, usd_day, base_usd)]

    @staticmethod
    def _score(share: float, base_share: float, usd_day: float, billed: float,
               p: CancellationTaxParams) -> tuple[float, dict[str, float]]:
        s_share = 0.4 * min(1.0, max(0.0, share - base_share) / 0.4)
        ref = p.min_usd_per_day if p.min_usd_per_day > 0 else 1.0
        s_spend = 0.4 * min(1.0, math.log10(1.0 + usd_day / ref) / 2.0)
        s_full = 0.2 * min(1.0, max(0.0, billed))
        signals = {"cancelled_share": round(s_share, 4), "cancelled_spend": round(s_spend, 4),
                   "billed_in_full": round(s_full, 4)}
        return min(1.0, round(s_share + s_spend + s_full, 4)), signals

    def _features_involved(self, tenant: str) -> list[dict[str, Any]]:
        st = self.state
        out: list[dict[str, Any]] = []
        for key in sorted(st.open):
            t_id, feature = split_key(key)
            s = st.features.get(key)
            if t_id != tenant or s is None or s.inc is None:
                continue
            p = self.params_for(t_id)
            out.append({
                "feature": feature or None,
                "usd_per_day": round(s.w_ccost * 86400.0 / p.window_s, 4),
                "baseline_usd_per_day": round(s.base_spend, 4),
                "cancelled_share": round(s.w_cn / s.w_n, 4) if s.w_n else 0.0,
                "lost_usd_since_first_seen": round(s.inc.lost_usd, 6),
            })
            if len(out) >= _MAX_FEATURES_LISTED:
                break
        return out

    def _finding(self, key: str, s: FeatureState, inc: Incident, t: float, score: float,
                 signals: dict[str, float], p: CancellationTaxParams, status: Any, share: float,
                 base_share: float, usd_day: float, base_usd: float) -> Finding:
        tenant, feature = split_key(key)
        involved = self._features_involved(tenant)
        lost_day = max(0.0, usd_day - base_usd)
        title = (f"cancellation tax on {tenant} / {feature or '(no feature)'}: "
                 f"${usd_day:.2f}/day billed on cancelled attempts ({share:.0%} of calls cancelled, "
                 f"baseline {base_share:.0%})")
        evidence: dict[str, Any] = {
            "feature": feature or None,
            "usd_per_day": round(usd_day, 4),
            "baseline_usd_per_day": round(base_usd, 4),
            "excess_usd_per_day": round(lost_day, 4),
            "cancelled_share": round(share, 4),
            "baseline_cancelled_share": round(base_share, 4),
            "cancelled_share_of_spend": round(s.w_ccost / s.w_cost, 4) if s.w_cost > 0 else 0.0,
            "billed_output_ratio": round(_billed_ratio(s), 4),
            "p_value_bound": float(f"{_p_value_bound(share, base_share, s.w_n):.3g}") if s.w_n else 1.0,
            "peak_cancelled_share": round(inc.peak_share, 4),
            "window_s": p.window_s,
            "attempts_in_window": s.w_n,
            "cancelled_in_window": s.w_cn,
            "cancelled_usd_in_window": round(s.w_ccost, 6),
            "cancelled_output_tokens_in_window": s.w_cout,
            "lost_usd_since_first_seen": round(inc.lost_usd, 6),
            "peak_usd_per_day": round(inc.peak_usd_per_day, 4),
            "cancelled_since_first_seen": inc.cancelled,
            "cancelled_output_tokens_since_first_seen": inc.cancelled_output_tokens,
            "features_involved": involved,
            "baseline_windows": s.n_base,
        }
        names = ", ".join(str(f["feature"]) for f in involved) or (feature or "(no feature)")
        return Finding(
            detector=self.name, entity_type="feature", entity_id=key, tenant_id=tenant, ts=t,
            first_seen=inc.first_seen, score=score, title=title, evidence=evidence, status=status,
            risk_usd_per_hour=round(lost_day / 24.0, 4),
            summary=f"{title}; features involved: {names}", signals=signals,
            sample_event_ids=list(inc.samples), actions=["notify"] if status == "firing" else [],
        )

    def tick(self, now: float) -> list[Finding] | None:
        st = self.state
        out: list[Finding] | None = None
        if st.open:
            done: list[str] = []
            for key in st.open:
                s = st.features.get(key)
                inc = s.inc if s is not None else None
                if s is None or inc is None:
                    done.append(key)
                    continue
                p = self.params_for(split_key(key)[0])
                if now - inc.last_t < p.resolve_after_s:
                    continue
                done.append(key)
                if not inc.score:  # never emitted: nothing to resolve
                    continue
                share = s.w_cn / s.w_n if s.w_n else 0.0
                usd_day = s.w_ccost * 86400.0 / p.window_s
                score, signals = self._score(share, s.base_share, usd_day, _billed_ratio(s), p)
                out = out or []
                out.append(self._finding(key, s, inc, now, score, signals, p, "resolved", share, s.base_share,
                                         usd_day, s.base_spend))
            for key in done:
                del st.open[key]
                s = st.features.get(key)
                if s is not None:
                    s.inc = None
        expire_idle(st.features, now, self.params.idle_ttl_s, st.stats)
        return out

    def is_warm(self, key: str) -> bool:
        s = self.state.features.get(key)
        return s is not None and s.n_base >= self.params_for(split_key(key)[0]).warm_windows

    def tracked_keys(self) -> int:
        return len(self.state.features)

    def evicted_keys(self) -> int:
        return self.state.stats.evicted
