"""cache_collapse: the prompt-cache hit ratio of a tenant's workload or prompt prefix falls and stays down.

Method. The hit ratio is token-weighted: ``sum(cached_input_tokens) /
sum(input_tokens)``. It is kept per *workload* -- tenant x model family
(``prices.resolve(model).family``) x ``feature`` when the event carries one,
and per api key unless ``workload_by_key`` is off: one application and code
path, one prompt template, one caching setup -- and per prompt prefix
(``prefix_hash``) within workloads that use several prefixes (a workload with
one prefix *is* that prefix). Splitting by key keeps a healthy client (a
scheduled job) from masking a collapsed one that shares the feature name. Two
exponentially decayed sums of both token counts give a *current* ratio
(half-life ``fast_half_life_s``) and a *baseline* ratio (half-life
``base_half_life_s``). Decay is applied once per key and event-time minute,
so the hot path only adds to the minute's sums.

Real traffic makes the token-weighted ratio noisy: a few very long prompts
dominate a minute, and the share of prompt bytes a cache can serve drifts
over hours with the workload. A collapse is different in kind: the cache stops
serving requests at all. So beside the ratio, each key counts the share of
cache-eligible requests (``min_cacheable_tokens`` or more) served with zero
cached tokens: typically well under 90 % in normal traffic, ~100 % when the
prefix changes on every request, a model version runs without a cache, or
``cache_control`` is dropped.

Once a minute per key, the drop ``x = baseline - current`` feeds a one-sided
CUSUM (Page 1954, :mod:`detectors.changepoint`) with allowance ``cusum_k``.
An episode opens when ``x >= min_abs_drop`` and the current zero-hit share is
at least ``clear_zero_share``; the baseline is frozen from then on, so it does
not learn the collapse. It closes when ``x < min_abs_drop * clear_frac`` or
the zero-hit share falls under ``clear_zero_share`` again. A finding needs
all of: the episode lasted ``min_duration_s``, the CUSUM reached ``cusum_h``
(ratio x judged minutes), the drop is still at least ``min_abs_drop``, and
over the episode at least ``min_episode_requests`` eligible requests came,
``min_zero_share`` of them without a hit. With the default 2-minute current half-life, a full
collapse that recovers after 10 minutes keeps an episode open for about 7
minutes (the zero-hit share needs ~3.5 minutes to pass 70 %): well under the
15-minute minimum.

The cause is named from the workload's state:

* ``model_version_change`` -- a raw model name new to the family (first seen
  at most ``model_lookback_s`` before the episode) carries most of the tokens
  since it appeared and has a hit ratio at most ``near_zero_ratio``;
* ``prefix_churn`` -- the share of requests with a never-seen ``prefix_hash``
  (first-seen prefixes per request, i.e. distinct prefixes per request) rose
  by ``churn_rise`` over its baseline, e.g. a timestamp in the system prompt;
* ``prefix_not_cached`` -- (prefix keys) the same prompt prefix as before is
  no longer served from cache (``cache_control`` dropped, cache disabled);
* ``traffic_mix`` -- otherwise, for a workload: uncached traffic took over.
  With no structural cause the episode must gather
  ``mix_min_episode_requests`` eligible requests before it fires, since
  bursty workloads have natural cold stretches.

Extra dollars per day = (baseline - current ratio) x current input tokens per
day x (input - cached input price per token). A prefix key reports only while
its workload is not itself in an episode (one alert per collapse). A firing
key resolves once its recovery has held for ``recover_s`` (a collapse that
comes back sooner, e.g. bursty traffic, stays one incident), after
``quiet_resolve_s`` without traffic (silence is not recovery), or after
``max_incident_s``, when the new level becomes the baseline.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, NamedTuple

import msgspec
from pydantic import Field

from detectors.base import Detector, DetectorContext, DetectorParams, Finding
from detectors.changepoint import Cusum, cusum_down
from detectors.keyspace import MOVE_EVERY, KeyspaceStats, evict_oldest, expire_idle
from detectors.records import record_decoder, record_encoder
from detectors.registry import register
from sentinel.events import UsageEvent

_LN2 = math.log(2.0)
_intern = sys.intern
Cause = Literal["model_version_change", "prefix_churn", "prefix_not_cached", "traffic_mix"]


class CacheCollapseParams(DetectorParams):
    workload_by_key: bool = Field(
        True, description="workloads are per api key too (turn off when api keys are issued per end user)"
    )
    fast_half_life_s: float = Field(120.0, gt=0, description="half-life of the current hit ratio")
    base_half_life_s: float = Field(21600.0, gt=0, description="half-life of the baseline hit ratio")
    min_abs_drop: float = Field(0.1, gt=0, le=1, description="absolute drop of the hit ratio that opens an episode")
    clear_frac: float = Field(0.5, ge=0, le=1, description="episode ends when the drop is below min_abs_drop x this")
    min_cacheable_tokens: int = Field(1024, ge=0, description="prompts this long or longer can be served from cache")
    min_zero_share: float = Field(
        0.9, ge=0, le=1, description="share of eligible requests without any cache hit that marks a collapse"
    )
    clear_zero_share: float = Field(
        0.7, ge=0, le=1, description="an episode opens above this zero-hit share, and ends when it falls below"
    )
    min_episode_requests: int = Field(20, ge=0, description="eligible requests an episode needs before it fires")
    mix_min_episode_requests: int = Field(
        100, ge=0, description="eligible requests an episode with no structural cause (traffic mix) needs to fire"
    )
    recover_s: float = Field(1800.0, ge=0, description="a firing key resolves after recovering for this long")
    min_duration_s: float = Field(900.0, ge=0, description="an episode must last this long before it fires")
    cusum_k: float = Field(0.05, ge=0, description="CUSUM allowance (ratio), about half the smallest drop of interest")
    cusum_h: float = Field(0.5, gt=0, description="CUSUM decision threshold (ratio x minutes)")
    warm_minutes: int = Field(30, ge=1, description="active minutes before a key's baseline is trusted")
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
    quiet_resolve_s: float = Field(
        21600.0, gt=0, description="a firing key without traffic this long resolves (silence is not recovery)"
    )
    max_incident_s: float = Field(3 * 86400.0, gt=0, description="after this long the new level becomes the baseline")


class Episode(Cusum, array_like=True, gc=False):
    """A drop in progress: the CUSUM statistic, when it began, and its eligible / zero-hit request counts."""

    eligible: int = 0
    zero: int = 0


# A key's decayed state, one tuple replaced once per key and minute (see :attr:`Ratio.sums`).
SumsTuple = tuple[float, float, float, float, float, float, int, float]
_NO_SUMS: SumsTuple = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0)


class Sums(NamedTuple):
    """A key's decayed sums, the fields of :attr:`Ratio.sums` by name."""

    fast_in: float
    fast_cached: float
    base_in: float
    base_cached: float
    z_elig: float
    z_zero: float
    minutes: int
    folded: float


