"""The daemon over TLS: mutual TLS to the broker for the consumer and both producers, and a clear,
non-fatal failure when the broker's certificate is not trusted.

A TLS proxy (tests/tls_proxy.py) fronts a Tansu broker that advertises the proxy's address, so every
connection the client makes performs a real TLS handshake with the test PKI.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from tests.integration.daemon_helpers import (
    daemon_env,
    firing_events,
    http_get,
    http_port,
    lines_and_keys,
    log_events,
    replay_alerts,
    start_daemon,
    wait_exit,
    wait_for,
)
from tests.services import consume_all, free_port, start_tansu
from tests.tls_proxy import Pki, TlsProxy, make_pki

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Pki, TlsProxy]]:
    d = tmp_path_factory.mktemp("tls")
    pki = make_pki(d / "pki")
    proxy_port = free_port()
    broker = start_tansu(d / "tansu", advertised=f"localhost:{proxy_port}")
    proxy = TlsProxy(pki, proxy_port, broker.port)
    try:
        yield f"localhost:{proxy_port}", pki, proxy
    finally:
        proxy.stop()
        broker.stop()


def tls(pki: Pki, ca: Path | None = None) -> dict[str, Any]:
    return {"security_protocol": "SSL", "ssl_cafile": str(ca or pki.ca), "ssl_certfile": str(pki.client_cert),
            "ssl_keyfile": str(pki.client_key)}


def tls_env(pki: Pki, ca: Path | None = None) -> dict[str, str]:
    return {"SENTINEL_KAFKA__SECURITY_PROTOCOL": "SSL", "SENTINEL_KAFKA__SSL_CAFILE": str(ca or pki.ca),
            "SENTINEL_KAFKA__SSL_CERTFILE": str(pki.client_cert), "SENTINEL_KAFKA__SSL_KEYFILE": str(pki.client_key)}


def test_daemon_consumes_and_produces_over_mutual_tls(tls_broker: tuple[str, Pki, TlsProxy], tmp_path: Path) -> None:
    bootstrap, pki, proxy = tls_broker
    lines, keys = lines_and_keys(firing_events())
    lines.append(b'{"event_id": "bad", "ts": "never"}')  # one dead letter: the DLQ producer goes over TLS too
    keys.append(None)
    expected = replay_alerts(lines, tmp_path, cli=True)
    assert len(expected) >= 3

    topic = f"usage-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **tls(pki))
    admin.create_topics([NewTopic(topic, 4, 1), NewTopic(f"{topic}-alerts", 1, 1), NewTopic(f"{topic}-dead", 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1, enable_idempotence=False, **tls(pki))
    for line, key in zip(lines, keys, strict=True):
        producer.send(topic, value=line, key=key)
    producer.flush(60)
    producer.close()
    before = proxy.handshakes

    env = daemon_env(bootstrap, topic, f"grp-{uuid.uuid4().hex[:8]}", extra=tls_env(pki))
    log = tmp_path / "daemon.log"
    proc = start_daemon(env, log, "--exit-when-idle", "1")
    assert wait_exit(proc, 60, log) == 0, log.read_text()[-3000:]

    assert proxy.handshakes > before  # the daemon's own TLS sessions
    alerts = consume_all(bootstrap, f"{topic}-alerts", min_records=len(expected), **tls(pki))
    assert {r.value for r in alerts} == expected
    assert [r.value for r in consume_all(bootstrap, f"{topic}-dead", min_records=1, **tls(pki))] == [lines[-1]]


def test_untrusted_broker_certificate_keeps_the_daemon_waiting_not_crashing(
        tls_broker: tuple[str, Pki, TlsProxy], tmp_path: Path) -> None:
    bootstrap, pki, _ = tls_broker
    env = daemon_env(bootstrap, f"usage-{uuid.uuid4().hex[:8]}", f"grp-{uuid.uuid4().hex[:8]}",
                     extra=tls_env(pki, ca=pki.other_ca))
    log = tmp_path / "daemon.log"
    proc = start_daemon(env, log)
    try:
        http = http_port(log)
        wait_for(lambda: sum(e["event"] == "kafka_unavailable" for e in log_events(log)) >= 2, 40,
                 "two failed connection attempts")
        assert proc.poll() is None  # retrying with backoff, not crashed
        failures = [e for e in log_events(log) if e["event"] == "kafka_unavailable"]
        assert "certificate verify failed" in failures[0]["tls_error"], failures[0]
        code, body = http_get(http, "/readyz")
        assert code == 503, body
        assert http_get(http, "/healthz")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert wait_exit(proc, 20, log) == 0
        key_body = pki.client_key.read_text().splitlines()[1]
        assert key_body not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
