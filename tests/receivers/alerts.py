"""Alert builders and an in-process notifier for delivery tests."""

from __future__ import annotations

import threading
from typing import Any

from sentinel.alerting.notify import DeliveryError, Notification
from sentinel.alerts import Alert, Entity, make_alert_id, rfc3339

T0 = 1793606400.0  # 2026-11-02T08:00:00Z


def make_alert(n: int = 0, *, detector: str = "spend_spike", tenant: str = "t_alpha", key: str | None = None,
               version: int = 1, status: str = "firing", severity: str = "high", score: float = 0.95,
               t: float | None = None, signals: dict[str, float] | None = None, **kw: Any) -> Alert:
    key = key or f"key_{tenant}_{n}"
    start = T0 + n
    entity_type = "budget" if detector == "quota_burn" else "api_key"
    entity_id = f"budget_{tenant}" if detector == "quota_burn" else key
    return Alert(
        alert_id=kw.pop("alert_id", None) or make_alert_id(detector, detector, entity_type, entity_id, start),
        version=version, status=status,  # type: ignore[arg-type]
        detector=detector, rule=detector, severity=severity,  # type: ignore[arg-type]
        score=score, entity=Entity(entity_type, entity_id), tenant_id=tenant,  # type: ignore[arg-type]
        detected_at=rfc3339(t if t is not None else start + 60 * version), first_seen=rfc3339(start),
        title=kw.pop("title", f"{detector} on {entity_id}"), summary=kw.pop("summary", "spend 12x baseline"),
        evidence=kw.pop("evidence", {"observed_usd_per_hour": 412.5, "baseline_usd_per_hour": 30.1}),
        api_key_id=key, signals=signals if signals is not None else {"spend_ratio": 0.5, "new_ip": 0.3,
                                                                    "model_enum": 0.15},
        actions=kw.pop("actions", ["notify", "revoke"]), risk_usd_per_hour=kw.pop("risk", 412.5), **kw,
    )


class RecordingNotifier:
    """Keeps what it was sent; can be told to fail (retryable or not) a number of times."""

    def __init__(self, name: str, record: bool = False, supports_resolve: bool = True, max_batch: int = 50) -> None:
        self.name = name
        self.record = record
        self.supports_resolve = supports_resolve
        self.max_batch = max_batch
        self.sent: list[Notification] = []
        self.calls = 0
        self.fail_times = 0
        self.fail_forever = False
        self.retryable = True
        self.reject_alert_ids: set[str] = set()
        self.lock = threading.Lock()

    def send(self, batch: list[Notification]) -> None:
        with self.lock:
            self.calls += 1
            if any(n.alert.alert_id in self.reject_alert_ids for n in batch):
                raise DeliveryError("400 invalid event", retryable=False)
            if self.fail_forever or self.fail_times > 0:
                self.fail_times -= 1
                raise DeliveryError("503 busy", retryable=self.retryable)
            self.sent.extend(batch)

    def keys(self) -> list[tuple[str, int]]:
        return [(n.alert.alert_id, n.alert.version) for n in self.sent]

    def close(self) -> None:
        return None
