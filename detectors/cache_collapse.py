"""cache_collapse: the prompt-cache hit ratio of a tenant's model family or prompt prefix falls and stays down.

Method. The hit ratio is token-weighted: ``sum(cached_input_tokens) /
sum(input_tokens)``. Per key -- tenant x model family (``prices.resolve(model).family``)
and prompt prefix (``prefix_hash``) -- two exponentially decayed sums of both
token counts give a *current* ratio (half-life ``fast_half_life_s``) and a
*baseline* ratio (half-life ``base_half_life_s``). Decay is applied in
event-time minutes, once per key and minute, so the hot path only adds.

Once a minute per key, the drop ``x = baseline - current`` feeds a one-sided
CUSUM (Page 1954, :mod:`detectors.changepoint`) with allowance ``cusum_k``.
An episode opens when ``x >= min_abs_drop`` (the baseline is frozen from
then on, so it does not learn the collapse) and closes when ``x`` falls below
``min_abs_drop * clear_frac``. A finding needs all of: the episode lasted
``min_duration_s``, the CUSUM reached ``cusum_h`` (ratio x minutes), and the
drop is still at least ``min_abs_drop``. With the default 2-minute current
half-life, a full collapse that recovers after 10 minutes keeps the episode
open about 12 minutes: under the 15-minute minimum.

The cause is named from the same key's state:

* ``model_version_change`` -- a raw model name new to the family (first seen
  at most ``model_lookback_s`` before the episode) carries most of the
  current tokens and has a hit ratio at most ``near_zero_ratio``;
* ``prefix_churn`` -- the share of requests with a never-seen ``prefix_hash``
  (a first-seen count per request, i.e. distinct prefixes per request) rose
  by ``churn_rise`` over its baseline, e.g. a timestamp in the system prompt;
* ``traffic_mix`` -- otherwise.

Extra dollars per day = (baseline - current ratio) x current input tokens per
day x (input - cached input price per token). A prefix key reports only while
its family is not itself in an episode (one alert per collapse). A firing key
resolves on recovery, after ``quiet_resolve_s`` without traffic, or after
``max_incident_s``, when the new level becomes the baseline.
"""

from __future__ import annotations

import math
import sys
from typing import Any, ClassVar, Literal

import msgspec
from pydantic import Field

from detectors.base import Detector, DetectorContext, DetectorParams, Finding
from detectors.changepoint import Cusum, cusum_down
from detectors.keyspace import MOVE_EVERY, KeyspaceStats, evict_oldest, expire_idle
from detectors.registry import register
from sentinel.events import UsageEvent

_LN2 = math.log(2.0)
_intern = sys.intern
Cause = Literal["model_version_change", "prefix_churn", "traffic_mix"]