class RatioRecord(msgspec.Struct, array_like=True, gc=False):
    """How a :class:`Ratio` is stored in a snapshot: its fields, in this order, as one array."""

    moved: float
    m_in: int = 0
    m_cached: int = 0
    m_elig: int = 0
    m_zero: int = 0
    sums: SumsTuple = _NO_SUMS
    drop: Episode | None = None


class PrefixRecord(RatioRecord, array_like=True, gc=False):
    """How a :class:`PrefixRatio` is stored in a snapshot."""

    tenant: str = ""


class NewModel(msgspec.Struct, array_like=True, gc=False):
    """The newest raw model name of a workload other than the incumbent, since it appeared.

    ``tokens``/``cached`` are its input and cached tokens, ``total`` all the workload's input tokens
    since ``since``.
    """

    name: str
    since: float
    tokens: int = 0
    cached: int = 0
    total: int = 0


class Novelty(msgspec.Struct, array_like=True, gc=False):
    """Requests with a never-seen prefix, in a workload that uses several: this minute's counts
    and the per-minute share, smoothed like the hit ratios (current, baseline)."""

    m_req: int = 0
    m_new: int = 0
    fast: float = 0.0
    base: float = 0.0


class FamilyRecord(RatioRecord, array_like=True, gc=False):
    """How a :class:`FamilyRatio` is stored in a snapshot."""

    model: str = ""
    prefix: str | None = None
    alt: NewModel | None = None
    novelty: Novelty | None = None


# Per-key state as plain __slots__ classes rather than msgspec Structs: every event writes a few of
# their fields (the minute's sums, and the sums and move of a new minute), and CPython specializes
# attribute stores only for types with the default __setattr__, which a Struct overrides (a Struct
# store costs ~12 ns more). Snapshots encode each as its *Record (same fields, same order: the same
# bytes).


class Ratio:
    """Sums of one key: those of the minute being filled, and decayed ones up to the last active minute.

    ``moved`` is the start of the event-time minute being filled; the key moves to the end of its keyspace
    when a new minute starts, so it doubles as the keyspace's touch time. ``m_in``/``m_cached`` sum the
    minute's input and cached tokens, ``m_elig``/``m_zero`` count its cache-eligible requests and those
    without any hit.

    ``sums`` holds, as one tuple (:class:`Sums` names its fields), what is read and written only once
    per key and minute: the decayed token sums (``fast_in``/``fast_cached``, ``base_in``/``base_cached``),
    the decayed eligible / zero-hit counts (``z_elig``/``z_zero``), the active ``minutes`` folded so far,
    and ``folded``, the start of the last folded minute (0.0 before the first; no event time is 0): the
    decay of the minutes without traffic between it and the next minute folded is applied then, in one
    multiplication. One tuple unpacked and rebuilt per fold costs less than eight attributes read and
    written, and ``folded`` is the float object ``moved`` was (no new one per fold).
    """

    __slots__ = ("drop", "m_cached", "m_elig", "m_in", "m_zero", "moved", "sums")
    moved: float
    m_in: int
    m_cached: int
    m_elig: int
    m_zero: int
    sums: SumsTuple
    drop: Episode | None

    def __init__(self, moved: float, m_in: int = 0, m_cached: int = 0, m_elig: int = 0, m_zero: int = 0) -> None:
        self.moved = moved
        self.m_in = m_in
        self.m_cached = m_cached
        self.m_elig = m_elig
        self.m_zero = m_zero
        self.sums = _NO_SUMS
        self.drop = None


