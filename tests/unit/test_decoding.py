"""Decoding and validation of usage events: every rule of the contract, precise reasons."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel import decoding
from sentinel.decoding import EventDecoder
from sentinel.events import EventRuleError, UsageEvent, finish_event, parse_ts

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


# -- the contract's rules run after msgspec, over each decoded batch (finish_batch) ---------------

TS_CASES: list[tuple[Any, float | tuple[str, str]]] = [
    ("2026-11-02T08:00:00Z", 1793606400.0),
    ("2026-11-02T08:00:00.250+00:00", 1793606400.25),
    ("2026-11-02 08:00:00Z", 1793606400.0),
    ("2026-11-02T08:00:00+0100", 1793602800.0),
    # msgspec's RFC 3339 parser: lower-case t/z accepted (RFC 3339 5.6), sub-microsecond digits rounded
    ("2026-11-02t08:00:00z", 1793606400.0),
    ("2026-11-02T08:00:00.1234567Z", 1793606400.123457),
    # ISO 8601 spellings outside RFC 3339 that datetime.fromisoformat reads: msgspec refuses them,
    # the text decoder accepts them as before
    ("2026-11-02T08:00Z", 1793606400.0),
    ("2026-11-02T09:00:00+01", 1793606400.0),
    ("20261102T080000Z", 1793606400.0),
    ("2026-11-02T08:00:00,5Z", 1793606400.5),
    ("2026-W45-1T08:00:00Z", 1793606400.0),
    (1793606400, 1793606400.0),
    (1793606400000, 1793606400.0),
    (1793606400123.0, 1793606400.123),
    ("2026-11-02T08:00:00", ("invalid_ts", "RFC 3339 time without a UTC offset")),
    ("2026-11-02", ("invalid_ts", "RFC 3339 time without a UTC offset")),
    ("yesterday", ("invalid_ts", "not RFC 3339 and not an epoch number")),
    ("2026-11-02T23:59:60Z", ("invalid_ts", "not RFC 3339 and not an epoch number")),
    ("2150-01-01T00:00:00Z", ("ts_out_of_range", "outside 2000-01-01..2100-01-01")),
    ("1999-12-31T23:59:59+00:00", ("ts_out_of_range", "outside 2000-01-01..2100-01-01")),
    (5, ("ts_out_of_range", "outside 2000-01-01..2100-01-01")),
    (99_999_999_999, ("ts_out_of_range", "outside 2000-01-01..2100-01-01")),
    (4102444800000, ("ts_out_of_range", "outside 2000-01-01..2100-01-01")),
    (True, ("wrong_type", "Expected `float | str`, got `bool`")),
    (None, ("wrong_type", "Expected `float | str`, got `null`")),
]


@pytest.mark.parametrize(("ts", "expected"), TS_CASES)
def test_ts_alone_and_inside_a_batch(ts: Any, expected: float | tuple[str, str]) -> None:
    """Same outcome, value and message for a line decoded alone and in the middle of a good batch."""
    raw = line(event_id="x", ts=ts)
    good = [line(event_id=f"g{i}") for i in range(6)]
    alone = decode(raw)
    events, rejected = EventDecoder().decode_batch([*good[:3], raw, *good[3:]])
    if isinstance(expected, float):
        assert isinstance(alone, UsageEvent) and alone.ts.__class__ is float and alone.ts == expected
        assert not rejected and [e.event_id for e in events] == ["g0", "g1", "g2", "x", "g3", "g4", "g5"]
        assert events[3].ts == expected
    else:
        assert not isinstance(alone, UsageEvent)
        assert (alone.code, alone.field, alone.message) == (expected[0], "ts", expected[1])
        assert rejected == [(3, alone)]
        assert [e.event_id for e in events] == [f"g{i}" for i in range(6)]
    assert all(e.ts.__class__ is float for e in events)


def test_rule_rejections_keep_their_messages_in_a_batch() -> None:
    lines = [line(event_id=f"e{i}") for i in range(12)]
    lines[2] = line(event_id="e2", cached_input_tokens=1001)
    lines[5] = line(event_id="e5", schema="llm.usage.v2")
    lines[6] = line(event_id="e6", schema="llm.usage.v1")
    lines[8] = line(event_id="e8", api_key_id="sk-proj-abcdefghijklmnop1234")
    lines[9] = line(event_id="e9", ts="2026-11-02T08:00:00", cached_input_tokens=5000)  # ts is judged first
    events, rejected = EventDecoder().decode_batch(lines)
    assert [(i, r.code, r.field, r.message, r.value) for i, r in rejected] == [
        (2, "cached_exceeds_input", "cached_input_tokens", "1001 > input_tokens 1000", "1001"),
        (5, "unsupported_schema", "schema", "expected llm.usage.v1", "llm.usage.v2"),
        (8, "secret_in_api_key_id", "api_key_id", "looks like an API key secret (value withheld)", None),
        (9, "invalid_ts", "ts", "RFC 3339 time without a UTC offset", "2026-11-02T08:00:00"),
    ]
    assert [e.event_id for e in events] == [f"e{i}" for i in (0, 1, 3, 4, 6, 7, 10, 11)]
    assert all(e.ts == 1793606400.0 for e in events)


def test_a_batch_of_non_rfc3339_times_is_accepted_in_order() -> None:
    """A producer writing every ts as ``...T08:00Z`` (fromisoformat reads it, msgspec does not)."""
    lines = [line(event_id=f"e{i}", ts=f"2026-11-02T08:{i % 60:02d}Z") for i in range(300)]
    lines[100] = b"{not json"
    lines[200] = line(event_id="e200", ts="2026-11-02T08:00:00")
    lines[250] = line(event_id="e250", ts="2026-11-02T08:10:00Z")
    events, rejected = EventDecoder().decode_batch(lines)
    assert [(i, r.code) for i, r in rejected] == [(100, "malformed_json"), (200, "invalid_ts")]
    want = [i for i in range(300) if i not in (100, 200)]
    assert [e.event_id for e in events] == [f"e{i}" for i in want]
    assert [e.ts for e in events] == [1793606400.0 + 60 * (i % 60) if i != 250 else 1793607000.0 for i in want]


_MUTATIONS: list[dict[str, Any]] = [
    {}, {}, {}, {}, {"ts": 1793606400500}, {"ts": 1793606400.5}, {"ts": "2026-11-02T08:00Z"},
    {"ts": "2026-11-02T08:00:00"}, {"ts": "2150-01-01T00:00:00Z"}, {"ts": "nope"}, {"ts": [1]},
    {"cached_input_tokens": 1001}, {"schema": "llm.usage.v1"}, {"schema": "v2"},
    {"api_key_id": "AKIAIOSFODNN7EXAMPLE"}, {"api_key_id": "key_new_1"}, {"input_tokens": -1},
    {"event_id": ...}, {"status": 99, "ts": "bad"},
]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(range(len(_MUTATIONS))), st.sampled_from([b"{x", b"[1]", b" ", b""])),
                min_size=1, max_size=40))
def test_batch_equals_lines_decoded_alone(picks: list[int | bytes]) -> None:
    """decode_batch (msgspec batch + the inlined rules) decides each line as decode_one does."""
    lines = [p if isinstance(p, bytes) else line(**{"event_id": f"e{i}", **_MUTATIONS[p]})
             for i, p in enumerate(picks)]
    dec = EventDecoder()
    alone = [(i, dec.decode_one(ln)) for i, ln in enumerate(lines) if ln.strip()]
    for chunk in (decoding.DECODE_CHUNK, 3):  # one msgspec call, and chunks that split the batch
        with mock.patch.object(decoding, "DECODE_CHUNK", chunk):
            events, rejected = dec.decode_batch(lines)
        assert rejected == [(i, got) for i, got in alone if not isinstance(got, UsageEvent)]
        assert events == [got for _, got in alone if isinstance(got, UsageEvent)]
        assert all(e.ts.__class__ is float for e in events)


def test_bad_lines_at_chunk_edges() -> None:
    n = 3 * decoding.DECODE_CHUNK + 7
    bad = [0, decoding.DECODE_CHUNK - 1, decoding.DECODE_CHUNK, 2 * decoding.DECODE_CHUNK + 1, n - 1]
    lines = [line(event_id=f"e{i}", ts=1793606400 + i) for i in range(n)]
    for i in bad:
        lines[i] = line(event_id=f"e{i}", cached_input_tokens=5000) if i % 2 else b"{oops"
    lines[5] = b""
    events, rejected = EventDecoder().decode_batch(lines)
    assert [i for i, _ in rejected] == bad
    assert [e.ts for e in events] == [1793606400.0 + i for i in range(n) if i not in bad and i != 5]


def test_finish_event_normalises_directly_built_events() -> None:
    base = {k: v for k, v in BASE.items() if k != "ts"}
    assert finish_event(UsageEvent(ts="2026-11-02T09:00:00+01:00", **base)).ts == 1793606400.0
    assert finish_event(UsageEvent(ts=1793606400000.0, **base)).ts == 1793606400.0
    ev = finish_event(UsageEvent(ts=1793606400.0, **base))
    assert finish_event(ev).ts == 1793606400.0  # idempotent
    with pytest.raises(EventRuleError, match="invalid_ts:ts: RFC 3339 time without a UTC offset"):
        finish_event(UsageEvent(ts="2026-11-02T08:00:00", **base))
    with pytest.raises(EventRuleError, match="cached_exceeds_input"):
        finish_event(UsageEvent(ts=1793606400.0, **{**base, "cached_input_tokens": 1001}))
