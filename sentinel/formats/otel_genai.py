"""``otel-genai``: OpenTelemetry spans that follow the GenAI semantic conventions.

A record is one OTLP ``ExportTraceServiceRequest`` (``{"resourceSpans": [...]}``)
in OTLP/JSON -- the body of an OTLP/HTTP JSON export, and one line of the
OpenTelemetry Collector's ``file`` exporter. :meth:`OtelGenAI.adapt_protobuf`
maps the same message in binary protobuf (OTLP/HTTP default) when
``opentelemetry-proto`` is installed. References: OTLP specification, "OTLP/HTTP"
and "JSON Protobuf Encoding" (ids are hex, int64 may be text); OpenTelemetry
semantic conventions, "Semantic conventions for generative client AI spans" and
the ``gen_ai.*`` attribute registry (as shipped in opentelemetry-semantic-conventions
0.66b, now maintained in open-telemetry/semantic-conventions-genai).

Which spans become events: a span is one model call when its
``gen_ai.operation.name`` is a model operation (``chat``, ``text_completion``,
``generate_content``, ``embeddings``, ...) or, without an operation name, when
it carries ``gen_ai.usage.*`` counts. Agent and tool spans (``invoke_agent``,
``create_agent``, ``execute_tool``, ``invoke_workflow``) map to nothing: their
usage, when present, is the sum of their child model calls, which are counted
themselves. Spans without ``gen_ai`` attributes (HTTP, database ...) map to
nothing. Several spans in one record give several events.

Span -> usage-v1, field by field (an attribute is looked up on the span first,
then on its resource):

=====================  ==================================================================
usage-v1               OTLP span / GenAI attribute
=====================  ==================================================================
event_id               ``<traceId>:<spanId>`` (hex)
ts                     ``endTimeUnixNano`` (else ``startTimeUnixNano``)
latency_ms             ``endTimeUnixNano - startTimeUnixNano``
api_key_id             attribute named by the mapping's ``api_key_key``, else
                       ``service:<service.name>`` (resource), else ``default_api_key``
tenant_id              attribute ``tenant_key``, else ``default_tenant``
user_id                attribute ``user_key``, else ``user.id``, else ``enduser.id``
session_id             ``gen_ai.conversation.id``, else attribute ``session_key``, else ``session.id``
request_id, attempt    not in the conventions (retries inside a client are one span)
feature                attribute ``feature_key``
provider               ``gen_ai.provider.name`` (else the deprecated ``gen_ai.system``); required
model                  ``gen_ai.response.model`` (as billed), else ``gen_ai.request.model``; required
input_tokens           ``gen_ai.usage.input_tokens`` (else deprecated ``gen_ai.usage.prompt_tokens``)
output_tokens          ``gen_ai.usage.output_tokens`` (else ``gen_ai.usage.completion_tokens``)
cached_input_tokens    ``gen_ai.usage.cache_read.input_tokens``
cache_write_tokens     ``gen_ai.usage.cache_creation.input_tokens``
cost_usd               not in the conventions: computed from the price table
status                 ``http.response.status_code`` when present; else span status ERROR
                       (code 2) -> ``error.type`` when it is an HTTP status, else 500; else 200
cancelled              not in the conventions (false)
source_ip              ``client.address``
user_agent             ``user_agent.original``
prompt_shape           attribute ``prompt_shape_key``
prefix_hash            attribute ``prefix_hash_key``
resource_tenant_id     attribute ``resource_tenant_key``
=====================  ==================================================================

The conventions say ``gen_ai.usage.input_tokens`` SHOULD include cached tokens
(our contract's meaning too). Some instrumentations report the provider's raw
Anthropic-style count, which excludes them; when cache reads plus writes exceed
the input count, the adapter adds them, so ``cached <= input`` holds and cost
is not under-counted.

What the conventions lack: tenant, api key, feature, ``prompt_shape``,
``prefix_hash``, ``resource_tenant_id``, cost, request/attempt and
cancellation. They come from the mapping's attribute names (set them as span
or resource attributes in the instrumented service); detectors that need them
stay quiet without them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Final, NamedTuple

from sentinel.formats.base import FormatError, MappingAdapter, encode, load_json, opt_int
from sentinel.formats.mapping import bounded_id, pick

AGENT_OPERATIONS: Final = frozenset({"invoke_agent", "create_agent", "execute_tool", "invoke_workflow"})
STATUS_ERROR: Final = 2
_USAGE_KEYS: Final = ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
                      "gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens")


class SpanView(NamedTuple):
    """The parts of one OTLP span the mapping reads, whatever the wire encoding."""

    trace_id: object  # hex text once checked (JSON input is checked only for GenAI spans)
    span_id: object
    start_ns: int
    end_ns: int
    attrs: dict[str, Any]
    status_code: int


def _hex_id(value: object, field: str, size: int) -> str:
    """OTLP/JSON ids are hex; protobuf-JSON tools write base64: accept both, return hex."""
    if not isinstance(value, str) or not value:
        raise FormatError("missing_field", field, "span id missing")
    if len(value) == 2 * size:
        try:
            bytes.fromhex(value)
            return value.lower()
        except ValueError:
            pass
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        raise FormatError("wrong_type", field, f"expected {size} bytes as hex", value)
    return raw.hex()


def _json_value(v: object) -> object:
    """An OTLP/JSON ``AnyValue`` as a Python scalar (arrays and maps are not needed here)."""
    if not isinstance(v, dict):
        return None
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        iv = v["intValue"]
        try:
            return int(iv)
        except (TypeError, ValueError):
            return iv
    if "doubleValue" in v:
        return v["doubleValue"]
    if "boolValue" in v:
        return v["boolValue"]
    return None


def _json_attrs(items: object, field: str) -> dict[str, Any]:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise FormatError("wrong_type", field, "expected a list of key/value attributes")
    out: dict[str, Any] = {}
    for kv in items:
        if isinstance(kv, dict) and isinstance(kv.get("key"), str):
            out[kv["key"]] = _json_value(kv.get("value"))
    return out


def _list(value: object, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise FormatError("wrong_type", field, "expected a list")
    return value


def spans_from_json(doc: object) -> Iterator[tuple[dict[str, Any], SpanView]]:
    """(resource attributes, span) pairs of an OTLP/JSON ExportTraceServiceRequest."""
    if not isinstance(doc, dict):
        raise FormatError("not_an_object", None, "expected an OTLP ExportTraceServiceRequest object")
    if "resourceSpans" not in doc and "resource_spans" not in doc:
        raise FormatError("missing_field", "resourceSpans", "not an OTLP trace export")
    for i, rs in enumerate(_list(doc.get("resourceSpans", doc.get("resource_spans")), "resourceSpans")):
        where = f"resourceSpans[{i}]"
        if not isinstance(rs, dict):
            raise FormatError("wrong_type", where, "expected an object")
        resource = rs.get("resource")
        rattrs = _json_attrs(resource.get("attributes") if isinstance(resource, dict) else None,
                             f"{where}.resource.attributes")
        scopes = rs.get("scopeSpans", rs.get("scope_spans", rs.get("instrumentationLibrarySpans")))
        for j, ss in enumerate(_list(scopes, f"{where}.scopeSpans")):
            if not isinstance(ss, dict):
                raise FormatError("wrong_type", f"{where}.scopeSpans[{j}]", "expected an object")
            for k, sp in enumerate(_list(ss.get("spans"), f"{where}.scopeSpans[{j}].spans")):
                at = f"{where}.scopeSpans[{j}].spans[{k}]"
                if not isinstance(sp, dict):
                    raise FormatError("wrong_type", at, "expected an object")
                status = sp.get("status")
                code = status.get("code") if isinstance(status, dict) else None
                if code == "STATUS_CODE_ERROR":
                    code = STATUS_ERROR
                yield rattrs, SpanView(
                    trace_id=sp.get("traceId", sp.get("trace_id")),
                    span_id=sp.get("spanId", sp.get("span_id")),
                    start_ns=opt_int(sp.get("startTimeUnixNano"), f"{at}.startTimeUnixNano") or 0,
                    end_ns=opt_int(sp.get("endTimeUnixNano"), f"{at}.endTimeUnixNano") or 0,
                    attrs=_json_attrs(sp.get("attributes"), f"{at}.attributes"),
                    status_code=code if isinstance(code, int) else 0,
                )


def _pb_value(v: Any) -> object:
    kind = v.WhichOneof("value")
    if kind in ("string_value", "int_value", "double_value", "bool_value"):
        return getattr(v, kind)
    return None


def spans_from_protobuf(body: bytes) -> Iterator[tuple[dict[str, Any], SpanView]]:
    """(resource attributes, span) pairs of a binary ExportTraceServiceRequest."""
    try:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    except ImportError:  # pragma: no cover - depends on the install
        raise FormatError("unsupported_encoding", None,
                          "protobuf needs opentelemetry-proto (pip install sentinel-llm[otlp])") from None
    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(body)
    except Exception as err:  # google.protobuf.message.DecodeError (protobuf ships no type stubs)
        raise FormatError("malformed_protobuf", None, f"not an ExportTraceServiceRequest: {err}") from None
    for rs in req.resource_spans:
        rattrs = {kv.key: _pb_value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for sp in ss.spans:
                yield rattrs, SpanView(
                    trace_id=sp.trace_id.hex(),
                    span_id=sp.span_id.hex(),
                    start_ns=sp.start_time_unix_nano,
                    end_ns=sp.end_time_unix_nano,
                    attrs={kv.key: _pb_value(kv.value) for kv in sp.attributes},
                    status_code=sp.status.code,
                )


def _is_model_call(attrs: Mapping[str, Any]) -> bool:
    op = attrs.get("gen_ai.operation.name")
    if isinstance(op, str) and op:
        return op not in AGENT_OPERATIONS
    return any(k in attrs for k in _USAGE_KEYS)


def _http_status(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    if isinstance(value, str) and value.isdigit() and 100 <= int(value) <= 599:
        return int(value)
    return None


class OtelGenAI(MappingAdapter):
    """OTLP trace exports (JSON or protobuf) -> usage-v1 (see the module docstring)."""

    name: ClassVar[str] = "otel-genai"

    def map_record(self, record: bytes) -> list[bytes]:
        return self.map_spans(spans_from_json(load_json(record, "otel-genai")))

    def adapt_protobuf(self, body: bytes) -> list[bytes]:
        """Map a binary OTLP export; raises FormatError (callers answer 400)."""
        return self.map_spans(spans_from_protobuf(body))

    def map_spans(self, spans: Iterator[tuple[dict[str, Any], SpanView]]) -> list[bytes]:
        out: list[bytes] = []
        for n, (rattrs, span) in enumerate(spans):
            if span.attrs and _is_model_call(span.attrs):
                try:
                    out.append(self._event(rattrs, span))
                except FormatError as err:
                    why = err.rejection
                    raise FormatError(why.code, f"span[{n}].{why.field}" if why.field else f"span[{n}]",
                                      why.message) from None
        return out

    def _event(self, rattrs: dict[str, Any], span: SpanView) -> bytes:
        m = self.mapping
        a = span.attrs
        trace_id = _hex_id(span.trace_id, "traceId", 16)
        span_id = _hex_id(span.span_id, "spanId", 8)
        end_ns = span.end_ns or span.start_ns
        if not end_ns:
            raise FormatError("missing_field", "endTimeUnixNano", "span has no end or start time")
        provider = pick("gen_ai.provider.name", a, rattrs) or pick("gen_ai.system", a, rattrs)
        if provider is None:
            raise FormatError("missing_field", "gen_ai.provider.name", "GenAI span names no provider")
        model = pick("gen_ai.response.model", a) or pick("gen_ai.request.model", a)
        if model is None:
            raise FormatError("missing_field", "gen_ai.request.model", "GenAI span names no model")
        key = pick(m.api_key_key, a, rattrs)
        if key is None:
            service = pick("service.name", rattrs)
            key = f"service:{service}" if service else m.default_api_key
        if key is None:
            raise FormatError("missing_field", m.api_key_key, "no api key attribute, no service.name, "
                              "and no default_api_key")
        tenant = pick(m.tenant_key, a, rattrs) or m.default_tenant
        if tenant is None:
            raise FormatError("missing_field", m.tenant_key, "no tenant attribute and no default_tenant")

        def count(*names: str) -> int | None:
            for name in names:
                got = opt_int(a.get(name), name)
                if got is not None:
                    return got
            return None

        inp = count("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens") or 0
        out = count("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens") or 0
        cached = count("gen_ai.usage.cache_read.input_tokens") or 0
        written = count("gen_ai.usage.cache_creation.input_tokens") or 0
        if cached + written > inp:
            inp += cached + written
        status = _http_status(a.get("http.response.status_code"))
        if status is None:
            status = (_http_status(a.get("error.type")) or 500) if span.status_code == STATUS_ERROR else 200
        latency = (end_ns - span.start_ns) // 1_000_000 if span.start_ns and span.end_ns >= span.start_ns else None
        return encode({
            "event_id": f"{trace_id}:{span_id}",
            "ts": end_ns / 1_000_000_000,  # int / int: correctly rounded
            "api_key_id": bounded_id(key),
            "tenant_id": tenant,
            "user_id": pick(m.user_key, a, rattrs) or pick("user.id", a, rattrs) or pick("enduser.id", a, rattrs),
            "session_id": pick("gen_ai.conversation.id", a) or pick(m.session_key, a, rattrs)
            or pick("session.id", a, rattrs),
            "feature": pick(m.feature_key, a, rattrs),
            "provider": provider,
            "model": model,
            "input_tokens": inp,
            "output_tokens": out,
            "cached_input_tokens": cached,
            "cache_write_tokens": written,
            "status": status,
            "latency_ms": latency,
            "source_ip": pick("client.address", a, rattrs),
            "user_agent": pick("user_agent.original", a, rattrs),
            "prompt_shape": pick(m.prompt_shape_key, a, rattrs),
            "prefix_hash": pick(m.prefix_hash_key, a, rattrs),
            "resource_tenant_id": pick(m.resource_tenant_key, a, rattrs),
        })
