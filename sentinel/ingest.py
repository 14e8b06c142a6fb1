"""HTTP receiver: OTLP traces and LiteLLM logging posts in, usage events out to Kafka.

Gateways and SDKs push what they already emit; this receiver maps it with the
input-format adapters (:mod:`sentinel.formats`) and produces usage-v1 events
to the usage topic, so the daemon stays a pure Kafka consumer. Endpoints:

* ``POST /v1/traces`` -- OTLP/HTTP trace export, ``application/json`` (OTLP/JSON)
  or ``application/x-protobuf`` (binary, with ``opentelemetry-proto``); GenAI
  model-call spans become events, other spans are ignored.
* ``POST /litellm`` -- LiteLLM's generic HTTP logging callback: a
  StandardLoggingPayload object, a JSON array of them (``json_array``, the
  default) or newline-delimited objects (``ndjson``).
* ``GET /healthz`` (no auth) and ``GET /metrics`` (Prometheus, no auth).

Every POST needs ``Authorization: Bearer <token>`` (compared in constant time).
The body is bounded (``Content-Length`` required; over the limit -> 413, also
after gzip decompression). A request is all-or-nothing: every record is mapped
and validated against the contract first; if any is rejected the answer is 400
with the reasons and **nothing** is produced. Otherwise all events are produced
(key = ``tenant_id``, so a tenant stays on one partition) and flushed before the
200. A broker failure answers 503 (retryable); events of that request that did
reach Kafka are dropped as duplicates by ``event_id`` when the client retries.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Protocol

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from sentinel.config import KafkaSettings
from sentinel.decoding import MAX_LINE_BYTES, EventDecoder, Rejection
from sentinel.formats.base import FormatError
from sentinel.formats.litellm import LiteLLM
from sentinel.formats.mapping import FieldMapping
from sentinel.formats.otel_genai import OtelGenAI
from sentinel.logs import get_logger

log = get_logger("sentinel.ingest")

MAX_REASONS: Final = 5
_JSON: Final = "application/json"
_PROTOBUF: Final = ("application/x-protobuf", "application/protobuf")
_GRPC_INVALID_ARGUMENT: Final = 3
_GRPC_UNAVAILABLE: Final = 14
_WBITS: Final = {"gzip": 31, "deflate": 15}  # zlib window bits: gzip wrapper / zlib wrapper (HTTP "deflate")


class IngestError(Exception):
    """A request answered with an error status; ``reason`` is safe to send back (redacted)."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Normalized:
    """A request's events, validated: (kafka key, usage-v1 line) pairs."""

    fmt: str
    records: int
    events: list[tuple[bytes, bytes]]


