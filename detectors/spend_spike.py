"""spend_spike: an API key spending far above its own seasonal baseline, with the marks of a stolen key.

LLMjacking (Sysdig TRT, "LLMjacking: stolen cloud credentials used in new AI
attack", 2024; MITRE ATLAS AML.T0034 Cost Harvesting): a leaked key is resold
or used to run someone else's workload. Its spend jumps, it is called from
addresses and clients the owner never used, it probes which models the key may
call (bursts of 403/404 over many model names), it prefers the most expensive
model and asks for long outputs. The low-and-slow variant stays at a few times
the usual spend, for hours, at night.

Method, per ``api_key_id``:

* **Baseline.** Every finished hour of a key is one observation
  ``x = log(spend + floor)`` (tenant local time). The key keeps an
  hour-of-day profile of ``x`` (24 EW means in a 48-byte array, plus the
  variance of its hours around it); the tenant keeps the same profile of a
  typical key of the tenant (the hours in which its keys were used), and the
  detector one :class:`detectors.seasonal.SeasonalBaseline` of ``x`` by hour
  of week over the whole population, which also gives the weekday/weekend
  effect added to the hour-of-day profiles. The expectation for a key is its
  own bucket shrunk towards the tenant's, itself shrunk towards the
  population's, with credibility weights ``n / (n + prior_days)`` and
  ``n / (n + shrink)`` (Bühlmann 1967); the variance is blended likewise. A
  new key of a known tenant is thus judged against what the tenant's keys
  usually do (a rotated key is not an anomaly), while a new tenant is in
  warm-up (``tenant_warmup_s``) and only the absolute fast path can fire.
  Idle hours fold in as zero spend for the key itself only. Short windows
  are compared against the highest of the expectations of the hour and its
  two neighbours, so a job that starts a few minutes early is not a spike.
* **Windows.** Spend, requests, novel-source spend/requests and 403/404
  responses are exponentially decayed sums with time constants of 15 minutes
  and 3 hours (``S <- S * exp(-dt / tau) + x``; an estimate of the amount in
  the last ``tau``), plus a tumbling one-minute spend for the fast path. The
  3-hour sum is compared with the hourly expectations passed through the
  same kernel, so the tail of a job that has just ended is no spike.
* **Known sources.** A key's IPs, user agents and models are 2-hash Bloom
  filters in two 64-bit integers (crc32, deterministic across processes);
  its tenant's in a 1024-bit array. A source neither knows is *pending* for
  ``novelty_s`` before it is trusted (never while an incident is open); a
  tenant in warm-up learns everything it sees.
* **Signals** (each 0..1):

  - ``spend``: ``(ln(ratio) - tolerance) / ln(ratio_saturation / ratio_tolerance)``
    for the observed/expected spend rate over 15 minutes and over 3 hours
    (the larger), where ``tolerance = max(ln ratio_tolerance, z_tolerance * sd)``
    (``+ ln short_window_slack`` on the 15-minute window) and only if the
    excess is at least ``min_excess_usd_per_h``;
  - ``rate``: the same on the request rate (requests/hour);
  - ``enumeration``: 403/404 responses in 15 minutes and the number of
    distinct models they named;
  - ``novelty``: the share of recent requests (15 min) or spend (3 h) coming
    from a source IP, user agent or model that neither the key nor its tenant
    used before (a new source stays novel for ``novelty_s``);
  - ``expensive``: the rise of the share of calls to the most expensive price
    tier over the key's usual share;
  - ``output``: the rise of the output share of tokens over the usual;
  - ``off_hours``: outside the tenant's business hours.

* **Score** = ``min(1, sum(weight_i * signal_i))``, where the context signals
  (novelty, expensive, output, off-hours) only count when spend, rate or
  enumeration is already above tolerance: a new IP at the usual spend is not
  an incident. Each contribution is reported in ``signals``. The **fast
  path** (spend in one minute >= ``fast_path_usd_per_min``) sets the score to
  at least ``fast_path_score`` whatever the baseline or warm-up.
* ``risk_usd_per_hour`` is the excess over the baseline; ``evidence`` holds
  observed and expected $/h, ratio, window, new IPs/user agents, top models
  and the projected $/day.

An incident opens at ``fire_score``, re-emits when the score rises by
``score_step`` or the excess crosses a step of ``risk_steps_usd_per_hour``,
and resolves after ``resolve_quiet_s`` without a score above
``clear_score`` while the 15-minute rate is still above the baseline.
While an incident is open the key's baseline and known sources are frozen,
so the attack is not learned as normal.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any, ClassVar, Final

import msgspec
from pydantic import Field

from detectors.base import Detector, DetectorParams, Finding
from detectors.keyspace import MOVE_EVERY, KeyspaceStats, expire_idle, touch
from detectors.records import from_record, record_decoder, record_encoder
from detectors.registry import register
from detectors.seasonal import (
    SeasonalBaseline,
    baseline_expect,
    baseline_update,
    baseline_week_effect,
    hour_of_week_utc,
    new_baseline,
)
from detectors.stats import alpha_for_half_life
from sentinel.events import UsageEvent

_ATTACK: Final = {"framework": "MITRE ATLAS", "id": "AML.T0034", "name": "Cost Harvesting"}
_INF: Final = math.inf
_NEG_INF: Final = -math.inf
_TAU_SHORT: Final = 900.0
_TAU_LONG: Final = 10800.0
_INV_SHORT: Final = -1.0 / _TAU_SHORT
_INV_LONG: Final = -1.0 / _TAU_LONG
# decayed sum -> rate per hour
_PER_H_SHORT: Final = 3600.0 / _TAU_SHORT
_PER_H_LONG: Final = 3600.0 / _TAU_LONG
# Decay of the 3 h kernel over one hour, and the weight of one hour at a constant rate.
_HOUR_DECAY_LONG: Final = math.exp(-3600.0 / _TAU_LONG)
# The exact one-minute sum is kept only while the 15-minute decayed sum is at least this share of the
# fast-path limit (a minute at the limit implies s15 >= 0.93 x limit; starting at 0.25 x limit means
# at most ~0.27 x limit of that minute's spend is missed).
_FAST_PREGATE: Final = 0.25
# Hour-of-day profile: 24 little-endian int16 of x * _Q; _UNSET marks an empty bucket.
_Q: Final = 1024.0
_UNSET: Final = -32768
_PROFILE_INIT: Final = b"\x00\x80" * 24
_I16: Final = struct.Struct("<h")
# A tenant's profile adds 24 uint8 observation counts after the 24 means.
_TENANT_PROFILE_INIT: Final = _PROFILE_INIT + bytes(24)
_TENANT_COUNTS: Final = 48
_i16_at: Final = _I16.unpack_from
# A key's baseline, packed little-endian in one bytearray (``KeyState.base``, created at the key's
# first roll; a 32-byte record and the 48-byte profile cost less than seven fields and their float
# objects): x3h (the expected spend through the 3 h kernel at the start of the hour being accumulated),
# rv (variance of hourly log spend around the key's own profile, -1: none yet), folds (hours folded
# into the profile, -1: the partial first hour is still open), lcpr (EW log $ per request, 0: unknown),
# ux and uo (usual top-tier and output shares, integer percent), then the key's hour-of-day profile
# of log hourly spend from byte _PROF_AT. No ``base`` means all of these at their start values.
_BASE: Final = struct.Struct("<ddidhh")
_X3H: Final = struct.Struct("<d")
_RV_FOLDS: Final = struct.Struct("<di")  # at byte 8
_PROF_AT: Final = _BASE.size
_BASE_INIT: Final = _BASE.pack(0.0, -1.0, -1, 0.0, 0, 0) + _PROFILE_INIT
_BLOOM_BYTES: Final = 128
_BLOOM_BITS: Final = _BLOOM_BYTES * 8
_SEED_IP: Final = 0x1F3D5B79
_SEED_UA: Final = 0x2C4E6A8D
_SEED_MODEL: Final = 0x3A5C7E91
_SEED_TENANT: Final = 0x5BD1E995
_MASK32: Final = 0xFFFFFFFF
_BASE_START: Final = (0.0, -1.0, -1, 0.0, 0, 0)
_exp: Final = math.exp
_log: Final = math.log
_sqrt: Final = math.sqrt
_MEMO_LIMIT: Final = 8192
_MAX_LISTED: Final = 5


class SpendSpikeParams(DetectorParams):
    tenant_warmup_s: float = Field(
        3 * 86400.0, ge=0, description="a tenant seen for less than this is onboarding: only the fast path may fire"
    )
    max_tenants: int = Field(10_000, ge=1, description="cap on tenants with a baseline (also capped by max_keys)")
    spend_floor_usd_per_h: float = Field(
        0.1, gt=0, description="added to hourly spend before the log: spend below this is 'about nothing'"
    )
    min_excess_usd_per_h: float = Field(
        0.2, ge=0, description="spend excess over the baseline ($/h) below which the spend signal is 0"
    )
    min_excess_requests_per_h: float = Field(
        120.0, ge=0, description="request-rate excess (req/h) below which the rate signal is 0"
    )
    ratio_tolerance: float = Field(1.5, gt=1, description="observed/expected ratio that is still normal")
    ratio_saturation: float = Field(20.0, gt=1, description="ratio at which the spend and rate signals reach 1")
    z_tolerance: float = Field(
        1.5, ge=0, description="tolerance in baseline standard deviations (log scale) when wider than ratio_tolerance"
    )
    short_window_slack: float = Field(
        2.0, ge=1, description="extra ratio tolerated on the 15-minute window (noisier than hourly baselines)"
    )
    sd_floor: float = Field(0.25, gt=0, description="floor of the baseline standard deviation of log hourly spend")
    sd_cap: float = Field(2.0, gt=0, description="cap of that standard deviation, so a noisy key is never silenced")
    prior_days: float = Field(
        1.0, gt=0, description="weight, in days of the key's own history, of the tenant/population prior"
    )
    shrink: float = Field(
        2.0, gt=0, description="observations a tenant hour-of-week bucket needs to weigh as much as its fallback"
    )
    key_half_life_days: float = Field(7.0, gt=0, description="half-life of a key's hour-of-day profile, in days")
    variance_half_life_hours: float = Field(72.0, gt=0, description="half-life of a key's residual variance, in hours")
    tenant_half_life_obs: float = Field(
        48.0, gt=0, description="half-life of tenant/population buckets, in key-hours folded into them"
    )
    max_fold_hours: int = Field(48, ge=1, description="idle hours folded (as zero spend) when a key comes back")
    novelty_s: float = Field(
        86400.0, gt=0, description="a source IP/user agent/model first seen this long ago is no longer new"
    )
    enum_min_errors: float = Field(5.0, gt=0, description="403/404 responses in 15 minutes before enumeration counts")
    enum_errors_sat: float = Field(
        30.0, gt=0, description="403/404 responses in 15 minutes giving the full enumeration signal"
    )
    enum_models_sat: int = Field(
        5, ge=2, description="distinct models in those responses giving the full enumeration signal"
    )
    output_share_jump: float = Field(
        40.0, gt=0, description="rise of the output share of tokens (percentage points) giving the full output signal"
    )
    fast_path_usd_per_min: float = Field(
        25.0, gt=0, description="spend of one key in one minute that fires whatever the baseline (absolute limit)"
    )
    fast_path_score: float = Field(0.9, ge=0, le=1, description="minimum score of a fast-path finding")
    weight_spend: float = Field(0.5, ge=0, le=1, description="weight of the spend-ratio signal")
    weight_rate: float = Field(0.15, ge=0, le=1, description="weight of the request-rate signal")
    weight_enumeration: float = Field(0.35, ge=0, le=1, description="weight of the model-enumeration signal")
    weight_novelty: float = Field(0.35, ge=0, le=1, description="weight of the new-source signal")
    weight_expensive: float = Field(0.15, ge=0, le=1, description="weight of the most-expensive-tier signal")
    weight_output: float = Field(0.1, ge=0, le=1, description="weight of the output-share signal")
    weight_off_hours: float = Field(0.15, ge=0, le=1, description="weight of the off-hours signal")
    fire_score: float = Field(0.5, ge=0, le=1, description="score at which an incident opens")
    clear_score: float = Field(0.3, ge=0, le=1, description="score below which an incident counts as quiet")
    score_step: float = Field(0.1, gt=0, le=1, description="score rise that re-emits a firing incident")
    risk_steps_usd_per_hour: tuple[float, ...] = Field(
        (5.0, 50.0, 500.0, 5000.0), description="excess $/h steps; crossing one re-emits a firing incident"
    )
    resolve_quiet_s: float = Field(1800.0, gt=0, description="an incident resolves after this long without a hot score")
    eval_every_s: float = Field(10.0, ge=0, description="minimum event time between two scorings of one hot key")
    page_usd_per_hour: float = Field(50.0, ge=0, description="excess $/h from which a finding asks to page")
    page_score: float = Field(0.75, ge=0, le=1, description="score from which a finding asks to page")
    revoke_score: float = Field(
        0.85, ge=0, le=1, description="score from which, with two independent signals, a finding suggests revoking"
    )


class KeyCold(msgspec.Struct, array_like=True, gc=False):
    """The part of a key's state that only a key with something going on needs.

    ``KeyState.cold`` is None until the key has a pending source, a novel call, a 403/404, an open
    gate, an incident, or a 15-minute spend within reach of the fast path; it stays once created
    (``next_eval`` must still hold against a late event). ``busy`` says whether an event of the key
    has more to do than the common path in :meth:`SpendSpike.update`: 1 while a decayed sum here is
    not None, the gates are open (``hot_t``) or an incident is open.
    """

    busy: int = 0
    minute: int = 0  # the minute (t // 60) of m_spend, kept only while s15 could reach the fast path
    m_spend: float | None = None
    nr15: float | None = None  # requests from novel sources, tau 15 min
    ns3h: float | None = None  # spend from novel sources, tau 3 h
    err: float | None = None  # 403/404 responses, tau 15 min
    tried: int = 0  # 64-bit bloom of the models named by those responses
    pip: int = 0  # 32-bit bloom: IPs pending (new, not yet trusted)
    papp: int = 0  # 32-bit bloom: user agents / models pending
    pend_t: float | None = None  # first time something became pending
    hot_t: float | None = None  # when the gates last opened (incident start estimate)
    next_eval: float | None = None
    inc: int = 0  # 1 while an incident is open
    new_ip: str | None = None  # the last new source IP / user agent (evidence for an incident)
    new_ua: str | None = None


class KeyRecord(msgspec.Struct, array_like=True, gc=False):
    """How a :class:`KeyState` is stored in a snapshot: its fields, in this order, as one array."""

    moved: float
    last: float = 0.0
    h_spend: float = 0.0
    h_reqs: int = 0
    s15: float = 0.0
    s3h: float = 0.0
    r15: float = 0.0
    fx: int = 0
    fo: int = 0
    kip: int = 0
    kapp: int = 0
    g15: float = _INF
    g3h: float = _INF
    gr15: float = _INF
    base: bytearray | None = None
    cold: KeyCold | None = None


class KeyState:
    """One API key: the fields every event reads. Times are event-time epoch seconds; shares integer percent.

    The hour being accumulated is ``last // 3600`` (``last`` only moves forward, and an event of a
    later hour rolls the key first). The key's baseline (``base``, from its first roll) is packed in
    one bytearray (layout: :data:`_BASE`); rarely needed fields are in ``cold`` (None until needed).

    A plain ``__slots__`` class rather than a msgspec Struct: every event writes six of these
    fields, and CPython only specializes attribute stores for types with the default
    ``__setattr__``, which a Struct overrides (~25 ns more per store). Snapshots write it as a
    :class:`KeyRecord` (same fields, same order).
    """

    __slots__ = ("base", "cold", "fo", "fx", "g3h", "g15", "gr15", "h_reqs", "h_spend", "kapp", "kip", "last",
                 "moved", "q15", "r15", "s3h", "s15")
    moved: float
    last: float  # latest event time: the time the decayed sums were brought to
    h_spend: float  # spend of the hour being accumulated
    h_reqs: int
    s15: float  # spend, tau 15 min
    s3h: float  # spend, tau 3 h
    r15: float  # requests, tau 15 min
    fx: int  # recent share of calls on the most expensive tier (EW over ~5 calls)
    fo: int  # recent output share of tokens (EW over ~5 sampled calls, one in four)
    kip: int  # 64-bit bloom: source IPs known for this key
    kapp: int  # 64-bit bloom: user agents and models known for this key
    g15: float  # s15 above this opens the evaluation (inf: not judged yet)
    g3h: float
    gr15: float
    # s15 below this (and the other sums within their gates) lets an event with known sources and no 403/404
    # stop at the common path: min(fast-path pre-gate, next float above g15); -inf while the key is busy,
    # under per-tenant parameters, and after a restore (not snapshotted: the full test resets it).
    q15: float
    base: bytearray | None
    cold: KeyCold | None

    def __init__(self, t: float) -> None:
        """A key's state before its first event (at ``t``)."""
        self.moved = self.last = t
        self.h_spend = self.s15 = self.s3h = self.r15 = 0.0
        self.h_reqs = self.fx = self.fo = self.kip = self.kapp = 0
        self.g15 = self.g3h = self.gr15 = _INF
        self.q15 = _NEG_INF
        self.base = None
        self.cold = None

    @classmethod
    def from_record(cls, record: KeyRecord) -> KeyState:
        ks = from_record(cls, record)
        ks.q15 = _NEG_INF
        return ks