def sums(st: Ratio) -> Sums:
    """The decayed sums of ``st`` by name (for the paths that run less than once per key and minute)."""
    return Sums._make(st.sums)


class PrefixRatio(Ratio):
    """A prompt prefix of a workload that uses several; fields as :class:`PrefixRecord`."""

    __slots__ = ("tenant",)
    tenant: str

    def __init__(self, moved: float, m_in: int, m_cached: int, m_elig: int, m_zero: int, tenant: str) -> None:
        # As Ratio.__init__, inline: a workload with prefix churn makes one per request.
        self.moved = moved
        self.m_in = m_in
        self.m_cached = m_cached
        self.m_elig = m_elig
        self.m_zero = m_zero
        self.sums = _NO_SUMS
        self.drop = None
        self.tenant = tenant


class FamilyRatio(Ratio):
    """A workload (tenant x api key x family x feature), with what naming the cause needs; fields as
    :class:`FamilyRecord`.

    ``model`` is the incumbent raw model name, ``alt`` the newest other one. ``prefix`` is the
    workload's first prompt prefix: until a second one shows up the workload *is* that prefix and
    no prefix key is kept for it; from then on ``novelty`` counts never-seen prefixes.
    """

    __slots__ = ("alt", "model", "novelty", "prefix")
    model: str
    prefix: str | None
    alt: NewModel | None
    novelty: Novelty | None

    def __init__(self, moved: float, model: str, prefix: str | None = None) -> None:
        super().__init__(moved)
        self.model = model
        self.prefix = prefix
        self.alt = None
        self.novelty = None


# What finds an event's workload without its key string (see CacheCollapse._workload): raw model name,
# feature, tenant, then the workload's key and state.
Workload = tuple[str, "str | None", str, str, FamilyRatio]
_NO_WORKLOADS: list[Workload] = []
_MAX_MEMO = 16_384  # api keys remembered, at most (the memo starts afresh beyond)
_MAX_MEMO_PER_KEY = 16  # (model, feature) pairs remembered per api key, at most


class CacheIncident(msgspec.Struct, array_like=True, gc=False):
    entity_type: Literal["model", "prefix"]
    entity_id: str
    tenant: str
    first_seen: float
    score: float
    extra_usd_per_day: float
    cause: str
    last: float
    cleared: float = 0.0


class CacheCollapseState(msgspec.Struct):
    # Per-key states are plain objects (see Ratio): the detector snapshots and restores with hooks.
    families: dict[str, FamilyRatio] = msgspec.field(default_factory=dict)
    prefixes: dict[str, PrefixRatio] = msgspec.field(default_factory=dict)
    incidents: dict[str, CacheIncident] = msgspec.field(default_factory=dict)
    families_stats: KeyspaceStats = msgspec.field(default_factory=KeyspaceStats)
    prefixes_stats: KeyspaceStats = msgspec.field(default_factory=KeyspaceStats)


_encoder = record_encoder((FamilyRatio, FamilyRecord), (PrefixRatio, PrefixRecord))
_decoder = record_decoder(CacheCollapseState, (FamilyRatio, FamilyRecord), (PrefixRatio, PrefixRecord))


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


