"""Scoring alerts against labelled incident windows.

Definitions (per detector; also in ``docs/tuning.md``):

* **Incident (alert).** All versions of one ``alert_id``. It counts once, at
  its *detection*: the first firing version whose severity is at least
  ``min_severity`` (an incident that never reaches it is not counted).
* **Match.** An incident matches a positive label when the detector is the
  label's, the alert is about the label's entities (:meth:`Label.relates`:
  same tenant, or its entity / key / session is one of the label's ids) and
  its detection time lies in ``[start, end + grace]``.
* **TP / FN** are counted per positive label: detected when at least one
  incident matches it. **Recall** = detected labels / positive labels.
* **FP** = incidents that match no positive label. Those that fall in a
  negative label's window for its entities (same detector) are
  **hard-negative FPs**, reported apart (they are also FPs). An incident of a
  detector named in a positive label's ``also_expected`` that matches that
  label is **expected**: neither a TP nor an FP.
* **Precision** = matching incidents / (matching incidents + FPs).
* **False alerts per day** = FPs / days of event time replayed; **per million
  events** = FPs / events accepted * 1e6.
* **Time to detect** = detection time of the first matching incident -
  label start (median and max over detected labels).
* **Dollars before detection** = the ``cost_usd`` (after price-table
  enrichment) of the label's events between its start and that detection.
  The label's events are those of its most specific scope (session, else api
  key, else tenant or budget owner; narrowed to the feature if one is named).
  For a missed label the whole window's cost is reported as *missed dollars*.
"""

from __future__ import annotations

import statistics
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import msgspec

from detectors.base import SEVERITIES, Detector, DetectorContext, DetectorParams, Finding, Severity
from sentinel.alerts import Alert
from sentinel.events import UsageEvent
from sentinel.tuning.labels import Label, parse_time

_RANK = {s: i for i, s in enumerate(SEVERITIES)}
SPEND_BUCKET_S = 3600.0

Outcome = Literal["tp", "fp", "hard_negative_fp", "expected"]


@dataclass
class Incident:
    """One alert_id, reduced to what scoring needs (see the module docstring)."""

    alert_id: str
    detector: str
    tenant_id: str
    detected_at: float
    first: Alert
    last: Alert
    versions: int
    max_severity: Severity
    max_score: float
    dataset: str = ""


def incidents_from_alerts(alerts: Iterable[Alert], min_severity: Severity = "info",
                          dataset: str = "") -> list[Incident]:
    """Group alert versions by ``alert_id``; keep incidents that reach ``min_severity`` while firing."""
    floor = _RANK[min_severity]
    by_id: dict[str, Incident] = {}
    pending: dict[str, list[Alert]] = defaultdict(list)
    for a in alerts:
        inc = by_id.get(a.alert_id)
        if inc is None:
            if a.status == "firing" and _RANK[a.severity] >= floor:
                inc = Incident(a.alert_id, a.detector, a.tenant_id, parse_time(a.detected_at), a, a,
                               len(pending.pop(a.alert_id, ())) + 1, a.severity, a.score, dataset)
                by_id[a.alert_id] = inc
            else:
                pending[a.alert_id].append(a)
            continue
        inc.versions += 1
        inc.last = a
        if _RANK[a.severity] > _RANK[inc.max_severity]:
            inc.max_severity = a.severity
        inc.max_score = max(inc.max_score, a.score)
    return sorted(by_id.values(), key=lambda i: (i.detected_at, i.alert_id))


# -- cost and spend recorded during the replay ----------------------------------------------------


class _RecorderParams(DetectorParams):
    pass


class _RecorderState(msgspec.Struct):
    pass