class TenantState(msgspec.Struct, array_like=True, gc=False):
    """One tenant: when it was first seen, the sources its keys use, what its keys usually spend.

    ``prof`` is the hour-of-day profile of a typical key of the tenant (log spend of the hours in
    which its keys were used; 24 int16 means and 24 uint8 counts), ``rv`` the spread of its keys
    around it. Both serve as the prior of a young key of this tenant (a rotated key, a new app).
    """

    moved: float
    born: float = 0.0
    bloom: bytearray = msgspec.field(default_factory=lambda: bytearray(_BLOOM_BYTES))
    prof: bytearray | None = None
    rv: float = -1.0


class Incident(msgspec.Struct, kw_only=True):
    """An open incident of one key: what was last reported, and what has been seen since it opened."""

    tenant: str
    first_seen: float
    last_hot: float
    last_ts: float
    reported: float = 0.0
    risk_step: int = 0
    peak: float = 0.0
    peak_risk: float = 0.0
    spend: float = 0.0
    events: int = 0
    samples: list[str] = msgspec.field(default_factory=list)
    new_ips: list[str] = msgspec.field(default_factory=list)
    new_user_agents: list[str] = msgspec.field(default_factory=list)
    models: dict[str, float] = msgspec.field(default_factory=dict)


class SpendSpikeState(msgspec.Struct):
    # Keys are plain objects (see KeyState): the detector snapshots and restores with hooks for them.
    keys: dict[str, KeyState] = msgspec.field(default_factory=dict)
    tenants: dict[str, TenantState] = msgspec.field(default_factory=dict)
    open: dict[str, Incident] = msgspec.field(default_factory=dict)
    population: SeasonalBaseline = msgspec.field(default_factory=new_baseline)
    # The population prior by hour of week (mean, variance, week effect; 168 x 3), each entry taken
    # from ``population`` at most once per hour of event time (``prior_at``): every key's roll reads it.
    prior: list[float] = msgspec.field(default_factory=list)
    prior_at: list[int] = msgspec.field(default_factory=list)
    prior_hour: int = -1
    key_stats: KeyspaceStats = msgspec.field(default_factory=KeyspaceStats)
    tenant_stats: KeyspaceStats = msgspec.field(default_factory=KeyspaceStats)


