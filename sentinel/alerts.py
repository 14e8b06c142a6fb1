"""The alert: the scored, explainable output that sinks deliver.

Implements ``shared/contracts/alert.v1.schema.json``. An incident is one
``alert_id`` whose versions (1, 2, ...) update score, severity and evidence;
``status: resolved`` closes it. ``alert_id`` is deterministic -- a hash of
detector, rule, entity and incident start -- so the same events and rules give
the same ids live or replayed, and a second replica or a restart recognises an
alert it has already notified.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from detectors.base import EntityType, Severity


class Entity(msgspec.Struct, frozen=True):
    type: EntityType
    id: str


class Alert(msgspec.Struct, kw_only=True, omit_defaults=False):
    """One version of one incident (field meanings: see the JSON Schema)."""

    alert_id: str
    version: int
    status: Literal["firing", "resolved"]
    detector: str
    rule: str
    severity: Severity
    score: float
    entity: Entity
    tenant_id: str
    detected_at: str
    title: str
    evidence: dict[str, Any]
    first_seen: str | None = None
    summary: str = ""
    api_key_id: str | None = None
    session_id: str | None = None
    sample_event_ids: list[str] = msgspec.field(default_factory=list)
    actions: list[Literal["notify", "page", "revoke"]] = msgspec.field(default_factory=list)
    attack: dict[str, str] | None = None
    signals: dict[str, float] = msgspec.field(default_factory=dict)
    risk_usd_per_hour: float = 0.0


def rfc3339(t: float) -> str:
    """Epoch seconds to RFC 3339 UTC with milliseconds: ``2026-11-02T08:00:00.000Z``."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_alert_id(detector: str, rule: str, entity_type: str, entity_id: str, incident_start: float) -> str:
    """Deterministic id of an incident.

    >>> a = make_alert_id("spend_spike", "spend_spike", "api_key", "key_1", 1793606400.0)
    >>> a == make_alert_id("spend_spike", "spend_spike", "api_key", "key_1", 1793606400.0), a[:3], len(a)
    (True, 'al_', 27)
    """
    raw = f"{detector}\x1f{rule}\x1f{entity_type}\x1f{entity_id}\x1f{rfc3339(incident_start)}"
    return "al_" + hashlib.sha256(raw.encode("utf-8")).hexdigest()[:24]


_encoder = msgspec.json.Encoder(order="deterministic")


def encode_alert(alert: Alert) -> bytes:
    """Canonical JSON of an alert (keys of evidence sorted): equal alerts give equal bytes."""
    return _encoder.encode(alert)


def decode_alert(data: bytes | str) -> Alert:
    return msgspec.json.decode(data, type=Alert)
