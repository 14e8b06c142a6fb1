"""``bedrock``: Amazon Bedrock model invocation logs.

A record is one ``ModelInvocationLog`` JSON object -- one CloudWatch Logs
message, or one line of the ``.json.gz`` objects Bedrock writes to S3 -- or a
CloudWatch Logs subscription envelope (``{"messageType": "DATA_MESSAGE",
"logEvents": [{"message": "<ModelInvocationLog>"}, ...]}``, as delivered to
Kinesis/Firehose/Lambda), which maps to one event per log event. References:
Amazon Bedrock User Guide, "Monitor model invocation using CloudWatch Logs and
Amazon S3" (model-invocation-logging) and the invocation-log format shown in
"Prerequisites for model distillation"; Bedrock Runtime API reference (error
types of InvokeModel / Converse).

ModelInvocationLog -> usage-v1, field by field:

=====================  ==================================================================
usage-v1               ModelInvocationLog
=====================  ==================================================================
event_id               ``requestId``
ts                     ``timestamp`` (RFC 3339)
api_key_id             ``identity.arn`` (the IAM principal that signed the call; an ARN over
                       128 characters is cut with a hash suffix), else ``default_api_key``
tenant_id              ``requestMetadata[tenant_key]``, else ``accountId``, else ``default_tenant``
user_id                ``requestMetadata[user_key]``, else the principal's name in the ARN
                       (``assumed-role/<role>/<session>`` -> session, ``user/<name>`` -> name)
session_id             ``requestMetadata[session_key]``
request_id, attempt    not carried (the SDK's retries are separate requestIds)
feature                ``requestMetadata[feature_key]``
provider               ``bedrock``
model                  ``modelId`` (a foundation-model ARN is shortened to its model id;
                       inference-profile ids such as ``us.anthropic...`` are kept)
input_tokens           ``input.inputTokenCount + cacheReadInputTokenCount + cacheWriteInputTokenCount``
output_tokens          ``output.outputTokenCount``
cached_input_tokens    ``input.cacheReadInputTokenCount``
cache_write_tokens     ``input.cacheWriteInputTokenCount``
cost_usd               not carried: computed from the price table
status                 ``errorCode`` -> the HTTP status Bedrock Runtime answers with that
                       error (``ThrottlingException`` 429, ``AccessDeniedException`` 403,
                       ``ResourceNotFoundException`` 404, ...; unknown codes 500); else 200
latency_ms             ``output.outputBodyJson.metrics.latencyMs`` (Converse), when present
cancelled              not carried (false)
source_ip, user_agent  not carried (CloudTrail has them, the invocation log does not)
prompt_shape           ``requestMetadata[prompt_shape_key]``
prefix_hash            ``requestMetadata[prefix_hash_key]``
resource_tenant_id     ``requestMetadata[resource_tenant_key]``
=====================  ==================================================================

Bedrock reports prompt-cache reads and writes *beside* ``inputTokenCount``
(as the Converse API's ``usage`` does), while the contract's ``input_tokens``
counts all prompt tokens; hence the sum above.

What Bedrock lacks: cost, source IP, user agent, and everything the
``requestMetadata`` key/value pairs do not carry (set them with the Converse
API's ``requestMetadata`` parameter): tenant beyond the AWS account, feature,
session, ``prompt_shape``, ``prefix_hash``, ``resource_tenant_id``. Detectors
that need them stay quiet without them (``spend_spike`` cannot see new IPs or
user agents from these logs alone).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

from sentinel.formats.base import FormatError, MappingAdapter, encode, epoch_s, load_json, obj, opt_int, opt_str
from sentinel.formats.mapping import bounded_id, pick

# Bedrock Runtime API reference: error type -> HTTP status code.
ERROR_STATUS: Final[Mapping[str, int]] = {
    "AccessDeniedException": 403,
    "InternalServerException": 500,
    "ModelErrorException": 424,
    "ModelNotReadyException": 429,
    "ModelStreamErrorException": 424,
    "ModelTimeoutException": 408,
    "ResourceNotFoundException": 404,
    "ServiceQuotaExceededException": 400,
    "ServiceUnavailableException": 503,
    "ThrottlingException": 429,
    "ValidationException": 400,
}
_FOUNDATION_MODEL: Final = ":foundation-model/"


def _principal_name(arn: str) -> str | None:
    """``arn:aws:sts::1:assumed-role/Role/session`` -> ``session``; ``arn:aws:iam::1:user/a/b`` -> ``b``."""
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return None
    resource = parts[5]
    kind, _, rest = resource.partition("/")
    if not rest:
        return None
    if kind == "assumed-role":
        _, _, session = rest.partition("/")
        return session or None
    if kind in ("user", "federated-user"):
        return rest.rsplit("/", 1)[-1] or None
    return None


def _model(model_id: str) -> str:
    i = model_id.find(_FOUNDATION_MODEL)
    return model_id[i + len(_FOUNDATION_MODEL):] if model_id.startswith("arn:") and i >= 0 else model_id


class Bedrock(MappingAdapter):
    """ModelInvocationLog records (or CloudWatch envelopes of them) -> usage-v1."""

    name: ClassVar[str] = "bedrock"

    def map_record(self, record: bytes) -> list[bytes]:
        doc = load_json(record, "bedrock")
        if not isinstance(doc, dict):
            raise FormatError("not_an_object", None, "expected a Bedrock ModelInvocationLog object")
        if "logEvents" in doc or "messageType" in doc:
            return self._envelope(doc)
        return [self.map_log(doc)]

    def _envelope(self, doc: Mapping[str, Any]) -> list[bytes]:
        if doc.get("messageType") == "CONTROL_MESSAGE":
            return []
        events = doc.get("logEvents")
        if not isinstance(events, list):
            raise FormatError("wrong_type", "logEvents", "expected a list of CloudWatch log events")
        out: list[bytes] = []
        for i, ev in enumerate(events):
            message = ev.get("message") if isinstance(ev, dict) else None
            if not isinstance(message, str):
                raise FormatError("missing_field", f"logEvents[{i}].message", "log event without a message")
            inner = load_json(message.encode("utf-8", "surrogatepass"), f"bedrock logEvents[{i}].message")
            try:
                out.append(self.map_log(obj(inner, f"logEvents[{i}].message")))
            except FormatError as err:
                why = err.rejection
                raise FormatError(why.code, f"logEvents[{i}].{why.field or 'message'}", why.message) from None
        return out

    def map_log(self, log: Mapping[str, Any]) -> bytes:
        m = self.mapping
        schema = log.get("schemaType")
        if schema is not None and schema != "ModelInvocationLog":
            raise FormatError("unsupported_record", "schemaType", "expected ModelInvocationLog", schema)
        request_id = opt_str(log.get("requestId"))
        if request_id is None:
            raise FormatError("missing_field", "requestId", "invocation log has no requestId")
        ts = epoch_s(log.get("timestamp"), "timestamp")
        if ts is None:
            raise FormatError("missing_field", "timestamp", "invocation log has no timestamp")
        model_id = opt_str(log.get("modelId"))
        if model_id is None:
            raise FormatError("missing_field", "modelId", "invocation log has no modelId")
        meta = obj(log.get("requestMetadata"), "requestMetadata")
        arn = opt_str(obj(log.get("identity"), "identity").get("arn"))
        key = arn or m.default_api_key
        if key is None:
            raise FormatError("missing_field", "identity.arn", "invocation log has no identity and no default_api_key")
        tenant = pick(m.tenant_key, meta) or opt_str(log.get("accountId")) or m.default_tenant
        if tenant is None:
            raise FormatError("missing_field", "accountId", "no tenant in requestMetadata, no accountId, "
                              "and no default_tenant")
        inp = obj(log.get("input"), "input")
        outp = obj(log.get("output"), "output")
        cached = opt_int(inp.get("cacheReadInputTokenCount"), "input.cacheReadInputTokenCount") or 0
        written = opt_int(inp.get("cacheWriteInputTokenCount"), "input.cacheWriteInputTokenCount") or 0
        fresh = opt_int(inp.get("inputTokenCount"), "input.inputTokenCount") or 0
        error = opt_str(log.get("errorCode"))
        body = outp.get("outputBodyJson")
        metrics = body.get("metrics") if isinstance(body, dict) else None
        latency = opt_int(metrics.get("latencyMs"), "output.outputBodyJson.metrics.latencyMs") \
            if isinstance(metrics, dict) else None
        return encode({
            "event_id": request_id,
            "ts": ts,
            "api_key_id": bounded_id(key),
            "tenant_id": tenant,
            "user_id": pick(m.user_key, meta) or (_principal_name(arn) if arn else None),
            "session_id": pick(m.session_key, meta),
            "feature": pick(m.feature_key, meta),
            "provider": "bedrock",
            "model": bounded_id(_model(model_id)),
            "input_tokens": fresh + cached + written,
            "output_tokens": opt_int(outp.get("outputTokenCount"), "output.outputTokenCount") or 0,
            "cached_input_tokens": cached,
            "cache_write_tokens": written,
            "status": ERROR_STATUS.get(error, 500) if error else 200,
            "latency_ms": latency,
            "prompt_shape": pick(m.prompt_shape_key, meta),
            "prefix_hash": pick(m.prefix_hash_key, meta),
            "resource_tenant_id": pick(m.resource_tenant_key, meta),
        })
