"""Slack sink (slack-sdk ``WebClient``): one thread per tenant, messages updated in place.

* A **new** incident posts a Block Kit message -- title, severity, score, $/h
  at risk, the key evidence and the top signals, and the buttons
  *Acknowledge*, *Silence 1h*, *Revoke key*. The first alert of a tenant
  group starts the group's thread; later ones are replies in it (broadcast
  to the channel when high or critical).
* An **escalation** updates the alert's own message (``chat.update``) and adds
  a reply in the thread saying from which severity to which.
* A **resolution** updates the message (no buttons, marked resolved) and
  adds a reply.

Errors: ``ratelimited`` (HTTP 429) is retried after ``Retry-After``; auth
errors are retried (a fixed token delivers what waited) until the attempt
limit; ``channel_not_found``, ``invalid_blocks`` and the like are not
retryable. Error texts carry only Slack's error code.
"""

from __future__ import annotations

import json
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from sentinel.alerting.grouping import ThreadBook
from sentinel.alerting.notify import DeliveryError, Notification
from sentinel.alerts import Alert

_NOT_RETRYABLE = {"channel_not_found", "not_in_channel", "is_archived", "invalid_blocks", "invalid_blocks_format",
                  "msg_too_long", "no_text", "too_many_attachments", "cant_update_message", "edit_window_closed",
                  "invalid_arguments", "invalid_arg_name", "invalid_array_arg", "invalid_charset",
                  "invalid_form_data", "invalid_post_type", "missing_post_type", "restricted_action"}
_EMOJI = {"info": ":information_source:", "low": ":large_blue_circle:", "medium": ":large_yellow_circle:",
          "high": ":large_orange_circle:", "critical": ":red_circle:"}
ACTION_ACK = "sentinel_ack"
ACTION_SILENCE = "sentinel_silence_1h"
ACTION_REVOKE = "sentinel_revoke"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v[:5])
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in list(v.items())[:5])
    return str(v)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def button_value(a: Alert) -> str:
    return json.dumps({"alert_id": a.alert_id, "version": a.version, "detector": a.detector, "tenant": a.tenant_id,
                       "api_key": a.api_key_id, "entity": a.entity.id}, separators=(",", ":"))


def alert_blocks(n: Notification) -> list[dict[str, Any]]:
    a = n.alert
    resolved = a.status == "resolved"
    head = f"{'RESOLVED' if resolved else a.severity.upper()}: {a.title}"
    fields = [
        f"*Severity*\n{_EMOJI[a.severity]} {a.severity}", f"*Score*\n{a.score:.2f}",
        f"*Tenant*\n`{a.tenant_id}`", f"*Entity*\n{a.entity.type} `{a.entity.id}`",
        f"*At risk*\n${a.risk_usd_per_hour:,.2f}/h", f"*Detector*\n{a.detector} ({a.rule})",
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(head, 150)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    if a.summary:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(a.summary, 2900)}})
    evidence = list(a.evidence.items())[:8]
    if evidence:
        text = "*Key evidence*\n" + "\n".join(f"• {k}: {_fmt(v)}" for k, v in evidence)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, 2900)}})
    top = sorted(a.signals.items(), key=lambda kv: -kv[1])[:5]
    if top:
        text = "*Top signals*\n" + "\n".join(f"• {k}: {v:.2f}" for k, v in top)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    context = f"`{a.alert_id}` v{a.version} · detected {a.detected_at}"
    if n.inhibited_by:
        context += f" · explained by `{n.inhibited_by}`"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    if not resolved:
        value = button_value(a)
        buttons: list[dict[str, Any]] = [
            {"type": "button", "action_id": ACTION_ACK, "text": {"type": "plain_text", "text": "Acknowledge"},
             "value": value},
            {"type": "button", "action_id": ACTION_SILENCE, "text": {"type": "plain_text", "text": "Silence 1h"},
             "value": value},
        ]
        if a.api_key_id:
            buttons.append({
                "type": "button", "action_id": ACTION_REVOKE, "style": "danger", "value": value,
                "text": {"type": "plain_text", "text": "Revoke key"},
                "confirm": {"title": {"type": "plain_text", "text": "Revoke this key?"},
                            "text": {"type": "mrkdwn", "text": f"Key `{a.api_key_id}` of `{a.tenant_id}`"},
                            "confirm": {"type": "plain_text", "text": "Revoke"},
                            "deny": {"type": "plain_text", "text": "Cancel"}},
            })
        blocks.append({"type": "actions", "block_id": f"sentinel:{a.alert_id}", "elements": buttons})
    return blocks


