"""Inhibition: a firing alert that explains another one mutes its page.

When a key is being abused (``spend_spike`` firing), the tenant's budget
burning fast (``quota_burn``) is a consequence, not a second incident: paging
twice splits the responders. An :class:`InhibitRule` says that a firing
*source* alert mutes the page sinks for *target* alerts whose ``equal``
labels are the same (by default the tenant). The target still reaches the
record sinks, with ``inhibited_by`` naming the source alert so the SIEM can
link the two. A resolved source stops inhibiting at once.

The state is the set of firing source alerts, fed with every alert version
the pipeline emits (routed or not), so it is deterministic for a stream.

>>> inh = Inhibitor()
>>> from sentinel.alerts import Alert, Entity
>>> def mk(i, det, status="firing"):
...     return Alert(alert_id=i, version=1, status=status, detector=det, rule=det, severity="high", score=0.9,
...                  entity=Entity("api_key", "k1"), tenant_id="t1", detected_at="", title="", evidence={})
>>> inh.observe(mk("a1", "spend_spike")); inh.inhibited_by(mk("a2", "quota_burn"))
'a1'
>>> inh.observe(mk("a1", "spend_spike", "resolved")); inh.inhibited_by(mk("a2", "quota_burn")) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass

from sentinel.alerting.silences import labels_of
from sentinel.alerts import Alert


@dataclass(frozen=True)
class InhibitRule:
    source_detector: str
    target_detector: str
    equal: tuple[str, ...] = ("tenant",)


DEFAULT_RULES = (InhibitRule("spend_spike", "quota_burn", ("tenant",)),)
_MAX_SOURCES = 100_000


class Inhibitor:
    def __init__(self, rules: tuple[InhibitRule, ...] = DEFAULT_RULES) -> None:
        self.rules = rules
        # (rule index, equal-label values) -> firing source alert ids, oldest first
        self._active: dict[tuple[int, tuple[str | None, ...]], dict[str, None]] = {}
        self._count = 0

    def observe(self, alert: Alert) -> None:
        for i, rule in enumerate(self.rules):
            if alert.detector != rule.source_detector:
                continue
            labels = labels_of(alert)
            key = (i, tuple(labels.get(n) for n in rule.equal))
            ids = self._active.get(key)
            if alert.status == "firing":
                if ids is None:
                    ids = self._active[key] = {}
                if alert.alert_id not in ids:
                    ids[alert.alert_id] = None
                    self._count += 1
                    if self._count > _MAX_SOURCES:  # bounded memory: forget the oldest group
                        oldest = next(iter(self._active))
                        self._count -= len(self._active.pop(oldest))
            elif ids is not None and alert.alert_id in ids:
                del ids[alert.alert_id]
                self._count -= 1
                if not ids:
                    del self._active[key]

    def inhibited_by(self, alert: Alert) -> str | None:
        """The id of a firing source alert that inhibits ``alert`` (the earliest), or None."""
        if alert.status != "firing":
            return None
        labels = None
        for i, rule in enumerate(self.rules):
            if alert.detector != rule.target_detector:
                continue
            labels = labels or labels_of(alert)
            ids = self._active.get((i, tuple(labels.get(n) for n in rule.equal)))
            if ids:
                return next(iter(ids))
        return None
