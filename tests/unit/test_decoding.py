"""Decoding and validation of usage events: every rule of the contract, precise reasons."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.decoding import EventDecoder
from sentinel.events import UsageEvent, parse_ts

BASE: dict[str, Any] = {
    "event_id": "e1",
    "ts": "2026-11-02T08:00:00Z",
    "api_key_id": "key_acme_1",
    "tenant_id": "t_acme",
    "provider": "openai",
    "model": "gpt-4o",
    "input_tokens": 1000,
    "output_tokens": 200,
}


def line(**changes: Any) -> bytes:
    obj = {**BASE, **changes}
    for k in [k for k, v in changes.items() if v is ...]:
        del obj[k]
    return json.dumps(obj).encode()


def decode(raw: bytes) -> Any:
    return EventDecoder().decode_one(raw)


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-11-02T08:00:00Z", 1793606400.0),
        ("2026-11-02T09:30:00+01:30", 1793606400.0),
        ("2026-11-02T08:00:00.250Z", 1793606400.25),
        (1793606400, 1793606400.0),
        (1793606400.5, 1793606400.5),
        (1793606400000, 1793606400.0),
        (1793606400123, 1793606400.123),
    ],
)
def test_ts_spellings(ts: Any, expected: float) -> None:
    ev = decode(line(ts=ts))
    assert isinstance(ev, UsageEvent)
    assert ev.ts == pytest.approx(expected)


def test_unknown_fields_are_ignored_and_defaults_applied() -> None:
    ev = decode(line(gateway="litellm", region={"nested": [1, 2]}))
    assert isinstance(ev, UsageEvent)
    assert ev.cached_input_tokens == 0 and ev.status == 200 and ev.attempt == 1 and ev.cancelled is False


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        (line(event_id=...), "missing_field", "event_id"),
        (line(input_tokens="12"), "wrong_type", "input_tokens"),
        (line(output_tokens=-1), "out_of_range", "output_tokens"),
        (line(cached_input_tokens=2000), "cached_exceeds_input", "cached_input_tokens"),
        (line(ts="yesterday"), "invalid_ts", "ts"),
        (line(ts="2026-11-02T08:00:00"), "invalid_ts", "ts"),
        (line(ts=5), "ts_out_of_range", "ts"),
        (line(status=700), "out_of_range", "status"),
        (line(event_id=""), "out_of_range", "event_id"),
        (line(tenant_id="x" * 129), "out_of_range", "tenant_id"),
        (line(schema="llm.usage.v2"), "unsupported_schema", "schema"),
        (b'{"event_id": "e1", ', "malformed_json", None),
        (b"[1, 2, 3]", "not_an_object", None),
        (b'{"event_id": "\xff\xfe"}', "invalid_utf8", None),
        (b"\xff\xfe garbage", "invalid_utf8", None),
    ],
)
def test_rejections_name_code_and_field(raw: bytes, code: str, field: str | None) -> None:
    got = decode(raw)
    assert not isinstance(got, UsageEvent)
    assert (got.code, got.field) == (code, field), got.render()


@pytest.mark.parametrize("secret", ["sk-proj-abcdefghijklmnop1234", "AKIAIOSFODNN7EXAMPLE", "sk-ant-api03-abcdefghij"])
def test_secret_api_key_id_rejected_and_never_echoed(secret: str) -> None:
    got = decode(line(api_key_id=secret))
    assert not isinstance(got, UsageEvent)
    assert got.code == "secret_in_api_key_id"
    assert secret not in got.render()
    assert secret[:12] not in (got.value or "")


def test_line_too_long() -> None:
    raw = line(feature="x" * 70_000)
    events, rejected = EventDecoder().decode_batch([raw])
    assert not events and rejected[0][1].code == "line_too_long"


def test_batch_keeps_order_and_indexes_of_bad_lines() -> None:
    lines = [line(event_id=f"e{i}") for i in range(50)]
    lines[3] = b"not json"
    lines[17] = line(event_id="e17", input_tokens=-5)
    lines[18] = line(event_id="e18", api_key_id="sk-abcdefghijklmnopqrstuv")
    lines[40] = b'{"a": 1}, {"b": 2}'
    events, rejected = EventDecoder().decode_batch(lines)
    assert [i for i, _ in rejected] == [3, 17, 18, 40]
    assert [e.event_id for e in events] == [f"e{i}" for i in range(50) if i not in (3, 17, 18, 40)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    events, rejected = EventDecoder().decode_batch([raw, line(), raw])
    assert len(events) + len(rejected) + sum(1 for r in (raw, raw) if not r.strip()) == 3


def test_parse_ts_boundaries() -> None:
    assert parse_ts(1.7e12) == 1.7e9  # >= 1e11 is milliseconds
    with pytest.raises(ValueError, match="ts_out_of_range"):
        parse_ts(99_999_999_999)  # below 1e11 is seconds: year 5138, out of range
