"""Prometheus metrics of the live daemon, in their own :class:`CollectorRegistry`.

Updated once per batch from deltas of :class:`~sentinel.pipeline.PipelineStats`
(never per event), so the hot path pays nothing for them. ``/metrics``
(:mod:`sentinel.http`) renders this registry followed by the process-wide
default one, where the delivery layer registers its sink metrics.
"""

from __future__ import annotations

from collections import Counter as _Counter
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sentinel.alerts import Alert
from sentinel.pipeline import PipelineStats

__all__ = ["DaemonMetrics", "StatsCursor"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class StatsCursor:
    """The counters of one pipeline as last reported, to turn totals into deltas."""

    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    blank: int = 0
    late: int = 0
    rejected: _Counter[str] = field(default_factory=_Counter)


class DaemonMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.events = Counter("sentinel_events_total", "Usage events by outcome "
                              "(accepted, duplicate, blank, rejected; late events are also accepted)",
                              ["outcome"], registry=r)
        self.rejected = Counter("sentinel_events_rejected_total", "Rejected events by reason", ["reason"], registry=r)
        self.dead_letters = Counter("sentinel_dead_letters_total", "Records produced to the dead-letter topic",
                                    registry=r)
        self.alerts = Counter("sentinel_alerts_total", "Alert versions raised", ["detector", "severity", "status"],
                              registry=r)
        self.notifications = Counter("sentinel_notifications_total",
                                     "Alert versions per sink by outcome (sent, skipped = already notified, "
                                     "found = uncertain but present, failed)", ["sink", "outcome"], registry=r)
        self.lag = Gauge("sentinel_consumer_lag", "Records behind the high watermark", ["topic", "partition"],
                         registry=r)
        self.batch_seconds = Histogram("sentinel_batch_seconds", "Time to process one polled batch "
                                       "(pipeline, delivery, checkpoint when due)", buckets=_LATENCY_BUCKETS,
                                       registry=r)
        self.batch_events = Histogram("sentinel_batch_events", "Records per polled batch",
                                      buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 50000), registry=r)
        self.checkpoint_age = Gauge("sentinel_checkpoint_age_seconds", "Seconds since the partition's last "
                                    "saved checkpoint", ["topic", "partition"], registry=r)
        self.checkpoint_seconds = Histogram("sentinel_checkpoint_seconds", "Time to snapshot and save checkpoints",
                                            buckets=_LATENCY_BUCKETS, registry=r)
        self.checkpoint_bytes = Gauge("sentinel_checkpoint_bytes", "Size of the partition's last checkpoint",
                                      ["topic", "partition"], registry=r)
        self.checkpoints = Counter("sentinel_checkpoints_total", "Checkpoint saves by result (ok, fenced, error)",
                                   ["result"], registry=r)
        self.tracked_keys = Gauge("sentinel_tracked_keys", "Keys held in detector state (all assigned partitions)",
                                  ["detector"], registry=r)
        self.assigned = Gauge("sentinel_assigned_partitions", "Partitions assigned to this replica", registry=r)
        self.up = Gauge("sentinel_dependency_up", "1 when the dependency answered the last probe", ["dependency"],
                        registry=r)
        self.ready = Gauge("sentinel_ready", "1 when /readyz answers 200", registry=r)
        self.retries = Counter("sentinel_retries_total", "Retried operations after a failure", ["operation"],
                               registry=r)
        self.reloads = Counter("sentinel_rules_reloads_total", "SIGHUP rule reloads by result", ["result"],
                               registry=r)

    def observe_stats(self, stats: PipelineStats, cursor: StatsCursor) -> None:
        """Add what changed since ``cursor`` (one pipeline) and move the cursor."""
        d = stats.accepted - cursor.accepted
        if d:
            self.events.labels("accepted").inc(d)
        d = stats.duplicates - cursor.duplicates
        if d:
            self.events.labels("duplicate").inc(d)
        d = stats.blank - cursor.blank
        if d:
            self.events.labels("blank").inc(d)
        d = stats.late - cursor.late
        if d:
            self.events.labels("late").inc(d)
        if stats.rejected != cursor.rejected:
            for reason, n in stats.rejected.items():
                dr = n - cursor.rejected.get(reason, 0)
                if dr:
                    self.rejected.labels(reason).inc(dr)
                    self.events.labels("rejected").inc(dr)
            cursor.rejected = _Counter(stats.rejected)
        cursor.lines = stats.lines
        cursor.accepted = stats.accepted
        cursor.duplicates = stats.duplicates
        cursor.blank = stats.blank
        cursor.late = stats.late

    def observe_alerts(self, alerts: list[Alert]) -> None:
        for a in alerts:
            self.alerts.labels(a.detector, a.severity, a.status).inc()
