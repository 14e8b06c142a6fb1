"""Grouping: alerts of one tenant form one conversation.

Alertmanager batches alerts of a group into one notification; for a chat
sink the natural unit is a thread. The group key is the tenant: the first
alert of a tenant opens a Slack thread (its message is the thread's parent);
later alerts of that tenant, escalations and resolutions are replies in that
thread, and an alert's own message is updated in place. A group is
forgotten ``thread_ttl_s`` after its last message, so a tenant that was
quiet for a day starts a fresh thread.

The thread and message ids live in the outbox's key-value table (Redis or
SQLite), so a restart or another replica keeps answering in the same thread.
"""

from __future__ import annotations

from sentinel.alerting.outbox import Outbox
from sentinel.alerts import Alert


def group_key(alert: Alert) -> str:
    """The notification group of an alert: its tenant."""
    return f"tenant:{alert.tenant_id}"


class ThreadBook:
    """Where each group's thread and each alert's message are, per sink."""

    def __init__(self, outbox: Outbox, sink: str = "slack", thread_ttl_s: float = 86400.0,
                 message_ttl_s: float = 30 * 86400.0) -> None:
        self.kv = outbox
        self.sink = sink
        self.thread_ttl_s = thread_ttl_s
        self.message_ttl_s = message_ttl_s

    def thread(self, group: str) -> str | None:
        return self.kv.kv_get(f"{self.sink}:thread:{group}")

    def set_thread(self, group: str, ts: str) -> None:
        self.kv.kv_set(f"{self.sink}:thread:{group}", ts, self.thread_ttl_s)

    def message(self, alert_id: str) -> str | None:
        return self.kv.kv_get(f"{self.sink}:msg:{alert_id}")

    def set_message(self, alert_id: str, ts: str) -> None:
        self.kv.kv_set(f"{self.sink}:msg:{alert_id}", ts, self.message_ttl_s)
