"""Slack sink (slack-sdk WebClient) against a strict Web API stand-in; the signed interactivity endpoint."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel.alerting.delivery import Delivery, RetryPolicy
from sentinel.alerting.grouping import ThreadBook
from sentinel.alerting.notify import DeliveryError, Notification
from sentinel.alerting.outbox import SqliteOutbox
from sentinel.alerting.routes import Router
from sentinel.alerting.silences import MemorySilenceStore
from sentinel.rules import RoutesFile
from sentinel.sinks.revoke import AuditLog, RevokeLadder, RevokeSink
from sentinel.sinks.slack import SlackSink
from sentinel.sinks.slack_actions import SlackActions, serve
from tests.receivers.alerts import make_alert
from tests.receivers.slack_api import SlackApiReceiver

TOKEN = "xoxb-1111-2222-slacktokenvalue"
SIGNING = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNELS = {"#sec-alerts": "C0SEC", "C0SEC": "C0SEC"}


@pytest.fixture
def api() -> Iterator[SlackApiReceiver]:
    r = SlackApiReceiver(TOKEN, CHANNELS).start()
    yield r
    r.stop()


def slack(api: SlackApiReceiver, token: str = TOKEN, channel: str = "#sec-alerts") -> SlackSink:
    return SlackSink(token, channel, ThreadBook(SqliteOutbox(":memory:")), base_url=api.base_url)


def n(alert_n: int, reason: str = "new", **kw: object) -> Notification:
    a = make_alert(alert_n, **kw)  # type: ignore[arg-type]
    return Notification(alert=a, sink="slack", reason=reason, group_key=f"tenant:{a.tenant_id}",  # type: ignore[arg-type]
                        previous_severity="high" if reason == "escalated" else None)


def test_one_thread_per_tenant_with_block_kit_message(api: SlackApiReceiver) -> None:
    s = slack(api)
    s.send([n(1, tenant="t_a")])
    s.send([n(2, tenant="t_a")])
    s.send([n(3, tenant="t_b")])
    p = api.posts
    assert [m["thread_ts"] for m in p] == [None, p[0]["ts"], None]
    assert p[1]["reply_broadcast"] is True  # high severity reply is also shown in the channel
    blocks = p[0]["blocks"]
    text = json.dumps(blocks)
    assert "0.95" in text and "observed_usd_per_hour" in text and "Top signals" in text and "spend_ratio" in text
    actions = next(b for b in blocks if b["type"] == "actions")["elements"]
    assert [e["text"]["text"] for e in actions] == ["Acknowledge", "Silence 1h", "Revoke key"]
    assert json.loads(actions[0]["value"])["alert_id"] == make_alert(1, tenant="t_a").alert_id
    headers = api.requests[0][2]
    assert headers["Authorization"] == f"Bearer {TOKEN}"


def test_escalation_and_resolve_update_the_message_and_reply_in_thread(api: SlackApiReceiver) -> None:
    s = slack(api)
    s.send([n(1)])
    s.send([n(1, "escalated", version=2, severity="critical")])
    s.send([n(1, "resolved", version=3, status="resolved")])
    first = api.posts[0]
    assert [u["ts"] for u in api.updates] == [first["ts"], first["ts"]]
    assert "CRITICAL" in json.dumps(api.updates[0]["blocks"])
    final = api.messages[("C0SEC", first["ts"])]
    assert "RESOLVED" in json.dumps(final["blocks"]) and '"actions"' not in json.dumps(final["blocks"])
    replies = api.posts[1:]
    assert [r["thread_ts"] for r in replies] == [first["ts"], first["ts"]]
    assert "escalated high → critical" in replies[0]["text"] and "resolved" in replies[1]["text"]


def test_slack_errors_map_to_retryable_or_not_without_the_token(api: SlackApiReceiver) -> None:
    with pytest.raises(DeliveryError) as exc:
        slack(api, token="xoxb-9999-wrong-token-zzz").send([n(1)])
    assert exc.value.retryable and "invalid_auth" in str(exc.value) and "xoxb" not in str(exc.value)
    with pytest.raises(DeliveryError) as exc:
        slack(api, channel="#nope").send([n(1)])
    assert not exc.value.retryable and "channel_not_found" in str(exc.value)
    api.ratelimit = 1
    with pytest.raises(DeliveryError) as exc:
        slack(api).send([n(1)])
    assert exc.value.retryable and exc.value.retry_after_s == 1.0 and "429 ratelimited" in str(exc.value)


def test_through_delivery_with_a_rate_limit(api: SlackApiReceiver) -> None:
    outbox = SqliteOutbox(":memory:")
    s = SlackSink(TOKEN, "#sec-alerts", ThreadBook(outbox), base_url=api.base_url)
    routes = RoutesFile.model_validate({"routes": [], "default_sinks": ["slack"]})
    d = Delivery([s], outbox, Router(routes), retry=RetryPolicy(initial_s=0.05, max_s=0.1, seed=1),
                 idle_poll_s=0.02).start()
    api.ratelimit = 1
    try:
        d.enqueue([make_alert(1), make_alert(2), make_alert(1, version=2, severity="critical")])
        assert d.wait_idle(10)
    finally:
        d.close()
    assert len(api.posts) == 3 and len(api.updates) == 1  # 2 new + 1 escalation reply; 1 update


def signed(body: bytes, ts: int, secret: str = SIGNING) -> dict[str, str]:
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sig,
            "Content-Type": "application/x-www-form-urlencoded"}


def action_body(action_id: str, alert_n: int = 1) -> bytes:
    a = make_alert(alert_n)
    value = json.dumps({"alert_id": a.alert_id, "version": 1, "detector": a.detector, "tenant": a.tenant_id,
                        "api_key": a.api_key_id, "entity": a.entity.id})
    payload = {"type": "block_actions", "user": {"id": "U1", "username": "alice"},
               "actions": [{"action_id": action_id, "value": value}]}
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        err.close()
        return int(err.code)


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[tuple[str, SlackActions]]:
    silences = MemorySilenceStore()
    revoke = RevokeSink(RevokeLadder(), None, AuditLog(tmp_path / "audit.jsonl"))
    actions = SlackActions(SIGNING, silences, SqliteOutbox(":memory:"), revoke)
    server = serve(actions)
    yield f"http://127.0.0.1:{server.server_address[1]}/slack/actions", actions
    server.shutdown()
    server.server_close()


def test_interactivity_rejects_wrong_signature_stale_and_replayed(endpoint: tuple[str, SlackActions]) -> None:
    url, actions = endpoint
    body = action_body("sentinel_silence_1h")
    now = int(time.time())
    assert post(url, body, signed(body, now, secret="not-the-signing-secret")) == 401
    assert post(url, body + b"x", signed(body, now)) == 401            # body tampered after signing
    assert post(url, body, signed(body, now - 301)) == 401              # older than 5 minutes
    assert post(url, body, {"Content-Type": "application/x-www-form-urlencoded"}) == 401
    assert actions.silences.list() == []
    good = signed(body, now - 60)
    assert post(url, body, good) == 200
    assert post(url, body, good) == 401                                  # the same request again: a replay
    [s] = actions.silences.list()
    assert {str(m) for m in s.matchers} == {"detector=spend_spike", f"entity={make_alert(1).entity.id}",
                                            "tenant=t_alpha"}
    assert s.ends_at - s.starts_at == 3600 and s.created_by == "slack:alice"


def test_ack_and_revoke_buttons(endpoint: tuple[str, SlackActions]) -> None:
    url, actions = endpoint
    now = int(time.time())
    ack = action_body("sentinel_ack")
    assert post(url, ack, signed(ack, now)) == 200
    assert actions.kv is not None
    assert json.loads(actions.kv.kv_get(f"ack:{make_alert(1).alert_id}") or "{}")["by"] == "alice"
    rev = action_body("sentinel_revoke", 2)
    assert post(url, rev, signed(rev, now)) == 200
    assert actions.revoke is not None
    [rec] = actions.revoke.audit.records()
    assert (rec.decision, rec.actor, rec.api_key_id) == ("would_revoke", "slack:alice", make_alert(2).api_key_id)
