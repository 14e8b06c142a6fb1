"""``otel-genai`` adapter: OTLP trace exports with GenAI semantic-convention spans.

Records are built two ways: OTLP/JSON copied from the OTLP specification's
example (``opentelemetry-proto/examples/trace.json``) with GenAI attributes as
the semantic conventions' chat example sets them; and spans made by the real
OpenTelemetry SDK, encoded by the OTLP exporter's own protobuf encoder
(``opentelemetry-exporter-otlp-proto-common``). The HTTP path (SDK exporter ->
``sentinel ingest`` -> Kafka) is in tests/integration/test_ingest_otlp.py.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import msgspec
import pytest
from google.protobuf.json_format import MessageToJson  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from sentinel.decoding import EventDecoder, Rejection
from sentinel.events import UsageEvent
from sentinel.formats import FormatError, get_format
from sentinel.formats.mapping import FieldMapping
from sentinel.formats.otel_genai import OtelGenAI
from tests.unit.test_format_core import adapt_all, assert_same_alerts, replace, scenario


def _s(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def _i(key: str, value: int) -> dict[str, Any]:
    return {"key": key, "value": {"intValue": str(value)}}  # OTLP/JSON: int64 as text


# The OTLP spec's example export; its server span kept, plus a GenAI chat client span and an agent span.
OTLP_JSON_EXAMPLE: dict[str, Any] = {
    "resourceSpans": [{
        "resource": {"attributes": [_s("service.name", "my.service"), _s("tenant_id", "t_acme")]},
        "scopeSpans": [{
            "scope": {"name": "my.library", "version": "1.0.0",
                      "attributes": [_s("my.scope.attribute", "some scope attribute")]},
            "spans": [
                {"traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174",
                 "parentSpanId": "EEE19B7EC3C1B173", "name": "I'm a server span",
                 "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": "1544712661000000000",
                 "kind": 2, "attributes": [_s("my.span.attr", "some value")]},
                {"traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B175",
                 "parentSpanId": "EEE19B7EC3C1B174", "name": "chat gpt-4",
                 "startTimeUnixNano": "1544712660100000000", "endTimeUnixNano": "1544712660950000000",
                 "kind": 3, "status": {},
                 "attributes": [
                     _s("gen_ai.operation.name", "chat"), _s("gen_ai.provider.name", "openai"),
                     _s("gen_ai.request.model", "gpt-4"), _s("gen_ai.response.model", "gpt-4-0613"),
                     _s("gen_ai.response.id", "chatcmpl-9J3uIL87gldCFtiIbyaOvTeYBRA3l"),
                     _i("gen_ai.usage.input_tokens", 47), _i("gen_ai.usage.output_tokens", 52),
                     _i("gen_ai.usage.cache_read.input_tokens", 32),
                     {"key": "gen_ai.response.finish_reasons",
                      "value": {"arrayValue": {"values": [{"stringValue": "stop"}]}}},
                     _s("gen_ai.conversation.id", "conv_5j66UpCpwteGg4YSxUnt7lPY"),
                     _s("server.address", "api.openai.com"), _s("api_key_id", "key-checkout-prod"),
                     _s("prompt_shape", "shp_support_v2"),
                 ]},
                {"traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B176",
                 "parentSpanId": "EEE19B7EC3C1B174", "name": "invoke_agent support",
                 "startTimeUnixNano": "1544712660050000000", "endTimeUnixNano": "1544712660990000000",
                 "kind": 1, "attributes": [_s("gen_ai.operation.name", "invoke_agent"),
                                           _s("gen_ai.provider.name", "openai"), _i("gen_ai.usage.input_tokens", 47)]},
            ],
        }],
    }],
}


def _map(doc: object, mapping: FieldMapping | None = None) -> list[dict[str, Any]]:
    got = get_format("otel-genai", mapping).adapt(json.dumps(doc).encode())
    assert not isinstance(got, Rejection), got
    dec = EventDecoder()
    for line in got:
        assert isinstance(dec.decode_one(line), UsageEvent)
    return [msgspec.json.decode(x) for x in got]


def test_spec_example_maps_only_the_model_call_span() -> None:
    assert _map(OTLP_JSON_EXAMPLE) == [{
        "event_id": "5b8efff798038103d269b633813fc60c:eee19b7ec3c1b175",
        "ts": 1544712660.95,
        "api_key_id": "key-checkout-prod",
        "tenant_id": "t_acme",
        "session_id": "conv_5j66UpCpwteGg4YSxUnt7lPY",
        "provider": "openai",
        "model": "gpt-4-0613",
        "input_tokens": 47,
        "output_tokens": 52,
        "cached_input_tokens": 32,
        "cache_write_tokens": 0,
        "status": 200,
        "latency_ms": 850,
        "prompt_shape": "shp_support_v2",
    }]


def _chat_span() -> dict[str, Any]:
    doc = copy.deepcopy(OTLP_JSON_EXAMPLE)
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    del spans[2], spans[0]
    chat: dict[str, Any] = spans[0]
    return chat


def _doc_with(span: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(OTLP_JSON_EXAMPLE)
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"] = [span]
    return doc


def _set(span: dict[str, Any], key: str, value: dict[str, Any] | None) -> None:
    span["attributes"] = [a for a in span["attributes"] if a["key"] != key] + ([value] if value else [])


def test_error_status_and_fallbacks() -> None:
    span = _chat_span()
    span["status"] = {"code": 2, "message": "rate limited"}
    _set(span, "error.type", _s("error.type", "429"))
    _set(span, "gen_ai.usage.output_tokens", None)
    _set(span, "api_key_id", None)
    _set(span, "gen_ai.response.model", None)
    [ev] = _map(_doc_with(span))
    assert (ev["status"], ev["output_tokens"], ev["model"]) == (429, 0, "gpt-4")
    assert ev["api_key_id"] == "service:my.service"  # no key attribute: the calling service
    _set(span, "error.type", _s("error.type", "openai.APITimeoutError"))
    assert _map(_doc_with(span))[0]["status"] == 500
    _set(span, "http.response.status_code", _i("http.response.status_code", 403))
    assert _map(_doc_with(span))[0]["status"] == 403


def test_deprecated_attributes_and_exclusive_cache_counts() -> None:
    span = _chat_span()
    _set(span, "gen_ai.provider.name", None)
    _set(span, "gen_ai.system", _s("gen_ai.system", "anthropic"))
    _set(span, "gen_ai.usage.input_tokens", None)
    _set(span, "gen_ai.usage.prompt_tokens", _i("gen_ai.usage.prompt_tokens", 20))
    _set(span, "gen_ai.usage.cache_read.input_tokens", _i("gen_ai.usage.cache_read.input_tokens", 3000))
    _set(span, "gen_ai.usage.cache_creation.input_tokens", _i("gen_ai.usage.cache_creation.input_tokens", 500))
    [ev] = _map(_doc_with(span))
    assert ev["provider"] == "anthropic"
    # Anthropic-style counts exclude the cache: added so that the contract's input includes it.
    assert (ev["input_tokens"], ev["cached_input_tokens"], ev["cache_write_tokens"]) == (3520, 3000, 500)


def test_mapping_from_span_or_resource_attributes() -> None:
    span = _chat_span()
    _set(span, "org", _s("org", "org-9"))
    _set(span, "client.address", _s("client.address", "198.51.100.20"))
    _set(span, "user_agent.original", _s("user_agent.original", "checkout/3.2"))
    _set(span, "user.id", _s("user.id", "u-1"))
    doc = _doc_with(span)
    [ev] = _map(doc, FieldMapping(tenant_key="org"))
    assert (ev["tenant_id"], ev["source_ip"], ev["user_agent"], ev["user_id"]) == (
        "org-9", "198.51.100.20", "checkout/3.2", "u-1")
    assert _map(doc)[0]["tenant_id"] == "t_acme"  # from the resource


def test_rejections_name_the_span_and_attribute() -> None:
    adapter = get_format("otel-genai")
    span = _chat_span()
    _set(span, "gen_ai.provider.name", None)
    got = adapter.adapt(json.dumps(_doc_with(span)).encode())
    assert isinstance(got, Rejection) and (got.code, got.field) == ("missing_field", "span[0].gen_ai.provider.name")
    span = _chat_span()
    _set(span, "gen_ai.usage.input_tokens", {"key": "gen_ai.usage.input_tokens", "value": {"stringValue": "lots"}})
    got = adapter.adapt(json.dumps(_doc_with(span)).encode())
    assert isinstance(got, Rejection) and (got.code, got.field) == ("wrong_type",
                                                                    "span[0].gen_ai.usage.input_tokens")
    span = _chat_span()
    span["spanId"] = "xyz"
    got = adapter.adapt(json.dumps(_doc_with(span)).encode())
    assert isinstance(got, Rejection) and (got.code, got.field) == ("wrong_type", "span[0].spanId")
    for bad, code in ((b"[]", "not_an_object"), (b'{"resourceLogs": []}', "missing_field"),
                      (b'{"resourceSpans": {}}', "wrong_type"), (b"{", "malformed_json")):
        got = adapter.adapt(bad)
        assert isinstance(got, Rejection) and got.code == code, bad
    assert adapter.adapt(b'{"resourceSpans": []}') == []


# -- spans from the real OpenTelemetry SDK ----------------------------------------------------------


class EventIds(IdGenerator):
    """Deterministic trace/span ids derived from the event id being emitted (set ``current`` first)."""

    def __init__(self) -> None:
        self.current = ""

    def _digest(self) -> bytes:
        return hashlib.sha256(self.current.encode()).digest()

    def generate_trace_id(self) -> int:
        return int.from_bytes(self._digest()[:16], "big") or 1

    def generate_span_id(self) -> int:
        return int.from_bytes(self._digest()[16:24], "big") or 1


def ids_of(event_id: str) -> str:
    gen = EventIds()
    gen.current = event_id
    return f"{gen.generate_trace_id():032x}:{gen.generate_span_id():016x}"


def ns(t: float) -> int:
    return round(Fraction(t) * 10**9)  # exact: the float's value, not its decimal rendering


def genai_attributes(ev: UsageEvent) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": ev.provider, "gen_ai.request.model": ev.model,
        "gen_ai.response.model": ev.model, "gen_ai.usage.input_tokens": ev.input_tokens,
        "gen_ai.usage.output_tokens": ev.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": ev.cached_input_tokens,
        "gen_ai.usage.cache_creation.input_tokens": ev.cache_write_tokens,
        "gen_ai.conversation.id": ev.session_id, "api_key_id": ev.api_key_id, "tenant_id": ev.tenant_id,
        "user_id": ev.user_id, "feature": ev.feature, "prompt_shape": ev.prompt_shape,
        "prefix_hash": ev.prefix_hash, "resource_tenant_id": ev.resource_tenant_id,
        "client.address": ev.source_ip, "user_agent.original": ev.user_agent,
    }
    if ev.status >= 400:
        attrs["error.type"] = str(ev.status)
    return {k: v for k, v in attrs.items() if v is not None}


def emit_spans(tracer: Tracer, ids: EventIds, events: Sequence[UsageEvent]) -> None:
    """One GenAI client span per event, as an instrumented app would record it."""
    for ev in events:
        ids.current = ev.event_id
        end = ns(ev.t)
        span = tracer.start_span(f"chat {ev.model}", kind=SpanKind.CLIENT,
                                 start_time=end - (ev.latency_ms or 0) * 1_000_000, attributes=genai_attributes(ev))
        if ev.status >= 400:
            span.set_status(Status(StatusCode.ERROR, f"HTTP {ev.status}"))
        span.end(end_time=end)


def otel_equivalent(ev: UsageEvent) -> UsageEvent:
    """``ev`` as a GenAI span carries it: span ids, no request/attempt/cancel, always a duration."""
    return replace(ev, event_id=ids_of(ev.event_id), ts=ns(ev.t) / 1_000_000_000, request_id=None, attempt=1,
                   cancelled=False, cost_usd=None, latency_ms=ev.latency_ms or 0)


def sdk_spans(events: Sequence[UsageEvent]) -> Sequence[ReadableSpan]:
    ids = EventIds()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout-svc"}), id_generator=ids)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    emit_spans(provider.get_tracer("tests.genai"), ids, events)
    provider.shutdown()
    return exporter.get_finished_spans()


@pytest.fixture(scope="module")
def natives() -> list[UsageEvent]:
    return scenario()


def test_sdk_protobuf_export_gives_same_alerts_as_natives(natives: list[UsageEvent]) -> None:
    spans = sdk_spans(natives)
    adapter = OtelGenAI()
    lines: list[bytes] = []
    for i in range(0, len(spans), 512):  # the batch processor's default export size
        lines.extend(adapter.adapt_protobuf(encode_spans(spans[i:i + 512]).SerializeToString()))
    assert_same_alerts(lines, [otel_equivalent(ev) for ev in natives])


def test_protobuf_json_mapping_is_accepted_too(natives: list[UsageEvent]) -> None:
    # protobuf's own JSON mapping writes ids in base64 (OTLP/JSON wants hex): both are accepted.
    few = natives[:50]
    doc = MessageToJson(encode_spans(sdk_spans(few)))
    assert '"traceId": "' in doc
    adapted = adapt_all("otel-genai", [doc.replace("\n", "").encode()])
    assert [msgspec.json.decode(x)["event_id"] for x in adapted.lines] == [ids_of(ev.event_id) for ev in few]


def test_malformed_protobuf_is_a_format_error() -> None:
    with pytest.raises(FormatError) as err:
        OtelGenAI().adapt_protobuf(b"\x0a\xff\xff\xff")
    assert err.value.rejection.code == "malformed_protobuf"