class Normalizer:
    """Maps request bodies to validated usage-v1 events, all or nothing (no I/O)."""

    def __init__(self, mapping: FieldMapping | None = None, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.otel = OtelGenAI(mapping)
        self.litellm = LiteLLM(mapping)
        self.decoder = EventDecoder(max_line_bytes)

    def otlp(self, body: bytes, content_type: str) -> Normalized:
        try:
            if content_type == _JSON:
                got = self.otel.adapt(body)
                if isinstance(got, Rejection):
                    raise _rejected([("request", got)], 1)
                lines = got
            elif content_type in _PROTOBUF:
                lines = self.otel.adapt_protobuf(body)
            else:
                raise IngestError(415, "unsupported_media_type",
                                  "Content-Type must be application/json or application/x-protobuf")
        except FormatError as err:
            raise _rejected([("request", err.rejection)], 1) from None
        return Normalized("otel-genai", 1, self._validate(lines))

    def litellm_posts(self, body: bytes) -> Normalized:
        got = self.litellm.adapt(body)
        records = 1
        if isinstance(got, Rejection) and got.code == "malformed_json" and b"\n" in body.strip():
            # ndjson log_format: one payload per line.
            parts = [ln for ln in body.split(b"\n") if ln.strip()]
            records = len(parts)
            lines: list[bytes] = []
            bad: list[tuple[str, Rejection]] = []
            for i, part in enumerate(parts):
                one = self.litellm.adapt(part)
                if isinstance(one, Rejection):
                    bad.append((f"line {i + 1}", one))
                else:
                    lines.extend(one)
            if bad:
                raise _rejected(bad, records)
            return Normalized("litellm", records, self._validate(lines))
        if isinstance(got, Rejection):
            raise _rejected([("request", got)], records)
        return Normalized("litellm", records, self._validate(got))

    def _validate(self, lines: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        bad: list[tuple[str, Rejection]] = []
        for i, line in enumerate(lines):
            ev = self.decoder.decode_one(line)
            if isinstance(ev, Rejection):
                bad.append((f"event {i + 1}", ev))
            else:
                out.append((ev.tenant_id.encode("utf-8"), line))
        if bad:
            raise _rejected(bad, len(lines), what="events")
        return out


def _rejected(bad: list[tuple[str, Rejection]], total: int, what: str = "records") -> IngestError:
    first = "; ".join(f"{where}: {why.render()}" for where, why in bad[:MAX_REASONS])
    more = f" (+{len(bad) - MAX_REASONS} more)" if len(bad) > MAX_REASONS else ""
    return IngestError(400, bad[0][1].code, f"{len(bad)} of {total} {what} rejected, nothing produced: {first}{more}")


class EventSink(Protocol):
    def produce(self, events: Sequence[tuple[bytes, bytes]], fmt: str) -> None:
        """Write and flush ``events``; raise :class:`IngestError` (503) when they may not all be written."""
        ...

    def close(self) -> None: ...


class KafkaEventSink:
    """Produces usage events with kafka-python; ``acks=all``, flushed per request."""

    def __init__(self, kafka: KafkaSettings, topic: str, timeout_s: float = 10.0) -> None:
        from kafka import KafkaProducer

        from sentinel.sources.kafka import client_config

        self.topic = topic
        self.timeout_s = timeout_s
        ms = int(timeout_s * 1000)
        # Records that cannot be delivered expire with the request's deadline instead of lingering for the
        # default two minutes: the client got its 503, and shutdown need not wait for them.
        self._producer = KafkaProducer(acks="all", linger_ms=5, max_block_ms=ms, request_timeout_ms=ms,
                                       delivery_timeout_ms=ms + 500, **client_config(kafka))

    def produce(self, events: Sequence[tuple[bytes, bytes]], fmt: str) -> None:
        from kafka.errors import KafkaError

        headers = [("sentinel-source-format", fmt.encode())]
        deadline = time.monotonic() + self.timeout_s
        try:
            futures = [self._producer.send(self.topic, value=value, key=key, headers=headers)
                       for key, value in events]
            self._producer.flush(timeout=self.timeout_s)
            for fut in futures:
                fut.get(timeout=max(0.0, deadline - time.monotonic()))
        except KafkaError as err:
            log.warning("ingest_produce_failed", topic=self.topic, error=type(err).__name__, events=len(events))
            raise IngestError(503, "kafka_unavailable", "could not write to Kafka; retry later") from None

    def close(self) -> None:
        from kafka.errors import KafkaError

        try:
            self._producer.close(timeout=self.timeout_s + 2.0)
        except KafkaError as err:  # a dead broker cannot take the last flush; those requests got 503
            log.warning("ingest_producer_close_failed", topic=self.topic, error=type(err).__name__)
            # kafka-python's close() gives up at the flush without stopping its sender thread.
            sender = getattr(self._producer, "_sender", None)
            if sender is not None:
                sender.force_close()
                sender.join(self.timeout_s)
            self._producer._closed = True


class IngestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("sentinel_ingest_requests", "Ingest HTTP requests by path and status",
                                ["path", "status"], registry=self.registry)
        self.events = Counter("sentinel_ingest_events", "Usage events produced by source format",
                              ["format"], registry=self.registry)


def grpc_status(code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` protobuf (code, message): the OTLP/HTTP error body for protobuf clients."""
    msg = message.encode("utf-8")

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    return b"\x08" + varint(code) + b"\x12" + varint(len(msg)) + msg


class IngestServer(ThreadingHTTPServer):
    """The receiver (see the module docstring). ``serve_forever`` in a thread; ``close`` to stop."""

    daemon_threads = True

    def __init__(self, host: str, port: int, token: str, sink: EventSink, normalizer: Normalizer | None = None,
                 max_body_bytes: int = 16 << 20) -> None:
        if not token:
            raise ValueError("an ingest bearer token is required")
        self.token = token.encode("utf-8")
        self.sink = sink
        self.normalizer = normalizer or Normalizer()
        self.max_body_bytes = max_body_bytes
        self.metrics = IngestMetrics()
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="sentinel-ingest", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting, finish, close the socket and the sink."""
        self.shutdown()
        if self._thread is not None:
            self._thread.join(10)
        self.server_close()
        self.sink.close()

    def authorized(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode("utf-8"), self.token)


class _Handler(BaseHTTPRequestHandler):
    server: IngestServer
    protocol_version = "HTTP/1.1"
    timeout = 30
    server_version = "sentinel-ingest"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Per-request access logs are off: counts are in /metrics."""

    # -- routing --------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._reply(200, b"ok\n", "text/plain")
        elif path == "/metrics":
            self._reply(200, generate_latest(self.server.metrics.registry), CONTENT_TYPE_LATEST)
        elif path in ("/v1/traces", "/litellm"):
            self._reply(405, b'{"error": "use POST"}', _JSON, extra={"Allow": "POST"})
        else:
            self._reply(404, b'{"error": "not found"}', _JSON)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in ("/v1/traces", "/litellm"):
            self._reply(404, b'{"error": "not found"}', _JSON, close=True)
            return
        content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        try:
            if not self.server.authorized(self.headers.get("Authorization")):
                raise IngestError(401, "unauthorized", "missing or wrong bearer token")
            body = self._read_body()
            if path == "/v1/traces":
                batch = self.server.normalizer.otlp(body, content_type)
            else:
                if content_type != _JSON:
                    raise IngestError(415, "unsupported_media_type", "Content-Type must be application/json")
                batch = self.server.normalizer.litellm_posts(body)
            if batch.events:
                self.server.sink.produce(batch.events, batch.fmt)
        except IngestError as err:
            self._error(path, content_type, err)
            return
        except Exception as err:  # a bug must cost one request, never the receiver
            log.error("ingest_internal_error", path=path, error=type(err).__name__)
            self._error(path, content_type, IngestError(500, "internal_error", "internal error"))
            return
        self.server.metrics.events.labels(batch.fmt).inc(len(batch.events))
        self.server.metrics.requests.labels(path, "200").inc()
        if path == "/v1/traces":
            if content_type in _PROTOBUF:
                self._reply(200, b"", content_type)  # an empty ExportTraceServiceResponse
            else:
                self._reply(200, b"{}", _JSON)
        else:
            self._reply(200, json.dumps({"accepted": len(batch.events)}).encode(), _JSON)

    # -- helpers --------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        limit = self.server.max_body_bytes
        if self.headers.get("Transfer-Encoding"):
            raise IngestError(411, "length_required", "send Content-Length (chunked bodies are not accepted)")
        raw_len = self.headers.get("Content-Length")
        if raw_len is None or not raw_len.strip().isdigit():
            raise IngestError(411, "length_required", "Content-Length is required")
        length = int(raw_len)
        if length > limit:
            raise IngestError(413, "body_too_large", f"body of {length} bytes > limit {limit}")
        body = self.rfile.read(length)
        if len(body) != length:
            raise IngestError(400, "truncated_body", "connection closed before the whole body arrived")
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding in _WBITS:
            body = _inflate(body, limit, encoding)
        elif encoding != "identity":
            raise IngestError(415, "unsupported_encoding", "Content-Encoding must be gzip, deflate or identity")
        if not body.strip():
            raise IngestError(400, "empty_body", "empty request body")
        return body

    def _error(self, path: str, content_type: str, err: IngestError) -> None:
        self.server.metrics.requests.labels(path, str(err.status)).inc()
        if err.status >= 500:
            log.warning("ingest_unavailable", path=path, status=err.status, reason=err.code)
        else:
            log.info("ingest_rejected", path=path, status=err.status, reason=err.code)
        extra = {"Retry-After": "5"} if err.status == 503 else {}
        if err.status == 401:
            extra["WWW-Authenticate"] = 'Bearer realm="sentinel-ingest"'
        # Requests refused before their body was read cannot keep the connection.
        close = err.status in (401, 411, 413)
        if path == "/v1/traces" and content_type in _PROTOBUF:
            code = _GRPC_UNAVAILABLE if err.status >= 500 else _GRPC_INVALID_ARGUMENT
            self._reply(err.status, grpc_status(code, err.reason), content_type, extra, close)
        elif path == "/v1/traces":
            code = _GRPC_UNAVAILABLE if err.status >= 500 else _GRPC_INVALID_ARGUMENT
            self._reply(err.status, json.dumps({"code": code, "message": err.reason}).encode(), _JSON, extra, close)
        else:
            self._reply(err.status, json.dumps({"error": err.code, "reason": err.reason}).encode(), _JSON,
                        extra, close)

    def _reply(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None,
               close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)


def _inflate(body: bytes, limit: int, encoding: str) -> bytes:
    """Decompress a gzip/deflate body, refusing to inflate past ``limit`` (a zip bomb costs nothing)."""
    d = zlib.decompressobj(wbits=_WBITS[encoding])
    try:
        out = d.decompress(body, limit + 1)
        if len(out) > limit or d.unconsumed_tail:
            raise IngestError(413, "body_too_large", f"decompressed body > limit {limit}")
        if not d.eof:
            raise IngestError(400, "malformed_body", f"{encoding} body is truncated")
    except zlib.error as err:
        raise IngestError(400, "malformed_body", f"not a {encoding} body: {err}") from None
    return out
