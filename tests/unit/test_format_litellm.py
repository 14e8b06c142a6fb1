"""``litellm`` adapter, driven by LiteLLM's own code.

LiteLLM (installed from PyPI) runs a completion with ``mock_response=`` (no
network) and hands its real ``StandardLoggingPayload`` to a ``CustomLogger``
callback; that payload is what the adapter maps. The equivalence test uses a
captured real payload as the template for every event of the scenario, so the
shape is LiteLLM's own, field for field.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from sentinel.decoding import EventDecoder, Rejection
from sentinel.events import UsageEvent
from sentinel.formats import get_format
from sentinel.formats.mapping import FieldMapping
from tests.unit.test_format_core import adapt_all, assert_same_alerts, replace, scenario

KEY_HASH = "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"  # LiteLLM hashes keys (sha256)


@pytest.fixture(scope="module")
def litellm_mod(monkeypatch_module: pytest.MonkeyPatch) -> Any:
    monkeypatch_module.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # the price map ships in the wheel
    import litellm  # a dev dependency: pip install -e '.[dev]' (a missing install fails, never skips)

    return litellm


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


class Capture:
    """A LiteLLM CustomLogger that keeps the StandardLoggingPayloads it is given.

    Use :func:`shared_capture`: LiteLLM wires ``litellm.callbacks`` into its
    logging lists on first use, so swapping instances later is not seen.
    """

    def __init__(self, litellm: Any) -> None:
        from litellm.integrations.custom_logger import CustomLogger

        self.got: list[dict[str, Any]] = []
        got = self.got

        class _Logger(CustomLogger):
            # LiteLLM calls these with keyword arguments: the parameter names are part of its API.
            def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
                got.append(kwargs["standard_logging_object"])

            def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
                got.append(kwargs["standard_logging_object"])

        self.logger = _Logger()
        self.litellm = litellm

    def completion(self, **kwargs: Any) -> dict[str, Any]:
        """One mocked completion through LiteLLM; returns the payload its callback got (JSON, as posted)."""
        self.got.clear()
        try:
            self.litellm.completion(messages=[{"role": "user", "content": "Where is my order?"}], **kwargs)
        except Exception as err:  # a mocked provider error is the point of some calls
            if not isinstance(kwargs.get("mock_response"), Exception):
                raise
            assert isinstance(err, type(kwargs["mock_response"]))
        deadline = time.monotonic() + 10
        while not self.got and time.monotonic() < deadline:  # LiteLLM may log from a worker thread
            time.sleep(0.02)
        assert len(self.got) == 1
        payload: dict[str, Any] = json.loads(json.dumps(self.got[0], default=str))
        return payload


_SHARED: dict[str, Capture] = {}


def shared_capture(litellm: Any) -> Capture:
    """The one Capture of this process, registered with LiteLLM.

    LiteLLM de-duplicates callbacks by class and keeps the first instance it
    wired, so a second Capture would never be called: every test module shares this one.
    """
    cap = _SHARED.get("capture")
    if cap is None:
        cap = _SHARED["capture"] = Capture(litellm)
    if cap.logger not in litellm.callbacks:
        litellm.callbacks = [*litellm.callbacks, cap.logger]
    return cap


@pytest.fixture(scope="module")
def capture(litellm_mod: Any) -> Capture:
    return shared_capture(litellm_mod)


PROXY_METADATA = {  # what the LiteLLM proxy puts in metadata for a virtual key of team "team-acme"
    "user_api_key_hash": KEY_HASH,
    "user_api_key_alias": "checkout-prod",
    "user_api_key_team_id": "team-acme",
    "user_api_key_user_id": "internal-user-1",
    "user_api_key_end_user_id": "cust-77",
    "requester_ip_address": "198.51.100.20",
    "user_agent": "checkout-svc/3.2 openai-python/1.40",
    "requester_metadata": {"tenant_id": "t_acme", "feature": "support-bot", "prompt_shape": "shp_support_v2",
                           "prefix_hash": "pfx_support", "resource_tenant_id": "t_acme"},
}


@pytest.fixture(scope="module")
def success_payload(capture: Capture) -> dict[str, Any]:
    from litellm.types.utils import ModelResponse, Usage

    mock = ModelResponse(
        model="gpt-4o-2024-08-06",
        choices=[{"message": {"role": "assistant", "content": "It ships tomorrow."}, "finish_reason": "stop"}],
        usage=Usage(prompt_tokens=1200, completion_tokens=300, total_tokens=1500,
                    prompt_tokens_details={"cached_tokens": 800}),
    )
    return capture.completion(model="gpt-4o", mock_response=mock, metadata=copy.deepcopy(PROXY_METADATA))


def _map(payload: object, mapping: FieldMapping | None = None) -> list[dict[str, Any]]:
    got = get_format("litellm", mapping).adapt(json.dumps(payload).encode())
    assert not isinstance(got, Rejection), got
    dec = EventDecoder()
    for line in got:
        assert isinstance(dec.decode_one(line), UsageEvent)
    return [msgspec.json.decode(x) for x in got]


def test_real_standard_logging_payload(success_payload: dict[str, Any]) -> None:
    p = success_payload
    assert p["status"] == "success" and p["response_cost"] > 0  # LiteLLM priced it itself
    [ev] = _map(p)
    assert ev == {
        "event_id": p["id"],
        "ts": p["endTime"],
        "api_key_id": KEY_HASH,
        "tenant_id": "t_acme",
        "user_id": "cust-77",
        "request_id": p["trace_id"],
        "feature": "support-bot",
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1200,
        "output_tokens": 300,
        "cached_input_tokens": 800,
        "cost_usd": p["response_cost"],
        "status": 200,
        "latency_ms": round((p["endTime"] - p["startTime"]) * 1000),
        "source_ip": "198.51.100.20",
        "user_agent": "checkout-svc/3.2 openai-python/1.40",
        "prompt_shape": "shp_support_v2",
        "prefix_hash": "pfx_support",
        "resource_tenant_id": "t_acme",
    }


def test_real_failure_payload_keeps_the_provider_status(litellm_mod: Any, capture: Capture) -> None:
    meta = {k: v for k, v in PROXY_METADATA.items() if k != "requester_metadata"}
    err = litellm_mod.RateLimitError("slow down", llm_provider="openai", model="gpt-4o")
    p = capture.completion(model="gpt-4o", mock_response=err, metadata=meta)
    assert p["status"] == "failure"
    [ev] = _map(p)
    assert ev["status"] == 429
    assert ev["tenant_id"] == "team-acme"  # no tenant in request metadata: the key's team
    assert (ev["input_tokens"], ev["output_tokens"]) == (0, 0)


def test_real_anthropic_cache_reads_and_writes(capture: Capture) -> None:
    from litellm.types.utils import ModelResponse, Usage

    usage = Usage(prompt_tokens=5000, completion_tokens=100, total_tokens=5100, cache_read_input_tokens=3000,
                  cache_creation_input_tokens=1500)
    mock = ModelResponse(model="claude-sonnet-4-20250514", usage=usage,
                         choices=[{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}])
    p = capture.completion(model="anthropic/claude-sonnet-4-20250514", mock_response=mock,
                           metadata=copy.deepcopy(PROXY_METADATA))
    [ev] = _map(p)
    assert (ev["provider"], ev["model"]) == ("anthropic", "claude-sonnet-4-20250514")
    assert (ev["input_tokens"], ev["cached_input_tokens"], ev["cache_write_tokens"]) == (5000, 3000, 1500)


def test_tenant_key_is_configurable(success_payload: dict[str, Any]) -> None:
    p = copy.deepcopy(success_payload)
    p["metadata"]["user_api_key_auth_metadata"] = {"customer": "cust-org-9"}  # the virtual key's own metadata
    [ev] = _map(p, FieldMapping(tenant_key="customer"))
    assert ev["tenant_id"] == "cust-org-9"
    p["metadata"]["user_api_key_team_id"] = None
    p["metadata"]["user_api_key_auth_metadata"] = None
    p["metadata"]["requester_metadata"] = None
    assert _map(p)[0]["tenant_id"] == "default"
    got = get_format("litellm", FieldMapping(default_tenant=None)).adapt(json.dumps(p).encode())
    assert isinstance(got, Rejection) and (got.code, got.field) == ("missing_field", "metadata.tenant_id")


def test_cache_hit_is_no_provider_call(success_payload: dict[str, Any]) -> None:
    assert _map({**success_payload, "cache_hit": True}) == []


def test_json_array_batch_and_rejection_names_the_element(success_payload: dict[str, Any]) -> None:
    second = {**success_payload, "id": "chatcmpl-2"}
    assert [e["event_id"] for e in _map([success_payload, second])] == [success_payload["id"], "chatcmpl-2"]
    bad = {**success_payload, "model": None}
    got = get_format("litellm").adapt(json.dumps([success_payload, bad]).encode())
    assert isinstance(got, Rejection) and (got.code, got.field) == ("missing_field", "[1].model")
    no_key = copy.deepcopy(success_payload)
    del no_key["metadata"]["user_api_key_hash"]
    del no_key["metadata"]["user_api_key_alias"]
    got = get_format("litellm").adapt(json.dumps(no_key).encode())
    assert isinstance(got, Rejection) and got.field == "metadata.user_api_key_hash"


def test_spend_log_row() -> None:
    # LiteLLM_SpendLogs row, fields as SpendLogsPayload (litellm/proxy/_types.py), metadata stored as JSON text.
    row = {
        "request_id": "chatcmpl-9f2a", "call_type": "acompletion", "api_key": KEY_HASH, "spend": 0.00415,
        "total_tokens": 1530, "prompt_tokens": 1400, "completion_tokens": 130,
        "startTime": "2026-11-02T10:00:00.250000", "endTime": "2026-11-02T10:00:01.750000",
        "completionStartTime": "2026-11-02T10:00:00.900000", "model": "gpt-4o-mini", "model_id": "m-1",
        "model_group": "gpt-4o-mini", "mcp_namespaced_tool_name": None, "agent_id": None,
        "api_base": "https://api.openai.com/v1", "user": "internal-user-1",
        "metadata": json.dumps({"user_api_key": KEY_HASH, "user_api_key_team_id": "team-acme",
                                "spend_logs_metadata": {"tenant_id": "t_acme", "feature": "search"},
                                "usage_object": {"prompt_tokens": 1400, "completion_tokens": 130,
                                                 "prompt_tokens_details": {"cached_tokens": 1024}}}),
        "cache_hit": "False", "cache_key": "", "request_tags": "[]", "team_id": "team-acme",
        "organization_id": None, "end_user": "cust-77", "requester_ip_address": "198.51.100.20",
        "custom_llm_provider": "openai", "messages": {}, "response": {}, "proxy_server_request": None,
        "session_id": "sess-1", "request_duration_ms": 1500, "status": "success", "litellm_call_id": "c-1",
    }
    [ev] = _map(row)
    assert ev == {
        "event_id": "chatcmpl-9f2a", "ts": 1793613601.75, "api_key_id": KEY_HASH, "tenant_id": "t_acme",
        "user_id": "cust-77", "session_id": "sess-1", "feature": "search", "provider": "openai",
        "model": "gpt-4o-mini", "input_tokens": 1400, "output_tokens": 130, "cached_input_tokens": 1024,
        "cost_usd": 0.00415, "status": 200, "latency_ms": 1500, "source_ip": "198.51.100.20",
    }
    assert _map({**row, "cache_hit": "True"}) == []


def _cost(ev: UsageEvent) -> float:
    return ev.cost_usd if ev.cost_usd is not None else (ev.input_tokens * 2.5 + ev.output_tokens * 10.0) / 1e6


def to_litellm(ev: UsageEvent, template: dict[str, Any]) -> dict[str, Any]:
    """The StandardLoggingPayload LiteLLM would log for ``ev``, on a real captured payload."""
    p = dict(template)  # shallow: only top-level keys and the metadata copy below are replaced
    p["metadata"] = meta = dict(template["metadata"])
    end = ev.t
    start = end - (ev.latency_ms or 0) / 1000.0
    usage = {"prompt_tokens": ev.input_tokens, "completion_tokens": ev.output_tokens,
             "total_tokens": ev.input_tokens + ev.output_tokens,
             "prompt_tokens_details": {"cached_tokens": ev.cached_input_tokens,
                                       "cache_creation_tokens": ev.cache_write_tokens}}
    ok = ev.status < 400
    p.update(id=ev.event_id, litellm_call_id=f"call-{ev.event_id}", trace_id=ev.request_id or f"trace-{ev.event_id}",
             session_id=ev.session_id or "", startTime=start, endTime=end, completionStartTime=end,
             response_time=end - start, model=ev.model, custom_llm_provider=ev.provider,
             prompt_tokens=ev.input_tokens, completion_tokens=ev.output_tokens,
             total_tokens=ev.input_tokens + ev.output_tokens, response_cost=_cost(ev),
             status="success" if ok else "failure", end_user=ev.user_id,
             requester_ip_address=ev.source_ip, user_agent=ev.user_agent)
    p["status_fields"] = {"llm_api_status": p["status"], "guardrail_status": "not_run"}
    p["error_information"] = {"error_code": "" if ok else str(ev.status), "error_class": "",
                              "llm_provider": "" if ok else ev.provider}
    meta.update(user_api_key_hash=ev.api_key_id, user_api_key_end_user_id=None, user_api_key_user_id=None,
                requester_ip_address=ev.source_ip, user_agent=ev.user_agent, usage_object=usage)
    tags = {"tenant_id": ev.tenant_id, "feature": ev.feature, "prompt_shape": ev.prompt_shape,
            "prefix_hash": ev.prefix_hash, "resource_tenant_id": ev.resource_tenant_id}
    meta["requester_metadata"] = {k: v for k, v in tags.items() if v is not None}
    if not ok:
        p["response"] = None
    return p


def litellm_equivalent(ev: UsageEvent) -> UsageEvent:
    """``ev`` as LiteLLM can report it: no attempt/cancel, a trace id, a cost, always a latency."""
    return replace(ev, request_id=ev.request_id or f"trace-{ev.event_id}", attempt=1, cancelled=False,
                   cost_usd=_cost(ev), latency_ms=ev.latency_ms or 0)


def test_same_alerts_as_equivalent_native_events(success_payload: dict[str, Any]) -> None:
    natives = scenario()
    records = [json.dumps(to_litellm(ev, success_payload)).encode() for ev in natives]
    adapted = adapt_all("litellm", records)
    assert_same_alerts(adapted.lines, [litellm_equivalent(ev) for ev in natives])
