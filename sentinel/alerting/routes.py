"""Routing: which sinks an alert goes to, from ``rules/routes.yaml``.

In the spirit of Alertmanager's routing tree, flattened to a list: routes are
tried in order; the first that matches contributes its sinks and routing
stops there unless the route says ``continue: true``. An alert no route
matches goes to ``default_sinks``. A matcher's fields are ANDed; a tuple
value means "any of"; ``min_severity`` is inclusive; the ``*_regex`` fields
must match the whole value. Resolved versions route like the firing ones
(by the severity they had), so a sink that was told about an incident is the
one told it ended.

>>> from sentinel.rules import RoutesFile, Route, Matcher
>>> r = Router(RoutesFile(routes=(
...     Route(name="soc", match=Matcher(detector="spend_spike", min_severity="high"), sinks=("slack",),
...           **{"continue": True}),
...     Route(name="all", sinks=("jsonl",)),
... )))
>>> r.sinks_for("spend_spike", "critical", "t1"), r.sinks_for("spend_spike", "low", "t1")
(('slack', 'jsonl'), ('jsonl',))
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from detectors.base import SEVERITIES
from sentinel.alerts import Alert
from sentinel.rules import Matcher, Route, RoutesFile

_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}

# Used when rules/routes.yaml is absent: the same as the shipped rules/routes.yaml.
DEFAULT_ROUTES = RoutesFile.model_validate({
    "routes": [
        {"name": "soc-page", "match": {"detector": ["spend_spike", "cross_tenant"], "min_severity": "high"},
         "sinks": ["jsonl", "splunk_hec", "syslog_cef", "ocsf", "slack", "revoke"]},
        {"name": "oncall", "match": {"detector": ["runaway_loop", "quota_burn"], "min_severity": "medium"},
         "sinks": ["jsonl", "slack"]},
    ],
    "default_sinks": ["jsonl"],
})


def _as_set(v: str | tuple[str, ...] | None) -> frozenset[str] | None:
    if v is None:
        return None
    return frozenset((v,)) if isinstance(v, str) else frozenset(v)


@dataclass(frozen=True, slots=True)
class CompiledMatcher:
    detectors: frozenset[str] | None
    tenants: frozenset[str] | None
    min_rank: int
    detector_re: re.Pattern[str] | None
    tenant_re: re.Pattern[str] | None

    @classmethod
    def compile(cls, m: Matcher) -> CompiledMatcher:
        return cls(
            _as_set(m.detector), _as_set(m.tenant), _RANK[m.min_severity] if m.min_severity else 0,
            re.compile(m.detector_regex) if m.detector_regex else None,
            re.compile(m.tenant_regex) if m.tenant_regex else None,
        )

    def matches(self, detector: str, severity: str, tenant: str) -> bool:
        return (
            _RANK.get(severity, 0) >= self.min_rank
            and (self.detectors is None or detector in self.detectors)
            and (self.tenants is None or tenant in self.tenants)
            and (self.detector_re is None or self.detector_re.fullmatch(detector) is not None)
            and (self.tenant_re is None or self.tenant_re.fullmatch(tenant) is not None)
        )


class Router:
    """Compiled routes. ``sinks_for`` is pure: same alert, same sinks."""

    def __init__(self, routes: RoutesFile | None = None) -> None:
        routes = routes_or_default(routes)
        self.routes: tuple[Route, ...] = routes.routes
        self.default_sinks = routes.default_sinks
        self._compiled = tuple((CompiledMatcher.compile(r.match), r) for r in self.routes)

    def sinks_for(self, detector: str, severity: str, tenant: str) -> tuple[str, ...]:
        out: list[str] = []
        matched = False
        for matcher, route in self._compiled:
            if matcher.matches(detector, severity, tenant):
                matched = True
                out.extend(s for s in route.sinks if s not in out)
                if not route.continue_:
                    break
        return tuple(out) if matched else self.default_sinks

    def route(self, alert: Alert, severity: str | None = None) -> tuple[str, ...]:
        return self.sinks_for(alert.detector, severity or alert.severity, alert.tenant_id)

    def referenced_sinks(self) -> set[str]:
        names = set(self.default_sinks)
        for r in self.routes:
            names.update(r.sinks)
        return names


def routes_or_default(routes: RoutesFile | None) -> RoutesFile:
    """The operator's routes, or the built-in ones when there is no ``routes.yaml`` (nothing set in it)."""
    if routes is None or not routes.model_fields_set:
        return DEFAULT_ROUTES
    return routes
