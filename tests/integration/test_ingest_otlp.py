"""``sentinel ingest`` with OTLP: the real OpenTelemetry SDK exports GenAI spans over HTTP to the receiver,
which produces usage events to a real broker; the events read back raise the same alerts as the native ones.

Also the receiver's contract: bearer auth, bounded bodies (413, also after gunzip), 400 with a reason and
nothing produced, 415, 404/405, 503 when the broker is down, OTLP error bodies (google.rpc.Status).
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from sentinel.config import KafkaSettings
from sentinel.decoding import EventDecoder
from sentinel.events import UsageEvent
from sentinel.ingest import IngestServer, KafkaEventSink, Normalizer
from tests.services import REPO, free_port, start_tansu, wait_tcp
from tests.unit.test_format_core import assert_same_alerts, scenario
from tests.unit.test_format_otel_genai import (
    OTLP_JSON_EXAMPLE,
    EventIds,
    _chat_span,
    _doc_with,
    _set,
    emit_spans,
    otel_equivalent,
)

pytestmark = pytest.mark.kafka

TOKEN = "ingest-test-token-" + uuid.uuid4().hex


def create_topic(bootstrap: str, partitions: int = 1) -> str:
    topic = f"usage-ingest-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()
    return topic


def consume(bootstrap: str, topic: str, n: int, timeout: float = 20.0) -> list[Any]:
    """The first ``n`` records of ``topic`` (all partitions, from the beginning), in offset order per partition."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=500)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300, max_records=5000).values():
                out.extend(records)
        assert len(out) >= n, f"only {len(out)} of {n} records arrived"
        return out[:n]
    finally:
        consumer.close()


@dataclass
class Receiver:
    server: IngestServer
    topic: str
    bootstrap: str
    port: int = 0

    def __post_init__(self) -> None:
        if self.server is not None and not self.port:
            self.port = int(self.server.server_address[1])

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                token: str | None = TOKEN) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            hdrs = {"Content-Type": "application/json", **(headers or {})}
            if token is not None:
                hdrs["Authorization"] = f"Bearer {token}"
            conn.request(method, path, body=body if method == "POST" else None, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


def start_receiver(bootstrap: str, max_body_bytes: int = 16 << 20, timeout_s: float = 10.0) -> Receiver:
    topic = create_topic(bootstrap)
    sink = KafkaEventSink(KafkaSettings(bootstrap_servers=bootstrap), topic, timeout_s=timeout_s)
    server = IngestServer("127.0.0.1", 0, TOKEN, sink, Normalizer(), max_body_bytes=max_body_bytes)
    server.start()
    return Receiver(server, topic, bootstrap)


@pytest.fixture
def receiver(kafka_bootstrap: str) -> Iterator[Receiver]:
    recv = start_receiver(kafka_bootstrap)
    try:
        yield recv
    finally:
        recv.server.close()


@pytest.fixture
def small_receiver(kafka_bootstrap: str) -> Iterator[Receiver]:
    """A receiver with a 64 KiB body limit (the size tests)."""
    recv = start_receiver(kafka_bootstrap, max_body_bytes=64 * 1024)
    try:
        yield recv
    finally:
        recv.server.close()


def test_sdk_otlp_http_exporter_end_to_end_same_alerts(receiver: Receiver) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    natives = scenario(days=0.5, loop_minutes=90)
    ids = EventIds()
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{receiver.port}/v1/traces",
                                headers={"Authorization": f"Bearer {TOKEN}"}, compression=Compression.Gzip,
                                timeout=20)
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout-svc"}), id_generator=ids)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=len(natives) + 1,
                                                   max_export_batch_size=512, schedule_delay_millis=100))
    emit_spans(provider.get_tracer("tests.genai"), ids, natives)
    assert provider.force_flush(30_000)
    provider.shutdown()

    records = consume(receiver.bootstrap, receiver.topic, len(natives))
    dec = EventDecoder()
    for rec in records:
        ev = dec.decode_one(rec.value)
        assert isinstance(ev, UsageEvent)
        assert rec.key == ev.tenant_id.encode()
        assert (b"sentinel-source-format", b"otel-genai") in [(k.encode(), v) for k, v in rec.headers]
    assert_same_alerts([r.value for r in records], [otel_equivalent(ev) for ev in natives])
    metrics = receiver.request("GET", "/metrics", token=None)[2].decode()
    assert f'sentinel_ingest_events_total{{format="otel-genai"}} {float(len(natives))}' in metrics


