"""``litellm``: LiteLLM proxy logging payloads and spend-log rows.

Two record kinds are accepted, each a JSON object (or a JSON array of them:
the generic HTTP logging callback posts ``json_array`` batches by default):

* **StandardLoggingPayload** -- what LiteLLM hands every logging callback
  (``kwargs["standard_logging_object"]``) and what its generic HTTP logger
  (``callbacks: ["generic_api"]``) posts. Reference: LiteLLM docs, "StandardLoggingPayload
  Specification" (docs.litellm.ai/docs/proxy/logging_spec) and
  ``litellm/types/utils.py`` ``StandardLoggingPayload`` /
  ``StandardLoggingMetadata`` (checked against litellm 1.110).
* **Spend-log row** -- one row of the proxy's ``LiteLLM_SpendLogs`` table
  (``SpendLogsPayload`` in ``litellm/proxy/_types.py``), e.g. exported with
  ``/spend/logs`` or from the database. Recognised by ``request_id`` + ``spend``.

StandardLoggingPayload -> usage-v1, field by field:

=====================  ==================================================================
usage-v1               StandardLoggingPayload
=====================  ==================================================================
event_id               ``id`` (else ``litellm_call_id``)
ts                     ``endTime`` (epoch seconds)
latency_ms             ``endTime - startTime``
api_key_id             ``metadata.user_api_key_hash`` (LiteLLM's hash of the virtual key --
                       never the key), else ``metadata.user_api_key_alias``, else the
                       mapping's ``default_api_key``; none -> rejected
tenant_id              mapping ``tenant_key`` in request / key / spend-logs metadata (below),
                       else ``metadata.user_api_key_team_id`` / ``metadata.team_id``, else
                       ``metadata.user_api_key_org_id``, else ``default_tenant``
user_id                mapping ``user_key``, else ``end_user``, else
                       ``metadata.user_api_key_end_user_id``, else ``metadata.user_api_key_user_id``
session_id             ``session_id`` (LiteLLM ``litellm_session_id``), else mapping ``session_key``
request_id             ``trace_id`` (LiteLLM: shared by the retries and fallbacks of one request)
attempt                not carried (1)
feature                mapping ``feature_key``
provider               ``custom_llm_provider`` (else the ``provider/`` prefix of ``model``)
model                  ``model`` without its ``<provider>/`` routing prefix
input_tokens           ``prompt_tokens`` (LiteLLM counts cache reads and writes in it, as we do)
output_tokens          ``completion_tokens``
cached_input_tokens    usage (``metadata.usage_object``, else ``hidden_params.usage_object``, else
                       ``response.usage``): ``prompt_tokens_details.cached_tokens``, else
                       ``cache_read_input_tokens``
cache_write_tokens     usage: ``prompt_tokens_details.cache_creation_tokens``, else
                       ``cache_creation_input_tokens``
cost_usd               ``response_cost``
status                 ``status``: ``success`` -> 200; ``failure`` -> ``error_information.error_code``
                       when it is an HTTP status, else 500
cancelled              not carried (false)
source_ip              ``requester_ip_address`` (else ``metadata.requester_ip_address``)
user_agent             ``user_agent`` (else ``metadata.user_agent``)
prompt_shape           mapping ``prompt_shape_key``
prefix_hash            mapping ``prefix_hash_key``
resource_tenant_id     mapping ``resource_tenant_key``
=====================  ==================================================================

"Metadata" for the mapping means, in this order: ``metadata.requester_metadata``
(the ``metadata`` object the client sent with its request),
``metadata.spend_logs_metadata``, ``metadata.user_api_key_auth_metadata`` (the
virtual key's own metadata: where an admin records the tenant of a key), then
``metadata`` itself.

A payload with ``cache_hit: true`` maps to **no event**: LiteLLM's response
cache answered and no provider was called.

Spend-log row -> usage-v1: ``request_id`` -> event_id; ``endTime`` (ISO text,
naive = UTC, or epoch) -> ts; ``request_duration_ms`` (else end - start) ->
latency_ms; ``api_key`` (the hashed key) -> api_key_id; tenant as above, with
``team_id`` then ``organization_id`` as fallbacks; ``end_user`` then ``user``
-> user_id; ``session_id``; ``custom_llm_provider``; ``model``;
``prompt_tokens``; ``completion_tokens``; cache tokens from
``metadata.usage_object`` or ``metadata.additional_usage_values``; ``spend`` ->
cost_usd; ``status``; ``requester_ip_address``; ``metadata.user_agent``.
``metadata`` and ``request_tags`` may be JSON text, as stored.

What LiteLLM lacks: ``prompt_shape``, ``prefix_hash``, ``resource_tenant_id``,
``feature`` and usually the tenant come only from the mapping (detectors that
need them stay quiet without them); ``attempt`` and ``cancelled`` are not
carried; spend-log rows carry no ``request_id`` grouping of retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

from sentinel.formats.base import (
    FormatError,
    MappingAdapter,
    encode,
    epoch_s,
    load_json,
    obj,
    opt_float,
    opt_int,
    opt_str,
)
from sentinel.formats.mapping import bounded_id, pick

MAX_RECORDS_PER_ARRAY: Final = 100_000


def _usage_counts(usage: Mapping[str, Any], where: str) -> tuple[int | None, int | None]:
    """(cache reads, cache writes) from an OpenAI-style usage object as LiteLLM logs it."""
    details = usage.get("prompt_tokens_details")
    cached = written = None
    if isinstance(details, dict):
        cached = opt_int(details.get("cached_tokens"), f"{where}.prompt_tokens_details.cached_tokens")
        written = opt_int(details.get("cache_creation_tokens"),
                          f"{where}.prompt_tokens_details.cache_creation_tokens")
    if cached is None:
        cached = opt_int(usage.get("cache_read_input_tokens"), f"{where}.cache_read_input_tokens")
    if written is None:
        written = opt_int(usage.get("cache_creation_input_tokens"), f"{where}.cache_creation_input_tokens")
    return cached, written


def _error_status(info: object) -> int:
    code = opt_str(info.get("error_code")) if isinstance(info, dict) else None
    if code is not None and code.isdigit() and 100 <= int(code) <= 599:
        return int(code)
    return 500


def _status(value: object, error_info: object, field: str) -> int:
    if value in (None, "", "success"):
        return 200
    if value == "failure":
        return _error_status(error_info)
    raise FormatError("wrong_type", field, "expected 'success' or 'failure'", value)


def _metadata(value: object, field: str) -> Mapping[str, Any]:
    """LiteLLM metadata: an object, or (spend logs) its JSON text."""
    if isinstance(value, str):
        value = load_json(value.encode("utf-8", "surrogatepass"), f"litellm {field}") if value else None
    return obj(value, field)


def _strip_provider(model: str, provider: str) -> str:
    prefix = provider + "/"
    return model[len(prefix):] if model.startswith(prefix) and len(model) > len(prefix) else model


class LiteLLM(MappingAdapter):
    """StandardLoggingPayload / spend-log rows -> usage-v1 (see the module docstring)."""

    name: ClassVar[str] = "litellm"

    def map_record(self, record: bytes) -> list[bytes]:
        doc = load_json(record, "litellm")
        if isinstance(doc, list):
            if len(doc) > MAX_RECORDS_PER_ARRAY:
                raise FormatError("too_many_records", None, f"{len(doc)} records in one array")
            out: list[bytes] = []
            for i, item in enumerate(doc):
                try:
                    out.extend(self.map_object(item))
                except FormatError as err:
                    why = err.rejection
                    field = f"[{i}].{why.field}" if why.field else f"[{i}]"
                    raise FormatError(why.code, field, why.message) from None
            return out
        return self.map_object(doc)

    def map_object(self, doc: object) -> list[bytes]:
        if not isinstance(doc, dict):
            raise FormatError("not_an_object", None, "expected a LiteLLM payload object")
        if "spend" in doc and "request_id" in doc and "response_cost" not in doc:
            return self._spend_log(doc)
        return self._standard_payload(doc)

    # -- StandardLoggingPayload -----------------------------------------------------------------

    def _standard_payload(self, p: Mapping[str, Any]) -> list[bytes]:
        if p.get("cache_hit") is True:
            return []
        m = self.mapping
        meta = obj(p.get("metadata"), "metadata")
        tagged = (obj(meta.get("requester_metadata"), "metadata.requester_metadata"),
                  obj(meta.get("spend_logs_metadata"), "metadata.spend_logs_metadata"),
                  obj(meta.get("user_api_key_auth_metadata"), "metadata.user_api_key_auth_metadata"),
                  meta)
        event_id = opt_str(p.get("id")) or opt_str(p.get("litellm_call_id"))
        if event_id is None:
            raise FormatError("missing_field", "id", "LiteLLM payload has no id or litellm_call_id")
        end = epoch_s(p.get("endTime"), "endTime")
        start = epoch_s(p.get("startTime"), "startTime")
        ts = end if end is not None else start
        if ts is None:
            raise FormatError("missing_field", "endTime", "LiteLLM payload has no endTime/startTime")
        key = (pick("user_api_key_hash", meta) or pick("user_api_key_alias", meta)
               or pick(m.api_key_key, *tagged[:3]) or m.default_api_key)
        if key is None:
            raise FormatError("missing_field", "metadata.user_api_key_hash",
                              "no API key id (not logged by the LiteLLM proxy?) and no default_api_key")
        tenant = (pick(m.tenant_key, *tagged) or pick("user_api_key_team_id", meta) or pick("team_id", meta)
                  or pick("user_api_key_org_id", meta) or m.default_tenant)
        if tenant is None:
            raise FormatError("missing_field", f"metadata.{m.tenant_key}",
                              "no tenant in metadata or team/org, and no default_tenant")
        model = opt_str(p.get("model"))
        provider = opt_str(p.get("custom_llm_provider"))
        if model is None:
            raise FormatError("missing_field", "model", "LiteLLM payload has no model")
        if provider is None:
            if "/" not in model:
                raise FormatError("missing_field", "custom_llm_provider", "LiteLLM payload names no provider")
            provider = model.split("/", 1)[0]
        usage = meta.get("usage_object")
        where = "metadata.usage_object"
        if not isinstance(usage, dict):
            hidden = p.get("hidden_params")
            usage = hidden.get("usage_object") if isinstance(hidden, dict) else None
            where = "hidden_params.usage_object"
        if not isinstance(usage, dict):
            resp = p.get("response")
            usage = resp.get("usage") if isinstance(resp, dict) else None
            where = "response.usage"
        cached, written = _usage_counts(usage, where) if isinstance(usage, dict) else (None, None)
        session = opt_str(p.get("session_id")) or pick(m.session_key, *tagged)
        latency = None if end is None or start is None or end < start else round((end - start) * 1000.0)
        return [encode({
            "event_id": event_id,
            "ts": ts,
            "api_key_id": bounded_id(key),
            "tenant_id": tenant,
            "user_id": pick(m.user_key, *tagged) or opt_str(p.get("end_user"))
            or pick("user_api_key_end_user_id", meta) or pick("user_api_key_user_id", meta),
            "session_id": session,
            "request_id": opt_str(p.get("trace_id")),
            "feature": pick(m.feature_key, *tagged),
            "provider": provider,
            "model": _strip_provider(model, provider),
            "input_tokens": opt_int(p.get("prompt_tokens"), "prompt_tokens") or 0,
            "output_tokens": opt_int(p.get("completion_tokens"), "completion_tokens") or 0,
            "cached_input_tokens": cached,
            "cache_write_tokens": written,
            "cost_usd": opt_float(p.get("response_cost"), "response_cost"),
            "status": _status(p.get("status"), p.get("error_information"), "status"),
            "latency_ms": latency,
            "source_ip": opt_str(p.get("requester_ip_address")) or pick("requester_ip_address", meta),
            "user_agent": opt_str(p.get("user_agent")) or pick("user_agent", meta),
            "prompt_shape": pick(m.prompt_shape_key, *tagged),
            "prefix_hash": pick(m.prefix_hash_key, *tagged),
            "resource_tenant_id": pick(m.resource_tenant_key, *tagged),
        })]

    # -- LiteLLM_SpendLogs row ------------------------------------------------------------------

    def _spend_log(self, row: Mapping[str, Any]) -> list[bytes]:
        if row.get("cache_hit") in (True, "True", "true"):
            return []
        m = self.mapping
        meta = _metadata(row.get("metadata"), "metadata")
        tagged = (obj(meta.get("spend_logs_metadata"), "metadata.spend_logs_metadata"),
                  obj(meta.get("requester_metadata"), "metadata.requester_metadata"),
                  obj(meta.get("user_api_key_auth_metadata"), "metadata.user_api_key_auth_metadata"),
                  meta)
        event_id = opt_str(row.get("request_id"))
        if event_id is None:
            raise FormatError("missing_field", "request_id", "spend-log row has no request_id")
        end = epoch_s(row.get("endTime"), "endTime")
        start = epoch_s(row.get("startTime"), "startTime")
        ts = end if end is not None else start
        if ts is None:
            raise FormatError("missing_field", "endTime", "spend-log row has no endTime/startTime")
        key = opt_str(row.get("api_key")) or pick("user_api_key", meta) or m.default_api_key
        if key is None:
            raise FormatError("missing_field", "api_key", "spend-log row has no api_key and no default_api_key")
        tenant = (pick(m.tenant_key, *tagged) or opt_str(row.get("team_id")) or pick("user_api_key_team_id", meta)
                  or opt_str(row.get("organization_id")) or m.default_tenant)
        if tenant is None:
            raise FormatError("missing_field", "team_id", "no tenant in metadata or team/org, and no default_tenant")
        model = opt_str(row.get("model"))
        if model is None:
            raise FormatError("missing_field", "model", "spend-log row has no model")
        provider = opt_str(row.get("custom_llm_provider"))
        if provider is None:
            if "/" not in model:
                raise FormatError("missing_field", "custom_llm_provider", "spend-log row names no provider")
            provider = model.split("/", 1)[0]
        cached = written = None
        for where in ("usage_object", "additional_usage_values"):
            usage = meta.get(where)
            if isinstance(usage, dict):
                c, w = _usage_counts(usage, f"metadata.{where}")
                cached = cached if cached is not None else c
                written = written if written is not None else w
        latency = opt_int(row.get("request_duration_ms"), "request_duration_ms")
        if latency is None and end is not None and start is not None and end >= start:
            latency = round((end - start) * 1000.0)
        return [encode({
            "event_id": event_id,
            "ts": ts,
            "api_key_id": bounded_id(key),
            "tenant_id": tenant,
            "user_id": pick(m.user_key, *tagged) or opt_str(row.get("end_user")) or opt_str(row.get("user")),
            "session_id": opt_str(row.get("session_id")) or pick(m.session_key, *tagged),
            "feature": pick(m.feature_key, *tagged),
            "provider": provider,
            "model": _strip_provider(model, provider),
            "input_tokens": opt_int(row.get("prompt_tokens"), "prompt_tokens") or 0,
            "output_tokens": opt_int(row.get("completion_tokens"), "completion_tokens") or 0,
            "cached_input_tokens": cached,
            "cache_write_tokens": written,
            "cost_usd": opt_float(row.get("spend"), "spend"),
            "status": _status(row.get("status"), meta.get("error_information"), "status"),
            "latency_ms": latency,
            "source_ip": opt_str(row.get("requester_ip_address")) or pick("requester_ip_address", meta),
            "user_agent": pick("user_agent", meta),
            "prompt_shape": pick(m.prompt_shape_key, *tagged),
            "prefix_hash": pick(m.prefix_hash_key, *tagged),
            "resource_tenant_id": pick(m.resource_tenant_key, *tagged),
        })]
