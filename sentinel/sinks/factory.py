"""Build the configured sinks (notifiers) from settings; a sink without its URL/path is simply absent."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from sentinel.alerting.grouping import ThreadBook
from sentinel.alerting.notify import DeliveryError, Notification, Notifier
from sentinel.alerting.outbox import Outbox
from sentinel.alerting.silences import SilenceStore
from sentinel.alerts import encode_alert
from sentinel.sinks.ocsf import OcsfFileSink
from sentinel.sinks.revoke import AuditLog, MemoryRateLimiter, RedisRateLimiter, RevokeLadder, RevokeSink, RevokeWebhook
from sentinel.sinks.slack import SlackSink
from sentinel.sinks.splunk_hec import SplunkHecSink
from sentinel.sinks.syslog_cef import SyslogCefSink


class JsonlNotifier:
    """Delivered alert versions as canonical JSON lines (fsynced per batch)."""

    name = "jsonl"
    record = True
    supports_resolve = True
    max_batch = 1000

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh: IO[bytes] | None = None

    def send(self, batch: list[Notification]) -> None:
        try:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.path.open("ab")
            self._fh.write(b"".join(encode_alert(n.alert) + b"\n" for n in batch))
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as err:
            self.close()
            raise DeliveryError(f"cannot write {self.path.name}: {err.strerror}") from None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _secret(v: Any) -> str | None:
    return v.get_secret_value() if v is not None else None


def secrets_of(settings: Any) -> list[str]:
    """Every configured secret, for scrubbing error texts."""
    s = settings.sinks
    out = [_secret(s.hec_token), _secret(s.slack_bot_token), _secret(s.slack_signing_secret),
           _secret(s.revoke_hmac_secret), _secret(settings.state.redis_url)]
    return [x for x in out if x]


def build_revoke_sink(settings: Any, redis_client: Any = None, clock: Callable[[], float] = time.time) -> RevokeSink:
    s = settings.sinks
    prefix = settings.state.key_prefix
    if redis_client is not None:
        limiter: Any = RedisRateLimiter(redis_client, f"{prefix}:revoke:window", s.revoke_max_per_hour)
        dry: Any = RedisRateLimiter(redis_client, f"{prefix}:revoke:window:dry", s.revoke_max_per_hour)
    else:
        limiter, dry = MemoryRateLimiter(s.revoke_max_per_hour), MemoryRateLimiter(s.revoke_max_per_hour)
    ladder = RevokeLadder(dry_run=s.revoke_dry_run, allow=s.revoke_allow, deny=s.revoke_deny,
                          min_score=s.revoke_min_score, min_signals=s.revoke_min_signals,
                          limiter=limiter, dry_limiter=dry)
    webhook = None
    if s.revoke_url and s.revoke_hmac_secret is not None:
        webhook = RevokeWebhook(s.revoke_url, s.revoke_hmac_secret.get_secret_value(), clock=clock)
    return RevokeSink(ladder, webhook, AuditLog(s.revoke_audit_path), clock=clock)


def build_notifiers(settings: Any, outbox: Outbox, silences: SilenceStore, redis_client: Any = None,
                    clock: Callable[[], float] = time.time) -> list[Notifier]:
    s = settings.sinks
    out: list[Notifier] = []
    if s.jsonl_path:
        out.append(JsonlNotifier(s.jsonl_path))
    if s.hec_url and s.hec_token is not None:
        out.append(SplunkHecSink(s.hec_url, s.hec_token.get_secret_value(), verify_tls=s.hec_verify_tls,
                                 ca_file=s.hec_ca_file, index=s.hec_index, sourcetype=s.hec_sourcetype,
                                 batch=s.hec_batch, ocsf=s.hec_ocsf))
    if s.syslog_host:
        out.append(SyslogCefSink(s.syslog_host, s.syslog_port, tls=s.syslog_tls, verify_tls=s.syslog_verify_tls,
                                 ca_file=s.syslog_ca_file))
    if s.ocsf_path:
        out.append(OcsfFileSink(s.ocsf_path))
    if s.slack_bot_token is not None and s.slack_channel:
        out.append(SlackSink(s.slack_bot_token.get_secret_value(), s.slack_channel,
                             ThreadBook(outbox, "slack", s.group_thread_s), base_url=s.slack_base_url))
    if s.revoke_url or s.revoke_dry_run:
        out.append(build_revoke_sink(settings, redis_client, clock))
    return out
