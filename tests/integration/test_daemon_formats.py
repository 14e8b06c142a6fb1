"""`sentinel run` with another input format on its topic, credential-safe dead letters, Slack actions.

* A topic of Amazon Bedrock invocation logs (KafkaSettings.input_format = bedrock) gives the
  alerts `sentinel replay --format bedrock` gives on the same records.
* A record whose api_key_id is a credential is dead-lettered redacted, not copied in clear.
* With a Slack signing secret configured, `sentinel run` serves the interactivity endpoint and
  rejects an unsigned request.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.integration.daemon_helpers import REPO, daemon_env, firing_events, start_daemon, wait_exit
from tests.services import consume_all, create_topic, produce_lines
from tests.synth import to_lines
from tests.unit.test_format_bedrock import to_bedrock

pytestmark = pytest.mark.kafka
SECRET_KEY = "sk-proj-DaemonTestSecret0123456789abcdef"


def test_bedrock_topic_gives_the_alerts_of_replay_format_bedrock(kafka_bootstrap: str, tmp_path: Path) -> None:
    events = firing_events(days=1.6)
    records = [json.dumps(to_bedrock(ev)).encode() for ev in events]
    src = tmp_path / "bedrock.jsonl"
    src.write_bytes(b"\n".join(records) + b"\n")
    ref = tmp_path / "ref.jsonl"
    subprocess.run([sys.executable, "-m", "sentinel.cli", "replay", "--format", "bedrock", "--out", str(ref),
                    "--dead-letter", str(tmp_path / "ref-dead.jsonl"), "--no-progress", str(src)],
                   check=True, capture_output=True, cwd=REPO)
    expected = {ln for ln in ref.read_bytes().splitlines() if ln}
    assert expected, "the bedrock stream must make detectors fire"

    topic = f"bedrock-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 4)
    create_topic(kafka_bootstrap, f"{topic}-alerts", 1)
    create_topic(kafka_bootstrap, f"{topic}-dead", 1)
    produce_lines(kafka_bootstrap, topic, records, [ev.tenant_id.encode() for ev in events])
    env = daemon_env(kafka_bootstrap, topic, f"grp-{uuid.uuid4().hex[:8]}",
                     extra={"SENTINEL_KAFKA__INPUT_FORMAT": "bedrock"})
    log = tmp_path / "daemon.log"
    proc = start_daemon(env, log, "--exit-when-idle", "1", "--alerts-file", str(tmp_path / "alerts.jsonl"))
    assert wait_exit(proc, 60, log) == 0, log.read_text()[-3000:]
    got = {ln for ln in (tmp_path / "alerts.jsonl").read_bytes().splitlines() if ln}
    assert got == expected


def test_credential_in_a_record_is_not_copied_to_the_dead_letter_topic(kafka_bootstrap: str,
                                                                       tmp_path: Path) -> None:
    lines = list(to_lines(firing_events(days=0.3)))[:200]
    bad = json.loads(lines[50])
    bad["api_key_id"] = SECRET_KEY
    lines.insert(60, json.dumps(bad).encode())
    topic = f"secret-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 1)
    create_topic(kafka_bootstrap, f"{topic}-dead", 1)
    produce_lines(kafka_bootstrap, topic, lines)
    env = daemon_env(kafka_bootstrap, topic, f"grp-{uuid.uuid4().hex[:8]}")
    log = tmp_path / "daemon.log"
    proc = start_daemon(env, log, "--exit-when-idle", "1")
    assert wait_exit(proc, 45, log) == 0, log.read_text()[-3000:]
    dead = consume_all(kafka_bootstrap, f"{topic}-dead", min_records=1)
    assert len(dead) == 1
    assert dict(dead[0].headers)["reason"] == b"secret_in_api_key_id"
    value = dead[0].value
    assert SECRET_KEY.encode() not in value and SECRET_KEY[:16].encode() not in value
    assert b"[REDACTED sha256:" in value and b'"event_id"' in value  # the rest of the record is kept
    assert SECRET_KEY not in log.read_text()


def test_run_serves_the_slack_actions_endpoint_and_rejects_unsigned_requests(kafka_bootstrap: str,
                                                                             tmp_path: Path) -> None:
    topic = f"slack-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 1)
    produce_lines(kafka_bootstrap, topic, list(to_lines(firing_events(days=0.05)))[:20])
    env = daemon_env(kafka_bootstrap, topic, f"grp-{uuid.uuid4().hex[:8]}", extra={
        "SENTINEL_SINKS__SLACK_SIGNING_SECRET": "8f742231b10e8888abcd99yyyzzz85a5",
        "SENTINEL_SINKS__SLACK_ACTIONS_PORT": "0",
        "SENTINEL_SINKS__JSONL_PATH": str(tmp_path / "delivered.jsonl"),
        "SENTINEL_SINKS__OUTBOX_PATH": str(tmp_path / "outbox.sqlite"),
    })
    log = tmp_path / "daemon.log"
    proc = start_daemon(env, log)
    try:
        port = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not port:
            for line in log.read_text().splitlines():
                if "slack_actions_listening" in line:
                    port = int(re.search(r'"port": ?(\d+)', line).group(1))  # type: ignore[union-attr]
            time.sleep(0.1)
        assert port, log.read_text()[-3000:]
        req = urllib.request.Request(f"http://127.0.0.1:{port}/slack/actions", data=b"payload=%7B%7D",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=5)
        assert info.value.code == 401
    finally:
        proc.terminate()
        assert wait_exit(proc, 30, log) == 0
