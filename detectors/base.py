"""The detector contract: what every detector is, and what it promises.

A detector *scores*; turning findings into alerts (severity, dedup, routing)
is the alert manager's job. A detector is a pure function of the events it has
seen plus its rules: no I/O, no wall clock, no Kafka, no Redis. That is what
makes a replay equal a live run, and a snapshot portable between replicas.

Life of a detector (see ``tests/contract`` for the suite every registered
detector passes):

* ``__init__(params, context)`` stores its hyperparameters and the read-only
  rules context (calendar, prices, tenants, budgets). No work, no state.
* ``update(event)`` is called once per accepted event, in event-time order
  (the pipeline reorders within the allowed lateness; later events still come
  and must not break anything). It returns ``None`` or a list of
  :class:`Finding`. It is the hot path: keep it plain, allocation-light.
* ``tick(now)`` is called when event time crosses each ``tick`` boundary
  (every 60 s of event time by default), also when no event came for a key.
  Detectors expire idle keys and resolve quiet incidents here.
* ``snapshot()``/``restore(data)`` round-trip the whole state through bytes
  (msgpack of the detector's ``State`` struct). Restoring then continuing must
  give exactly the findings an uninterrupted run gives.
* ``is_warm(key)`` says whether a key has enough history to be judged; a
  detector stays silent during warm-up unless the evidence is absolute (a
  cross-tenant read, a budget actually exhausted). Warm-up is never hidden
  in a score of 0.

Memory is bounded per detector by ``max_keys`` (least-recently-seen keys are
evicted, counted in ``evicted``) and ``idle_ttl_s`` (idle keys expire): see
:class:`detectors.keyspace.Keyspace`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from sentinel.calendar import TenantCalendar
from sentinel.events import UsageEvent
from sentinel.prices import PriceTable

EntityType = Literal["api_key", "session", "tenant", "principal", "prefix", "budget", "feature", "model"]
Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")


class Finding(msgspec.Struct, kw_only=True):
    """What a detector reports about one entity at one event time.

    ``first_seen`` is the detector's estimate of when the anomaly began; with
    detector, rule and entity it makes the deterministic ``alert_id``, so a
    detector must report the same ``first_seen`` for every finding of one
    incident. ``signals`` holds each signal's contribution to ``score``, so an
    analyst can see why it fired; ``evidence`` holds the numbers behind it
    (observed, baseline, ratio, window, projected cost ...).
    """

    detector: str
    entity_type: EntityType
    entity_id: str
    tenant_id: str
    ts: float
    first_seen: float
    score: float
    title: str
    evidence: dict[str, Any]
    status: Literal["firing", "resolved"] = "firing"
    risk_usd_per_hour: float = 0.0
    summary: str = ""
    signals: dict[str, float] = msgspec.field(default_factory=dict)
    api_key_id: str | None = None
    session_id: str | None = None
    sample_event_ids: list[str] = msgspec.field(default_factory=list)
    attack: dict[str, str] | None = None
    actions: list[Literal["notify", "page", "revoke"]] = msgspec.field(default_factory=list)
    severity: Severity | None = None


class DetectorParams(BaseModel):
    """Hyperparameters shared by every detector; subclasses add their own.

    Values come from ``rules/detectors/<name>.yaml`` (validated at load time,
    unknown keys rejected) and may be overridden per tenant there.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_keys: int = Field(200_000, ge=1, description="cap on tracked keys; least recently seen are evicted")
    idle_ttl_s: float = Field(7 * 86400, gt=0, description="a key with no event for this long is forgotten")


@dataclass(frozen=True)
class TenantInfo:
    """What detectors need to know about a tenant from ``rules/tenants.yaml``."""

    cross_tenant_allowed: bool = False


@dataclass(frozen=True)
class BudgetInfo:
    """One budget from ``rules/budgets.yaml``."""

    name: str
    scope: Literal["tenant", "api_key"]
    id: str
    period: Literal["day", "week", "month"]
    limit_usd: float | None = None
    limit_tokens: int | None = None


@dataclass(frozen=True)
class DetectorContext:
    """Read-only rules every detector may consult. Pure data: no I/O."""

    calendar: TenantCalendar
    prices: PriceTable
    tenants: Mapping[str, TenantInfo] = field(default_factory=dict)
    budgets: tuple[BudgetInfo, ...] = ()

    def tenant(self, tenant_id: str) -> TenantInfo:
        return self.tenants.get(tenant_id, _DEFAULT_TENANT)


_DEFAULT_TENANT = TenantInfo()

P = TypeVar("P", bound=DetectorParams)
S = TypeVar("S", bound=msgspec.Struct)


class Detector(ABC, Generic[P, S]):
    """Base of every detector. Subclasses set the class attributes and implement ``update``.

    ``State`` is a msgspec Struct holding *all* mutable state, kept in
    ``self.state``; the base class snapshots and restores it.
    """

    name: ClassVar[str]
    Params: ClassVar[type[DetectorParams]]
    State: ClassVar[type[msgspec.Struct]]
    description: ClassVar[str] = ""
    #: True when the detector emits a ``resolved`` finding when an incident ends (all
    #: built-ins do); the incident book then does not resolve it just for being quiet.
    resolves_incidents: ClassVar[bool] = True
    #: Version of the snapshot encoding. Bump it when a change to ``State`` (or to how
    #: ``snapshot`` packs it) makes older snapshots unreadable or mean something else: a
    #: checkpoint written with another version is not restored, the detector starts cold
    #: and the pipeline reports it (see ``Pipeline.restore``), instead of failing the whole
    #: partition's restore after an upgrade.
    state_version: ClassVar[int] = 1

    def __init__(self, params: P, context: DetectorContext, tenant_params: Mapping[str, P] | None = None) -> None:
        self.params = params
        self.context = context
        self.tenant_params: Mapping[str, P] = tenant_params or {}
        self.state: S = self.State()  # type: ignore[assignment]

    def params_for(self, tenant_id: str) -> P:
        """The tenant's override of the parameters, or the detector's own."""
        tp = self.tenant_params
        if tp:
            return tp.get(tenant_id, self.params)
        return self.params

    @abstractmethod
    def update(self, event: UsageEvent) -> list[Finding] | None:
        """Learn from one event; return findings, or None when there is nothing to say."""

    def tick(self, now: float) -> list[Finding] | None:
        """Event time has reached ``now``: expire idle keys, resolve quiet incidents."""
        return None

    @abstractmethod
    def is_warm(self, key: str) -> bool:
        """Whether ``key`` has enough history to be judged against its own baseline."""

    @abstractmethod
    def tracked_keys(self) -> int:
        """How many keys (sessions, api keys, tenants ...) the detector holds state for."""

    def evicted_keys(self) -> int:
        """How many keys were evicted by the ``max_keys`` cap so far (not idle expiry)."""
        return 0

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode(self.state)

    def restore(self, data: bytes) -> None:
        self.state = msgspec.msgpack.decode(data, type=self.State)  # type: ignore[assignment]


def describe(detector: type[Detector[Any, Any]]) -> str:
    """First paragraph of a detector's docstring, for ``sentinel detectors``."""
    doc = (detector.__doc__ or "").strip()
    return doc.split("\n\n", 1)[0].replace("\n", " ")
