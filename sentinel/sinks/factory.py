"""Build the configured sinks (notifiers) from settings; a sink without its URL/path is simply absent."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sentinel.alerting.grouping import ThreadBook
from sentinel.alerting.notify import Notification, Notifier, encode_notification
from sentinel.alerting.outbox import NotifyRecord, Outbox, OutboxItem
from sentinel.alerting.silences import SilenceStore
from sentinel.alerts import Alert, Entity, encode_alert, rfc3339
from sentinel.rules import RoutesFile
from sentinel.sinks.alertmanager import AlertmanagerSink
from sentinel.sinks.linefile import LineFileSink
from sentinel.sinks.ocsf import OcsfFileSink
from sentinel.sinks.opsgenie import OpsgenieSink
from sentinel.sinks.pagerduty import PagerDutyRouting, PagerDutySink
from sentinel.sinks.revoke import AuditLog, MemoryRateLimiter, RedisRateLimiter, RevokeLadder, RevokeSink, RevokeWebhook
from sentinel.sinks.slack import SlackSink
from sentinel.sinks.splunk_hec import SplunkHecSink
from sentinel.sinks.syslog_cef import SyslogCefSink


class JsonlNotifier(LineFileSink):
    """Delivered alert versions as canonical JSON lines (fsynced per batch)."""

    name = "jsonl"
    max_batch = 1000
    what = "alerts file"

    def encode(self, n: Notification) -> bytes:
        return encode_alert(n.alert)


def _secret(v: Any) -> str | None:
    return v.get_secret_value() if v is not None else None


def secrets_of(settings: Any) -> list[str]:
    """Every configured secret, for scrubbing error texts."""
    s = settings.sinks
    out = [_secret(s.hec_token), _secret(s.slack_bot_token), _secret(s.slack_signing_secret),
           _secret(s.revoke_hmac_secret), _secret(settings.state.redis_url)]
    out += [_secret(getattr(s, f, None)) for f in ("pagerduty_routing_key", "opsgenie_api_key",
                                                   "alertmanager_bearer_token")]
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
                    clock: Callable[[], float] = time.time, routes: RoutesFile | None = None) -> list[Notifier]:
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
    out.extend(build_paging_sinks(settings, outbox, routes, clock))
    return out


def build_paging_sinks(settings: Any, outbox: Outbox, routes: RoutesFile | None = None,
                       clock: Callable[[], float] = time.time) -> list[Notifier]:
    """PagerDuty, Opsgenie and Alertmanager, each when configured (the Alertmanager re-post timer starts here)."""
    s = settings.sinks
    out: list[Notifier] = []
    default_key = _secret(s.pagerduty_routing_key)
    route_keys = any(r.pagerduty_routing_key_env for r in (routes.routes if routes is not None else ()))
    if default_key or s.pagerduty_enabled or route_keys:
        out.append(PagerDutySink(PagerDutyRouting(routes, default_key), base_url=s.pagerduty_url, kv=outbox,
                                 alert_url_template=s.alert_url_template))
    if s.opsgenie_api_key is not None:
        out.append(OpsgenieSink(s.opsgenie_api_key.get_secret_value(), base_url=s.opsgenie_url,
                                responders=s.opsgenie_responders, tags=s.opsgenie_tags,
                                alert_url_template=s.alert_url_template))
    if s.alertmanager_urls:
        out.append(AlertmanagerSink(
            s.alertmanager_urls, kv=outbox, bearer_token=_secret(s.alertmanager_bearer_token),
            verify_tls=s.alertmanager_verify_tls, ca_file=s.alertmanager_ca_file, resend_s=s.alertmanager_resend_s,
            resolved_retention_s=s.alertmanager_resolved_retention_s, max_firing_s=s.alertmanager_max_firing_s,
            alert_url_template=s.alert_url_template, clock=clock).start())
    return out


def acknowledge_hook(outbox: Outbox, notifiers: Iterable[Notifier],
                     clock: Callable[[], float] = time.time) -> Callable[[Mapping[str, Any], str, float], int]:
    """What the Slack *Acknowledge* button does beyond recording who acked: for every sink that supports
    acknowledgements (``supports_ack``: PagerDuty, Opsgenie) and was paged about the alert (its last
    notified version is firing), store an ``acknowledged`` notification in the outbox; that sink's worker
    delivers it with the usual retries. The claim ``(sink, <alert_id>#ack, 0)`` makes a second click
    (or a second replica) enqueue nothing. Returns how many were enqueued.

    Wire it with ``SlackActions(..., on_ack=acknowledge_hook(delivery.outbox, delivery.notifiers.values()))``.
    """
    ack_sinks = [n.name for n in notifiers if getattr(n, "supports_ack", False)]

    def on_ack(value: Mapping[str, Any], user: str, now: float) -> int:
        alert_id = str(value.get("alert_id") or "")
        if not alert_id or not ack_sinks:
            return 0
        items: list[OutboxItem] = []
        for sink in ack_sinks:
            rec = outbox.notify_record(sink, alert_id)
            if rec is None or rec.status != "firing":
                continue
            alert = Alert(alert_id=alert_id, version=rec.version, status="firing",
                          detector=str(value.get("detector") or ""), rule=str(value.get("detector") or ""),
                          severity=rec.severity, score=0.0,  # type: ignore[arg-type]
                          entity=Entity("api_key", str(value.get("entity") or value.get("api_key") or "")),
                          tenant_id=str(value.get("tenant") or ""), detected_at=rfc3339(now),
                          title=f"acknowledged in Slack by {user}", evidence={"acknowledged_by": user})
            note = Notification(alert=alert, sink=sink, reason="acknowledged",
                                group_key=f"tenant:{alert.tenant_id}", enqueued_at=clock())
            items.append(OutboxItem(sink=sink, alert_id=f"{alert_id}#ack", version=0,
                                    payload=encode_notification(note), record=NotifyRecord(0, rec.severity, "acked"),
                                    event_at=now))
        return len(outbox.enqueue(items)) if items else 0

    return on_ack