_encoder = record_encoder((KeyState, KeyRecord))
_decoder = record_decoder(SpendSpikeState, (KeyState, KeyRecord), build={KeyState: KeyState.from_record})


def _bits64(s: str, seed: int) -> int:
    """Two bits of 64 for ``s`` (a 2-hash Bloom filter entry); deterministic across processes."""
    h = zlib.crc32(s.encode(), seed)
    return (1 << (h & 63)) | (1 << ((h >> 6) & 63))


def _fold32(bits: int) -> int:
    """The pending-filter entry (32 bits) derived from a 64-bit entry."""
    return (bits ^ (bits >> 32)) & _MASK32 or 1


def _bloom_idx(s: str, seed: int) -> tuple[int, int]:
    h = zlib.crc32(s.encode(), seed ^ _SEED_TENANT)
    return h % _BLOOM_BITS, (h >> 11) % _BLOOM_BITS


def _bloom_has(bloom: bytearray, s: str, seed: int) -> bool:
    i, j = _bloom_idx(s, seed)
    return bool(bloom[i >> 3] & (1 << (i & 7))) and bool(bloom[j >> 3] & (1 << (j & 7)))


def _bloom_add(bloom: bytearray, s: str, seed: int) -> None:
    i, j = _bloom_idx(s, seed)
    bloom[i >> 3] |= 1 << (i & 7)
    bloom[j >> 3] |= 1 << (j & 7)


def _prof_set(prof: bytearray, at: int, x: float) -> None:
    q = round(x * _Q)
    _I16.pack_into(prof, at, -32767 if q < -32767 else (32767 if q > 32767 else q))


_alphas: dict[float, float] = {}


def _alpha(half_life: float) -> float:
    """EW weight for a half-life (memoised: it is asked for at every hourly fold)."""
    a = _alphas.get(half_life)
    if a is None:
        a = alpha_for_half_life(half_life)
        if len(_alphas) < 1024:
            _alphas[half_life] = a
    return a


def _log_consts(p: SpendSpikeParams) -> tuple[float, float, float]:
    """ln ratio_tolerance, ln short_window_slack, ln(ratio_saturation / ratio_tolerance)."""
    return math.log(p.ratio_tolerance), math.log(p.short_window_slack), math.log(p.ratio_saturation / p.ratio_tolerance)


def _ramp(x: float) -> float:
    return 0.0 if x <= 0.0 else (1.0 if x >= 1.0 else x)


def _r(x: float, nd: int = 4) -> float:
    return float(round(x, nd))