def test_otlp_json_post_and_routing(receiver: Receiver) -> None:
    status, headers, body = receiver.request("POST", "/v1/traces", json.dumps(OTLP_JSON_EXAMPLE).encode())
    assert (status, headers["content-type"], body) == (200, "application/json", b"{}")
    [rec] = consume(receiver.bootstrap, receiver.topic, 1)
    got = msgspec.json.decode(rec.value)
    assert (got["event_id"], got["tenant_id"], got["input_tokens"]) == (
        "5b8efff798038103d269b633813fc60c:eee19b7ec3c1b175", "t_acme", 47)
    assert rec.key == b"t_acme"
    assert receiver.request("GET", "/healthz", token=None)[:3:2] == (200, b"ok\n")
    status, headers, _ = receiver.request("GET", "/v1/traces")
    assert (status, headers["allow"]) == (405, "POST")
    assert receiver.request("POST", "/v2/traces", b"{}")[0] == 404
    status, _, body = receiver.request("POST", "/v1/traces", b"a=b",
                                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415 and b"application/x-protobuf" in body


def test_auth_and_size_limits(small_receiver: Receiver) -> None:
    receiver = small_receiver
    body = json.dumps(OTLP_JSON_EXAMPLE).encode()
    status, headers, _ = receiver.request("POST", "/v1/traces", body, token=None)
    assert (status, headers["www-authenticate"]) == (401, 'Bearer realm="sentinel-ingest"')
    assert receiver.request("POST", "/v1/traces", body, token=TOKEN + "x")[0] == 401
    assert receiver.request("POST", "/v1/traces", body, headers={"Authorization": f"Basic {TOKEN}"},
                            token=None)[0] == 401
    big = b" " * (64 * 1024 + 1)
    status, _, reply = receiver.request("POST", "/v1/traces", big)
    assert status == 413 and b"limit 65536" in reply
    bomb = gzip.compress(b"{" + b" " * (2 << 20) + b"}")  # ~2 KiB that inflates to 2 MiB
    assert len(bomb) < 64 * 1024
    status, _, reply = receiver.request("POST", "/v1/traces", bomb, headers={"Content-Encoding": "gzip"})
    assert status == 413 and b"decompressed" in reply
    status, _, reply = receiver.request("POST", "/v1/traces", b"\x1f\x8bnot gzip", headers={"Content-Encoding": "gzip"})
    assert status == 400
    assert receiver.request("POST", "/v1/traces", body, headers={"Content-Encoding": "br"})[0] == 415
    # A valid request still works on the same receiver, and none of the refused ones produced anything.
    assert receiver.request("POST", "/v1/traces", gzip.compress(body), headers={"Content-Encoding": "gzip"})[0] == 200
    assert len(consume(receiver.bootstrap, receiver.topic, 1)) == 1
    assert TOKEN not in receiver.request("GET", "/metrics", token=None)[2].decode()


def test_bad_payload_is_400_with_reason_and_nothing_produced(receiver: Receiver) -> None:
    good = _chat_span()
    bad = _chat_span()
    bad["spanId"] = "EEE19B7EC3C1B199"
    _set(bad, "gen_ai.request.model", None)
    _set(bad, "gen_ai.response.model", None)
    doc = _doc_with(good)
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"].append(bad)
    status, _, body = receiver.request("POST", "/v1/traces", json.dumps(doc).encode())
    assert status == 400
    reply = json.loads(body)
    assert reply["code"] == 3  # google.rpc.Code INVALID_ARGUMENT
    assert "span[1].gen_ai.request.model" in reply["message"] and "nothing produced" in reply["message"]

    # Mapped but invalid per the contract (negative tokens): also all-or-nothing.
    neg = _chat_span()
    _set(neg, "gen_ai.usage.output_tokens", {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "-5"}})
    status, _, body = receiver.request("POST", "/v1/traces", json.dumps(_doc_with(neg)).encode())
    assert status == 400 and "output_tokens" in json.loads(body)["message"]

    # Protobuf clients get a google.rpc.Status protobuf body.
    from google.rpc.status_pb2 import Status  # type: ignore[import-untyped]

    status, headers, body = receiver.request("POST", "/v1/traces", b"\x0a\xff\xff\xff",
                                             headers={"Content-Type": "application/x-protobuf"})
    assert (status, headers["content-type"]) == (400, "application/x-protobuf")
    err = Status()
    err.ParseFromString(body)
    assert err.code == 3 and "ExportTraceServiceRequest" in err.message

    marker = _chat_span()
    marker["spanId"] = "00000000000000AA"
    assert receiver.request("POST", "/v1/traces", json.dumps(_doc_with(marker)).encode())[0] == 200
    [first] = consume(receiver.bootstrap, receiver.topic, 1)
    assert msgspec.json.decode(first.value)["event_id"].endswith(":00000000000000aa")


