"""From findings to versioned alerts: the incident book.

Detectors report findings; this book keeps one open incident per
(detector, rule, entity) and decides when a finding becomes a new *version*
of the alert:

* the first firing finding opens the incident: version 1, ``alert_id`` from
  detector, rule, entity and the finding's ``first_seen``;
* later findings make a new version only when the severity changes, the
  score rises by ``score_step``, or ``update_every_s`` of event time has
  passed since the last version -- a noisy detector does not flood sinks;
* a ``resolved`` finding, or ``resolve_after_s`` of event time without a
  firing finding, closes it with a ``resolved`` version (for detectors that
  report their incidents' end themselves, quiet resolution waits
  ``stale_after_s``: it only cleans up after an evicted key).

Severity comes from the score and the dollars at risk per hour
(:func:`severity_for`). Everything here runs on event time and is part of the
pipeline's snapshot, so replay and live give the same alerts, byte for byte.
Notification decisions (dedup across replicas, cooldown, silences, routes)
happen later, in the delivery stages.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from detectors.base import SEVERITIES, Finding, Severity
from sentinel.alerts import Alert, Entity, make_alert_id, rfc3339
from sentinel.rules import AlertPolicy

_RANK = {s: i for i, s in enumerate(SEVERITIES)}
MAX_OPEN = 100_000
MAX_CLOSED = 20_000


def severity_for(score: float, usd_per_hour: float, policy: AlertPolicy) -> Severity:
    """Severity from score, raised by dollars at risk once the score itself is at least low.

    >>> p = AlertPolicy()
    >>> severity_for(0.95, 0, p), severity_for(0.55, 0, p), severity_for(0.55, 800, p), severity_for(0.1, 800, p)
    ('critical', 'medium', 'critical', 'info')
    """
    if score >= policy.score_critical:
        by_score: Severity = "critical"
    elif score >= policy.score_high:
        by_score = "high"
    elif score >= policy.score_medium:
        by_score = "medium"
    elif score >= policy.score_low:
        by_score = "low"
    else:
        return "info"
    if usd_per_hour >= policy.usd_per_hour_critical:
        by_usd: Severity = "critical"
    elif usd_per_hour >= policy.usd_per_hour_high:
        by_usd = "high"
    elif usd_per_hour >= policy.usd_per_hour_medium:
        by_usd = "medium"
    else:
        by_usd = "info"
    return by_score if _RANK[by_score] >= _RANK[by_usd] else by_usd


class Incident(msgspec.Struct, gc=False):
    alert: Alert
    first_seen: float
    last_firing: float
    last_version_at: float


class BookState(msgspec.Struct):
    open: dict[str, Incident] = msgspec.field(default_factory=dict)
    # alert_id -> last version, for incidents closed recently (a detector may report again).
    closed: dict[str, int] = msgspec.field(default_factory=dict)


class IncidentBook:
    """Turns findings into alert versions. Pure and deterministic; snapshot with the pipeline."""

    def __init__(self, policy: AlertPolicy, rule_names: Mapping[str, str],
                 self_resolving: frozenset[str] = frozenset()) -> None:
        self.policy = policy
        self.rule_names = dict(rule_names)
        # Detectors that report the end of their incidents themselves: for them quiet
        # resolution is only a safety net (stale_after_s), not resolve_after_s.
        self.self_resolving = self_resolving
        self.state = BookState()

    @staticmethod
    def _key(f: Finding, rule: str) -> str:
        return f"{f.detector}\x1f{rule}\x1f{f.entity_type}\x1f{f.entity_id}"

    def on_finding(self, f: Finding) -> Alert | None:
        rule = self.rule_names.get(f.detector, f.detector)
        key = self._key(f, rule)
        inc = self.state.open.get(key)
        if f.status == "resolved":
            if inc is None:
                return None
            return self._close(key, inc, f.ts)
        policy = self.policy
        severity = f.severity or severity_for(f.score, f.risk_usd_per_hour, policy)
        if inc is None:
            alert_id = make_alert_id(f.detector, rule, f.entity_type, f.entity_id, f.first_seen)
            version = self.state.closed.pop(alert_id, 0) + 1
            alert = self._alert(f, rule, alert_id, version, severity, f.first_seen)
            self.state.open[key] = Incident(alert, f.first_seen, f.ts, f.ts)
            if len(self.state.open) > MAX_OPEN:
                oldest = next(iter(self.state.open))
                del self.state.open[oldest]
            return alert
        inc.last_firing = max(inc.last_firing, f.ts)
        last = inc.alert
        changed = (
            severity != last.severity
            or f.score >= last.score + policy.score_step
            or f.ts - inc.last_version_at >= policy.update_every_s
        )
        if not changed:
            return None
        alert = self._alert(f, rule, last.alert_id, last.version + 1, severity, inc.first_seen)
        inc.alert = alert
        inc.last_version_at = f.ts
        return alert

    def tick(self, now: float) -> list[Alert]:
        """Close incidents that have been quiet for ``resolve_after_s`` of event time.

        For detectors that resolve their own incidents the wait is ``stale_after_s``: a
        long incident that the detector reports only when it escalates stays one alert.
        """
        quiet = self.policy.resolve_after_s
        stale = self.policy.stale_after_s
        own = self.self_resolving
        out = []
        for key, inc in list(self.state.open.items()):
            limit = stale if inc.alert.detector in own else quiet
            if now - inc.last_firing >= limit:
                out.append(self._close(key, inc, now))
        return out

    def open_alerts(self) -> list[Alert]:
        return [inc.alert for inc in self.state.open.values()]

    def _close(self, key: str, inc: Incident, t: float) -> Alert:
        del self.state.open[key]
        last = inc.alert
        resolved = msgspec.structs.replace(
            last, version=last.version + 1, status="resolved", detected_at=rfc3339(max(t, inc.last_firing))
        )
        closed = self.state.closed
        closed[last.alert_id] = resolved.version
        if len(closed) > MAX_CLOSED:
            del closed[next(iter(closed))]
        return resolved

    @staticmethod
    def _alert(f: Finding, rule: str, alert_id: str, version: int, severity: Severity, first_seen: float) -> Alert:
        return Alert(
            alert_id=alert_id,
            version=version,
            status="firing",
            detector=f.detector,
            rule=rule,
            severity=severity,
            score=round(min(1.0, max(0.0, f.score)), 4),
            entity=Entity(f.entity_type, f.entity_id),
            tenant_id=f.tenant_id,
            detected_at=rfc3339(f.ts),
            first_seen=rfc3339(first_seen),
            title=f.title,
            summary=f.summary,
            evidence=f.evidence,
            api_key_id=f.api_key_id,
            session_id=f.session_id,
            sample_event_ids=f.sample_event_ids[:10],
            actions=f.actions,
            attack=f.attack,
            signals=f.signals,
            risk_usd_per_hour=round(f.risk_usd_per_hour, 4),
        )

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode(self.state)

    def restore(self, data: bytes) -> None:
        self.state = msgspec.msgpack.decode(data, type=BookState)
