"""``sentinel replay`` and ``sentinel run`` with every secret configured: none is written anywhere.

Every secret setting is set (Splunk HEC token, Slack bot token and signing secret, revoke HMAC
secret, PagerDuty routing key, Opsgenie key, Alertmanager bearer token, Kafka SASL password,
ingest token) and Redis is reached as a throwaway ACL user with a password in the URL. The
stream carries incidents that alert and events whose ``api_key_id`` is a credential (OpenAI,
AWS, GitHub formats). Logging is at debug level (kafka-python and slack-sdk included).

The sinks point at the strict local receivers: HEC, Slack and PagerDuty accept the credentials
(so the secrets really travel), Opsgenie and the revoke webhook are given other credentials and
refuse (so the error paths run), and Alertmanager is pointed at a server that answers 404.

Then everything the runs produced is searched, for each secret and for every 12-character window
of its random part: stdout/stderr of both commands, every file they wrote (alerts, dead letters,
summary, revoke audit, outbox), ``/metrics``, ``/healthz``, ``/readyz``, every key under the run's
Redis prefix (checkpoints, ledger, outbox streams, dead letters), the alerts topic, the dead-letter
topic's headers, what rsyslog received, and what each receiver got apart from its own credential.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import string
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.daemon_helpers import (
    REPO,
    daemon_env,
    firing_events,
    http_get,
    http_port,
    lines_and_keys,
    log_events,
    wait_exit,
    wait_for,
)
from tests.receivers.base import Receiver
from tests.receivers.opsgenie import OpsgenieReceiver
from tests.receivers.pagerduty import PagerDutyReceiver
from tests.receivers.revoke import RevokeReceiver
from tests.receivers.slack_api import SlackApiReceiver
from tests.receivers.splunk_hec import HecReceiver
from tests.services import consume_all, create_topic, produce_lines

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.syslog]

SINKS = ("splunk_hec", "syslog_cef", "slack", "revoke", "pagerduty", "opsgenie", "alertmanager")


def _rand(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


class Secrets:
    """Fresh random secrets for this run: a readable label, then a random part that identifies them."""

    def __init__(self) -> None:
        self.config = {  # setting -> value
            "SENTINEL_SINKS__HEC_TOKEN": "hec-" + _rand(32),
            "SENTINEL_SINKS__SLACK_BOT_TOKEN": "slackbot-" + _rand(32),
            "SENTINEL_SINKS__SLACK_SIGNING_SECRET": "signing-" + _rand(32),
            "SENTINEL_SINKS__REVOKE_HMAC_SECRET": "hmac-" + _rand(32),
            "SENTINEL_SINKS__PAGERDUTY_ROUTING_KEY": "pdkey" + _rand(27, string.hexdigits.lower()),
            "SENTINEL_SINKS__OPSGENIE_API_KEY": "og-" + _rand(32),
            "SENTINEL_SINKS__ALERTMANAGER_BEARER_TOKEN": "ambearer-" + _rand(32),
            "SENTINEL_KAFKA__SASL_PASSWORD": "sasl-" + _rand(32),
            "SENTINEL_INGEST__TOKEN": "ingest-" + _rand(32),
        }
        self.redis_user = "sentinel-test-" + uuid.uuid4().hex[:8]
        self.redis_password = "redispw-" + _rand(32)
        # api_key_id values that are credentials (a gateway bug): rejected, never written in clear.
        self.api_keys = ["sk-proj-" + _rand(40), "AKIA" + _rand(16, string.ascii_uppercase + string.digits),
                         "ghp_" + _rand(36)]

    def all(self) -> dict[str, str]:
        out = dict(self.config)
        out["redis_password"] = self.redis_password
        out.update({f"api_key_id_{i}": k for i, k in enumerate(self.api_keys)})
        return out

    def needles(self) -> dict[str, list[str]]:
        """Each secret, and every 12-character window of its random part (a leak of a fragment counts)."""
        out: dict[str, list[str]] = {}
        for name, value in self.all().items():
            body = re.sub(r"^(hec-|slackbot-|signing-|hmac-|pdkey|og-|ambearer-|sasl-|ingest-|redispw-|sk-proj-|AKIA|"
                          r"ghp_)", "", value)
            out[name] = [value, urllib.parse.quote(value, safe="")] + [body[i:i + 12] for i in range(len(body) - 11)]
        return out


def find_leaks(where: str, text: str, needles: dict[str, list[str]],
               allowed: set[str] | frozenset[str] = frozenset()) -> list[str]:
    found = []
    for name, subs in needles.items():
        if name in allowed:
            continue
        hit = next((s for s in subs if s in text), None)
        if hit is not None:
            i = text.index(hit)
            found.append(f"{where}: {name} ({hit!r}) in ...{text[max(0, i - 80):i + 80]!r}...")
    return found


def secret_key_events(keys: list[str], t0: float) -> list[bytes]:
    return [json.dumps({"event_id": f"leak-{i}", "ts": t0 + i, "api_key_id": k, "tenant_id": "t_alpha",
                        "provider": "openai", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 5}).encode()
            for i, k in enumerate(keys)]


def routes_everywhere(rules: Path) -> None:
    """The repository's rules, with every alert routed to every sink (so each sink and its secret is used),
    and spend_spike / cross_tenant asking the revoke ladder from a low score (so the webhook is called)."""
    shutil.copytree(REPO / "rules", rules)
    sinks = ", ".join(SINKS)
    (rules / "routes.yaml").write_text(f"routes:\n  - name: everything\n    sinks: [{sinks}]\n"
                                       f"default_sinks: [{sinks}]\n")
    for name in ("spend_spike", "cross_tenant"):
        path = rules / "detectors" / f"{name}.yaml"
        text, n = re.subn(r"^revoke_score: [0-9.]+", "revoke_score: 0.3", path.read_text(), flags=re.M)
        assert n == 1, f"{path.name}: no revoke_score"
        path.write_text(text)


@pytest.fixture
def redis_acl_user(redis_url: str) -> Iterator[tuple[Secrets, str, str]]:
    """(secrets, url with user:password, key prefix): a throwaway ACL user on the test Redis, removed after."""
    s = Secrets()
    admin = redis.Redis.from_url(redis_url)
    prefix = f"nosecret-{uuid.uuid4().hex[:8]}"
    admin.acl_setuser(s.redis_user, enabled=True, passwords=[f"+{s.redis_password}"], keys=["*"], channels=["*"],
                      commands=["+@all"])
    u = urllib.parse.urlsplit(redis_url)
    url = urllib.parse.urlunsplit((u.scheme, f"{s.redis_user}:{s.redis_password}@{u.hostname}:{u.port}",
                                   u.path or "/0", "", ""))
    try:
        yield s, url, prefix
    finally:
        admin.acl_deluser(s.redis_user)
        for key in admin.scan_iter(f"{prefix}*", count=1000):
            admin.delete(key)
        admin.close()


def redis_dump(url: str, prefix: str) -> tuple[str, int]:
    """Every key under the prefix, with its value, as text (streams, hashes, sets, lists, strings)."""
    client = redis.Redis.from_url(url)
    parts: list[str] = []
    n = 0
    try:
        for key in client.scan_iter(f"{prefix}*", count=1000):
            n += 1
            raw = client.type(key)
            kind = raw.decode() if isinstance(raw, bytes) else str(raw)
            value: Any
            if kind == "string":
                value = client.get(key)
            elif kind == "hash":
                value = client.hgetall(key)
            elif kind == "list":
                value = client.lrange(key, 0, -1)
            elif kind == "set":
                value = client.smembers(key)
            elif kind == "zset":
                value = client.zrange(key, 0, -1, withscores=True)
            elif kind == "stream":
                value = client.xrange(key)
            else:
                value = kind
            parts.append(f"{key!r} {kind} {value!r}")
    finally:
        client.close()
    return "\n".join(parts), n


def readable(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def metric(text: str, name: str, sink: str) -> float:
    m = re.search(rf'^{name}{{sink="{sink}"}} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_no_secret_in_any_output_of_replay_and_run(kafka_bootstrap: str, syslog_endpoint: tuple[str, int, Path],
                                                   redis_acl_user: tuple[Secrets, str, str], tmp_path: Path) -> None:
    sec, redis_url, prefix = redis_acl_user
    needles = sec.needles()
    syslog_host, syslog_port, syslog_file = syslog_endpoint
    syslog_start = syslog_file.stat().st_size if syslog_file.exists() else 0
    inputs = tmp_path / "inputs"  # the input holds the api-key secrets by construction: not searched
    inputs.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    rules = inputs / "rules"
    routes_everywhere(rules)

    events = firing_events()
    lines, keys = lines_and_keys(events)
    bad = secret_key_events(sec.api_keys, float(events[len(events) // 2].ts))
    for i, line in enumerate(bad):
        at = (i + 1) * len(lines) // (len(bad) + 1)
        lines.insert(at, line)
        keys.insert(at, b"t_alpha")
    src = inputs / "events.jsonl"
    src.write_bytes(b"".join(x + b"\n" for x in lines))

    hec = HecReceiver(sec.config["SENTINEL_SINKS__HEC_TOKEN"])
    slack = SlackApiReceiver(sec.config["SENTINEL_SINKS__SLACK_BOT_TOKEN"], {"#sec": "C0SEC"})
    pd = PagerDutyReceiver({sec.config["SENTINEL_SINKS__PAGERDUTY_ROUTING_KEY"]})
    og = OpsgenieReceiver("og-the-key-this-receiver-expects")  # refuses ours: 401
    rev = RevokeReceiver("hmac-the-secret-this-receiver-expects")  # refuses ours: bad_signature
    receivers: dict[str, Receiver] = {"hec": hec, "slack": slack, "pagerduty": pd, "opsgenie": og, "revoke": rev}
    for r in receivers.values():
        r.start()
    secret_env = {**sec.config, "SENTINEL_STATE__REDIS_URL": redis_url}
    sink_env = {
        "SENTINEL_LOG_LEVEL": "debug",
        "SENTINEL_RULES_DIR": str(rules),
        "SENTINEL_SINKS__HEC_URL": hec.url,
        "SENTINEL_SINKS__SYSLOG_HOST": syslog_host,
        "SENTINEL_SINKS__SYSLOG_PORT": str(syslog_port),
        "SENTINEL_SINKS__SLACK_CHANNEL": "#sec",
        "SENTINEL_SINKS__SLACK_BASE_URL": slack.base_url,
        "SENTINEL_SINKS__REVOKE_URL": rev.url + "/revoke",
        "SENTINEL_SINKS__REVOKE_DRY_RUN": "false",
        "SENTINEL_SINKS__REVOKE_MIN_SCORE": "0",
        "SENTINEL_SINKS__REVOKE_MIN_SIGNALS": "1",
        "SENTINEL_SINKS__REVOKE_AUDIT_PATH": str(out / "revoke-audit.jsonl"),
        "SENTINEL_SINKS__OUTBOX_PATH": str(out / "outbox.sqlite"),
        "SENTINEL_SINKS__PAGERDUTY_URL": pd.url,
        "SENTINEL_SINKS__OPSGENIE_URL": og.url,
        "SENTINEL_SINKS__ALERTMANAGER_URLS": json.dumps([hec.url]),  # answers 404 to the Alertmanager API
        "SENTINEL_SINKS__RETRY__INITIAL_S": "0.05",
        "SENTINEL_SINKS__RETRY__MAX_S": "0.2",
        "SENTINEL_SINKS__RETRY__MAX_ATTEMPTS": "2",
        "SENTINEL_SINKS__RETRY__SEED": "1",
        "SENTINEL_SINKS__REALERT_S": "0",
    }
    texts: dict[str, str] = {}
    try:
        # 1. sentinel replay, with the same environment.
        replay_env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
        replay_env.update(secret_env)
        replay_env.update(sink_env)
        res = subprocess.run([sys.executable, "-m", "sentinel.cli", "replay", str(src), "--rules", str(rules),
                              "--out", str(out / "replay-alerts.jsonl"),
                              "--dead-letter", str(out / "replay-dead.jsonl"),
                              "--summary-json", str(out / "replay-summary.json"), "--no-progress"],
                             env=replay_env, cwd=tmp_path, capture_output=True, timeout=120)
        assert res.returncode == 0, readable(res.stderr)[-3000:]
        texts["replay stdout"] = readable(res.stdout)
        texts["replay stderr"] = readable(res.stderr)
        expected = {x for x in (out / "replay-alerts.jsonl").read_bytes().splitlines() if x}
        assert len(expected) >= 6, "the stream must make detectors fire"
        dead = [json.loads(x) for x in (out / "replay-dead.jsonl").read_bytes().splitlines() if x]
        assert sum(d["reason"] == "secret_in_api_key_id" for d in dead) == len(bad), dead

        # 2. sentinel run: consumer group on a fresh topic, Redis as the ACL user, every sink on.
        topic = f"nosecret-{uuid.uuid4().hex[:8]}"
        create_topic(kafka_bootstrap, topic, 4)
        create_topic(kafka_bootstrap, f"{topic}-alerts", 2)
        create_topic(kafka_bootstrap, f"{topic}-dead", 1)
        produce_lines(kafka_bootstrap, topic, lines, keys)
        env = daemon_env(kafka_bootstrap, topic, f"grp-{uuid.uuid4().hex[:8]}", prefix=prefix,
                         extra={**secret_env, **sink_env})
        log = out / "daemon.log"
        alerts_file = out / "run-alerts.jsonl"
        with open(log, "ab") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "sentinel.cli", "run", "--alerts-file", str(alerts_file)],
                                    env=env, cwd=tmp_path, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        try:
            port = http_port(log)

            def consumed_all() -> bool:
                status, body = http_get(port, "/metrics")
                counts = re.findall(r"^sentinel_events_total\{[^}]*\} ([0-9.e+]+)$", readable(body), re.M)
                return status == 200 and sum(float(c) for c in counts) >= len(lines) and alerts_file.exists() \
                    and len(alerts_file.read_bytes().splitlines()) >= len(expected)

            wait_for(consumed_all, 60, "every record consumed and every alert of the replay raised", interval=0.3)

            def sinks_idle() -> bool:
                status, body = http_get(port, "/metrics")
                text = readable(body)
                return status == 200 and all(
                    metric(text, "sentinel_outbox_depth", s) == 0
                    and metric(text, "sentinel_sink_delivered_total", s)
                    + metric(text, "sentinel_sink_dead_letters_total", s) > 0 for s in SINKS)

            wait_for(sinks_idle, 60, "every sink delivered or dead-lettered its notifications", interval=0.3)
            for path in ("/metrics", "/healthz", "/readyz"):
                status, body = http_get(port, path)
                assert status == 200, (path, body)
                texts[f"GET {path}"] = readable(body)
            proc.send_signal(signal.SIGTERM)
            assert wait_exit(proc, 45, log) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        metrics = texts["GET /metrics"]
        assert metric(metrics, "sentinel_sink_delivered_total", "splunk_hec") > 0
        assert metric(metrics, "sentinel_sink_dead_letters_total", "opsgenie") > 0

        texts["alerts topic"] = "\n".join(readable(r.value) + repr(r.headers) + repr(r.key) for r in
                                          consume_all(kafka_bootstrap, f"{topic}-alerts", min_records=len(expected)))
        dlq = consume_all(kafka_bootstrap, f"{topic}-dead", min_records=len(bad))
        # The dead-letter topic keeps original record bytes for reprocessing -- except a credential: a record
        # rejected for a secret-looking api_key_id is dead-lettered with the value replaced by its fingerprint.
        assert len(dlq) == len(bad)
        assert all(dict(r.headers)["reason"] == b"secret_in_api_key_id" for r in dlq), [r.headers for r in dlq]
        assert all(b"[REDACTED sha256:" in r.value for r in dlq)
        texts["dead-letter topic"] = "\n".join(readable(r.value) + repr(r.headers) for r in dlq)
        dump, nkeys = redis_dump(redis_url, prefix)
        assert nkeys >= 3, "checkpoints, ledger and outbox are in Redis under the run's prefix"
        texts["redis"] = dump
        texts["rsyslog"] = readable(syslog_file.read_bytes()[syslog_start:])
        assert "CEF:0|" in texts["rsyslog"], "the syslog sink delivered"
    finally:
        for r in receivers.values():
            r.stop()

    for file in sorted(p for p in out.rglob("*") if p.is_file()):
        texts[f"file {file.relative_to(tmp_path)}"] = readable(file.read_bytes())
    assert {"file out/daemon.log", "file out/run-alerts.jsonl", "file out/revoke-audit.jsonl",
            "file out/replay-dead.jsonl", "file out/replay-summary.json"} <= set(texts)
    # What each receiver got, less its own credential in the header that carries it.
    own = {"hec": "SENTINEL_SINKS__HEC_TOKEN", "slack": "SENTINEL_SINKS__SLACK_BOT_TOKEN",
           "pagerduty": "SENTINEL_SINKS__PAGERDUTY_ROUTING_KEY", "opsgenie": "SENTINEL_SINKS__OPSGENIE_API_KEY"}
    leaks: list[str] = []
    for name, r in receivers.items():
        for method, path, headers, body in r.requests:
            allowed = {own[name]} if name in own else set()
            if name == "hec" and path.startswith("/api/v2/alerts"):
                allowed = {"SENTINEL_SINKS__ALERTMANAGER_BEARER_TOKEN"}
            leaks += find_leaks(f"{name} {method} {path}", repr(headers) + readable(body), needles, allowed)

    # Every log line is one whole JSON object, also at debug level with sink threads and kafka-python logging at once.
    log_lines = (out / "daemon.log").read_text().splitlines()
    logged = log_events(out / "daemon.log")
    assert len(logged) == len(log_lines), [ln for ln in log_lines if not ln.startswith("{")][:5]
    names = {e.get("event") for e in logged}
    assert {"daemon_started", "delivery_started", "daemon_stopped"} <= names, sorted(n for n in names if n)
    assert "sink_delivery_failed" in names and "alerts_dead_lettered" in names, "the error paths ran"
    assert any(e.get("level") == "debug" for e in logged), "debug logging was on"
    for where, text in texts.items():
        leaks += find_leaks(where, text, needles)
    assert not leaks, "\n".join(leaks[:20])

    # The secrets were really configured and used: the receivers saw them (and refused the wrong ones).
    def auths(r: Receiver) -> set[str]:
        return {v for _, _, h, _ in r.requests for k, v in h.items() if k.lower() == "authorization"}

    assert f"Splunk {sec.config['SENTINEL_SINKS__HEC_TOKEN']}" in auths(hec) and hec.events
    assert f"Bearer {sec.config['SENTINEL_SINKS__SLACK_BOT_TOKEN']}" in auths(slack) and slack.posts
    assert pd.accepted
    assert f"GenieKey {sec.config['SENTINEL_SINKS__OPSGENIE_API_KEY']}" in auths(og)
    assert f"Bearer {sec.config['SENTINEL_SINKS__ALERTMANAGER_BEARER_TOKEN']}" in auths(hec)
    assert rev.rejected and set(rev.rejected) == {"bad_signature"}
    assert '"decision":"failed"' in texts["file out/revoke-audit.jsonl"].replace(" ", "")