@register
class SpendSpike(Detector[SpendSpikeParams, SpendSpikeState]):
    """An API key spending far above its own seasonal baseline, with the marks of a stolen key (LLMjacking).

    Keyed per ``api_key_id``; baseline by hour of day/week in the tenant's
    time zone with tenant and population priors; signals: spend and request
    rate ratio, new source IP/user agent/model, model enumeration (403/404),
    most expensive tier, output share, off-hours; an absolute $/minute fast
    path. Maps to MITRE ATLAS AML.T0034 Cost Harvesting.
    """

    name: ClassVar[str] = "spend_spike"
    Params: ClassVar[type[DetectorParams]] = SpendSpikeParams
    State: ClassVar[type[msgspec.Struct]] = SpendSpikeState
    description: ClassVar[str] = "API key spend far above its seasonal baseline (LLMjacking, low-and-slow)"
    # 2: keys as KeyRecord arrays (hot fields, packed baseline, KeyCold), no longer 36-field KeyStates.
    state_version: ClassVar[int] = 2

    def __init__(self, params: SpendSpikeParams, context: Any, tenant_params: Any = None) -> None:
        super().__init__(params, context, tenant_params)
        # Memo of pure functions of strings (never part of the state): Bloom bits and price tier.
        # A missing IP or user agent (None) is always "known" (no bits).
        self._ip_bits: dict[str | None, int] = {None: 0}
        self._ua_bits: dict[str | None, int] = {None: 0}
        self._model_info: dict[str, tuple[int, bool]] = {}
        self._app_known: dict[int, int] = {}  # interned KeyState.kapp values
        # Memo of a hot key's baseline (scored every eval_every_s): reused while nothing it is computed
        # from has changed -- the key's baseline (its hour), the tenant's profile (a version bumped at
        # every change), the population prior (refreshed when ``prior_hour`` moves), the hour of week.
        self._tenant_ver: dict[str, int] = {}
        self._eval_memo: dict[str, tuple[KeyState, int, int, TenantState | None, int, int,
                                         tuple[float, float, float]]] = {}
        # The parameters are fixed for the detector's life: the per-event pre-gate of the minute sum
        # (None: it depends on the tenant).
        self._pregate = None if self.tenant_params else params.fast_path_usd_per_min * _FAST_PREGATE
        self._tenant_cap = params.max_tenants if params.max_tenants < params.max_keys else params.max_keys
        self._logs = _log_consts(params)
        self._alpha_var = _alpha(params.variance_half_life_hours)
        self._alpha_key = _alpha(params.key_half_life_days)
        self._alpha_tenant = _alpha(params.tenant_half_life_obs)

    # -- hot path ---------------------------------------------------------------------------------

    def update(self, event: UsageEvent) -> list[Finding] | None:
        t: float = event.ts  # type: ignore[assignment]
        key = event.api_key_id
        keys = self.state.keys
        try:
            ks = keys[key]
        except KeyError:
            ks = self._create(event, key, t)
        else:
            if t - ks.moved > MOVE_EVERY:  # keep the dict in touch order (see detectors.keyspace), inline
                del keys[key]
                keys[key] = ks
                ks.moved = t
        last = ks.last
        dt = t - last
        if t % 3600.0 < dt:
            # t's hour started after ``last``: the key enters a new hour. (The same test as
            # ``t // 3600 > last // 3600`` without two float divisions: ``t - last`` is exact when
            # they are less than an hour apart, and needs no precision when they are more.)
            self._roll(ks, event, int(t // 3600.0), t)
        cost = event.cost_usd
        if cost is None:
            cost = self.context.prices.resolve(event.model).cost(
                event.input_tokens, event.output_tokens, event.cached_input_tokens, event.cache_write_tokens
            )

        # Novelty of the source and the model, and the model's tier: a call whose IP, user agent and
        # model are all in the key's known filters is not new (the common case, checked inline).
        try:
            ib = self._ip_bits[event.source_ip]
            app = self._ua_bits[event.user_agent]
            mbits, top = self._model_info[event.model]
            app |= mbits
            known = ks.kip & ib == ib and ks.kapp & app == app
        except KeyError:  # a string not in the memos yet
            known = False
        if known:
            novel = 0
        else:
            novel, mbits, top = self._novelty(ks, event, t)

        # Decayed windows; a late event is added with the weight of its age.
        if dt > 0.0:
            da = _exp(dt * _INV_SHORT)
            ks.last = t
            s15 = ks.s15 * da + cost
            s3h = ks.s3h * _exp(dt * _INV_LONG) + cost
            r15 = ks.r15 * da + 1.0
        elif dt == 0.0:
            s15 = ks.s15
            s3h = ks.s3h
            r15 = ks.r15
            if r15 == 0.0 and s15 == 0.0 and s3h == 0.0:
                # A key's first event: the sums share the cost's float object (0.0 + cost is cost but
                # for -0.0 or a cost given as an int); a flood of keys seen once then costs no float
                # object per sum.
                s15 = s3h = cost if cost and cost.__class__ is float else 0.0 + cost
                r15 = 1.0
            else:
                s15 += cost
                s3h += cost
                r15 += 1.0
        else:
            wa = _exp(-dt * _INV_SHORT)
            s15 = ks.s15 + cost * wa
            s3h = ks.s3h + cost * _exp(-dt * _INV_LONG)
            r15 = ks.r15 + wa
        ks.s15 = s15
        ks.s3h = s3h
        ks.r15 = r15
        hs = ks.h_spend
        ks.h_spend = hs + cost if hs else (cost if cost and cost.__class__ is float else 0.0 + cost)  # likewise
        h_reqs = ks.h_reqs + 1
        ks.h_reqs = h_reqs
        # Integer EWs (~5 calls) of the top-tier share and the output share, in percent.
        fx = ks.fx
        if top:
            if fx < 96:
                ks.fx = fx + (100 - fx) // 5
        elif fx:
            ks.fx = fx - (fx + 4) // 5
        if not h_reqs & 3:
            # The output share is sampled on every 4th call of the hour (an attack makes hundreds).
            out = event.output_tokens
            fo = ks.fo
            ks.fo = fo + (100 * out // (out + event.input_tokens + 1) - fo) // 5

        if known and s15 < ks.q15 and not (s3h > ks.g3h or r15 > ks.gr15):
            status = event.status
            if status != 403 and status != 404:
                return None  # nothing going on: no minute sum, gates closed (the common case, see q15)
        cold = ks.cold
        if cold is None or not cold.busy:
            status = event.status
            if not novel and status != 403 and status != 404:
                pre = self._pregate
                if pre is None:
                    pre = self.params_for(event.tenant_id).fast_path_usd_per_min * _FAST_PREGATE
                if s15 < pre and not (s15 > ks.g15 or s3h > ks.g3h or r15 > ks.gr15):
                    ks.q15 = self._quick(ks.g15)
                    return None  # nothing going on: no minute sum, gates closed
            if cold is None:
                cold = ks.cold = KeyCold()
        return self._busy(ks, cold, key, event, t, dt, cost, novel, mbits)

    # -- per key bookkeeping (cold) -----------------------------------------------------------

    def _busy(self, ks: KeyState, cold: KeyCold, key: str, event: UsageEvent, t: float, dt: float, cost: float,
              novel: int, mbits: int) -> list[Finding] | None:
        """The rest of an event of a key with something going on (see :class:`KeyCold`)."""
        p: SpendSpikeParams = self.params if not self.tenant_params else self.params_for(event.tenant_id)
        if dt > 0.0:
            da = _exp(dt * _INV_SHORT)
            er = cold.err
            if er is not None:
                er *= da
                if er < 0.5:
                    er = None
                    cold.tried = 0
                cold.err = er
            nr = cold.nr15
            if nr is not None:
                nr *= da
                cold.nr15 = nr if nr > 1e-3 else None
            ns = cold.ns3h
            if ns is not None:
                ns *= _exp(dt * _INV_LONG)
                cold.ns3h = ns if ns > 1e-6 else None
            wa = wb = 1.0
        elif dt == 0.0:
            er = cold.err
            wa = wb = 1.0
        else:
            wa = _exp(-dt * _INV_SHORT)
            wb = _exp(-dt * _INV_LONG)
            er = cold.err
        if novel:
            cold.nr15 = (cold.nr15 or 0.0) + wa
            cold.ns3h = (cold.ns3h or 0.0) + cost * wb
        status = event.status
        if status == 403 or status == 404:
            er = (er or 0.0) + wa
            cold.err = er
            cold.tried |= mbits
        s15 = ks.s15
        fast = False
        if s15 >= p.fast_path_usd_per_min * _FAST_PREGATE:
            # Only then can one minute hold the fast-path limit: keep its tumbling sum.
            minute = int(t // 60.0)
            ms = cold.m_spend
            if minute == cold.minute:
                ms = (ms or 0.0) + cost
                cold.m_spend = ms
            elif minute > cold.minute:
                cold.minute = minute
                cold.m_spend = ms = cost
            fast = cold.minute == minute and ms is not None and ms >= p.fast_path_usd_per_min

        if cold.inc:
            self._during(key, event, cost, novel)
        elif not (s15 > ks.g15 or ks.s3h > ks.g3h or ks.r15 > ks.gr15 or fast
                  or (er is not None and er >= p.enum_min_errors)):
            cold.hot_t = None
            if er is None and cold.nr15 is None and cold.ns3h is None:
                cold.busy = 0
                ks.q15 = self._quick(ks.g15)
            else:
                cold.busy = 1
                ks.q15 = _NEG_INF
            return None
        cold.busy = 1
        ks.q15 = _NEG_INF
        if cold.hot_t is None:
            cold.hot_t = t
        ne = cold.next_eval
        if ne is not None and t < ne and not fast:
            return None
        return self._evaluate(key, ks, cold, event, t, p, novel)

    def _novelty(self, ks: KeyState, event: UsageEvent, t: float) -> tuple[int, int, bool]:
        """Check the call's IP, user agent and model against the key's filters (bit 1, 2, 4: new)."""
        p: SpendSpikeParams = self.params_for(event.tenant_id)
        novel = 0
        ip = event.source_ip
        if ip is not None:
            bits = self._ip_bits.get(ip)
            if bits is None:
                bits = self._memo(self._ip_bits, ip, _SEED_IP)
            if ks.kip & bits != bits and self._unknown(ks, event, ip, bits, _SEED_IP, t, p):
                novel = 1
        ua = event.user_agent
        if ua is not None:
            bits = self._ua_bits.get(ua)
            if bits is None:
                bits = self._memo(self._ua_bits, ua, _SEED_UA)
            if ks.kapp & bits != bits and self._unknown(ks, event, ua, bits, _SEED_UA, t, p):
                novel |= 2
        model = event.model
        info = self._model_info.get(model)
        if info is None:
            info = self._model_memo(model)
        mbits, top = info
        if ks.kapp & mbits != mbits and self._unknown(ks, event, model, mbits, _SEED_MODEL, t, p):
            novel |= 4
        return novel, mbits, top

    @staticmethod
    def _memo(memo: dict[str | None, int], s: str, seed: int) -> int:
        bits = _bits64(s, seed)
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
            memo[None] = 0
        memo[s] = bits
        return bits

    def _model_memo(self, model: str) -> tuple[int, bool]:
        info = (_bits64(model, _SEED_MODEL), self.context.prices.resolve(model).tier == 0)
        if len(self._model_info) >= _MEMO_LIMIT:
            self._model_info.clear()
        self._model_info[model] = info
        return info

    def _create(self, event: UsageEvent, key: str, t: float) -> KeyState:
        """A key never seen (or forgotten): its state, judged against its tenant's and everyone's priors."""
        st = self.state
        ks = touch(st.keys, key, t, KeyState, self.params.max_keys, st.key_stats)
        tid = event.tenant_id
        tn = touch(st.tenants, tid, t, _new_tenant, self._tenant_cap, st.tenant_stats)
        if key in st.open:
            ks.cold = KeyCold(busy=1, inc=1)
        if not st.prior:
            st.prior = [0.0] * (3 * 168)
            st.prior_at = [-1] * 168
        hour = int(t // 3600.0)
        if hour > st.prior_hour:
            st.prior_hour = hour
        self._prepare(ks, None, tn, tid, hour, self.context.calendar.utc_offset(tid, t), self.params_for(tid))
        return ks

    def _unknown(self, ks: KeyState, event: UsageEvent, s: str, bits: int, seed: int, t: float,
                 p: SpendSpikeParams) -> bool:
        """``s`` is not in the key's known set: learn it, or mark it new. True if it counts as new."""
        is_ip = seed == _SEED_IP
        tn = self.state.tenants.get(event.tenant_id)
        if tn is None or t - tn.born < p.tenant_warmup_s:
            # Onboarding tenant: everything it does is its normal.
            if tn is not None:
                _bloom_add(tn.bloom, s, seed)
            self._learn(ks, bits, is_ip)
            return False
        if _bloom_has(tn.bloom, s, seed):
            # Known to the tenant (another key, a rotated key's sources).
            self._learn(ks, bits, is_ip)
            return False
        pb = _fold32(bits)
        cold = ks.cold
        if cold is not None and (cold.pip if is_ip else cold.papp) & pb == pb:
            if cold.pend_t is not None and t - cold.pend_t >= p.novelty_s and not cold.inc:
                _bloom_add(tn.bloom, s, seed)
                self._learn(ks, bits, is_ip)
                return False
            return True
        if cold is None:
            cold = ks.cold = KeyCold()
        if not (cold.pip or cold.papp):
            cold.pend_t = t
        if is_ip:
            cold.pip |= pb
            cold.new_ip = s
        else:
            cold.papp |= pb
            if seed == _SEED_UA:
                cold.new_ua = s
        return True

    def _learn(self, ks: KeyState, bits: int, is_ip: bool) -> None:
        if is_ip:
            ks.kip |= bits
        else:
            # Keys of one app share their user agent and model filter: one int object for all of them.
            kapp = ks.kapp | bits
            memo = self._app_known
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            ks.kapp = memo.setdefault(kapp, kapp)

    def _roll(self, ks: KeyState, event: UsageEvent, hour: int, t: float) -> None:
        """The key entered a new hour: fold the finished one (and idle ones) into the baselines."""
        st = self.state
        tid = event.tenant_id
        p = self.params_for(tid) if self.tenant_params else self.params
        tenants = st.tenants
        tn = tenants.get(tid)
        if tn is None:
            tn = touch(tenants, tid, t, _new_tenant, self._tenant_cap, st.tenant_stats)
        elif t - tn.moved > MOVE_EVERY:  # touch(), inline
            del tenants[tid]
            tenants[tid] = tn
            tn.moved = t
        if hour > st.prior_hour:
            st.prior_hour = hour
        first = int(ks.last // 3600.0)
        base = ks.base
        if base is None:
            base = ks.base = bytearray(_BASE_INIT)
        # One time-zone lookup per roll: the offset of the current hour serves the folded ones too
        # (a DST change shifts one fold by an hour, once or twice a year).
        off = self.context.calendar.utc_offset(tid, t)
        prev: float | None = self._fold(ks, base, tn, tid, first, off, ks.h_spend, ks.h_reqs, p)
        # Idle hours fold as zero spend; after a long absence only the most recent ones.
        idle_from = first + 1
        if hour - idle_from > p.max_fold_hours - 1:
            skipped = hour - idle_from - (p.max_fold_hours - 1)
            _X3H.pack_into(base, 0, _X3H.unpack_from(base)[0] * math.exp(-3600.0 * skipped / _TAU_LONG))
            idle_from += skipped
        for h in range(idle_from, hour):
            prev = self._fold(ks, base, tn, tid, h, off, 0.0, 0, p, True)
        if idle_from >= hour and first != hour - 1:
            prev = None  # the hour before this one was not folded: no expectation of it at hand
        ks.h_spend = 0.0
        ks.h_reqs = 0
        cold = ks.cold
        if cold is not None and cold.pend_t is not None and not cold.inc and t - cold.pend_t >= 2.0 * p.novelty_s:
            cold.pip = cold.papp = 0  # stale pending entries; anything still in use re-enters
            cold.pend_t = None
            cold.new_ip = cold.new_ua = None
        self._prepare(ks, base, tn, tid, hour, off, p, prev)

    def _fold(self, ks: KeyState, base: bytearray, tn: TenantState, tid: str, h: int, off: float, spend: float,
              reqs: int, p: SpendSpikeParams, idle: bool = False) -> float:
        """Hour ``h`` of the key is over: advance the expected 3 h window, learn from the hour.

        An idle hour (no call) only teaches the key's own profile: the tenant and
        population baselines describe the hours in which keys are used, and an idle
        hour costs little (a key used every few hours folds all the hours between).
        """
        floor = p.spend_floor_usd_per_h
        how = hour_of_week_utc(h * 3600.0 + 1800.0, off)
        hod = how % 24
        at = _PROF_AT + 2 * hod
        q = _i16_at(base, at)[0]
        x3h, rv, folds, lcpr, ux, uo = _BASE.unpack_from(base)
        # An idle hour of a key with two days of profile is expected as its profile says (no priors).
        mu = q / _Q if idle and q != _UNSET and folds >= 48 else self._expect(base, tn, how, p)[0]
        expected = math.exp(mu) - floor
        x3h = x3h * _HOUR_DECAY_LONG + (expected if expected > 0.0 else 0.0) / _PER_H_LONG * (
            1.0 - _HOUR_DECAY_LONG)
        cold = ks.cold
        if folds < 0:
            folds = 0  # the key's first hour was partial: not a fair observation
            if reqs:
                ux = ks.fx
                uo = ks.fo
        elif cold is not None and cold.inc:
            pass  # frozen while an incident is open
        else:
            x = math.log(spend + floor)
            if q == _UNSET:
                _prof_set(base, at, x)
            else:
                m = q / _Q
                # The key's own day-to-day variability at the same hour (running mean first, then EW).
                r = x - m
                k = folds - 23
                a = 1.0 / k if k > 1 else 1.0
                amin = _alpha(p.variance_half_life_hours) if p is not self.params else self._alpha_var
                rv = r * r if rv < 0.0 else rv + (a if a > amin else amin) * (r * r - rv)
                a = 1.0 / (folds // 24 + 1)
                amin = _alpha(p.key_half_life_days) if p is not self.params else self._alpha_key
                _prof_set(base, at, m + (a if a > amin else amin) * r)
            folds += 1
            if not idle:
                self._fold_tenant(tn, tid, how, hod, x, p)
                if reqs:
                    if spend > 0.0:
                        lc = math.log(spend / reqs)
                        lcpr = lc if lcpr == 0.0 else lcpr + 0.1 * (lc - lcpr)
                    ux += (ks.fx - ux) // 10
                    uo += (ks.fo - uo) // 10
        _BASE.pack_into(base, 0, x3h, rv, folds, lcpr, ux, uo)
        return mu

    def _fold_tenant(self, tn: TenantState, tid: str, how: int, hod: int, x: float, p: SpendSpikeParams) -> None:
        """A used hour of one of the tenant's keys: teach the tenant's profile and the population."""
        vers = self._tenant_ver
        if len(vers) >= _MEMO_LIMIT:
            vers.clear()
            self._eval_memo.clear()  # versions restart: no memo may outlive them
        vers[tid] = vers.get(tid, 0) + 1
        at = _alpha(p.tenant_half_life_obs) if p is not self.params else self._alpha_tenant
        tp = tn.prof
        if tp is None:
            tp = tn.prof = bytearray(_TENANT_PROFILE_INIT)
        n = tp[_TENANT_COUNTS + hod]
        if n == 0:
            _prof_set(tp, 2 * hod, x)
        else:
            m = _i16_at(tp, 2 * hod)[0] / _Q
            r = x - m
            tn.rv = r * r if tn.rv < 0.0 else tn.rv + at * (r * r - tn.rv)
            a = 1.0 / (n + 1)
            _prof_set(tp, 2 * hod, m + (a if a > at else at) * r)
        if n < 255:
            tp[_TENANT_COUNTS + hod] = n + 1
        baseline_update(self.state.population, how, x, at)

    def _expect(self, base: bytearray | None, tn: TenantState | None, how: int,
                p: SpendSpikeParams) -> tuple[float, float]:
        """Expected log hourly spend of a key (its ``base``) at hour-of-week ``how``, and its variance."""
        st = self.state
        h = how % 168
        if st.prior_at[h] != st.prior_hour:
            self._refresh_prior(h)
        prior = st.prior
        i = 3 * h
        pm = prior[i]
        pv = prior[i + 1]
        week = prior[i + 2]  # weekday/weekend, from everyone's hour of week
        hod = how % 24
        if tn is not None:
            tp = tn.prof
            if tp is not None:
                nt = tp[_TENANT_COUNTS + hod]
                if nt:
                    w = nt / (nt + p.shrink)
                    pm += w * (_i16_at(tp, 2 * hod)[0] / _Q + week - pm)
                    rv = tn.rv
                    pv = w * (rv if rv >= 0.0 else pv) + (1.0 - w) * pv
        if base is None:
            return pm, pv
        q = _i16_at(base, _PROF_AT + 2 * hod)[0]
        if q == _UNSET:
            return pm, pv
        rv, folds = _RV_FOLDS.unpack_from(base, 8)
        n = folds // 24
        if n < 1:
            n = 1
        w = n / (n + p.prior_days)
        km = q / _Q + week
        kv = rv if rv >= 0.0 else pv
        d = km - pm
        return pm + w * d, w * kv + (1.0 - w) * pv + w * (1.0 - w) * d * d

    def _expect_pair(self, base: bytearray | None, tn: TenantState | None, how: int,
                     p: SpendSpikeParams) -> tuple[float, float, float]:
        """:meth:`_expect` at ``how`` (mean and variance) and the mean at ``how + 1``, sharing the lookups."""
        st = self.state
        h = how % 168
        h1 = (how + 1) % 168
        prior_at = st.prior_at
        if prior_at[h] != st.prior_hour:
            self._refresh_prior(h)
        if prior_at[h1] != st.prior_hour:
            self._refresh_prior(h1)
        prior = st.prior
        i = 3 * h
        pm = prior[i]
        pv = prior[i + 1]
        week = prior[i + 2]
        i = 3 * h1
        pm1 = prior[i]
        week1 = prior[i + 2]
        hod = how % 24
        hod1 = (how + 1) % 24
        if tn is not None:
            tp = tn.prof
            if tp is not None:
                nt = tp[_TENANT_COUNTS + hod]
                if nt:
                    w = nt / (nt + p.shrink)
                    pm += w * (_i16_at(tp, 2 * hod)[0] / _Q + week - pm)
                    rv = tn.rv
                    pv = w * (rv if rv >= 0.0 else pv) + (1.0 - w) * pv
                nt = tp[_TENANT_COUNTS + hod1]
                if nt:
                    w = nt / (nt + p.shrink)
                    pm1 += w * (_i16_at(tp, 2 * hod1)[0] / _Q + week1 - pm1)
        if base is None:
            return pm, pv, pm1
        rv, folds = _RV_FOLDS.unpack_from(base, 8)
        n = folds // 24
        if n < 1:
            n = 1
        w = n / (n + p.prior_days)
        q = _i16_at(base, _PROF_AT + 2 * hod)[0]
        if q != _UNSET:
            km = q / _Q + week
            kv = rv if rv >= 0.0 else pv
            d = km - pm
            pm, pv = pm + w * d, w * kv + (1.0 - w) * pv + w * (1.0 - w) * d * d
        q = _i16_at(base, _PROF_AT + 2 * hod1)[0]
        if q != _UNSET:
            pm1 += w * (q / _Q + week1 - pm1)
        return pm, pv, pm1

    def _refresh_prior(self, how: int) -> None:
        """Take the population prior for hour-of-week ``how`` (at most once per hour of event time)."""
        st = self.state
        p = self.params
        m, v, _ = baseline_expect(st.population, how, math.log(p.spend_floor_usd_per_h), 4.0, 1.0, p.shrink)
        i = 3 * how
        st.prior[i] = m
        st.prior[i + 1] = v
        st.prior[i + 2] = baseline_week_effect(st.population, how, p.shrink)
        st.prior_at[how] = st.prior_hour

    def _baseline_now(self, base: bytearray | None, tn: TenantState | None, how: int,
                      p: SpendSpikeParams, prev: float | None = None) -> tuple[float, float, float]:
        """Expected $/h (floor included) for the 15-minute window and for this hour, and the log-scale sd.

        The 15-minute window is held to the highest expectation of the hour and
        its neighbours, so that a job starting a few minutes early is no spike.
        """
        if prev is None:
            prev = self._expect(base, tn, how - 1, p)[0]
        mu, var, nxt = self._expect_pair(base, tn, how, p)
        sd = _sqrt(var)
        sd = p.sd_floor if sd < p.sd_floor else (p.sd_cap if sd > p.sd_cap else sd)
        top = prev  # max(prev, mu, nxt), inline
        if mu > top:
            top = mu
        if nxt > top:
            top = nxt
        return _exp(top), _exp(mu), sd

    def _baseline_at(self, key: str, ks: KeyState, tn: TenantState | None, tid: str, t: float,
                     p: SpendSpikeParams) -> tuple[float, float, float]:
        """:meth:`_baseline_now` for a key scored at ``t``, from the memo when still valid."""
        how = self.context.calendar.hour_of_week(tid, t)
        hour = int(ks.last // 3600.0)
        ver = self._tenant_ver.get(tid, 0)
        prior_hour = self.state.prior_hour
        memo = self._eval_memo
        m = memo.get(key)
        if (m is not None and m[0] is ks and m[1] == hour and m[2] == how and m[3] is tn and m[4] == ver
                and m[5] == prior_hour):
            return m[6]
        got = self._baseline_now(ks.base, tn, how, p)
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
        memo[key] = (ks, hour, how, tn, ver, self.state.prior_hour, got)
        return got

    @staticmethod
    def _expected_3h(hour: int, x3h: float, t: float, e_now: float, floor: float) -> float:
        """Expected $/h through the 3 h kernel at ``t`` (floor included), comparable to ``s3h``.

        ``hour`` is the hour being accumulated and ``x3h`` the expected 3 h sum at its start.
        """
        dt = t - hour * 3600.0
        rate = e_now - floor
        if rate < 0.0:
            rate = 0.0
        if dt <= 0.0:
            return x3h * _PER_H_LONG + floor
        d = math.exp(-dt / _TAU_LONG)
        return (x3h * d) * _PER_H_LONG + rate * (1.0 - d) + floor

    def _quick(self, g15: float) -> float:
        """``KeyState.q15`` of a key that is not busy, for gate ``g15`` (-inf under per-tenant parameters)."""
        pre = self._pregate
        if pre is None:
            return _NEG_INF
        q = math.nextafter(g15, _INF)  # s15 < q is s15 <= g15
        return pre if pre <= q else q

    def _prepare(self, ks: KeyState, base: bytearray | None, tn: TenantState, tid: str, hour: int, off: float,
                 p: SpendSpikeParams, prev: float | None = None) -> None:
        """Gates for this hour: the window sums above which the key is worth scoring."""
        t = hour * 3600.0
        if t - tn.born < p.tenant_warmup_s:
            ks.g15 = ks.g3h = ks.gr15 = _INF
            ks.q15 = self._quick(_INF) if ks.cold is None or not ks.cold.busy else _NEG_INF
            return
        e15, e_now, sd = self._baseline_now(base, tn, hour_of_week_utc(t + 1800.0, off), p, prev)
        floor = p.spend_floor_usd_per_h
        x3h, _, _, lcpr, _, _ = _BASE.unpack_from(base) if base is not None else _BASE_START
        # The expected 3 h sum moves monotonically within the hour: gate on its lower end, the smaller
        # of _expected_3h at the hour's start and end (inline; min/max below are inline too).
        e3h = x3h * _PER_H_LONG + floor
        rate = e_now - floor
        if rate < 0.0:
            rate = 0.0
        end = (x3h * _HOUR_DECAY_LONG) * _PER_H_LONG + rate * (1.0 - _HOUR_DECAY_LONG) + floor
        if end < e3h:
            e3h = end
        tol = self._logs[0] if p is self.params else _log(p.ratio_tolerance)
        z = p.z_tolerance * sd
        if z > tol:
            tol = z
        k15 = _exp(tol) * p.short_window_slack
        g = e15 * k15
        lo = e15 + p.min_excess_usd_per_h
        if lo > g:
            g = lo
        g15 = ks.g15 = (g - floor) / _PER_H_SHORT
        ks.q15 = self._quick(g15) if ks.cold is None or not ks.cold.busy else _NEG_INF
        g = e3h * _exp(tol)
        lo = e3h + p.min_excess_usd_per_h
        if lo > g:
            g = lo
        ks.g3h = (g - floor) / _PER_H_LONG
        if lcpr != 0.0:
            ereq = e15 - floor
            if ereq < 0.0:
                ereq = 0.0
            ereq /= _exp(lcpr)
            g = (ereq + 1.0) * k15 - 1.0
            lo = ereq + p.min_excess_requests_per_h
            if lo > g:
                g = lo
            ks.gr15 = g / _PER_H_SHORT
        else:
            ks.gr15 = _INF

    # -- scoring (cold: only when a gate is open) -------------------------------------------------

    def _evaluate(self, key: str, ks: KeyState, cold: KeyCold, event: UsageEvent, t: float, p: SpendSpikeParams,
                  novel: int) -> list[Finding] | None:
        st = self.state
        cold.next_eval = t + p.eval_every_s
        tid = event.tenant_id
        tn = st.tenants.get(tid)
        warm = tn is not None and t - tn.born >= p.tenant_warmup_s
        m_spend = cold.m_spend if cold.m_spend is not None and cold.minute == int(t // 60.0) else 0.0
        fast = m_spend >= p.fast_path_usd_per_min
        inc = st.open.get(key)
        if not (warm or fast or inc is not None):
            return None
        floor = p.spend_floor_usd_per_h
        base = ks.base
        e15, e_now, sd = self._baseline_at(key, ks, tn, tid, t, p)
        x3h, _, folds, lcpr, ux, uo = _BASE.unpack_from(base) if base is not None else _BASE_START
        e3h = self._expected_3h(int(ks.last // 3600.0), x3h, t, e_now, floor)
        ltol, lslack, span = self._logs if p is self.params else _log_consts(p)
        tol = p.z_tolerance * sd  # max(ln ratio_tolerance, z_tolerance * sd), inline
        if not tol > ltol:
            tol = ltol
        tol15 = tol + lslack

        obs15 = ks.s15 * _PER_H_SHORT
        obs3h = ks.s3h * _PER_H_LONG
        ratio15 = (obs15 + floor) / e15
        ratio3h = (obs3h + floor) / e3h
        ex15 = obs15 + floor - e15
        ex3h = obs3h + floor - e3h
        s15 = _ramp((math.log(ratio15) - tol15) / span) if ex15 >= p.min_excess_usd_per_h else 0.0
        s3h = _ramp((math.log(ratio3h) - tol) / span) if ex3h >= p.min_excess_usd_per_h else 0.0
        if warm and (s15 > 0.0 or s3h > 0.0):
            if s15 >= s3h:
                s_spend, window, observed, expected, ratio, excess = s15, "15m", obs15, e15 - floor, ratio15, ex15
            else:
                s_spend, window, observed, expected, ratio, excess = s3h, "3h", obs3h, e3h - floor, ratio3h, ex3h
        else:
            s_spend = 0.0
            if ratio15 >= ratio3h:
                window, observed, expected, ratio, excess = "15m", obs15, e15 - floor, ratio15, ex15
            else:
                window, observed, expected, ratio, excess = "3h", obs3h, e3h - floor, ratio3h, ex3h
        req_h = ks.r15 * _PER_H_SHORT
        s_rate = 0.0
        ereq = -1.0
        if lcpr != 0.0:
            ereq = max(e15 - floor, 0.0) / math.exp(lcpr)
            if warm and req_h - ereq >= p.min_excess_requests_per_h:
                s_rate = _ramp((math.log((req_h + 1.0) / (ereq + 1.0)) - tol15) / span)
        errs = cold.err or 0.0
        nr15 = cold.nr15 or 0.0
        ns3h = cold.ns3h or 0.0
        distinct = cold.tried.bit_count() // 2
        s_enum = 0.0
        if warm and errs >= p.enum_min_errors:
            s_enum = min(1.0, max(errs / p.enum_errors_sat, (distinct - 1) / (p.enum_models_sat - 1)))
        gate = s_spend > 0.0 or s_rate > 0.0 or s_enum > 0.0
        if not (gate or fast or inc is not None) and p.fire_score > 0.0:
            return None  # no signal: the score is 0 and opens nothing
        s_nov = s_exp = s_out = 0.0
        if gate:
            if ks.r15 > 0.5:
                s_nov = nr15 / ks.r15
            if ks.s3h > 0.0 and ns3h / ks.s3h > s_nov:
                s_nov = ns3h / ks.s3h
            s_nov = _ramp(s_nov)
            if ks.fx > ux:
                s_exp = _ramp((ks.fx - ux) / (100 - ux))
            if ks.fo > uo:
                s_out = _ramp((ks.fo - uo) / p.output_share_jump)
        if inc is None and not fast:
            # Most scorings of a key with an open gate end below fire_score: the unrounded sum, with the
            # off-hours signal at its most, bounds the score (each of the <= 8 roundings to 4 decimals moves
            # it by <= 5e-5), so that the calendar, the roundings and the signals dict are skipped.
            bound = (p.weight_spend * s_spend + p.weight_rate * s_rate + p.weight_enumeration * s_enum
                     + p.weight_novelty * s_nov + p.weight_expensive * s_exp + p.weight_output * s_out
                     + (p.weight_off_hours if gate else 0.0))
            if bound < p.fire_score - 1e-3:
                return None
        off_hours = not self.context.calendar.is_business_hours(tid, t)
        s_off = 1.0 if gate and off_hours else 0.0
        # The score as the sum of the signals' contributions, each rounded as reported (the signals dict
        # itself is only built for a finding).
        score = 0.0
        if s_spend > 0.0 and p.weight_spend > 0.0:
            score += round(p.weight_spend * s_spend, 4)
        if s_rate > 0.0 and p.weight_rate > 0.0:
            score += round(p.weight_rate * s_rate, 4)
        if s_enum > 0.0 and p.weight_enumeration > 0.0:
            score += round(p.weight_enumeration * s_enum, 4)
        if s_nov > 0.0 and p.weight_novelty > 0.0:
            score += round(p.weight_novelty * s_nov, 4)
        if s_exp > 0.0 and p.weight_expensive > 0.0:
            score += round(p.weight_expensive * s_exp, 4)
        if s_out > 0.0 and p.weight_output > 0.0:
            score += round(p.weight_output * s_out, 4)
        if s_off > 0.0 and p.weight_off_hours > 0.0:
            score += round(p.weight_off_hours * s_off, 4)
        if score > 1.0:
            score = 1.0
        summed = score
        risk = excess if excess > 0.0 else 0.0
        if fast:
            fast_risk = m_spend * 60.0 - expected
            if fast_risk > risk:
                risk = fast_risk
            if score < p.fast_path_score:
                score = p.fast_path_score
        score = _r(score)

        if inc is None:
            if score < p.fire_score or not (warm or fast):
                return None
            if len(st.open) >= p.max_keys:
                return None  # bounded: a flood of incidents is itself visible through the open ones
            first = cold.hot_t if cold.hot_t is not None and cold.hot_t <= t else t
            inc = Incident(tenant=tid, first_seen=first, last_hot=t, last_ts=t)
            if cold.new_ip is not None and (nr15 > 0.0 or ns3h > 0.0):
                inc.new_ips.append(cold.new_ip)
            if cold.new_ua is not None and (nr15 > 0.0 or ns3h > 0.0):
                inc.new_user_agents.append(cold.new_ua)
            st.open[key] = inc
            cold.inc = 1
            self._during(key, event, 0.0, novel)
        else:
            # The incident stays open while the current rate (15 min) is still up, or probing goes on:
            # the 3 h window of a big spike stays high for a day after the spike itself has ended.
            if score >= p.clear_score and ((ratio15 >= p.ratio_tolerance and ex15 >= p.min_excess_usd_per_h)
                                           or s_enum > 0.0 or fast):
                inc.last_hot = t
            step = 0
            for s in p.risk_steps_usd_per_hour:
                if risk >= s:
                    step += 1
            if not (score >= inc.reported + p.score_step or step > inc.risk_step):
                if score > inc.peak:
                    inc.peak = score
                return None
            if score < p.fire_score:
                return None
        inc.reported = score
        inc.risk_step = sum(1 for s in p.risk_steps_usd_per_hour if risk >= s)
        if score > inc.peak:
            inc.peak = score
        if risk > inc.peak_risk:
            inc.peak_risk = risk
        signals: dict[str, float] = {}
        if s_spend > 0.0 and p.weight_spend > 0.0:
            signals["spend"] = _r(p.weight_spend * s_spend)
        if s_rate > 0.0 and p.weight_rate > 0.0:
            signals["rate"] = _r(p.weight_rate * s_rate)
        if s_enum > 0.0 and p.weight_enumeration > 0.0:
            signals["enumeration"] = _r(p.weight_enumeration * s_enum)
        if s_nov > 0.0 and p.weight_novelty > 0.0:
            signals["novelty"] = _r(p.weight_novelty * s_nov)
        if s_exp > 0.0 and p.weight_expensive > 0.0:
            signals["expensive_model"] = _r(p.weight_expensive * s_exp)
        if s_out > 0.0 and p.weight_output > 0.0:
            signals["output_share"] = _r(p.weight_output * s_out)
        if s_off > 0.0 and p.weight_off_hours > 0.0:
            signals["off_hours"] = _r(p.weight_off_hours * s_off)
        if fast and summed < p.fast_path_score:
            signals["fast_path"] = _r(p.fast_path_score - summed)
        evidence: dict[str, Any] = {
            "window": window,
            "observed_usd_per_hour": _r(observed),
            "baseline_usd_per_hour": _r(expected),
            "ratio": _r(ratio, 2),
            "excess_usd_per_hour": _r(excess),
            "projected_usd_per_day": _r(observed * 24.0, 2),
            "spend_15m_usd_per_hour": _r(obs15),
            "spend_3h_usd_per_hour": _r(obs3h),
            "baseline_15m_usd_per_hour": _r(e15 - floor),
            "baseline_3h_usd_per_hour": _r(e3h - floor),
            "tolerance_ratio": _r(math.exp(tol), 2),
            "requests_per_hour": _r(req_h, 1),
            "baseline_requests_per_hour": _r(ereq, 1) if ereq >= 0.0 else None,
            "usd_last_minute": _r(m_spend),
            "fast_path_usd_per_min": p.fast_path_usd_per_min,
            "errors_403_404_15m": _r(errs, 1),
            "models_tried_in_errors": distinct,
            "novel_request_share_15m": _r(nr15 / ks.r15 if ks.r15 > 0.0 else 0.0, 3),
            "novel_spend_share_3h": _r(ns3h / ks.s3h if ks.s3h > 0.0 else 0.0, 3),
            "new_ips": list(inc.new_ips),
            "new_user_agents": list(inc.new_user_agents),
            "top_models": _top_models(inc.models),
            "expensive_tier_share_pct": ks.fx,
            "usual_expensive_tier_share_pct": ux,
            "output_share_pct": ks.fo,
            "usual_output_share_pct": uo,
            "off_hours": off_hours,
            "local_time": self.context.calendar.local_iso(tid, t),
            "baseline_hours": folds if folds > 0 else 0,
            "tenant_warm": warm,
        }
        actions: list[Any] = ["notify"]
        if risk >= p.page_usd_per_hour or score >= p.page_score:
            actions.append("page")
        independent = sum(1 for n in ("novelty", "enumeration", "expensive_model", "output_share") if n in signals)
        if "spend" in signals or "rate" in signals or fast:
            independent += 1
        if score >= p.revoke_score and independent >= 2:
            actions.append("revoke")
        stolen_marks = any(n in signals for n in ("novelty", "enumeration", "expensive_model")) or fast
        marks = [m for n, m in (("novelty", "from new sources"), ("enumeration", "probing models (403/404)"),
                                ("expensive_model", "on the most expensive model")) if n in signals]
        if "spend" in signals or "rate" in signals:
            title = f"API key {key} spending {ratio:.1f}x its baseline" + (" " + ", ".join(marks) if marks else "")
        elif fast:
            title = f"API key {key} spent ${m_spend:.2f} in one minute (limit ${p.fast_path_usd_per_min:g}/min)"
        else:
            title = f"API key {key} " + (", ".join(marks) if marks else "behaving unusually")
        summary = (
            f"{key} ({tid}) spends ${observed:.2f}/h over {window} vs ${expected:.2f}/h usual at this hour "
            f"({ratio:.1f}x), projected ${observed * 24.0:.0f}/day"
        )
        if inc.new_ips:
            summary += f"; new IPs {', '.join(inc.new_ips)}"
        if off_hours:
            summary += "; outside business hours"
        return [
            Finding(
                detector=self.name,
                entity_type="api_key",
                entity_id=key,
                tenant_id=tid,
                ts=t,
                first_seen=inc.first_seen,
                score=score,
                title=title,
                evidence=evidence,
                risk_usd_per_hour=_r(risk, 2),
                summary=summary,
                signals=signals,
                api_key_id=key,
                sample_event_ids=list(inc.samples),
                attack=dict(_ATTACK) if stolen_marks else None,
                actions=actions,
            )
        ]

    def _during(self, key: str, event: UsageEvent, cost: float, novel: int) -> None:
        """Per-event bookkeeping of an open incident (samples, new sources, models)."""
        inc = self.state.open.get(key)
        if inc is None:
            return
        inc.spend += cost
        inc.events += 1
        inc.last_ts = event.ts  # type: ignore[assignment]
        if len(inc.samples) < _MAX_LISTED and (novel or len(inc.samples) < 2):
            inc.samples.append(event.event_id)
        if novel & 1 and event.source_ip is not None and event.source_ip not in inc.new_ips \
                and len(inc.new_ips) < _MAX_LISTED:
            inc.new_ips.append(event.source_ip)
        if novel & 2 and event.user_agent is not None and event.user_agent not in inc.new_user_agents \
                and len(inc.new_user_agents) < _MAX_LISTED:
            inc.new_user_agents.append(event.user_agent)
        models = inc.models
        m = event.model
        if m in models:
            models[m] += cost
        elif len(models) < 8:
            models[m] = cost

    # -- time ------------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Finding] | None:
        st = self.state
        out: list[Finding] | None = None
        if st.open:
            quiet = [k for k, inc in st.open.items()
                     if now - inc.last_hot >= self.params_for(inc.tenant).resolve_quiet_s]
            for key in quiet:
                inc = st.open.pop(key)
                ks = st.keys.get(key)
                if ks is not None:
                    _reset_after_incident(ks)
                if out is None:
                    out = []
                out.append(
                    Finding(
                        detector=self.name,
                        entity_type="api_key",
                        entity_id=key,
                        tenant_id=inc.tenant,
                        ts=now,
                        first_seen=inc.first_seen,
                        score=inc.reported,
                        title=f"API key {key} spend back to its baseline",
                        evidence={
                            "peak_score": inc.peak,
                            "peak_excess_usd_per_hour": _r(inc.peak_risk, 2),
                            "spend_during_incident_usd": _r(inc.spend, 2),
                            "events_during_incident": inc.events,
                            "duration_s": _r(inc.last_hot - inc.first_seen, 1),
                            "new_ips": list(inc.new_ips),
                            "new_user_agents": list(inc.new_user_agents),
                            "top_models": _top_models(inc.models),
                        },
                        status="resolved",
                        summary=f"no hot score for {self.params_for(inc.tenant).resolve_quiet_s:g}s",
                        api_key_id=key,
                        sample_event_ids=list(inc.samples),
                    )
                )
        ttl = self.params.idle_ttl_s
        _expire(st.keys, now, ttl, st.key_stats)
        _expire(st.tenants, now, ttl, st.tenant_stats)
        return out

    # -- snapshots ----------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        return _encoder.encode(self.state)

    def restore(self, data: bytes) -> None:
        self.state = _decoder.decode(data)
        self._app_known.clear()
        self._tenant_ver.clear()
        self._eval_memo.clear()

    # -- introspection ---------------------------------------------------------------------------------

    def is_warm(self, key: str) -> bool:
        """Whether ``key`` is judged against a baseline (its tenant is past warm-up)."""
        ks = self.state.keys.get(key)
        return ks is not None and ks.g15 != _INF

    def tracked_keys(self) -> int:
        return len(self.state.keys)

    def evicted_keys(self) -> int:
        return self.state.key_stats.evicted


def _reset_after_incident(ks: KeyState) -> None:
    """The incident is over: its spend was reported, its sources were never trusted; start the windows afresh."""
    ks.s15 = ks.s3h = ks.r15 = 0.0
    cold = ks.cold
    if cold is not None:
        cold.busy = 0
        cold.inc = 0
        cold.hot_t = None
        cold.pip = cold.papp = 0
        cold.new_ip = cold.new_ua = None
        cold.nr15 = cold.ns3h = cold.err = cold.m_spend = cold.pend_t = None
        cold.tried = 0


def _expire(items: dict[str, Any], now: float, ttl: float, stats: KeyspaceStats) -> None:
    """:func:`expire_idle`, skipped when its first key (the least recently moved) is too fresh for it to expire any."""
    for first in items.values():
        if first.moved <= now - ttl + MOVE_EVERY:
            expire_idle(items, now, ttl, stats)
        return


def _new_tenant(t: float) -> TenantState:
    return TenantState(moved=t, born=t)


def _top_models(models: dict[str, float]) -> list[list[Any]]:
    ranked = sorted(models.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    return [[m, _r(c, 2)] for m, c in ranked]
