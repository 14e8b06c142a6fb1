"""Splunk HEC sink against a strict local HEC: envelope, batching, auth errors, busy retry, TLS verification."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel.alerting.delivery import Delivery, RetryPolicy
from sentinel.alerting.notify import DeliveryError, Notification
from sentinel.alerting.outbox import SqliteOutbox
from sentinel.alerting.routes import Router
from sentinel.rules import RoutesFile
from sentinel.sinks.splunk_hec import SplunkHecSink
from tests.receivers.alerts import make_alert
from tests.receivers.splunk_hec import HecReceiver

TOKEN = "0b1d2c3e-hec-token-4f5a6b7c"
ALL_TO_HEC = RoutesFile.model_validate({"routes": [], "default_sinks": ["splunk_hec"]})


def note(i: int, **kw: object) -> Notification:
    return Notification(alert=make_alert(i, **kw), sink="splunk_hec", reason="new", group_key="tenant:t_alpha")  # type: ignore[arg-type]


@pytest.fixture
def hec() -> Iterator[HecReceiver]:
    r = HecReceiver(TOKEN).start()
    yield r
    r.stop()


def test_batch_is_concatenated_envelopes_with_auth(hec: HecReceiver) -> None:
    sink = SplunkHecSink(hec.url, TOKEN, host="sentinel-test", index="security")
    sink.send([note(1), note(2), note(3, status="resolved")])
    assert len(hec.requests) == 1
    method, path, headers, body = hec.requests[0]
    assert (method, path, headers["Authorization"]) == ("POST", "/services/collector/event", f"Splunk {TOKEN}")
    assert body.count(b'{"event"') == 3 and b"\n" not in body
    assert [e["event"]["alert_id"] for e in hec.events] == [make_alert(i).alert_id for i in (1, 2, 3)]
    e = hec.events[0]
    assert (e["host"], e["source"], e["sourcetype"], e["index"]) == ("sentinel-test", "sentinel", "sentinel:alert",
                                                                    "security")
    assert e["time"] == pytest.approx(1793606400.0 + 1 + 60)
    assert e["event"]["notification"]["reason"] == "new"


def test_wrong_token_is_refused_and_error_has_no_token(hec: HecReceiver) -> None:
    sink = SplunkHecSink(hec.url, "wrong-token-value-123")
    with pytest.raises(DeliveryError) as exc:
        sink.send([note(1)])
    assert exc.value.retryable and "403 code 4: Invalid token" in str(exc.value)
    assert "wrong-token-value-123" not in str(exc.value) and not hec.events


def test_bad_event_is_not_retryable(hec: HecReceiver) -> None:
    sink = SplunkHecSink(hec.url, TOKEN)
    sink.source = ""  # HEC rejects an envelope without a source as invalid data
    with pytest.raises(DeliveryError) as exc:
        sink.send([note(1)])
    assert not exc.value.retryable and "code 6" in str(exc.value)


def test_busy_hec_is_retried_by_the_worker(hec: HecReceiver) -> None:
    hec.busy = 2
    d = Delivery([SplunkHecSink(hec.url, TOKEN)], SqliteOutbox(":memory:"), Router(ALL_TO_HEC),
                 retry=RetryPolicy(initial_s=0.05, max_s=0.1, max_attempts=5, seed=1), idle_poll_s=0.02)
    d.start()
    d.enqueue([make_alert(i) for i in range(10)])
    try:
        assert d.wait_idle(15)
    finally:
        d.close()
    assert sorted(e["event"]["alert_id"] for e in hec.events) == sorted(make_alert(i).alert_id for i in range(10))
    assert d.stats.failures["splunk_hec"] == 2


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_tls_verification_is_on_by_default_and_passes_with_the_ca(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    hec = HecReceiver(TOKEN, certfile=cert, keyfile=key).start()
    try:
        assert hec.url.startswith("https://")
        with pytest.raises(DeliveryError) as exc:
            SplunkHecSink(hec.url, TOKEN).send([note(1)])
        assert "certificate verify failed" in str(exc.value) or "verification failed" in str(exc.value)
        assert not hec.events
        SplunkHecSink(hec.url, TOKEN, ca_file=cert).send([note(2)])
        assert [e["event"]["alert_id"] for e in hec.events] == [make_alert(2).alert_id]
    finally:
        hec.stop()