class HotParams:
    """The parameters read per event and per key-minute, as plain slots, with the decay factors.

    A pydantic model's attribute read costs ~45 ns (it defines ``__getattr__``, which keeps CPython
    from specialising the read), a slot's ~4 ns; the update path reads several per event. The
    detector builds one per parameter set (its own and each tenant override) at construction.
    """

    __slots__ = (
        "base_factor",
        "by_key",
        "clear_drop",
        "clear_zero_share",
        "cusum_h",
        "cusum_k",
        "family_cap",
        "fast_factor",
        "gaps",
        "max_incident_s",
        "min_abs_drop",
        "min_cacheable_tokens",
        "min_duration_s",
        "min_episode_requests",
        "min_window_tokens",
        "min_zero_share",
        "model_lookback_s",
        "params",
        "prefix_cap",
        "recover_s",
        "warm_minutes",
        "warm_tokens",
    )

    def __init__(self, p: CacheCollapseParams) -> None:
        self.params = p
        self.by_key = p.workload_by_key
        self.min_cacheable_tokens = p.min_cacheable_tokens
        self.fast_factor = _factor(p.fast_half_life_s)
        self.base_factor = _factor(p.base_half_life_s)
        # seconds without traffic between two folded minutes -> (fast, base) decay over them (see gap)
        self.gaps: dict[float, tuple[float, float]] = {}
        self.warm_minutes = p.warm_minutes
        self.warm_tokens = p.warm_tokens
        self.min_window_tokens = p.min_window_tokens
        self.min_abs_drop = p.min_abs_drop
        self.clear_zero_share = p.clear_zero_share
        self.model_lookback_s = p.model_lookback_s
        # read when a warm key's minute shows a drop or an incident is waiting out its recovery
        self.clear_drop = p.min_abs_drop * p.clear_frac
        self.recover_s = p.recover_s
        self.cusum_k = p.cusum_k
        self.cusum_h = p.cusum_h
        self.max_incident_s = p.max_incident_s
        self.min_duration_s = p.min_duration_s
        self.min_episode_requests = p.min_episode_requests
        self.min_zero_share = p.min_zero_share
        # max_keys is shared: a tenth for workloads, the rest for prefixes
        self.family_cap = max(1, p.max_keys // 10)
        self.prefix_cap = p.max_keys - self.family_cap

    def gap(self, idle: float) -> tuple[float, float]:
        """The fast and base decay factors over ``idle`` seconds, memoised (up to 4,096 lengths).

        ``idle`` spans whole minutes (minute starts are whole multiples of 60 s, exact in a double: so is
        their difference, and its quotient), so the same lengths keep recurring.
        """
        minutes = idle / 60.0
        factors = (self.fast_factor ** minutes, self.base_factor ** minutes)
        if len(self.gaps) < 4096:
            self.gaps[idle] = factors
        return factors


@register
class CacheCollapse(Detector[CacheCollapseParams, CacheCollapseState]):
    """The token-weighted prompt-cache hit ratio of a tenant's workload or prefix falls and stays down.

    Names the cause (model version change, prefix churn, traffic mix) and the
    extra dollars per day against the baseline ratio; resolves on recovery.
    """

    name: ClassVar[str] = "cache_collapse"
    Params: ClassVar[type[DetectorParams]] = CacheCollapseParams
    State: ClassVar[type[msgspec.Struct]] = CacheCollapseState
    description: ClassVar[str] = "prompt-cache hit ratio collapse, with cause and extra $/day"
    # 2: a ratio's decayed sums and minute counters are one `sums` tuple (was `minutes`, `idle` and six floats).
    state_version: ClassVar[int] = 2

    def __init__(self, params: CacheCollapseParams, context: DetectorContext,
                 tenant_params: Mapping[str, CacheCollapseParams] | None = None) -> None:
        super().__init__(params, context, tenant_params)
        # Memo of model name -> family (a pure function of the price table, not state).
        self._families: dict[str, str] = {}
        # api_key_id -> the workloads (by key) its events found lately, to find an event's workload
        # without building and hashing its key string (see _workload). Not state: cleared whenever a
        # workload leaves ``state.families`` (evicted, expired, restored), and when it grows too large.
        self._workloads: dict[str, list[Workload]] = {}
        self._hot = HotParams(params)
        self._tenant_hot = {tenant: HotParams(tp) for tenant, tp in self.tenant_params.items()}
        # The start of the last event-time minute a key moved to: keys moved in the same minute share
        # one float object (24 bytes a key less), not a memo of any result.
        self._minute = 0.0
        # The first (least recently moved) key of each keyspace when tick last looked, and the event time
        # before which tick has nothing to do (see there); reset when a first key moves or goes.
        self._front_family: Ratio | None = None
        self._front_prefix: Ratio | None = None
        self._calm_until = -math.inf
        # How many incidents wait out their recovery (``cleared`` set), counted again (None) after any
        # change: while there are none, a minute without a drop needs no look at the incidents.
        self._recovering: int | None = 0

    # -- hot path ---------------------------------------------------------------------------------

    def update(self, event: UsageEvent) -> list[Finding] | None:
        inp = event.input_tokens
        if inp <= 0:
            return None
        tenant = event.tenant_id
        hot = self._hot
        if self._tenant_hot:
            hot = self._tenant_hot.get(tenant, hot)
        model = event.model
        feature = event.feature
        t: float = event.ts  # type: ignore[assignment]
        cached = event.cached_input_tokens

        # workload: tenant x api key x model family x feature
        fam: FamilyRatio | None = None
        if hot.by_key:
            for w_model, w_feature, w_tenant, fkey, fam in self._workloads.get(event.api_key_id, _NO_WORKLOADS):  # noqa: B007
                if w_model == model and w_feature == feature and w_tenant == tenant:
                    break
            else:
                fam = None
        if fam is None:
            known = self._workload(event, hot, t)
            if known is None:
                return None  # a new workload, made from this event
            fkey, fam = known
            w_model = model
        out: list[Finding] | None = None
        if t - fam.moved >= 60.0:  # ``moved`` is the start of the minute being filled
            out = self._roll(fam, fkey, hot, event, t, fam, self.state.families)
            # this event opens the new minute
            fam.m_in = inp
            fam.m_cached = cached
            if inp >= hot.min_cacheable_tokens:
                fam.m_elig = 1
                fam.m_zero = 0 if cached else 1
            else:
                fam.m_elig = fam.m_zero = 0
        else:
            fam.m_in += inp
            if cached:
                fam.m_cached += cached
            if inp >= hot.min_cacheable_tokens:
                fam.m_elig += 1
                if not cached:
                    fam.m_zero += 1
        alt = fam.alt
        # ``w_model`` is the memo's interned name of the event's model, as ``fam.model`` is: the same
        # object when they are equal, but for an event found without the memo
        if w_model is not fam.model and model != fam.model:
            if alt is None or model != alt.name:
                alt = fam.alt = NewModel(_intern(model), t)
            alt.tokens += inp
            alt.cached += cached
        if alt is not None:
            alt.total += inp

        # prompt prefix
        prefix = event.prefix_hash
        novelty = fam.novelty
        if novelty is None:
            own = fam.prefix
            if prefix == own:
                return out  # a one-prefix workload: its own key covers the prefix (or none came yet)
            if prefix is None:
                return out
            if own is None:
                fam.prefix = prefix
                return out
            novelty = fam.novelty = Novelty()  # a second prefix: from now on prefixes are followed one by one
        elif prefix is None:
            return out
        if inp >= hot.min_cacheable_tokens:
            elig = 1
            zero = 0 if cached else 1
        else:
            elig = zero = 0
        novelty.m_req += 1
        state = self.state
        prefixes = state.prefixes
        pkey = prefix
        pre = prefixes.get(prefix)
        if pre is not None and pre.tenant != tenant:
            pkey = tenant + "\x1e" + prefix
            pre = prefixes.get(pkey)
        if pre is None:
            novelty.m_new += 1
            cap = hot.prefix_cap
            if cap <= 0:
                return out
            pre = PrefixRatio(self._minute_of(t), inp, cached, elig, zero, _intern(tenant))
            prefixes[pkey] = pre
            if self._front_prefix is None:
                self._calm_until = -math.inf
            if len(prefixes) > cap:
                evict_oldest(prefixes, len(prefixes) - cap, state.prefixes_stats)
                self._front_prefix = None
                self._calm_until = -math.inf
        elif t - pre.moved >= 60.0:
            found = self._roll(pre, pkey, hot, event, t, fam, prefixes)
            if found is not None:
                if out is None:
                    out = found
                else:
                    out.extend(found)
            pre.m_in = inp
            pre.m_cached = cached
            pre.m_elig = elig
            pre.m_zero = zero
        else:
            pre.m_in += inp
            if cached:
                pre.m_cached += cached
            if elig:
                pre.m_elig += 1
                if zero:
                    pre.m_zero += 1
        return out

    def _workload(self, event: UsageEvent, hot: HotParams, t: float) -> tuple[str, FamilyRatio] | None:
        """The key and state of ``event``'s workload, remembered in ``_workloads`` under its api key
        (by-key workloads), for the next events of the same (tenant, model, feature); None if the
        workload is new: it is then made from ``event`` (its first minute, incumbent model and prefix).

        An event's raw ``model`` and ``feature`` name one workload, so the memo matches them as they
        come (feature None and "" are two entries of one workload, as are two versions of a family).
        """
        tenant = event.tenant_id
        model = event.model
        feature = event.feature
        family = self._families.get(model) or self._family(model)
        if hot.by_key:
            fkey = f"{tenant}\x1f{event.api_key_id}\x1f{family}\x1f{feature or ''}"
        else:
            fkey = f"{tenant}\x1f{family}\x1f{feature or ''}"
        state = self.state
        families = state.families
        fam = families.get(fkey)
        new = fam is None
        if fam is None:
            inp = event.input_tokens
            cached = event.cached_input_tokens
            fam = FamilyRatio(self._minute_of(t), _intern(model), event.prefix_hash)
            fam.m_in = inp
            fam.m_cached = cached
            if inp >= hot.min_cacheable_tokens:
                fam.m_elig = 1
                fam.m_zero = 0 if cached else 1
            families[fkey] = fam
            if self._front_family is None:
                self._calm_until = -math.inf  # maybe the first key, of an empty keyspace
            cap = hot.family_cap
            if len(families) > cap:
                evict_oldest(families, len(families) - cap, state.families_stats)
                self._front_family = None
                self._calm_until = -math.inf
                self._workloads.clear()
        if hot.by_key:
            workloads = self._workloads
            if len(workloads) >= _MAX_MEMO:
                workloads.clear()
            seen = workloads.get(event.api_key_id)
            if seen is None or len(seen) >= _MAX_MEMO_PER_KEY:
                seen = workloads[event.api_key_id] = []
            seen.append((_intern(model), feature, tenant, fkey, fam))
        return None if new else (fkey, fam)

    def _minute_of(self, t: float) -> float:
        """The start of ``t``'s minute, the same float object for every key moved in that minute."""
        moved = self._minute
        if not moved <= t < moved + 60.0:
            moved = self._minute = t - t % 60.0
        return moved

    def _roll(self, st: Ratio, key: str, hot: HotParams, event: UsageEvent, t: float,
              fam: FamilyRatio, items: dict[str, Any]) -> list[Finding] | None:
        """First event of a new minute for ``st``: close the last minute, judge it, keep touch order.

        The closed minute's sums fold into the decayed ones (the baseline only outside an episode),
        after the decay of the minutes without traffic before it. The zero-hit counts fold only in
        minutes with eligible requests: their share, not their weight, is what is judged. The
        caller then sets the minute's sums to its event's counts.
        """
        del items[key]
        items[key] = st
        if st is self._front_family or st is self._front_prefix:
            self._front_family = self._front_prefix = None
            self._calm_until = -math.inf
        fast_in, fast_cached, base_in, base_cached, z_elig, z_zero, minutes, folded = st.sums
        closing = st.moved
        idle = closing - folded
        if idle > 60.0 and folded:
            gf, gb = hot.gaps.get(idle) or hot.gap(idle)
        else:
            gf = hot.fast_factor
            gb = hot.base_factor
        m_in = st.m_in
        m_cached = st.m_cached
        fast_in = fast_in * gf + m_in
        fast_cached = fast_cached * gf + m_cached
        drop = st.drop
        if drop is None:
            base_in = base_in * gb + m_in
            base_cached = base_cached * gb + m_cached
        m_elig = st.m_elig
        if m_elig:
            m_zero = st.m_zero
            z_elig = z_elig * gf + m_elig
            z_zero = z_zero * gf + m_zero
            if drop is not None:
                drop.eligible += m_elig
                drop.zero += m_zero
        minutes += 1
        moved = self._minute
        if not moved <= t < moved + 60.0:  # the same as ``moved != t - t % 60.0``, without a float modulo
            moved = self._minute = t - t % 60.0
        st.sums = (fast_in, fast_cached, base_in, base_cached, z_elig, z_zero, minutes, closing)
        st.moved = moved
        if st is fam:
            novelty = fam.novelty
            if novelty is not None and novelty.m_req:
                share = novelty.m_new / novelty.m_req
                novelty.fast += (1.0 - hot.fast_factor) * (share - novelty.fast)
                if drop is None:
                    novelty.base += (1.0 - hot.base_factor) * (share - novelty.base)
                novelty.m_req = novelty.m_new = 0
            alt = fam.alt
            if alt is not None and drop is None and t - alt.since > hot.model_lookback_s:
                if alt.tokens >= 0.95 * alt.total:
                    # The newer version took all the traffic without an episode: it is the incumbent now.
                    fam.model = alt.name
                    fam.alt = None
                elif alt.tokens < 0.05 * alt.total:
                    fam.alt = None  # a stray request long ago: forget it, so a real switch starts afresh
        if minutes < hot.warm_minutes or base_in < hot.warm_tokens or fast_in < hot.min_window_tokens:
            return None
        base = base_cached / base_in
        cur = fast_cached / fast_in
        zero_share = z_zero / z_elig if z_elig > 0.0 else 0.0
        if drop is None and (base - cur < hot.min_abs_drop or zero_share < hot.clear_zero_share):
            # The common case, decided here: no episode, none to open, and no incident to resolve.
            recovering = self._recovering
            if recovering is None:
                recovering = self._recovering = sum(1 for inc in self.state.incidents.values() if inc.cleared)
            if not recovering:
                return None
        found = self._judge(st, key, hot, event, t, fam, base, cur, zero_share)
        return None if found is None else [found]

    def _family(self, model: str) -> str:
        family = self.context.prices.resolve(model).family
        if len(self._families) >= 10_000:
            self._families.clear()
        self._families[model] = family
        return family

    # -- once per key and minute ------------------------------------------------------------------------

    def _judge(self, st: Ratio, key: str, hot: HotParams, event: UsageEvent, t: float,
               fam: FamilyRatio, base: float, cur: float, zero_share: float) -> Finding | None:
        """Judge the minute that just ended for a warm ``st``; returns a finding to emit, if any.

        ``base``/``cur`` are its baseline and current hit ratios, ``zero_share`` its current zero-hit share.
        """
        x = base - cur
        drop = st.drop
        incidents = self.state.incidents
        if drop is None:
            if x < hot.min_abs_drop or zero_share < hot.clear_zero_share:
                if not incidents:
                    return None
                ikey = ("f" if st is fam else "p") + key
                inc = incidents.get(ikey)
                if inc is None or not inc.cleared or t - inc.cleared < hot.recover_s:
                    return None
                del incidents[ikey]
                self._recovering = None
                return self._resolved(inc, t, {"hit_ratio": round(cur, 4), "baseline_hit_ratio": round(base, 4),
                                               "zero_hit_share": round(zero_share, 4)}, "recovered")
            drop = st.drop = Episode(0.0, t)
        s = cusum_down(drop, cur, base, hot.cusum_k, t)
        ikey = ("f" if st is fam else "p") + key
        inc = incidents.get(ikey) if incidents else None
        if x < hot.clear_drop or zero_share < hot.clear_zero_share:
            # Recovering. A firing incident stays open for recover_s, so that a collapse which comes
            # back (bursty traffic, another client of the same workload in between) stays one incident.
            st.drop = None
            if inc is not None and not inc.cleared:
                inc.cleared = t
                self._recovering = None
            return None
        if inc is not None and inc.cleared:
            inc.cleared = 0.0
            self._recovering = None
        since = drop.since if drop.since > 0.0 else t
        if t - since > hot.max_incident_s:
            # Down for days: this is the new normal. Relearn from the current level.
            st.drop = None
            now = sums(st)
            st.sums = tuple(now._replace(base_in=now.fast_in, base_cached=now.fast_cached))  # type: ignore[assignment]
            if inc is None:
                return None
            del incidents[ikey]
            self._recovering = None
            return self._resolved(inc, t, {"hit_ratio": round(cur, 4), "baseline_hit_ratio": round(base, 4)},
                                  "accepted_as_new_baseline")
        if x < hot.min_abs_drop:
            return None
        if inc is None and (
            t - since < hot.min_duration_s
            or s < hot.cusum_h
            or drop.eligible < hot.min_episode_requests
            or drop.zero < hot.min_zero_share * drop.eligible
        ):
            return None
        if st is not fam and fam.drop is not None:
            return None  # the workload's own alert covers it
        return self._fire(st, key, ikey, hot.params, event, t, fam, base, cur, zero_share, drop, since, inc)

    def _fire(self, st: Ratio, key: str, ikey: str, p: CacheCollapseParams, event: UsageEvent, t: float,
              fam: FamilyRatio, base: float, cur: float, zero_share: float, drop: Episode, since: float,
              inc: CacheIncident | None) -> Finding | None:
        price = self.context.prices.resolve(event.model)
        per_token = max(price.input - price.cached_input, 0.0) / 1_000_000.0
        tokens_per_min = sums(st).fast_in * (1.0 - _factor(p.fast_half_life_s))  # decayed sum = rate / (1 - f)
        tokens_per_day = tokens_per_min * 1440.0
        extra = (base - cur) * tokens_per_day * per_token
        duration = t - (inc.first_seen if inc is not None else since)
        signals = {
            "drop": p.weight_drop * _clamp((base - cur) / base),
            "duration": p.weight_duration * _clamp(duration / max(4.0 * p.min_duration_s, 60.0)),
            "cost": p.weight_cost * _clamp(math.log1p(extra) / math.log1p(p.cost_full_usd_per_day)),
        }
        score = score_now = _clamp(sum(signals.values()))
        if inc is None:
            if score < p.fire_score or len(self.state.incidents) >= p.max_keys:
                return None
            cause, cause_evidence = self._cause(st, fam, p, since)
            if cause == "traffic_mix" and drop.eligible < p.mix_min_episode_requests:
                return None  # no structural cause in an aggregate: wait for more evidence
            is_family = st is fam
            if is_family:
                entity_id = key.rstrip("\x1f").replace("\x1f", "/")
                tenant = key.split("\x1f", 1)[0]
            else:
                tenant = st.tenant  # type: ignore[attr-defined]
                entity_id = key.rsplit("\x1e", 1)[-1]
            inc = CacheIncident("model" if is_family else "prefix", entity_id, tenant, since, score, extra, cause, t)
            self.state.incidents[ikey] = inc
            self._recovering = None
            self._calm_until = -math.inf
            title = f"Prompt-cache hit ratio collapsed ({cause.replace('_', ' ')})"
        elif score >= inc.score + p.score_step or extra >= inc.extra_usd_per_day * p.cost_step:
            cause, cause_evidence = self._cause(st, fam, p, since)
            # The score only goes up while the incident fires; this minute's score stays in the evidence.
            score_now = score
            score = inc.score = max(inc.score, score)
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
            "zero_hit_share": round(zero_share, 4),
            "episode_requests": drop.eligible,
            "episode_zero_hit_requests": drop.zero,
            "minutes_down": round(duration / 60.0, 1),
            "cusum": round(drop.s, 3),
            "input_tokens_per_day": round(tokens_per_day),
            "input_usd_per_mtok": price.input,
            "cached_input_usd_per_mtok": price.cached_input,
            "extra_usd_per_day": round(extra, 4),
            "cause": cause,
            "model": event.model,
            "family": self._families.get(event.model) or self._family(event.model),
            "feature": event.feature,
        }
        evidence.update(cause_evidence)
        if score_now != score:
            evidence["score_now"] = round(score_now, 4)
        what = "workload" if inc.entity_type == "model" else "prefix"
        summary = (
            f"Cache hit ratio of {what} {inc.entity_id} fell from {base:.0%} to {cur:.0%} for "
            f"{duration / 60.0:.0f} min, {zero_share:.0%} of requests without a hit "
            f"({cause.replace('_', ' ')}); about ${extra:.2f}/day extra."
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
        alt = fam.alt
        if (
            alt is not None
            and alt.since >= since - p.model_lookback_s
            and alt.tokens >= 0.5 * alt.total > 0
            and alt.cached <= p.near_zero_ratio * alt.tokens
        ):
            return "model_version_change", {
                "previous_model": fam.model,
                "new_model": alt.name,
                "new_model_first_seen": alt.since,
                "new_model_hit_ratio": round(alt.cached / alt.tokens, 4),
                "new_model_token_share": round(alt.tokens / alt.total, 4),
            }
        if st is not fam:
            return "prefix_not_cached", {}  # one prompt prefix, the same as before: its hits stopped
        novelty = fam.novelty
        if novelty is not None and novelty.fast - novelty.base >= p.churn_rise:
            return "prefix_churn", {
                "new_prefixes_per_request": round(novelty.fast, 4),
                "baseline_new_prefixes_per_request": round(novelty.base, 4),
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
        """Expire idle keys; resolve incidents whose key went quiet (or was dropped).

        Nothing can happen before ``_calm_until``: the first key of each keyspace expires first (keys
        are in touch order; expire_idle stops at the first one too recent), and an incident's key goes
        quiet ``quiet_resolve_s`` after its last minute at the earliest (its ``moved`` only grows). So
        tick returns at once until then, unless a first key moved, a key was evicted, a keyspace got its
        first key or an incident opened since (each resets it). It is computed 1 s early, against
        rounding. Finding a first key costs a scan over the slots its moved-away predecessors left at
        the front of the dict (thousands, until the dict compacts): the first keys are kept too.
        """
        if now < self._calm_until:
            return None
        state = self.state
        ttl = self.params.idle_ttl_s
        recent = now - ttl + MOVE_EVERY
        calm = math.inf
        families = state.families
        if families:
            front = self._front_family
            if front is None:
                front = self._front_family = next(iter(families.values()))
            if front.moved <= recent:
                if expire_idle(families, now, ttl, state.families_stats):
                    self._workloads.clear()
                self._front_family = None
                calm = -math.inf
            else:
                calm = front.moved + ttl - MOVE_EVERY - 1.0
        prefixes = state.prefixes
        if prefixes:
            front = self._front_prefix
            if front is None:
                front = self._front_prefix = next(iter(prefixes.values()))
            if front.moved <= recent:
                expire_idle(prefixes, now, ttl, state.prefixes_stats)
                self._front_prefix = None
                calm = -math.inf
            else:
                calm = min(calm, front.moved + ttl - MOVE_EVERY - 1.0)
        incidents = state.incidents
        if not incidents:
            self._calm_until = calm
            return None
        out: list[Finding] = []
        gone: list[str] = []
        tenant_params = self.tenant_params
        for ikey, inc in incidents.items():
            st: Ratio | None
            st = families.get(ikey[1:]) if ikey[0] == "f" else prefixes.get(ikey[1:])
            quiet = (tenant_params.get(inc.tenant, self.params) if tenant_params else self.params).quiet_resolve_s
            if st is None or now - st.moved > quiet + MOVE_EVERY:
                gone.append(ikey)
                if st is not None:
                    st.drop = None
            else:
                calm = min(calm, st.moved + quiet + MOVE_EVERY - 1.0)
        for ikey in gone:
            inc = incidents.pop(ikey)
            self._recovering = None
            out.append(self._resolved(inc, now, {}, "no_traffic"))
        self._calm_until = calm
        return out or None

    def snapshot(self) -> bytes:
        return _encoder.encode(self.state)

    def restore(self, data: bytes) -> None:
        self.state = _decoder.decode(data)
        for fam in self.state.families.values():
            fam.model = _intern(fam.model)  # as when made: the per-event model check compares it by identity first
        self._front_family = self._front_prefix = None
        self._workloads.clear()
        self._recovering = None
        self._calm_until = -math.inf

    # -- introspection ------------------------------------------------------------------------------------

    def is_warm(self, key: str) -> bool:
        st: Ratio | None = self.state.families.get(key) or self.state.prefixes.get(key)
        p = self.params
        if st is None:
            return False
        now = sums(st)
        return now.minutes >= p.warm_minutes and now.base_in >= p.warm_tokens

    def tracked_keys(self) -> int:
        return len(self.state.families) + len(self.state.prefixes)

    def evicted_keys(self) -> int:
        return self.state.families_stats.evicted + self.state.prefixes_stats.evicted
