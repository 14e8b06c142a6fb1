"""No sink writes a token or secret into logs, errors, dead letters, audit records or the outbox.

Every sink is configured with a secret and pointed at a receiver that refuses
it (or at nothing), so every error path runs; all log output (structlog and
the standard logging of slack-sdk, at debug level), every exception text, the
dead-letter reasons, the audit file and the outbox file are searched for the
secrets. The secrets do not look like any known credential format, so the log
scrubber cannot hide a leak: the sinks themselves must never put them there.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from pathlib import Path

import pytest
import structlog
from pydantic import SecretStr

from sentinel.alerting.delivery import build_delivery
from sentinel.alerting.notify import DeliveryError, Notification
from sentinel.config import RetrySettings, Settings, SinksSettings
from sentinel.logs import configure
from sentinel.sinks.slack_actions import SlackActions
from tests.receivers.alerts import make_alert
from tests.receivers.revoke import RevokeReceiver
from tests.receivers.slack_api import SlackApiReceiver
from tests.receivers.splunk_hec import HecReceiver
from tests.services import free_port

SECRETS = {
    "hec": "hec-7f3e9a1c-d2b4-4e8f-a6c0-51b7e2d9f804",
    "slack_bot": "slack-bot-c0ffee-5e5e5e-1a2b3c4d5e6f",
    "slack_signing": "signing-9d8c7b6a5f4e3d2c1b0a",
    "revoke": "revoke-hmac-0123456789abcdef0123",
}


def test_no_secret_in_logs_errors_dead_letters_audit_or_outbox(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    hec = HecReceiver("the-right-hec-token").start()
    api = SlackApiReceiver("the-right-slack-token", {"#sec": "C1"}).start()
    rev = RevokeReceiver("the-right-hmac-secret").start()
    buf = io.StringIO()
    configure("debug")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buf))
    caplog.set_level(logging.DEBUG)
    settings = Settings(sinks=SinksSettings(
        outbox_path=tmp_path / "outbox.sqlite",
        retry=RetrySettings(initial_s=0.02, max_s=0.05, max_attempts=3, seed=1),
        hec_url=hec.url, hec_token=SecretStr(SECRETS["hec"]),
        syslog_host="127.0.0.1", syslog_port=free_port(),
        slack_bot_token=SecretStr(SECRETS["slack_bot"]), slack_channel="#sec", slack_base_url=api.base_url,
        slack_signing_secret=SecretStr(SECRETS["slack_signing"]),
        revoke_url=rev.url + "/revoke", revoke_hmac_secret=SecretStr(SECRETS["revoke"]), revoke_dry_run=False,
        revoke_min_score=0.5, revoke_audit_path=tmp_path / "audit.jsonl",
    ))
    errors: list[str] = [repr(settings), str(settings.model_dump())]
    try:
        d = build_delivery(settings)
        assert sorted(d.notifiers) == ["revoke", "slack", "splunk_hec", "syslog_cef"]
        d.enqueue([make_alert(i) for i in range(3)])
        assert d.wait_idle(20)
        for name, sink in d.notifiers.items():  # the same failures, as exceptions
            try:
                sink.send([Notification(alert=make_alert(9), sink=name, reason="new", group_key="tenant:t_alpha")])
            except DeliveryError as err:
                errors += [str(err), repr(err)]
        for name in d.notifiers:
            errors += [e.reason for e in d.outbox.dead(name)]
        assert all(d.stats.dead[name] == 3 for name in d.notifiers), d.stats.dead
        d.close()
        actions = SlackActions(SECRETS["slack_signing"], d.silence_store)
        status, body = actions.handle(b"payload=%7B%7D", {"X-Slack-Request-Timestamp": str(int(time.time())),
                                                          "X-Slack-Signature": "v0=" + "0" * 64})
        assert status == 401
        errors.append(body.decode())
    finally:
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
        for r in (hec, api, rev):
            r.stop()
    logs = buf.getvalue() + caplog.text
    audit = (tmp_path / "audit.jsonl").read_text()
    outbox = b"".join(p.read_bytes() for p in tmp_path.glob("outbox.sqlite*"))
    assert "sink_delivery_failed" in logs and "alerts_dead_lettered" in logs and "slack_action_rejected" in logs
    assert "Invalid token" in logs and "invalid_auth" in logs and "bad_signature" in logs
    assert '"decision":"failed"' in audit
    assert len(errors) > 10
    for name, secret in SECRETS.items():
        assert secret not in logs, name
        assert all(secret not in e for e in errors), name
        assert secret not in audit, name
        assert secret.encode() not in outbox, name
    # the receivers did see the credentials: they were really sent
    assert any(h.get("Authorization") == f"Splunk {SECRETS['hec']}" for _, _, h, _ in hec.requests)
    assert any(h.get("Authorization") == f"Bearer {SECRETS['slack_bot']}" for _, _, h, _ in api.requests)
    assert rev.rejected and set(rev.rejected) == {"bad_signature"}