class CacheCollapseParams(DetectorParams):
    fast_half_life_s: float = Field(120.0, gt=0, description="half-life of the current hit ratio")
    base_half_life_s: float = Field(21600.0, gt=0, description="half-life of the baseline hit ratio")
    min_abs_drop: float = Field(0.2, gt=0, le=1, description="absolute drop of the hit ratio that opens an episode")
    clear_frac: float = Field(0.5, ge=0, le=1, description="episode ends when the drop is below min_abs_drop x this")
    min_duration_s: float = Field(900.0, ge=0, description="an episode must last this long before it fires")
    cusum_k: float = Field(0.1, ge=0, description="CUSUM allowance (ratio), about half the smallest drop of interest")
    cusum_h: float = Field(1.5, gt=0, description="CUSUM decision threshold (ratio x minutes)")
    warm_minutes: int = Field(60, ge=1, description="active minutes before a key's baseline is trusted")
    warm_tokens: float = Field(200_000.0, ge=0, description="input tokens in the baseline before it is trusted")
    min_window_tokens: float = Field(10_000.0, ge=0, description="input tokens in the current window to judge a minute")
    near_zero_ratio: float = Field(0.05, ge=0, le=1, description="hit ratio of a new model counted as a cold cache")
    model_lookback_s: float = Field(1800.0, ge=0, description="a model first seen this long before the drop is new")
    churn_rise: float = Field(0.3, gt=0, le=1, description="rise of new prefixes per request that names prefix churn")
    cost_full_usd_per_day: float = Field(100.0, gt=0, description="extra $/day giving the full cost signal (log scale)")
    fire_score: float = Field(0.3, ge=0, le=1, description="score at which an incident opens")
    score_step: float = Field(0.1, gt=0, le=1, description="score rise that re-emits a firing incident")
    cost_step: float = Field(2.0, gt=1, description="extra $/day growth factor that re-emits a firing incident")
    weight_drop: float = Field(0.5, ge=0, le=1, description="weight of the relative drop (drop / baseline ratio)")
    weight_duration: float = Field(0.2, ge=0, le=1, description="weight of the duration (full at 4 x min_duration_s)")
    weight_cost: float = Field(0.3, ge=0, le=1, description="weight of the extra dollars per day")
    quiet_resolve_s: float = Field(3600.0, gt=0, description="a firing key without traffic this long resolves")
    max_incident_s: float = Field(3 * 86400.0, gt=0, description="after this long the new level becomes the baseline")


class Ratio(msgspec.Struct, array_like=True, gc=False):
    """Token sums of one key: the minute being filled (starting at ``moved``), and decayed sums up to it.

    ``moved`` is the start of the event-time minute being filled; the key moves to the end of its keyspace
    when a new minute starts, so it doubles as the keyspace's touch time.
    """

    moved: float
    minutes: int = 0
    m_in: int = 0
    m_cached: int = 0
    fast_in: float = 0.0
    fast_cached: float = 0.0
    base_in: float = 0.0
    base_cached: float = 0.0
    drop: Cusum | None = None


class PrefixRatio(Ratio, array_like=True, gc=False):
    tenant: str = ""


class FamilyRatio(Ratio, array_like=True, gc=False):
    """Adds what naming the cause needs: the incumbent and newest raw model names, prefix novelty."""

    model: str = ""
    model_since: float = 0.0
    alt: str | None = None
    alt_since: float = 0.0
    m_alt_in: int = 0
    m_alt_cached: int = 0
    alt_in: float = 0.0
    alt_cached: float = 0.0
    m_req: int = 0
    m_new: int = 0
    fast_req: float = 0.0
    fast_new: float = 0.0
    base_req: float = 0.0
    base_new: float = 0.0


class CacheIncident(msgspec.Struct, array_like=True, gc=False):
    entity_type: Literal["model", "prefix"]
    entity_id: str
    tenant: str
    first_seen: float
    score: float
    extra_usd_per_day: float
    cause: str
    last: float


class CacheCollapseState(msgspec.Struct):
    families: dict[str, FamilyRatio] = msgspec.field(default_factory=dict)
    prefixes: dict[str, PrefixRatio] = msgspec.field(default_factory=dict)
    incidents: dict[str, CacheIncident] = msgspec.field(default_factory=dict)
    families_stats: KeyspaceStats = msgspec.field(default_factory=KeyspaceStats)
    prefixes_stats: KeyspaceStats = msgspec.field(default_factory=KeyspaceStats)


def _clamp(x: float) -> float:
    return 0.0 if x < 0.0 else (1.0 if x > 1.0 else x)


_factors: dict[float, float] = {}


def _factor(half_life_s: float) -> float:
    """Per-minute decay factor for a half-life in seconds (memoised: a pure function)."""
    f = _factors.get(half_life_s)
    if f is None:
        f = math.exp(-60.0 * _LN2 / half_life_s)
        if len(_factors) < 1024:
            _factors[half_life_s] = f
    return f


