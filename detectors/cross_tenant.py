"""cross_tenant: a principal reading data that belongs to another tenant.

Four signals, each exact counting over bounded per-key state (no model to
train, so the absolute ones need no warm-up):

* **foreign reads** (absolute): an event whose ``resource_tenant_id`` is not
  its ``tenant_id`` means the gateway saw the call read another tenant's
  retrieval index, memory or tool data. One event is enough to open an
  incident on the calling api key; it escalates (a new finding) when the
  number of victim tenants grows or the read count crosses 2, 4, 8 ...
* **victim fan-out**: the same key touching several victim tenants adds to the
  score (one confused integration reads one wrong tenant; enumeration reads many).
* **user fan-out**: a ``user_id`` seen under ``fanout_min_tenants`` or more
  distinct ``tenant_id`` values (through several keys) is one principal
  spanning tenants, even when each key alone looks normal.
* **shape leak**: every ``prompt_shape`` has an owner, the first tenant that
  used it. Once the owner has used it alone for ``private_min_age_s`` and
  ``private_min_events`` times it is *tenant-private*; the first other tenant
  that issues it is flagged (a private template is known outside its tenant).
  A shape used by two tenants is shared from then on and never flagged again.
* **probing**: within a ``probe_window_s`` window, a key issuing many *rare*
  shapes (used fewer than ``probe_rare_uses`` times anywhere) at a share far
  above its own baseline share (an EW mean over past windows) is probing
  templates. Judged only once the key is warm (``warm_windows`` windows).

Score: the sum of the signals' contributions, capped at 1 (see
:meth:`CrossTenant._score`): foreign reads 0.60 (+0.05 per doubling of the
count, up to +0.15), victim fan-out +0.10 per extra victim (up to +0.25), user
fan-out 0.50 (+0.10 per extra tenant), shape leak 0.50 (+0.05 per extra
shape), probing 0.30..0.45 by rare share. A single foreign read is therefore
``medium`` and many reads over several victims ``critical``.

Events of a tenant marked ``cross_tenant_allowed`` (a support or internal
tenant) are ignored entirely, and so are reads *of* such a tenant's resources
when ``exempt_allowed_resource`` (a shared internal knowledge base).

Global view. "Shape -> tenants seen" must be global across replicas, but a
detector does no I/O, so the detector only keeps its local, bounded view and
exposes :meth:`CrossTenant.shared_delta` (what to publish, plus the shapes it
wants the global view of) and :meth:`CrossTenant.merge_shared` (fold in the
view); :mod:`sentinel.state.shapes` moves them through Redis. A tenant is
published for a shape once its private use is established, or at once when
it is not the shape's first tenant, so a global singleton means "private to
that tenant". Merging a singleton that names another tenant than a local,
still young owner hands the shape to that tenant: the local tenant's next use
is then the leak.

ATT&CK mapping (MITRE ATLAS): foreign reads, fan-out and shape leaks map to
``AML.T0057`` "LLM Data Leakage" (an LLM application made to disclose
another user's or tenant's private data through retrieval/memory/tools: the
exact case here). Probing alone maps to ``AML.T0040`` "AI Model Inference API
Access" (using the inference API to discover what the application exposes).
``AML.T0024`` (exfiltration via the inference API) is about extracting the
model itself and ``AML.T0025`` (exfiltration via cyber means) about moving
data out through other channels, so neither is used.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec
from pydantic import Field

from detectors.base import Detector, DetectorContext, DetectorParams, Finding
from detectors.keyspace import MOVE_EVERY, KeyspaceStats, expire_idle, touch
from detectors.records import new_object, record_decoder, record_encoder
from detectors.registry import register
from sentinel.events import UsageEvent

_LEAK_ATTACK = {"framework": "MITRE ATLAS", "id": "AML.T0057", "name": "LLM Data Leakage"}
_PROBE_ATTACK = {"framework": "MITRE ATLAS", "id": "AML.T0040", "name": "AI Model Inference API Access"}

_MAX_VICTIMS = 16  # victims / tenants listed per principal
_MAX_OTHERS = 4  # other tenants remembered per shape (2 already means "shared")
_MAX_LEAKS = 8
_MAX_SAMPLES = 5
_MAX_USERS = 4
_MIN_PROBE_WINDOW_EVENTS = 5  # a window with fewer events says nothing about the key's rare share
_BASE_ALPHA = 0.2  # EW weight of a window's rare share in the key's baseline

# ShapeState.pub: publication state of the owner tenant.
_PUB_NO, _PUB_DUE, _PUB_DONE = 0, 1, 2


class CrossTenantParams(DetectorParams):
    private_min_age_s: float = Field(
        86400.0, gt=0, description="a shape used by one tenant alone for this long is tenant-private")
    private_min_events: int = Field(
        30, ge=1, description="... and at least this many times")
    fanout_min_tenants: int = Field(
        3, ge=2, description="a user_id seen under this many distinct tenants is a fanning-out principal")
    probe_window_s: float = Field(600.0, gt=0, description="window in which a key's rare-shape uses are counted")
    probe_rare_uses: int = Field(3, ge=1, description="a shape used fewer times than this (anywhere) is rare")
    probe_min_rare: int = Field(20, ge=1, description="rare-shape uses in one window needed to call it probing")
    probe_min_share: float = Field(
        0.5, gt=0, le=1, description="share of the window's events with a rare shape needed to call it probing")
    probe_ratio: float = Field(
        3.0, ge=1, description="the rare share must also be this many times the key's baseline rare share")
    warm_windows: int = Field(
        6, ge=1, description="probe windows with traffic before a key's rare-shape baseline is trusted")
    exempt_allowed_resource: bool = Field(
        True, description="reading the resources of a cross_tenant_allowed tenant (shared internal data) is fine")
    resolve_after_s: float = Field(
        3600.0, gt=0, description="an incident with no new evidence for this long is resolved")
    min_score: float = Field(0.3, ge=0, le=1, description="findings scoring below this are not emitted")
    score_step: float = Field(0.05, gt=0, le=1, description="a score rise this large emits an escalation finding")
    page_score: float = Field(0.75, ge=0, le=1, description="score from which the finding asks to page")
    revoke_score: float = Field(
        0.9, ge=0, le=1, description="score from which (with two or more signals) it asks to revoke the key")


class Incident(msgspec.Struct, array_like=True, gc=False):
    """One open incident of a principal (api key or user)."""

    first_seen: float
    last_t: float = 0.0
    reads: int = 0
    first_read: float = 0.0
    last_read: float = 0.0
    victims: list[str] = msgspec.field(default_factory=list)
    victim_reads: list[int] = msgspec.field(default_factory=list)
    leaks: list[str] = msgspec.field(default_factory=list)
    leak_owners: list[str] = msgspec.field(default_factory=list)
    probe_rare: int = 0
    probe_share: float = 0.0
    probe_base: float = 0.0
    users: list[str] = msgspec.field(default_factory=list)
    samples: list[str] = msgspec.field(default_factory=list)
    score: float = 0.0
    e_victims: int = 0
    e_reads: int = 0
    e_leaks: int = 0


class KeyRecord(msgspec.Struct, array_like=True, gc=False):
    """How a :class:`KeyState` is stored in a snapshot: its fields, in this order, as one array."""

    moved: float
    home: str = ""
    win_end: float = 0.0
    win_n: int = 0
    win_rare: int = 0
    base_rare: float = 0.0
    n_win: int = 0
    inc: Incident | None = None


class UserRecord(msgspec.Struct, array_like=True, gc=False):
    """How a :class:`UserState` is stored in a snapshot."""

    moved: float
    home: str = ""
    others: tuple[str, ...] = ()
    inc: Incident | None = None


class ShapeRecord(msgspec.Struct, array_like=True, gc=False):
    """How a :class:`ShapeState` is stored in a snapshot."""

    moved: float
    owner: str = ""
    since: float = 0.0
    n: int = 0
    others: tuple[str, ...] = ()
    pub: int = _PUB_NO
    sent: int = 0


# Per-key state as plain __slots__ classes rather than msgspec Structs: an event writes a few of
# their fields (a window count, a use count, the moves), and CPython only specializes attribute
# stores for types with the default __setattr__, which a Struct overrides (a Struct store costs
# ~25 ns more). Snapshots encode each as its *Record (same fields, same order: the same bytes).

# Tenant ids kept in per-key state are interned: the few tenants' strings are then shared by every
# key (less memory) and stay in cache for the per-event owner/home comparisons.
_intern = sys.intern


class KeyState:
    """Per api key: its home tenant and rare-shape windows (for probing); fields as :class:`KeyRecord`."""

    __slots__ = ("base_rare", "home", "inc", "moved", "n_win", "win_end", "win_n", "win_rare")
    moved: float
    home: str
    win_end: float
    win_n: int
    win_rare: int
    base_rare: float
    n_win: int
    inc: Incident | None


class UserState:
    """Per user_id: the tenants it was seen under; fields as :class:`UserRecord`."""

    __slots__ = ("home", "inc", "moved", "others")
    moved: float
    home: str
    others: tuple[str, ...]
    inc: Incident | None


class ShapeState:
    """Per prompt shape: its owner tenant, since when, how often used, other tenants seen; fields as
    :class:`ShapeRecord`."""

    __slots__ = ("moved", "n", "others", "owner", "pub", "sent", "since")
    moved: float
    owner: str
    since: float
    n: int
    others: tuple[str, ...]
    pub: int
    sent: int


class CrossTenantState(msgspec.Struct):
    # Per-key states are plain objects (see KeyState): the detector snapshots and restores with hooks.
    keys: dict[str, KeyState] = msgspec.field(default_factory=dict)
    users: dict[str, UserState] = msgspec.field(default_factory=dict)
    shapes: dict[str, ShapeState] = msgspec.field(default_factory=dict)
    # shapes to publish to / query from the global view at the next shared_delta()
    outbox: dict[str, int] = msgspec.field(default_factory=dict)
    # principals with an open incident: "k:<api_key_id>" / "u:<user_id>"
    open: dict[str, int] = msgspec.field(default_factory=dict)
    key_stats: KeyspaceStats = msgspec.field(default_factory=KeyspaceStats)
    user_stats: KeyspaceStats = msgspec.field(default_factory=KeyspaceStats)
    shape_stats: KeyspaceStats = msgspec.field(default_factory=KeyspaceStats)
    outbox_dropped: int = 0
    # the latest event time: CrossTenant keeps it in ``_now`` (a plain attribute, written per event)
    # and copies it here for a snapshot
    now: float = 0.0


_encoder = record_encoder((KeyState, KeyRecord), (UserState, UserRecord), (ShapeState, ShapeRecord))
_decoder = record_decoder(CrossTenantState, (KeyState, KeyRecord), (UserState, UserRecord),
                          (ShapeState, ShapeRecord))


class _Hot(msgspec.Struct, frozen=True, gc=False):
    """The parameters the hot path reads, as plain struct fields."""

    window_s: float
    rare_uses: int
    min_rare: int
    min_share: float
    ratio: float
    warm_windows: int
    private_min_events: int
    private_min_age_s: float
    fanout_min_tenants: int
    exempt_allowed_resource: bool

    @classmethod
    def of(cls, p: CrossTenantParams) -> _Hot:
        return cls(p.probe_window_s, p.probe_rare_uses, p.probe_min_rare, p.probe_min_share, p.probe_ratio,
                   p.warm_windows, p.private_min_events, p.private_min_age_s, p.fanout_min_tenants,
                   p.exempt_allowed_resource)


def _new_key(t: float) -> KeyState:
    k: KeyState = new_object(KeyState)
    k.moved = t
    k.home = ""
    k.win_end = k.base_rare = 0.0
    k.win_n = k.win_rare = k.n_win = 0
    k.inc = None
    return k


def _new_user(t: float) -> UserState:
    u: UserState = new_object(UserState)
    u.moved = t
    u.home = ""
    u.others = ()
    u.inc = None
    return u


def _new_shape(t: float) -> ShapeState:
    sh: ShapeState = new_object(ShapeState)
    sh.moved = t
    sh.owner = ""
    sh.since = 0.0
    sh.n = sh.pub = sh.sent = 0
    sh.others = ()
    return sh


@register
class CrossTenant(Detector[CrossTenantParams, CrossTenantState]):
    """A principal reads another tenant's data, spans tenants, or uses a tenant-private prompt shape.

    Absolute evidence (a foreign ``resource_tenant_id``) fires at once; the
    shape and probing signals need history. See the module docstring.
    """

    name: ClassVar[str] = "cross_tenant"
    Params: ClassVar[type[DetectorParams]] = CrossTenantParams
    State: ClassVar[type[msgspec.Struct]] = CrossTenantState
    description: ClassVar[str] = "cross-tenant reads, principal fan-out, tenant-private prompt shapes elsewhere"

    def __init__(self, params: CrossTenantParams, context: DetectorContext,
                 tenant_params: Mapping[str, CrossTenantParams] | None = None) -> None:
        super().__init__(params, context, tenant_params)
        # Derived once from the read-only rules: tenants whose cross-tenant traffic is expected.
        self._allowed = frozenset(tid for tid, info in context.tenants.items() if info.cross_tenant_allowed)
        m = params.max_keys
        self._cap_keys = max(1, m // 4)
        self._cap_users = max(1, m // 4)
        self._cap_shapes = max(1, m - 2 * (m // 4))
        # The parameters read per event, copied into a struct (pydantic attribute reads are slow),
        # and by tenant: a tenant's own parameters, or None for a cross_tenant_allowed tenant (its
        # events are ignored), so that one lookup answers both.
        self._hot = _Hot.of(params)
        self._hot_tenant: dict[str, _Hot | None] = {tid: _Hot.of(tp) for tid, tp in self.tenant_params.items()}
        for tid in self._allowed:
            self._hot_tenant[tid] = None
        self._now = 0.0  # the latest event time (CrossTenantState.now at a snapshot)

    # -- hot path -----------------------------------------------------------------------------

    def update(self, event: UsageEvent) -> list[Finding] | None:
        tenant = event.tenant_id
        h = self._hot_tenant.get(tenant, self._hot)
        if h is None:
            return None
        t: float = event.ts  # type: ignore[assignment]
        if t > self._now:
            self._now = t
        st = self.state

        # Each keyspace as detectors.keyspace.touch does it, with the move to the end of the touch
        # order inline (most keys, shapes and users of a busy stream are due for one on most events).
        key_id = event.api_key_id
        k = st.keys.get(key_id)
        if k is None:
            k = touch(st.keys, key_id, t, _new_key, self._cap_keys, st.key_stats)
            if not k.home:
                k.home = _intern(tenant)
        elif t - k.moved > MOVE_EVERY:
            keys = st.keys
            del keys[key_id]
            keys[key_id] = k
            k.moved = t
            if not k.home:
                k.home = _intern(tenant)

        # Rare-shape windows of the key (probing): the event counts in the window it falls in.
        if t >= k.win_end:
            if k.win_n >= _MIN_PROBE_WINDOW_EVENTS:
                share = k.win_rare / k.win_n
                k.base_rare = share if k.n_win == 0 else k.base_rare + _BASE_ALPHA * (share - k.base_rare)
                k.n_win += 1
            k.win_end = (t // h.window_s + 1.0) * h.window_s
            k.win_n = 0
            k.win_rare = 0
        k.win_n += 1

        # Shape ownership, leak and rarity.
        leak_owner: str | None = None
        probing = False
        shape = event.prompt_shape
        if shape is not None:
            sh = st.shapes.get(shape)
            if sh is None or t - sh.moved > MOVE_EVERY:
                shapes = st.shapes
                if sh is None:
                    sh = touch(shapes, shape, t, _new_shape, self._cap_shapes, st.shape_stats)
                else:
                    del shapes[shape]
                    shapes[shape] = sh
                    sh.moved = t
                if not sh.owner:
                    sh.owner = _intern(tenant)
                    sh.since = t
                    self._queue(shape)
            n = sh.n
            sh.n = n1 = n + 1
            if sh.owner != tenant:
                others = sh.others
                if tenant not in others:
                    if not others and (sh.pub != _PUB_NO or (
                            n >= h.private_min_events and t - sh.since >= h.private_min_age_s)):
                        leak_owner = sh.owner
                    if len(others) < _MAX_OTHERS:
                        sh.others = (*others, _intern(tenant))
                        self._queue(shape)
            elif sh.pub == _PUB_NO and n1 >= h.private_min_events and t - sh.since >= h.private_min_age_s \
                    and not sh.others:
                sh.pub = _PUB_DUE
                self._queue(shape)
            if n < h.rare_uses:
                win_rare = k.win_rare + 1
                k.win_rare = win_rare
                if win_rare >= h.min_rare and k.n_win >= h.warm_windows:
                    share = win_rare / k.win_n
                    probing = share >= h.min_share and share >= h.ratio * k.base_rare

        out: list[Finding] | None = None
        res = event.resource_tenant_id
        if res is not None and (res == tenant or (h.exempt_allowed_resource and res in self._allowed)):
            res = None  # not foreign
        if res is not None or leak_owner is not None or probing:
            f = self._key_evidence(event, k, self.params_for(tenant), t, res, shape, leak_owner, probing)
            if f is not None:
                out = [f]

        uid = event.user_id
        if uid is not None:
            u = st.users.get(uid)
            if u is None or t - u.moved > MOVE_EVERY:
                users = st.users
                if u is None:
                    u = touch(users, uid, t, _new_user, self._cap_users, st.user_stats)
                else:
                    del users[uid]
                    users[uid] = u
                    u.moved = t
                if not u.home:
                    u.home = _intern(tenant)
            if u.home != tenant and tenant not in u.others and len(u.others) < _MAX_VICTIMS:
                u.others = (*u.others, _intern(tenant))
                if 1 + len(u.others) >= h.fanout_min_tenants:
                    f = self._user_evidence(event, uid, u, self.params_for(tenant), t)
                    if f is not None:
                        if out is None:
                            out = [f]
                        else:
                            out.append(f)
        return out

    def _queue(self, shape: str) -> None:
        outbox = self.state.outbox
        if shape in outbox:
            return
        if len(outbox) >= self._cap_shapes:
            self.state.outbox_dropped += 1
            return
        outbox[shape] = 1

    # -- incidents ----------------------------------------------------------------------------

    def _key_evidence(self, ev: UsageEvent, k: KeyState, p: CrossTenantParams, t: float, victim: str | None,
                      shape: str | None, leak_owner: str | None, probing: bool) -> Finding | None:
        inc = k.inc
        if inc is None:
            inc = k.inc = Incident(first_seen=t)
            self.state.open["k:" + ev.api_key_id] = 1
        inc.last_t = max(inc.last_t, t)
        if victim is not None:
            if inc.reads == 0:
                inc.first_read = t
            inc.reads += 1
            inc.last_read = max(inc.last_read, t)
            if victim in inc.victims:
                inc.victim_reads[inc.victims.index(victim)] += 1
            elif len(inc.victims) < _MAX_VICTIMS:
                inc.victims.append(victim)
                inc.victim_reads.append(1)
        if leak_owner is not None and shape is not None and len(inc.leaks) < _MAX_LEAKS:
            inc.leaks.append(shape)
            inc.leak_owners.append(leak_owner)
        if probing:
            share = k.win_rare / k.win_n
            if k.win_rare > inc.probe_rare:
                inc.probe_rare = k.win_rare
                inc.probe_share = share
                inc.probe_base = k.base_rare
        uid = ev.user_id
        if uid is not None and uid not in inc.users and len(inc.users) < _MAX_USERS:
            inc.users.append(uid)
        if len(inc.samples) < _MAX_SAMPLES:
            inc.samples.append(ev.event_id)

        score, signals = self._score(inc, p, user_tenants=0)
        escalated = (
            inc.score == 0.0
            or len(inc.victims) > inc.e_victims
            or len(inc.leaks) > inc.e_leaks
            or (inc.reads >= 2 * inc.e_reads and inc.reads > 1)
            or score >= inc.score + p.score_step
        )
        if not escalated or score < p.min_score:
            return None
        inc.score = score
        inc.e_victims = len(inc.victims)
        inc.e_leaks = len(inc.leaks)
        inc.e_reads = max(inc.reads, 1)
        return self._key_finding(ev.api_key_id, k, inc, t, score, signals, p, "firing")

    def _user_evidence(self, ev: UsageEvent, uid: str, u: UserState, p: CrossTenantParams, t: float) -> Finding | None:
        inc = u.inc
        if inc is None:
            inc = u.inc = Incident(first_seen=t)
            self.state.open["u:" + uid] = 1
        inc.last_t = max(inc.last_t, t)
        if len(inc.samples) < _MAX_SAMPLES:
            inc.samples.append(ev.event_id)
        score, signals = self._score(inc, p, user_tenants=1 + len(u.others))
        if inc.score and len(u.others) <= inc.e_victims and score < inc.score + p.score_step:
            return None
        if score < p.min_score:
            return None
        inc.score = score
        inc.e_victims = len(u.others)
        return self._user_finding(uid, u, inc, t, score, signals, p, "firing", ev.api_key_id)

    @staticmethod
    def _score(inc: Incident, p: CrossTenantParams, user_tenants: int) -> tuple[float, dict[str, float]]:
        signals: dict[str, float] = {}
        if inc.reads:
            signals["foreign_reads"] = 0.6 + min(0.15, 0.05 * math.log2(inc.reads))
            if len(inc.victims) > 1:
                signals["victim_fanout"] = min(0.25, 0.1 * (len(inc.victims) - 1))
        if user_tenants >= p.fanout_min_tenants:
            signals["user_fanout"] = min(0.8, 0.5 + 0.1 * (user_tenants - p.fanout_min_tenants))
        if inc.leaks:
            signals["shape_leak"] = min(0.65, 0.5 + 0.05 * (len(inc.leaks) - 1))
        if inc.probe_rare:
            excess = (inc.probe_share - p.probe_min_share) / max(1e-9, 1.0 - p.probe_min_share)
            signals["probing"] = 0.3 + 0.15 * min(1.0, max(0.0, excess))
        for name, v in signals.items():
            signals[name] = round(v, 4)
        return min(1.0, round(sum(signals.values()), 4)), signals

    def _actions(self, score: float, signals: dict[str, float], p: CrossTenantParams) -> list[Any]:
        actions: list[Any] = ["notify"]
        if score >= p.page_score:
            actions.append("page")
        if score >= p.revoke_score and len(signals) >= 2:
            actions.append("revoke")
        return actions

    def _key_finding(self, key_id: str, k: KeyState, inc: Incident, t: float, score: float,
                     signals: dict[str, float], p: CrossTenantParams, status: Any) -> Finding:
        victims = inc.victims
        parts = []
        if inc.reads:
            parts.append(f"read data of {len(victims)} other tenant(s) ({', '.join(victims[:4])}) "
                         f"in {inc.reads} call(s)")
        if inc.leaks:
            parts.append(f"used {len(inc.leaks)} prompt shape(s) private to {', '.join(sorted(set(inc.leak_owners)))}")
        if inc.probe_rare:
            parts.append(f"issued {inc.probe_rare} rare prompt shapes in {p.probe_window_s:.0f} s "
                         f"({inc.probe_share:.0%} of its calls, baseline {inc.probe_base:.0%})")
        title = f"api key {key_id} of {k.home} " + "; ".join(parts[:1]) if parts else f"api key {key_id}"
        evidence: dict[str, Any] = {
            "home_tenant": k.home,
            "victim_tenants": list(victims),
            "reads_by_victim": dict(zip(victims, inc.victim_reads, strict=True)),
            "foreign_reads": inc.reads,
            "first_event": inc.first_read or inc.first_seen,
            "last_event": inc.last_t,
            "leaked_shapes": [{"shape": s, "owner_tenant": o} for s, o in zip(inc.leaks, inc.leak_owners, strict=True)],
            "rare_shapes_in_window": inc.probe_rare,
            "rare_share": round(inc.probe_share, 4),
            "baseline_rare_share": round(inc.probe_base, 4),
            "users": list(inc.users),
        }
        only_probe = inc.probe_rare and not inc.reads and not inc.leaks
        return Finding(
            detector=self.name, entity_type="api_key", entity_id=key_id, tenant_id=k.home, ts=t,
            first_seen=inc.first_seen, score=score, title=title, evidence=evidence, status=status,
            summary="; ".join(parts), signals=signals, api_key_id=key_id, sample_event_ids=list(inc.samples),
            attack=dict(_PROBE_ATTACK if only_probe else _LEAK_ATTACK),
            actions=self._actions(score, signals, p) if status == "firing" else [],
        )

    def _user_finding(self, uid: str, u: UserState, inc: Incident, t: float, score: float,
                      signals: dict[str, float], p: CrossTenantParams, status: Any, key_id: str | None) -> Finding:
        tenants = [u.home, *u.others]
        title = f"user {uid} of {u.home} seen under {len(tenants)} tenants"
        evidence: dict[str, Any] = {
            "home_tenant": u.home,
            "tenants": tenants,
            "other_tenants": list(u.others),
            "first_event": inc.first_seen,
            "last_event": inc.last_t,
        }
        return Finding(
            detector=self.name, entity_type="principal", entity_id="user:" + uid, tenant_id=u.home, ts=t,
            first_seen=inc.first_seen, score=score, title=title, evidence=evidence, status=status,
            summary=f"{title}: {', '.join(tenants)}", signals=signals, api_key_id=key_id,
            sample_event_ids=list(inc.samples), attack=dict(_LEAK_ATTACK),
            actions=self._actions(score, signals, p) if status == "firing" else [],
        )

    # -- time -----------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Finding] | None:
        st = self.state
        out: list[Finding] | None = None
        if st.open:
            done: list[str] = []
            for ref in st.open:
                kind, ident = ref[0], ref[2:]
                if kind == "k":
                    k = st.keys.get(ident)
                    inc = k.inc if k is not None else None
                    if k is None or inc is None:
                        done.append(ref)
                        continue
                    p = self.params_for(k.home)
                    if now - inc.last_t >= p.resolve_after_s:
                        k.inc = None
                        done.append(ref)
                        if inc.score:  # emitted while firing: say it ended
                            score, signals = self._score(inc, p, 0)
                            out = out or []
                            out.append(self._key_finding(ident, k, inc, now, score, signals, p, "resolved"))
                else:
                    u = st.users.get(ident)
                    uinc = u.inc if u is not None else None
                    if u is None or uinc is None:
                        done.append(ref)
                        continue
                    p = self.params_for(u.home)
                    if now - uinc.last_t >= p.resolve_after_s:
                        u.inc = None
                        done.append(ref)
                        if uinc.score:
                            score, signals = self._score(uinc, p, 1 + len(u.others))
                            out = out or []
                            out.append(self._user_finding(ident, u, uinc, now, score, signals, p, "resolved", None))
            for ref in done:
                del st.open[ref]
        # expire_idle stops at the first entry moved after this (touch order): skip the calls that would.
        ttl = self.params.idle_ttl_s
        fresh = now - ttl + MOVE_EVERY
        if st.keys and next(iter(st.keys.values())).moved <= fresh:
            expire_idle(st.keys, now, ttl, st.key_stats)
        if st.users and next(iter(st.users.values())).moved <= fresh:
            expire_idle(st.users, now, ttl, st.user_stats)
        if st.shapes and next(iter(st.shapes.values())).moved <= fresh:
            for shape in expire_idle(st.shapes, now, ttl, st.shape_stats):
                st.outbox.pop(shape, None)
        return out

    # -- global shape view (called by the pipeline at checkpoints; see sentinel.state.shapes) --

    def shared_delta(self) -> dict[str, list[str]]:
        """Shape -> tenants to publish since the last call.

        The owner is included once its private use is established, or together
        with the first other tenant seen using the shape (then it is shared);
        every other tenant as soon as it is seen. A shape with an empty list asks for the
        global view of that shape (the shape is new here).
        """
        st = self.state
        delta: dict[str, list[str]] = {}
        for shape in st.outbox:
            sh = st.shapes.get(shape)
            if sh is None:
                continue
            tenants: list[str] = []
            if sh.pub == _PUB_DUE:
                tenants.append(sh.owner)
                sh.pub = _PUB_DONE
            if sh.sent < len(sh.others):
                if sh.pub != _PUB_DONE:
                    # A shape used by another tenant is shared: publish its first tenant with it, or
                    # the global view would hold one tenant and read as "private" to a replica.
                    tenants.append(sh.owner)
                    sh.pub = _PUB_DONE
                tenants.extend(sh.others[sh.sent:])
                sh.sent = len(sh.others)
            delta[shape] = tenants
        st.outbox.clear()
        return delta

    def merge_shared(self, view: dict[str, list[str]]) -> None:
        """Fold in the global view (shape -> tenants other replicas published)."""
        st = self.state
        p = self.params
        now = self._now
        for shape in sorted(view):
            tenants = sorted(set(view[shape]))
            if not tenants:
                continue
            sh = st.shapes.get(shape)
            if sh is None:
                sh = touch(st.shapes, shape, now, _new_shape, self._cap_shapes, st.shape_stats)
                sh.owner = tenants[0]
                sh.pub = _PUB_DONE
                sh.n = max(p.private_min_events, p.probe_rare_uses)
                sh.others = tuple(tenants[1:1 + _MAX_OTHERS])
                sh.sent = len(sh.others)
                continue
            new = [g for g in tenants if g != sh.owner and g not in sh.others]
            if not new:
                continue
            young = sh.pub == _PUB_NO and not (
                sh.n >= p.private_min_events and now - sh.since >= p.private_min_age_s)
            if len(tenants) == 1 and young and not sh.others:
                # The shape is established as private to another tenant elsewhere; our local
                # use is not: the local tenant's next use is a use of someone else's shape.
                sh.owner = tenants[0]
                sh.since = 0.0
                sh.pub = _PUB_DONE
                sh.n = max(sh.n, p.private_min_events, p.probe_rare_uses)
                continue
            room = _MAX_OTHERS - len(sh.others)
            if room <= 0:
                continue
            new = new[:room]
            sh.others = (*sh.others[:sh.sent], *new, *sh.others[sh.sent:])
            sh.sent += len(new)

    # -- contract -------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        self.state.now = self._now
        return _encoder.encode(self.state)

    def restore(self, data: bytes) -> None:
        self.state = _decoder.decode(data)
        self._now = self.state.now

    def is_warm(self, key: str) -> bool:
        k = self.state.keys.get(key)
        return k is not None and k.n_win >= self.params_for(k.home).warm_windows

    def tracked_keys(self) -> int:
        st = self.state
        return len(st.keys) + len(st.users) + len(st.shapes)

    def evicted_keys(self) -> int:
        st = self.state
        return st.key_stats.evicted + st.user_stats.evicted + st.shape_stats.evicted
