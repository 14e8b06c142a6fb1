"""``bedrock`` adapter: Amazon Bedrock model invocation logs -> usage-v1.

The records follow AWS's published examples field for field: the
"Invocation Logs Format" of the Amazon Bedrock User Guide ("Prerequisites for
model distillation": an ``InvokeModel`` log with ``requestMetadata``) and the
Converse log of "Monitor model invocation using CloudWatch Logs and Amazon S3"
(``outputBodyJson`` with ``metrics.latencyMs`` and ``usage``), plus the
prompt-cache counts ``cacheReadInputTokenCount`` / ``cacheWriteInputTokenCount``.
"""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from sentinel.cli import main
from sentinel.decoding import EventDecoder, Rejection
from sentinel.events import UsageEvent
from sentinel.formats import get_format
from sentinel.formats.mapping import FieldMapping
from tests.unit.test_format_core import adapt_all, assert_same_alerts, native_lines, replace, scenario

ACCOUNT = "123456789012"

# AWS User Guide, model distillation prerequisites, "Invocation Logs Format" (values filled in).
AWS_INVOKE_MODEL_EXAMPLE: dict[str, Any] = {
    "schemaType": "ModelInvocationLog",
    "schemaVersion": "1.0",
    "timestamp": "2026-11-02T14:03:27Z",
    "accountId": ACCOUNT,
    "identity": {"arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/BedrockAppRole/checkout-svc"},
    "region": "us-east-1",
    "requestId": "b6f2c1d2-1b5e-4f39-9d0b-7c1f0c4f6a11",
    "operation": "InvokeModel",
    "modelId": "meta.llama3-70b-instruct-v1:0",
    "input": {
        "inputContentType": "application/json",
        "inputBodyJson": {
            "prompt": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>What is the capital of Sudan?"
                      "<|eot_id|><|start_header_id|>assistant<|end_header_id|>",
            "temperature": 0.1,
            "max_gen_len": 2048,
            "top_p": 0.9,
        },
        "inputTokenCount": 15,
    },
    "output": {
        "outputContentType": "application/json",
        "outputBodyJson": {
            "generation": "\n\nThe capital of Sudan is Khartoum.",
            "prompt_token_count": 15,
            "generation_token_count": 12,
            "stop_reason": "stop",
        },
        "outputTokenCount": 12,
    },
    "requestMetadata": {"tenant_id": "t_acme", "feature": "geo-quiz"},
}

# AWS User Guide, model invocation logging: a Converse call's log.
AWS_CONVERSE_EXAMPLE: dict[str, Any] = {
    "schemaType": "ModelInvocationLog",
    "schemaVersion": "1.0",
    "timestamp": "2026-11-02T14:05:00Z",
    "accountId": ACCOUNT,
    "identity": {"arn": f"arn:aws:iam::{ACCOUNT}:user/alice"},
    "region": "us-east-1",
    "requestId": "915a6a04-3f83-4c70-a277-7fbf7ea546b3",
    "operation": "Converse",
    "modelId": "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
    "input": {
        "inputContentType": "application/json",
        "inputBodyJson": {"messages": [{"role": "user", "content": [{"text": "Summarise the ticket"}]}]},
        "inputTokenCount": 35,
        "cacheReadInputTokenCount": 1024,
        "cacheWriteInputTokenCount": 0,
    },
    "output": {
        "outputContentType": "application/json",
        "outputBodyJson": {
            "output": {"message": {"role": "assistant", "content": [{"text": "The customer asks ..."}]}},
            "stopReason": "end_turn",
            "metrics": {"latencyMs": 3640},
            "usage": {"inputTokens": 35, "outputTokens": 446, "totalTokens": 1505, "cacheReadInputTokens": 1024},
        },
        "outputTokenCount": 446,
    },
    "requestMetadata": {"traceId": "b956002a-fd01-47ba-9da7-07e4c9b1a6b6"},
}

_STATUS_ERROR = {429: "ThrottlingException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
                 400: "ValidationException", 503: "ServiceUnavailableException", 408: "ModelTimeoutException"}