class CostRecorder(Detector[_RecorderParams, _RecorderState]):
    """A silent pseudo-detector riding in the pipeline: it sees every accepted event, in event-time
    order, after cost enrichment, and records what scoring and the report need: the cost series of
    each label's events, hourly spend per tenant and per api key, the event count and time span.

    It never reports a finding, so the alerts of a run with it equal a run without it.
    """

    name: ClassVar[str] = "_tuning_recorder"
    Params = _RecorderParams
    State = _RecorderState

    def __init__(self, labels: Sequence[Label], context: DetectorContext, grace_s: float = 3600.0,
                 spend: bool = True) -> None:
        super().__init__(_RecorderParams(), context)
        self.labels = list(labels)
        self.grace_s = grace_s
        self.spend = spend
        self.events = 0
        self.first_ts = 0.0
        self.last_ts = 0.0
        self.cost_series: list[list[tuple[float, float]]] = [[] for _ in self.labels]
        self.tenant_spend: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
        self.key_spend: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
        self.key_tenant: dict[str, str] = {}
        index: dict[str, dict[str, list[int]]] = {"session_id": {}, "api_key_id": {}, "tenant_id": {}}
        for i, lb in enumerate(self.labels):
            f, values, _ = lb.event_scope()
            for v in values:
                index[f].setdefault(v, []).append(i)
        self._by_session = index["session_id"]
        self._by_key = index["api_key_id"]
        self._by_tenant = index["tenant_id"]

    def update(self, event: UsageEvent) -> list[Finding] | None:
        t: float = event.ts  # type: ignore[assignment]
        cost = event.cost_usd or 0.0
        if not self.events:
            self.first_ts = t
        self.events += 1
        if t > self.last_ts:
            self.last_ts = t
        if self.spend and cost:
            b = int(t // SPEND_BUCKET_S)
            self.tenant_spend[event.tenant_id][b] += cost
            self.key_spend[event.api_key_id][b] += cost
            self.key_tenant[event.api_key_id] = event.tenant_id
        hits: list[int] | None = None
        sid = event.session_id
        if sid is not None and self._by_session:
            hits = self._by_session.get(sid)
            if hits:
                self._record(hits, event, t, cost)
        if self._by_key:
            hits = self._by_key.get(event.api_key_id)
            if hits:
                self._record(hits, event, t, cost)
        if self._by_tenant:
            hits = self._by_tenant.get(event.tenant_id)
            if hits:
                self._record(hits, event, t, cost)
        return None

    def _record(self, hits: list[int], event: UsageEvent, t: float, cost: float) -> None:
        for i in hits:
            lb = self.labels[i]
            if lb.start <= t <= lb.end + self.grace_s:
                feats = lb.event_scope()[2]
                if feats is None or event.feature in feats:
                    self.cost_series[i].append((t, cost))

    def is_warm(self, key: str) -> bool:
        return True

    def tracked_keys(self) -> int:
        return 0

    def record(self) -> RunRecord:
        """What was recorded, as plain data (picklable, for worker processes)."""
        return RunRecord(
            events=self.events, first_ts=self.first_ts, last_ts=self.last_ts,
            cost_series=[list(s) for s in self.cost_series],
            tenant_spend={k: dict(v) for k, v in self.tenant_spend.items()},
            key_spend={k: dict(v) for k, v in self.key_spend.items()},
            key_tenant=dict(self.key_tenant),
        )


@dataclass
class RunRecord:
    events: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    cost_series: list[list[tuple[float, float]]] = field(default_factory=list)
    tenant_spend: dict[str, dict[int, float]] = field(default_factory=dict)
    key_spend: dict[str, dict[int, float]] = field(default_factory=dict)
    key_tenant: dict[str, str] = field(default_factory=dict)

    @property
    def days(self) -> float:
        return max(self.last_ts - self.first_ts, 0.0) / 86400.0


def cost_between(series: Sequence[tuple[float, float]], start: float, until: float) -> float:
    """Sum of costs in ``series`` (sorted by time) with ``start <= t <= until``."""
    hi = bisect_right(series, until, key=lambda p: p[0])
    return sum(c for t, c in series[:hi] if t >= start)


# -- scoring --------------------------------------------------------------------------------------


@dataclass
class LabelResult:
    label: Label
    detected: bool
    incident: Incident | None = None
    ttd_s: float | None = None
    usd_before_detection: float | None = None
    usd_total: float = 0.0
    matches: int = 0


@dataclass
class DetectorScore:
    detector: str
    labels: int = 0
    detected: int = 0
    incidents: int = 0
    matching: int = 0
    fp: int = 0
    hard_negative_fp: int = 0
    expected: int = 0
    days: float = 0.0
    events: int = 0
    ttd_s: list[float] = field(default_factory=list)
    usd_before: list[float] = field(default_factory=list)
    usd_missed: float = 0.0

    @property
    def recall(self) -> float | None:
        return self.detected / self.labels if self.labels else None

    @property
    def precision(self) -> float | None:
        counted = self.matching + self.fp
        return self.matching / counted if counted else None

    @property
    def fp_per_day(self) -> float:
        return self.fp / self.days if self.days > 0 else float(self.fp)

    @property
    def fp_per_million(self) -> float:
        return self.fp / self.events * 1e6 if self.events else 0.0

    @property
    def ttd_median_s(self) -> float | None:
        return statistics.median(self.ttd_s) if self.ttd_s else None

    @property
    def ttd_max_s(self) -> float | None:
        return max(self.ttd_s) if self.ttd_s else None

    @property
    def usd_before_total(self) -> float:
        return sum(self.usd_before)

    def add(self, other: DetectorScore) -> None:
        for f in ("labels", "detected", "incidents", "matching", "fp", "hard_negative_fp", "expected", "days",
                  "events", "usd_missed"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.ttd_s.extend(other.ttd_s)
        self.usd_before.extend(other.usd_before)

    def as_dict(self) -> dict[str, Any]:
        return {
            "detector": self.detector, "labels": self.labels, "detected": self.detected,
            "incidents": self.incidents, "matching": self.matching, "fp": self.fp,
            "hard_negative_fp": self.hard_negative_fp, "expected": self.expected,
            "precision": self.precision, "recall": self.recall,
            "fp_per_day": self.fp_per_day, "fp_per_million_events": self.fp_per_million,
            "ttd_median_s": self.ttd_median_s, "ttd_max_s": self.ttd_max_s,
            "usd_before_detection": round(self.usd_before_total, 4), "usd_missed": round(self.usd_missed, 4),
            "days": self.days, "events": self.events,
        }


@dataclass
class Scored:
    """The outcome of scoring one run of one dataset."""

    by_detector: dict[str, DetectorScore]
    labels: list[LabelResult]
    outcomes: dict[str, Outcome]
    label_of: dict[str, str]


def score(incidents: Sequence[Incident], labels: Sequence[Label], record: RunRecord, detectors: Iterable[str] = (),
          grace_s: float = 3600.0) -> Scored:
    """Score incidents of one dataset against its labels (definitions: module docstring)."""
    positives = [(i, lb) for i, lb in enumerate(labels) if not lb.negative]
    negatives = [lb for lb in labels if lb.negative]
    names = set(detectors) | {inc.detector for inc in incidents} | {lb.detector for _, lb in positives}
    out = {d: DetectorScore(d, days=record.days, events=record.events) for d in sorted(names)}
    results = [LabelResult(lb, False) for _, lb in positives]
    outcomes: dict[str, Outcome] = {}
    label_of: dict[str, str] = {}
    for inc in incidents:
        ds = out[inc.detector]
        ds.incidents += 1
        t = inc.detected_at
        matched = False
        expected = False
        for j, (_, lb) in enumerate(positives):
            if not lb.covers(t, grace_s) or not lb.relates(inc.first):
                continue
            if lb.detector == inc.detector:
                matched = True
                r = results[j]
                r.matches += 1
                label_of.setdefault(inc.alert_id, lb.name)
                if r.incident is None or t < r.incident.detected_at:
                    r.incident = inc
            elif inc.detector in lb.also_expected:
                expected = True
                label_of.setdefault(inc.alert_id, lb.name)
        if matched:
            ds.matching += 1
            outcomes[inc.alert_id] = "tp"
        elif expected:
            ds.expected += 1
            outcomes[inc.alert_id] = "expected"
        else:
            ds.fp += 1
            hard = next((lb for lb in negatives if lb.detector == inc.detector and lb.covers(t, grace_s)
                         and lb.relates(inc.first)), None)
            if hard is not None:
                ds.hard_negative_fp += 1
                outcomes[inc.alert_id] = "hard_negative_fp"
                label_of[inc.alert_id] = hard.name
            else:
                outcomes[inc.alert_id] = "fp"
    for j, (i, lb) in enumerate(positives):
        r = results[j]
        ds = out[lb.detector]
        ds.labels += 1
        series = record.cost_series[i] if i < len(record.cost_series) else []
        r.usd_total = cost_between(series, lb.start, lb.end)
        if r.incident is not None:
            r.detected = True
            ds.detected += 1
            r.ttd_s = max(0.0, r.incident.detected_at - lb.start)
            ds.ttd_s.append(r.ttd_s)
            r.usd_before_detection = cost_between(series, lb.start, r.incident.detected_at)
            ds.usd_before.append(r.usd_before_detection)
        else:
            ds.usd_missed += r.usd_total
    return Scored(out, results, outcomes, label_of)


def merge_scores(parts: Iterable[Mapping[str, DetectorScore]]) -> dict[str, DetectorScore]:
    """Per-detector sums over datasets (FP/day over the total days of all datasets)."""
    out: dict[str, DetectorScore] = {}
    for part in parts:
        for name, ds in part.items():
            acc = out.setdefault(name, DetectorScore(name))
            acc.add(ds)
    return dict(sorted(out.items()))