def fallback_text(n: Notification) -> str:
    a = n.alert
    return f"[{a.severity}] {a.title} (tenant {a.tenant_id}, score {a.score:.2f})"


class SlackSink:
    name = "slack"
    record = False
    supports_resolve = True
    max_batch = 1  # ordered, one message at a time: a retry never re-posts an earlier one

    def __init__(self, token: str, channel: str, threads: ThreadBook, *, base_url: str = "https://slack.com/api/",
                 timeout: int = 10, client: WebClient | None = None) -> None:
        self.client = client or WebClient(token=token, base_url=base_url, timeout=timeout)
        self.channel = channel
        self.threads = threads

    def send(self, batch: list[Notification]) -> None:
        for n in batch:
            try:
                self._send_one(n)
            except SlackApiError as err:
                code = str(err.response.get("error", "unknown_error")) if err.response is not None else "unknown"
                status = err.response.status_code if err.response is not None else 0
                after = None
                if status == 429 and err.response is not None:
                    ra = err.response.headers.get("Retry-After") or err.response.headers.get("retry-after")
                    after = float(ra) if ra else None
                raise DeliveryError(f"slack {status} {code}", retryable=code not in _NOT_RETRYABLE,
                                    retry_after_s=after) from None
            except SlackClientError as err:
                raise DeliveryError(f"slack client error: {type(err).__name__}") from None
            except OSError as err:
                raise DeliveryError(f"slack connection failed: {type(err).__name__}") from None

    def _post(self, n: Notification, thread_ts: str | None, broadcast: bool = False,
              text: str | None = None, blocks: list[dict[str, Any]] | None = None) -> tuple[str, str]:
        kw: dict[str, Any] = {"channel": self.channel, "text": text or fallback_text(n)}
        if blocks is not None:
            kw["blocks"] = blocks
        if thread_ts:
            kw["thread_ts"] = thread_ts
            if broadcast:
                kw["reply_broadcast"] = True
        resp = self.client.chat_postMessage(**kw)
        return str(resp["channel"]), str(resp["ts"])

    def _send_one(self, n: Notification) -> None:
        a = n.alert
        group = n.group_key
        thread = self.threads.thread(group)
        own = self.threads.message(a.alert_id)
        if n.reason == "new" or own is None:
            thread_ts = thread.split("|", 1)[1] if thread else None
            channel, ts = self._post(n, thread_ts, broadcast=a.severity in ("high", "critical"),
                                     blocks=alert_blocks(n))
            self.threads.set_message(a.alert_id, f"{channel}|{ts}")
            self.threads.set_thread(group, thread or f"{channel}|{ts}")
            return
        channel, ts = own.split("|", 1)
        self.client.chat_update(channel=channel, ts=ts, text=fallback_text(n), blocks=alert_blocks(n))
        if n.reason == "resolved":
            note = f":white_check_mark: resolved: {a.title} (`{a.alert_id}`)"
        else:
            note = f":arrow_up: escalated {n.previous_severity or '?'} → {a.severity}: {a.title} (score {a.score:.2f})"
        thread_ts = thread.split("|", 1)[1] if thread else ts
        self._post(n, thread_ts, text=note)
        self.threads.set_thread(group, thread or own)

    def close(self) -> None:
        return None