def _fold(st: Ratio, ff: float, bf: float) -> None:
    """Close the minute being filled: fold its sums into the decayed ones (not the baseline during an episode)."""
    m_in = st.m_in
    m_cached = st.m_cached
    st.fast_in = st.fast_in * ff + m_in
    st.fast_cached = st.fast_cached * ff + m_cached
    if st.drop is None:
        st.base_in = st.base_in * bf + m_in
        st.base_cached = st.base_cached * bf + m_cached
    st.m_in = st.m_cached = 0
    st.minutes += 1


def _fold_family(fam: FamilyRatio, ff: float, bf: float) -> None:
    _fold(fam, ff, bf)
    fam.alt_in = fam.alt_in * ff + fam.m_alt_in
    fam.alt_cached = fam.alt_cached * ff + fam.m_alt_cached
    fam.fast_req = fam.fast_req * ff + fam.m_req
    fam.fast_new = fam.fast_new * ff + fam.m_new
    if fam.drop is None:
        fam.base_req = fam.base_req * bf + fam.m_req
        fam.base_new = fam.base_new * bf + fam.m_new
        if fam.alt is not None and fam.alt_in >= 0.95 * fam.fast_in:
            # The newer version took all the traffic without an episode: it is the incumbent now.
            fam.model = fam.alt
            fam.model_since = fam.alt_since
            fam.alt = None
            fam.alt_in = fam.alt_cached = 0.0
    fam.m_alt_in = fam.m_alt_cached = fam.m_req = fam.m_new = 0


