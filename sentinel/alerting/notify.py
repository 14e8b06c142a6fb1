"""What a sink receives and the one interface every sink implements.

A :class:`Notification` is one alert version on its way to one sink, with
the decisions the delivery stages made about it: why it is sent (``new``,
``escalated``, ``update``, ``resolved``), its group (tenant) and, when an
inhibiting alert exists, a link to it. It is what the outbox stores, so its
encoding is stable msgpack.

A :class:`Notifier` sends a batch and either returns or raises
:class:`DeliveryError` saying whether a retry can help (Alertmanager's
"retryable or not"); the retry policy itself lives in one place, the delivery
worker, not in every sink. Error messages must never carry a secret: sinks
build them from status codes and response bodies, never from their own
headers or URLs with credentials.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

from sentinel.alerts import Alert

# "acknowledged" is not an alert version: a human acknowledged the alert (Slack button) and the paging sinks
# that support it (``supports_ack``) are told; see sentinel/sinks/factory.py:acknowledge_hook.
Reason = Literal["new", "escalated", "update", "resolved", "acknowledged"]


class Notification(msgspec.Struct, kw_only=True):
    alert: Alert
    sink: str
    reason: Reason
    group_key: str
    previous_severity: str | None = None
    inhibited_by: str | None = None
    enqueued_at: float = 0.0

    @property
    def idempotency_key(self) -> str:
        return f"{self.alert.alert_id}:{self.alert.version}"


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Notification)


def encode_notification(n: Notification) -> bytes:
    return _enc.encode(n)


def decode_notification(data: bytes) -> Notification:
    return _dec.decode(data)


class DeliveryError(Exception):
    """A failed send. ``retryable`` False means retrying the same payload cannot succeed."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class Notifier(Protocol):
    """A sink. ``record`` sinks (SIEM, files) get every alert version and ignore silences;
    the others (Slack, revoke) are the "page" sinks that silences, inhibition and cooldown apply to."""

    name: str
    record: bool
    supports_resolve: bool
    max_batch: int

    def send(self, batch: list[Notification]) -> None: ...

    def close(self) -> None: ...