_BEDROCK_MODEL = {"gpt-4o": "anthropic.claude-3-5-sonnet-20240620-v1:0",
                  "gpt-4o-mini": "anthropic.claude-3-haiku-20240307-v1:0",
                  "claude-sonnet-4-20250514": "anthropic.claude-sonnet-4-20250514-v1:0",
                  "o1-preview": "meta.llama3-70b-instruct-v1:0", "claude-opus-4-1": "amazon.nova-pro-v1:0"}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_bedrock(ev: UsageEvent) -> dict[str, Any]:
    """The invocation log Bedrock would write for ``ev`` (shape of the AWS Converse example)."""
    log = copy.deepcopy(AWS_CONVERSE_EXAMPLE)
    fresh = ev.input_tokens - ev.cached_input_tokens - ev.cache_write_tokens
    log.update(timestamp=_iso(ev.t), requestId=ev.event_id, identity={"arn": f"arn:aws:iam::{ACCOUNT}:user/"
                                                                             f"{ev.api_key_id}"},
               modelId=_BEDROCK_MODEL.get(ev.model, ev.model))
    log["input"].update(inputTokenCount=fresh, cacheReadInputTokenCount=ev.cached_input_tokens,
                        cacheWriteInputTokenCount=ev.cache_write_tokens)
    log["output"]["outputTokenCount"] = ev.output_tokens
    body = log["output"]["outputBodyJson"]
    body["usage"] = {"inputTokens": fresh, "outputTokens": ev.output_tokens,
                     "totalTokens": ev.input_tokens + ev.output_tokens}
    if ev.latency_ms is None:
        del body["metrics"]
    else:
        body["metrics"] = {"latencyMs": ev.latency_ms}
    if ev.status != 200:
        log["errorCode"] = _STATUS_ERROR.get(ev.status, "InternalServerException")
        del log["output"]
    meta = {"tenant_id": ev.tenant_id, "user_id": ev.user_id, "session_id": ev.session_id, "feature": ev.feature,
            "prompt_shape": ev.prompt_shape, "prefix_hash": ev.prefix_hash,
            "resource_tenant_id": ev.resource_tenant_id}
    log["requestMetadata"] = {k: v for k, v in meta.items() if v is not None}
    return log


def bedrock_equivalent(ev: UsageEvent) -> UsageEvent:
    """``ev`` reduced to what an invocation log carries (whole-second time, no IP/UA, no cost)."""
    status = ev.status if ev.status in (200, *_STATUS_ERROR) else 500
    return replace(ev, ts=float(math.floor(ev.t)), api_key_id=f"arn:aws:iam::{ACCOUNT}:user/{ev.api_key_id}",
                   user_id=ev.user_id or ev.api_key_id, provider="bedrock",
                   model=_BEDROCK_MODEL.get(ev.model, ev.model), request_id=None, attempt=1, cancelled=False,
                   source_ip=None, user_agent=None, cost_usd=None, status=status,
                   latency_ms=ev.latency_ms if status == 200 else None)


def _one(record: dict[str, Any], mapping: FieldMapping | None = None) -> dict[str, Any]:
    got = get_format("bedrock", mapping).adapt(json.dumps(record).encode())
    assert not isinstance(got, Rejection), got
    assert len(got) == 1
    ev = EventDecoder().decode_one(got[0])
    assert isinstance(ev, UsageEvent), ev
    out: dict[str, Any] = msgspec.json.decode(got[0])
    return out


def test_aws_invoke_model_example() -> None:
    assert _one(AWS_INVOKE_MODEL_EXAMPLE) == {
        "event_id": "b6f2c1d2-1b5e-4f39-9d0b-7c1f0c4f6a11",
        "ts": 1793628207.0,
        "api_key_id": f"arn:aws:sts::{ACCOUNT}:assumed-role/BedrockAppRole/checkout-svc",
        "tenant_id": "t_acme",
        "user_id": "checkout-svc",
        "feature": "geo-quiz",
        "provider": "bedrock",
        "model": "meta.llama3-70b-instruct-v1:0",
        "input_tokens": 15,
        "output_tokens": 12,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "status": 200,
    }


def test_aws_converse_example_counts_cache_reads_in_input() -> None:
    got = _one(AWS_CONVERSE_EXAMPLE)
    assert got["input_tokens"] == 35 + 1024
    assert got["cached_input_tokens"] == 1024
    assert got["model"] == "anthropic.claude-3-haiku-20240307-v1:0"  # foundation-model ARN shortened
    assert got["latency_ms"] == 3640
    assert got["tenant_id"] == ACCOUNT  # no tenant in requestMetadata: the AWS account
    assert got["user_id"] == "alice"


def test_mapping_keys_are_configurable() -> None:
    rec = copy.deepcopy(AWS_INVOKE_MODEL_EXAMPLE)
    rec["requestMetadata"] = {"customer": "c-42", "tmpl": "shape-9", "kb_owner": "c-7"}
    got = _one(rec, FieldMapping(tenant_key="customer", prompt_shape_key="tmpl", resource_tenant_key="kb_owner"))
    assert (got["tenant_id"], got["prompt_shape"], got["resource_tenant_id"]) == ("c-42", "shape-9", "c-7")


def test_error_codes_map_to_http_status() -> None:
    for code, status in (("ThrottlingException", 429), ("AccessDeniedException", 403),
                         ("ResourceNotFoundException", 404), ("SomethingNew", 500)):
        rec = copy.deepcopy(AWS_INVOKE_MODEL_EXAMPLE)
        rec["errorCode"] = code
        del rec["output"]
        got = _one(rec)
        assert (got["status"], got["output_tokens"]) == (status, 0)