def _idle(st: Ratio, minute: int, ff: float, bf: float) -> None:
    """Decay the sums over the minutes without traffic between the closed minute and ``minute``."""
    steps = minute - int(st.moved // 60.0) - 1
    st.moved = minute * 60.0
    if steps <= 0:
        return
    f = ff**steps
    st.fast_in *= f
    st.fast_cached *= f
    if isinstance(st, FamilyRatio):
        st.alt_in *= f
        st.alt_cached *= f
        st.fast_req *= f
        st.fast_new *= f
    if st.drop is None:
        b = bf**steps
        st.base_in *= b
        st.base_cached *= b
        if isinstance(st, FamilyRatio):
            st.base_req *= b
            st.base_new *= b


@register
class CacheCollapse(Detector[CacheCollapseParams, CacheCollapseState]):
    """The token-weighted prompt-cache hit ratio of a tenant's model family or prefix falls and stays down.

    Names the cause (model version change, prefix churn, traffic mix) and the
    extra dollars per day against the baseline ratio; resolves on recovery.
    """

    name: ClassVar[str] = "cache_collapse"
    Params: ClassVar[type[DetectorParams]] = CacheCollapseParams
    State: ClassVar[type[msgspec.Struct]] = CacheCollapseState
    description: ClassVar[str] = "prompt-cache hit ratio collapse, with cause and extra $/day"

    def __init__(self, params: CacheCollapseParams, context: DetectorContext,
                 tenant_params: Any = None) -> None:
        super().__init__(params, context, tenant_params)
        # Memo of model name -> family (a pure function of the price table, not state).
        self._families: dict[str, str] = {}

    # -- hot path ---------------------------------------------------------------------------------

    def update(self, event: UsageEvent) -> list[Finding] | None:
        inp = event.input_tokens
        if inp <= 0:
            return None
        tenant = event.tenant_id
        p = self.params
        if self.tenant_params:
            p = self.params_for(tenant)
        model = event.model
        family = self._families.get(model)
        if family is None:
            family = self._family(model)
        t: float = event.ts  # type: ignore[assignment]
        cached = event.cached_input_tokens
        minute = int(t // 60.0)
        mstart = minute * 60.0
        state = self.state
        out: list[Finding] | None = None

        # tenant x model family
        fkey = tenant + "\x1f" + family
        families = state.families
        fam = families.get(fkey)
        if fam is None:
            fam = FamilyRatio(mstart, model=_intern(model), model_since=t)
            families[fkey] = fam
            cap = max(1, p.max_keys // 10)
            if len(families) > cap:
                evict_oldest(families, len(families) - cap, state.families_stats)
        elif mstart > fam.moved:
            out = self._roll(fam, fkey, minute, p, event, t, fam, families)
        fam.m_in += inp
        fam.m_cached += cached
        if model != fam.model:
            if model == fam.alt:
                fam.m_alt_in += inp
                fam.m_alt_cached += cached
            else:
                fam.alt = _intern(model)
                fam.alt_since = t
                fam.alt_in = fam.alt_cached = 0.0
                fam.m_alt_in = inp
                fam.m_alt_cached = cached

        # prompt prefix
        prefix = event.prefix_hash
        if prefix is None:
            return out
        fam.m_req += 1
        prefixes = state.prefixes
        pkey = prefix
        pre = prefixes.get(prefix)
        if pre is not None and pre.tenant != tenant:
            pkey = tenant + "\x1e" + prefix
            pre = prefixes.get(pkey)
        if pre is None:
            fam.m_new += 1
            cap = p.max_keys - max(1, p.max_keys // 10)
            if cap <= 0:
                return out
            pre = PrefixRatio(mstart, tenant=_intern(tenant))
            prefixes[pkey] = pre
            if len(prefixes) > cap:
                evict_oldest(prefixes, len(prefixes) - cap, state.prefixes_stats)
        elif mstart > pre.moved:
            found = self._roll(pre, pkey, minute, p, event, t, fam, prefixes)
            if found is not None:
                if out is None:
                    out = found
                else:
                    out.extend(found)
        pre.m_in += inp
        pre.m_cached += cached
        return out

    def _roll(self, st: Ratio, key: str, minute: int, p: CacheCollapseParams, event: UsageEvent, t: float,
              fam: FamilyRatio, items: dict[str, Any]) -> list[Finding] | None:
        """First event of a new minute for ``st``: close the last minute, judge it, keep touch order."""
        del items[key]
        items[key] = st
        ff = _factor(p.fast_half_life_s)
        bf = _factor(p.base_half_life_s)
        if st is fam:
            _fold_family(fam, ff, bf)
        else:
            _fold(st, ff, bf)
        found = self._minute(st, key, p, event, t, fam)
        _idle(st, minute, ff, bf)
        return None if found is None else [found]

    def _family(self, model: str) -> str:
        family = self.context.prices.resolve(model).family
        if len(self._families) >= 10_000:
            self._families.clear()
        self._families[model] = family
        return family

    # -- once per key and minute ------------------------------------------------------------------------

    def _minute(self, st: Ratio, key: str, p: CacheCollapseParams, event: UsageEvent, t: float,
                fam: FamilyRatio) -> Finding | None:
        """Judge the minute that just ended for ``st``; returns a finding to emit, if any."""
        if st.minutes < p.warm_minutes or st.base_in < p.warm_tokens or st.fast_in < p.min_window_tokens:
            return None
        base = st.base_cached / st.base_in
        cur = st.fast_cached / st.fast_in
        x = base - cur
        drop = st.drop
        ikey = ("f" if st is fam else "p") + key
        if drop is None:
            if x < p.min_abs_drop:
                return None
            drop = st.drop = Cusum(0.0, t)
        s = cusum_down(drop, cur, base, p.cusum_k, t)
        if x < p.min_abs_drop * p.clear_frac:
            st.drop = None
            inc = self.state.incidents.pop(ikey, None)
            if inc is None:
                return None
            return self._resolved(inc, t, {"hit_ratio": round(cur, 4), "baseline_hit_ratio": round(base, 4)},
                                  "recovered")
        since = drop.since if drop.since > 0.0 else t
        if t - since > p.max_incident_s:
            # Down for days: this is the new normal. Relearn from the current level.
            st.drop = None
            st.base_in = st.fast_in
            st.base_cached = st.fast_cached
            inc = self.state.incidents.pop(ikey, None)
            if inc is None:
                return None
            return self._resolved(inc, t, {"hit_ratio": round(cur, 4), "baseline_hit_ratio": round(base, 4)},
                                  "accepted_as_new_baseline")
        inc = self.state.incidents.get(ikey)
        duration = t - since
        if x < p.min_abs_drop or (inc is None and (duration < p.min_duration_s or s < p.cusum_h)):
            return None
        if st is not fam and fam.drop is not None:
            return None  # the family's own alert covers it
        return self._fire(st, key, ikey, p, event, t, fam, base, cur, s, since, inc)

    def _fire(self, st: Ratio, key: str, ikey: str, p: CacheCollapseParams, event: UsageEvent, t: float,
              fam: FamilyRatio, base: float, cur: float, s: float, since: float,
              inc: CacheIncident | None) -> Finding | None:
        price = self.context.prices.resolve(event.model)
        per_token = max(price.input - price.cached_input, 0.0) / 1_000_000.0
        tokens_per_min = st.fast_in * (1.0 - _factor(p.fast_half_life_s))  # decayed sum = rate / (1 - f)
        tokens_per_day = tokens_per_min * 1440.0
        extra = (base - cur) * tokens_per_day * per_token
        duration = t - (inc.first_seen if inc is not None else since)
        signals = {
            "drop": p.weight_drop * _clamp((base - cur) / base),
            "duration": p.weight_duration * _clamp(duration / max(4.0 * p.min_duration_s, 60.0)),
            "cost": p.weight_cost * _clamp(math.log1p(extra) / math.log1p(p.cost_full_usd_per_day)),
        }
        score = _clamp(sum(signals.values()))
        cause, cause_evidence = self._cause(st, fam, p, since)
        if inc is None:
            if score < p.fire_score or len(self.state.incidents) >= p.max_keys:
                return None
            is_family = st is fam
            if is_family:
                tenant, family = key.split("\x1f", 1)
                entity_id = f"{tenant}/{family}"
            else:
                tenant = st.tenant  # type: ignore[attr-defined]
                entity_id = key.rsplit("\x1e", 1)[-1]
            inc = CacheIncident("model" if is_family else "prefix", entity_id, tenant, since, score, extra, cause, t)
            self.state.incidents[ikey] = inc
            title = f"Prompt-cache hit ratio collapsed ({cause.replace('_', ' ')})"
        elif score >= inc.score + p.score_step or extra >= inc.extra_usd_per_day * p.cost_step:
            inc.score = max(inc.score, score)
            inc.extra_usd_per_day = extra
            inc.last = t
            if cause != inc.cause:
                # The cause is named when the incident opens; later states (e.g. a partial recovery) keep it.
                cause_evidence = {"cause_now": cause}
                cause = inc.cause  # type: ignore[assignment]
            title = f"Prompt-cache hit ratio collapse worsened ({cause.replace('_', ' ')})"
        else:
            inc.last = t
            return None
        evidence: dict[str, Any] = {
            "hit_ratio": round(cur, 4),
            "baseline_hit_ratio": round(base, 4),
            "abs_drop": round(base - cur, 4),
            "minutes_down": round(duration / 60.0, 1),
            "cusum": round(s, 3),
            "input_tokens_per_day": round(tokens_per_day),
            "input_usd_per_mtok": price.input,
            "cached_input_usd_per_mtok": price.cached_input,
            "extra_usd_per_day": round(extra, 4),
            "cause": cause,
            "model": event.model,
            "family": self._families.get(event.model) or self._family(event.model),
        }
        evidence.update(cause_evidence)
        what = "model family" if inc.entity_type == "model" else "prefix"
        summary = (
            f"Cache hit ratio of {what} {inc.entity_id} fell from {base:.0%} to {cur:.0%} for "
            f"{duration / 60.0:.0f} min ({cause.replace('_', ' ')}); about ${extra:.2f}/day extra."
        )
        return Finding(
            detector=self.name,
            entity_type=inc.entity_type,
            entity_id=inc.entity_id,
            tenant_id=inc.tenant,
            ts=t,
            first_seen=inc.first_seen,
            score=score,
            title=title,
            evidence=evidence,
            risk_usd_per_hour=extra / 24.0,
            summary=summary,
            signals=signals,
            sample_event_ids=[event.event_id],
            actions=["notify"],
        )

    @staticmethod
    def _cause(st: Ratio, fam: FamilyRatio, p: CacheCollapseParams, since: float) -> tuple[Cause, dict[str, Any]]:
        if (
            fam.alt is not None
            and fam.alt_since >= since - p.model_lookback_s
            and fam.fast_in > 0.0
            and fam.alt_in >= 0.5 * fam.fast_in
            and fam.alt_cached <= p.near_zero_ratio * fam.alt_in
        ):
            return "model_version_change", {
                "previous_model": fam.model,
                "new_model": fam.alt,
                "new_model_hit_ratio": round(fam.alt_cached / fam.alt_in, 4) if fam.alt_in else 0.0,
                "new_model_token_share": round(fam.alt_in / fam.fast_in, 4),
            }
        if st is fam and fam.fast_req > 0.0 and fam.base_req > 0.0:
            now_new = fam.fast_new / fam.fast_req
            base_new = fam.base_new / fam.base_req
            if now_new - base_new >= p.churn_rise:
                return "prefix_churn", {
                    "new_prefixes_per_request": round(now_new, 4),
                    "baseline_new_prefixes_per_request": round(base_new, 4),
                }
        return "traffic_mix", {}

    def _resolved(self, inc: CacheIncident, t: float, evidence: dict[str, Any], reason: str) -> Finding:
        evidence["reason"] = reason
        evidence["cause"] = inc.cause
        evidence["extra_usd_per_day"] = round(inc.extra_usd_per_day, 4)
        return Finding(
            detector=self.name,
            entity_type=inc.entity_type,
            entity_id=inc.entity_id,
            tenant_id=inc.tenant,
            ts=t,
            first_seen=inc.first_seen,
            score=inc.score,
            title="Prompt-cache hit ratio recovered" if reason == "recovered" else "Prompt-cache collapse closed",
            evidence=evidence,
            status="resolved",
            summary=f"{inc.entity_id}: {reason.replace('_', ' ')}.",
        )

    # -- housekeeping -----------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Finding] | None:
        state = self.state
        ttl = self.params.idle_ttl_s
        expire_idle(state.families, now, ttl, state.families_stats)
        expire_idle(state.prefixes, now, ttl, state.prefixes_stats)
        incidents = state.incidents
        if not incidents:
            return None
        out: list[Finding] = []
        gone: list[str] = []
        for ikey, inc in incidents.items():
            st: Ratio | None
            st = state.families.get(ikey[1:]) if ikey[0] == "f" else state.prefixes.get(ikey[1:])
            quiet = self.params_for(inc.tenant).quiet_resolve_s
            if st is None or now - st.moved > quiet + MOVE_EVERY:
                gone.append(ikey)
                if st is not None:
                    st.drop = None
        for ikey in gone:
            inc = incidents.pop(ikey)
            out.append(self._resolved(inc, now, {}, "no_traffic"))
        return out or None

    # -- introspection ------------------------------------------------------------------------------------

    def is_warm(self, key: str) -> bool:
        st: Ratio | None = self.state.families.get(key) or self.state.prefixes.get(key)
        p = self.params
        return st is not None and st.minutes >= p.warm_minutes and st.base_in >= p.warm_tokens

    def tracked_keys(self) -> int:
        return len(self.state.families) + len(self.state.prefixes)

    def evicted_keys(self) -> int:
        return self.state.families_stats.evicted + self.state.prefixes_stats.evicted
