"""Splunk HTTP Event Collector sink: batched JSON events to ``/services/collector/event``.

One POST carries the batch as concatenated JSON event envelopes
(``{"time", "host", "source", "sourcetype", "event"}`` each), authenticated
with ``Authorization: Splunk <token>``; TLS verification is on unless turned
off. HEC answers ``{"text": ..., "code": n}``: 400 (no data / invalid data
format) is not retryable; 401/403 (bad or disabled token) are retried -- a
token fixed by an operator then delivers what waited -- until the attempt
limit dead-letters them; 429/503 (busy) honour ``Retry-After``; 5xx retry.

The event is the alert itself plus a ``notification`` block (why it was
sent, group, inhibiting alert), or, with ``ocsf=True``, the OCSF Detection
Finding of :mod:`sentinel.sinks.ocsf`.
"""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path
from typing import Any

import msgspec

from sentinel.alerting.notify import DeliveryError, Notification
from sentinel.sinks._http import post, retry_after, tls_context
from sentinel.sinks.ocsf import epoch_ms, to_ocsf

HEC_PATH = "/services/collector/event"
_enc = msgspec.json.Encoder(order="deterministic")


def alert_event(n: Notification) -> dict[str, Any]:
    """The alert as a JSON object, with the delivery decision beside it."""
    event: dict[str, Any] = msgspec.to_builtins(n.alert)
    event["notification"] = {"reason": n.reason, "group": n.group_key, "previous_severity": n.previous_severity,
                             "inhibited_by": n.inhibited_by}
    return event


class SplunkHecSink:
    name = "splunk_hec"
    record = True
    supports_resolve = True

    def __init__(self, url: str, token: str, *, verify_tls: bool = True, ca_file: Path | str | None = None,
                 index: str | None = None, sourcetype: str = "sentinel:alert", source: str = "sentinel",
                 host: str | None = None, batch: int = 100, ocsf: bool = False, timeout: float = 10.0,
                 name: str | None = None) -> None:
        self.url = url.rstrip("/") + HEC_PATH if not url.rstrip("/").endswith(HEC_PATH) else url.rstrip("/")
        self._token = token
        self._ctx: ssl.SSLContext | None = tls_context(verify_tls, ca_file) if self.url.startswith("https") else None
        self.index = index
        self.sourcetype = sourcetype
        self.source = source
        self.host = host or socket.gethostname()
        self.max_batch = batch
        self.ocsf = ocsf
        self.timeout = timeout
        if name:
            self.name = name

    def envelope(self, n: Notification) -> dict[str, Any]:
        env: dict[str, Any] = {
            "time": epoch_ms(n.alert.detected_at) / 1000.0,
            "host": self.host,
            "source": self.source,
            "sourcetype": self.sourcetype,
            "event": to_ocsf(n) if self.ocsf else alert_event(n),
        }
        if self.index:
            env["index"] = self.index
        return env

    def send(self, batch: list[Notification]) -> None:
        body = b"".join(_enc.encode(self.envelope(n)) for n in batch)
        resp = post(self.url, body, {"Authorization": f"Splunk {self._token}", "Content-Type": "application/json"},
                    self.timeout, self._ctx)
        if resp.status == 200:
            return
        try:
            detail = json.loads(resp.body)
            text = f"HEC {resp.status} code {detail.get('code')}: {detail.get('text')}"
        except (ValueError, AttributeError):
            text = f"HEC {resp.status}: {resp.body[:200]!r}"
        if resp.status == 400:
            raise DeliveryError(text, retryable=False)
        raise DeliveryError(text, retryable=True, retry_after_s=retry_after(resp.headers))

    def close(self) -> None:
        return None