def test_cloudwatch_subscription_envelope_gives_one_event_per_log_event() -> None:
    envelope = {
        "messageType": "DATA_MESSAGE", "owner": ACCOUNT, "logGroup": "/aws/bedrock/modelinvocations",
        "logStream": "aws/bedrock/modelinvocations", "subscriptionFilters": ["to-sentinel"],
        "logEvents": [{"id": str(i), "timestamp": 1793714607000, "message": json.dumps(rec)}
                      for i, rec in enumerate((AWS_INVOKE_MODEL_EXAMPLE, AWS_CONVERSE_EXAMPLE))],
    }
    got = get_format("bedrock").adapt(json.dumps(envelope).encode())
    assert isinstance(got, list)
    assert [msgspec.json.decode(x)["event_id"] for x in got] == [
        AWS_INVOKE_MODEL_EXAMPLE["requestId"], AWS_CONVERSE_EXAMPLE["requestId"]]
    assert get_format("bedrock").adapt(b'{"messageType": "CONTROL_MESSAGE", "logEvents": []}') == []


def test_rejections_name_the_bedrock_field() -> None:
    adapter = get_format("bedrock")
    cases = [
        ({**AWS_INVOKE_MODEL_EXAMPLE, "schemaType": "Other"}, ("unsupported_record", "schemaType")),
        ({k: v for k, v in AWS_INVOKE_MODEL_EXAMPLE.items() if k != "modelId"}, ("missing_field", "modelId")),
        ({**AWS_INVOKE_MODEL_EXAMPLE, "timestamp": "yesterday"}, ("invalid_ts", "timestamp")),
        ({**AWS_INVOKE_MODEL_EXAMPLE, "input": {"inputTokenCount": "many"}}, ("wrong_type", "input.inputTokenCount")),
        ({**AWS_INVOKE_MODEL_EXAMPLE, "identity": {}}, ("missing_field", "identity.arn")),
        ({"messageType": "DATA_MESSAGE", "logEvents": [{"message": "{}"}]},
         ("missing_field", "logEvents[0].requestId")),
    ]
    for rec, (code, field) in cases:
        got = adapter.adapt(json.dumps(rec).encode())
        assert isinstance(got, Rejection), rec
        assert (got.code, got.field) == (code, field)
    assert isinstance(adapter.adapt(b"[]"), Rejection)


def test_without_identity_default_api_key_applies() -> None:
    rec = {k: v for k, v in AWS_INVOKE_MODEL_EXAMPLE.items() if k != "identity"}
    assert _one(rec, FieldMapping(default_api_key="bedrock-account"))["api_key_id"] == "bedrock-account"


def test_same_alerts_as_equivalent_native_events() -> None:
    natives = scenario()
    records = [json.dumps(to_bedrock(ev)).encode() for ev in natives]
    adapted = adapt_all("bedrock", records)
    assert_same_alerts(adapted.lines, [bedrock_equivalent(ev) for ev in natives])


def test_replay_format_bedrock_equals_native_replay(tmp_path: Path) -> None:
    natives = scenario(days=0.5, loop_minutes=90)
    src = tmp_path / "bedrock.jsonl"
    bad = b'{"schemaType": "ModelInvocationLog", "requestId": "x"}'
    src.write_bytes(b"\n".join([json.dumps(to_bedrock(ev)).encode() for ev in natives] + [bad]) + b"\n")
    ref = tmp_path / "native.jsonl"
    ref.write_bytes(b"\n".join(native_lines(bedrock_equivalent(ev) for ev in natives)) + b"\n")
    args = ["--no-progress", "--summary-json"]
    assert main(["replay", str(src), "--format", "bedrock", "--out", str(tmp_path / "a.jsonl"),
                 "--dead-letter", str(tmp_path / "dl.jsonl"), *args, str(tmp_path / "s.json")]) == 0
    assert main(["replay", str(ref), "--out", str(tmp_path / "b.jsonl"),
                 "--dead-letter", str(tmp_path / "dl2.jsonl"), *args, str(tmp_path / "s2.json")]) == 0
    alerts = (tmp_path / "a.jsonl").read_bytes()
    assert alerts and alerts == (tmp_path / "b.jsonl").read_bytes()
    dead = [json.loads(x) for x in (tmp_path / "dl.jsonl").read_text().splitlines()]
    assert [(d["reason"], d["field"], d["position"]) for d in dead] == [("missing_field", "timestamp",
                                                                         len(natives) + 1)]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["rejected_by_reason"] == {"missing_field": 1}
    assert summary["accepted"] == len(natives)
