"""``sentinel ingest`` with LiteLLM: LiteLLM's own generic HTTP logging callback (``GenericAPILogger``) posts
StandardLoggingPayloads of mocked completions (no network) to ``POST /litellm``; the receiver produces usage
events to a real broker. A whole scenario posted the same way raises the same alerts as the native events.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest

from tests.integration.test_ingest_otlp import (
    TOKEN,
    IngestProcess,
    Receiver,
    consume,
    create_topic,
    start_receiver,
)
from tests.unit.test_format_core import assert_same_alerts, scenario
from tests.unit.test_format_litellm import (
    KEY_HASH,
    PROXY_METADATA,
    litellm_equivalent,
    shared_capture,
    to_litellm,
)

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def litellm_mod() -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # the price map ships in the wheel
        import litellm  # a dev dependency (a missing install fails, never skips)

        yield litellm


@pytest.fixture
def receiver(kafka_bootstrap: str) -> Iterator[Receiver]:
    recv = start_receiver(kafka_bootstrap)
    try:
        yield recv
    finally:
        recv.server.close()


def _mock(litellm: Any, n: int) -> Any:
    from litellm.types.utils import ModelResponse, Usage

    answer = {"message": {"role": "assistant", "content": f"answer {n}"}, "finish_reason": "stop"}
    return ModelResponse(model="gpt-4o-mini-2024-07-18", choices=[answer],
                         usage=Usage(prompt_tokens=900 + n, completion_tokens=100 + n, total_tokens=1000 + 2 * n,
                                     prompt_tokens_details={"cached_tokens": 512}))


@pytest.mark.parametrize("log_format", ["json_array", "ndjson"])
def test_generic_api_logger_posts_reach_kafka(litellm_mod: Any, receiver: Receiver,
                                              log_format: Literal["json_array", "ndjson"]) -> None:
    from litellm.integrations.generic_api.generic_api_callback import GenericAPILogger

    async def run() -> list[dict[str, Any]]:
        logger = GenericAPILogger(endpoint=f"http://127.0.0.1:{receiver.port}/litellm",
                                  headers={"Authorization": f"Bearer {TOKEN}"}, log_format=log_format,
                                  batch_size=100, flush_interval=3600)
        saved = litellm_mod.callbacks
        litellm_mod.callbacks = [logger]
        try:
            for n in range(3):
                await litellm_mod.acompletion(model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{n}"}],
                                              mock_response=_mock(litellm_mod, n),
                                              metadata=copy.deepcopy(PROXY_METADATA))
            for _ in range(200):  # the async success hooks run as tasks
                if len(logger.log_queue) >= 3:
                    break
                await asyncio.sleep(0.02)
            queued = [json.loads(json.dumps(p, default=str)) for p in logger.log_queue]
            await logger.flush_queue()
            assert logger.log_queue == []
        finally:
            litellm_mod.callbacks = saved
            await logger.async_httpx_client.close()  # type: ignore[no-untyped-call]
        return queued

    payloads = asyncio.run(run())
    assert len(payloads) == 3
    records = consume(receiver.bootstrap, receiver.topic, 3)
    got = [msgspec.json.decode(r.value) for r in records]
    assert [g["event_id"] for g in got] == [p["id"] for p in payloads]
    for g, p, r in zip(got, payloads, records, strict=True):
        assert r.key == b"t_acme"
        assert (g["api_key_id"], g["tenant_id"], g["feature"]) == (KEY_HASH, "t_acme", "support-bot")
        assert (g["input_tokens"], g["cached_input_tokens"], g["output_tokens"]) == (
            p["prompt_tokens"], 512, p["completion_tokens"])
        assert g["cost_usd"] == p["response_cost"] > 0
        assert g["ts"] == p["endTime"]


def test_scenario_posted_as_litellm_batches_gives_same_alerts(receiver: Receiver) -> None:
    template = _captured_template()
    natives = scenario(days=0.5, loop_minutes=90)
    payloads = [to_litellm(ev, template) for ev in natives]
    for i in range(0, len(payloads), 200):  # json_array batches, as the callback posts them
        status, _, body = receiver.request("POST", "/litellm", json.dumps(payloads[i:i + 200]).encode())
        assert status == 200, body
        assert json.loads(body) == {"accepted": len(payloads[i:i + 200])}
    records = consume(receiver.bootstrap, receiver.topic, len(natives))
    assert_same_alerts([r.value for r in records], [litellm_equivalent(ev) for ev in natives])


_TEMPLATE: dict[str, Any] = {}


def _captured_template() -> dict[str, Any]:
    """A real StandardLoggingPayload from LiteLLM (captured once per session)."""
    if not _TEMPLATE:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm

            cap = shared_capture(litellm)
            _TEMPLATE.update(cap.completion(model="gpt-4o", mock_response=_mock(litellm, 0),
                                            metadata=copy.deepcopy(PROXY_METADATA)))
    return _TEMPLATE


def test_bad_batch_is_400_and_nothing_produced(receiver: Receiver) -> None:
    good = to_litellm(scenario(days=0.02)[0], _captured_template())
    bad = {**good, "id": "chatcmpl-bad", "model": None}
    status, _, body = receiver.request("POST", "/litellm", json.dumps([good, bad]).encode())
    assert status == 400
    reply = json.loads(body)
    assert reply["error"] == "missing_field" and "[1].model" in reply["reason"]
    status, _, body = receiver.request("POST", "/litellm", (json.dumps(good) + "\n{oops\n").encode())
    assert status == 400 and "line 2" in json.loads(body)["reason"]
    assert receiver.request("POST", "/litellm", b"[]", headers={"Content-Type": "text/plain"})[0] == 415
    marker = {**good, "id": "chatcmpl-marker"}
    assert receiver.request("POST", "/litellm", json.dumps(marker).encode())[:3:2] == (200, b'{"accepted": 1}')
    [first] = consume(receiver.bootstrap, receiver.topic, 1)
    assert msgspec.json.decode(first.value)["event_id"] == "chatcmpl-marker"


def test_cli_ingest_litellm_post(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = create_topic(kafka_bootstrap)
    proc = IngestProcess(kafka_bootstrap, topic, tmp_path, {"SENTINEL_MAPPING__TENANT_KEY": "customer"})
    try:
        payload = to_litellm(scenario(days=0.02)[0], _captured_template())
        payload["metadata"] = {**payload["metadata"], "requester_metadata": {"customer": "cust-42"}}
        status, _, body = proc.recv.request("POST", "/litellm", json.dumps(payload).encode())
        assert (status, body) == (200, b'{"accepted": 1}')
        [rec] = consume(kafka_bootstrap, topic, 1)
        assert rec.key == b"cust-42" and msgspec.json.decode(rec.value)["tenant_id"] == "cust-42"
    finally:
        assert proc.stop() == 0
