"""OCSF Detection Finding (class_uid 2004) for each alert version; a JSON-lines file sink.

Schema: OCSF **1.1.0**, the release that introduced the Detection Finding
class in the Findings category (category_uid 2). Required attributes, from
the OCSF schema sources (``events/base_event.json``,
``events/findings/finding.json``, ``events/findings/detection_finding.json``,
``objects/metadata.json``, ``objects/product.json``,
``objects/finding_info.json``): ``activity_id``, ``category_uid``,
``class_uid``, ``type_uid`` (= class_uid * 100 + activity_id), ``time``
(epoch milliseconds), ``severity_id``, ``metadata`` (with ``version`` and
``product`` -- ``vendor_name`` required in it) and ``finding_info`` (with
``uid``). ``sentinel/sinks/schemas/ocsf-1.1.0-detection_finding.schema.json``
encodes those rules and the enums used here; the tests validate every
finding against it.

Mapping: a new incident is activity 1 *Create*, a new version 2 *Update*, a
resolution 3 *Close* with status 4 *Resolved*; the alert id is
``finding_info.uid`` (and ``metadata.correlation_uid``), ``alert_id:version``
is ``metadata.uid``; the key, tenant and entity are ``resources``; the score
is ``confidence_score``/``risk_score`` (0-100); evidence and signals, which
OCSF 1.1 has no typed place for, go to ``unmapped.sentinel``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from sentinel import __version__
from sentinel.alerting.notify import Notification
from sentinel.sinks.linefile import LineFileSink

OCSF_VERSION = "1.1.0"
SCHEMA_PATH = Path(__file__).parent / "schemas" / "ocsf-1.1.0-detection_finding.schema.json"
CLASS_UID = 2004
CATEGORY_UID = 2
_SEVERITY = {"info": (1, "Informational"), "low": (2, "Low"), "medium": (3, "Medium"), "high": (4, "High"),
             "critical": (5, "Critical")}
_ACTIVITY = {"new": (1, "Create"), "escalated": (2, "Update"), "update": (2, "Update"), "resolved": (3, "Close")}
_enc = msgspec.json.Encoder(order="deterministic")


def epoch_ms(rfc3339: str | None) -> int:
    if not rfc3339:
        return 0
    return round(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


def to_ocsf(n: Notification) -> dict[str, Any]:
    """The OCSF 1.1.0 Detection Finding of one notification (a dict ready for JSON)."""
    a = n.alert
    activity_id, activity = _ACTIVITY["resolved" if a.status == "resolved" else n.reason]
    severity_id, severity = _SEVERITY[a.severity]
    detected = epoch_ms(a.detected_at)
    first = epoch_ms(a.first_seen) or detected
    resources: list[dict[str, Any]] = [{"type": a.entity.type, "uid": a.entity.id}]
    if a.api_key_id and not (a.entity.type == "api_key" and a.entity.id == a.api_key_id):
        resources.append({"type": "api_key", "uid": a.api_key_id})
    resources.append({"type": "tenant", "uid": a.tenant_id})
    score = round(a.score * 100)
    finding: dict[str, Any] = {
        "activity_id": activity_id,
        "activity_name": activity,
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": f"Detection Finding: {activity}",
        "time": detected,
        "start_time": first,
        "end_time": detected,
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 4 if a.status == "resolved" else 1,
        "status": "Resolved" if a.status == "resolved" else "New",
        "message": a.title,
        "confidence_score": score,
        "risk_score": score,
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "sentinel", "vendor_name": "sentinel", "version": __version__},
            "uid": f"{a.alert_id}:{a.version}",
            "correlation_uid": a.alert_id,
            "original_time": a.detected_at,
        },
        "finding_info": {
            "uid": a.alert_id,
            "title": a.title,
            "desc": a.summary or a.title,
            "types": [a.detector],
            "created_time": first,
            "first_seen_time": first,
            "last_seen_time": detected,
            "modified_time": detected,
            "analytic": {"name": a.rule, "uid": a.detector, "type_id": 1, "type": "Rule"},
        },
        "resources": resources,
        "unmapped": {"sentinel": {
            "version": a.version, "tenant_id": a.tenant_id, "api_key_id": a.api_key_id, "session_id": a.session_id,
            "evidence": a.evidence, "signals": a.signals, "risk_usd_per_hour": a.risk_usd_per_hour,
            "actions": list(a.actions), "attack": a.attack, "sample_event_ids": a.sample_event_ids,
            "reason": n.reason, "group": n.group_key, "inhibited_by": n.inhibited_by,
        }},
    }
    if a.status == "resolved":
        finding["finding_info"]["types"] = [a.detector, "resolved"]
    return finding


def encode_ocsf(n: Notification) -> bytes:
    return _enc.encode(to_ocsf(n))


class OcsfFileSink(LineFileSink):
    """Appends one OCSF Detection Finding per line; flushed and fsynced per batch (it is a record sink)."""

    name = "ocsf"
    what = "OCSF file"

    def encode(self, n: Notification) -> bytes:
        return encode_ocsf(n)