class IngestProcess:
    """``sentinel ingest`` as a subprocess (the real command), stopped by its own pid only."""

    def __init__(self, bootstrap: str, topic: str, tmp: Path, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log_path = tmp / f"ingest-{self.port}.log"
        env = {**os.environ, "SENTINEL_INGEST__TOKEN": TOKEN, "SENTINEL_INGEST__PRODUCE_TIMEOUT_S": "2",
               "SENTINEL_LOG_LEVEL": "info", **(extra_env or {})}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sentinel.cli", "ingest", "--port", str(self.port), "--bootstrap", bootstrap,
                 "--topic", topic], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        if not wait_tcp(self.port, 20.0, self.proc):
            self.proc.kill()
            self.proc.wait(5)
            pytest.fail(f"sentinel ingest did not start: {self.log_path.read_text()[-2000:]}")
        self.recv = Receiver(None, topic, bootstrap, self.port)  # type: ignore[arg-type]

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                pytest.fail("sentinel ingest did not stop on SIGTERM")
        return int(self.proc.returncode)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def test_cli_broker_down_answers_503_then_stops_cleanly(tmp_path: Path) -> None:
    broker = start_tansu(tmp_path / "tansu")
    proc = None
    try:
        topic = create_topic(broker.address)
        proc = IngestProcess(broker.address, topic, tmp_path)
        body = json.dumps(OTLP_JSON_EXAMPLE).encode()
        assert proc.recv.request("POST", "/v1/traces", body)[0] == 200
        assert len(consume(broker.address, topic, 1)) == 1
        broker.stop()
        status, headers, reply = proc.recv.request("POST", "/v1/traces", body)
        assert (status, headers["retry-after"]) == (503, "5")
        assert json.loads(reply)["code"] == 14  # UNAVAILABLE: OTLP clients retry
        assert proc.stop() == 0
        log = proc.log()
        assert '"event": "ingest_listening"' in log and '"event": "ingest_stopped"' in log
        assert TOKEN not in log
    finally:
        if proc is not None:
            proc.stop()
        broker.stop()


def test_cli_refuses_to_start_without_a_token(kafka_bootstrap: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SENTINEL_INGEST__TOKEN"}
    res = subprocess.run([sys.executable, "-m", "sentinel.cli", "ingest", "--port", "0", "--bootstrap",
                          kafka_bootstrap], env=env, cwd=REPO, capture_output=True, timeout=60)
    assert res.returncode == 2
    assert b"no bearer token" in res.stderr
