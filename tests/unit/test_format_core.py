"""Input-format registry and batch adaptation, plus the scenario the per-format tests share.

``scenario()`` is benign traffic with two incidents the real detectors raise
(a key reading other tenants' data; an agent loop off-hours) and a burst of
failed attempts. The per-format modules turn it into their upstream format,
map it back with the adapter, and require the same alerts as the *equivalent*
native events -- the natives reduced to what that format can carry.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import msgspec
import pytest

from sentinel.alerts import encode_alert
from sentinel.decoding import EventDecoder, Rejection
from sentinel.events import UsageEvent
from sentinel.formats import FORMATS, AdaptedBatch, adapt_batch, get_format
from sentinel.formats.base import FormatError, epoch_s, opt_int
from sentinel.formats.mapping import FieldMapping, bounded_id, pick
from sentinel.pipeline import Pipeline, PipelineStats
from sentinel.rules import load_rules
from tests.synth import HOUR, T0, Factory, background, merge, to_lines

# -- shared scenario helpers (imported by the other format test modules) --------------------------


def scenario(days: float = 1.0, seed: int = 11, loop_minutes: float = 120.0) -> list[UsageEvent]:
    """Benign traffic + cross-tenant reads + an off-hours agent loop + a burst of 403/404/429."""
    f = Factory("sc")
    rng = random.Random(seed)
    start = T0 + 10 * HOUR
    cross = [
        f.event(start + i * 40.0, tenant_id="t_beta", api_key_id="key_beta_9", user_id="u_t_beta_9",
                request_id=f"r_xt_{i}", feature="search", prompt_shape="shp_t_beta_1",
                session_id=f"s_xt_{i // 5}", latency_ms=rng.randint(300, 2000),
                resource_tenant_id=("t_alpha", "t_gamma", "t_beta")[i % 3])
        for i in range(30)
    ]
    loop = []
    t = T0 + 19.5 * HOUR
    ctx = 2_000
    while t < T0 + 19.5 * HOUR + loop_minutes * 60.0:
        loop.append(f.event(t, tenant_id="t_alpha", api_key_id="key_alpha_1", session_id="s_agent_loop_1",
                            prompt_shape="shp_agent_step", prefix_hash="pfx_agent", model="gpt-4o",
                            input_tokens=ctx, cached_input_tokens=int(ctx * 0.5), output_tokens=rng.randint(150, 300),
                            user_agent="agent-sdk/2.1", latency_ms=rng.randint(800, 4000)))
        ctx += rng.randint(150, 400)
        t += 30.0 * rng.uniform(0.92, 1.08)
    probe = [
        f.event(start + 2 * HOUR + i * 3.0, tenant_id="t_gamma", api_key_id="key_gamma_1",
                model=("gpt-4o", "o1-preview", "claude-opus-4-1")[i % 3], status=(403, 404, 429)[i % 3],
                input_tokens=0, output_tokens=0, source_ip="203.0.113.7", user_agent="curl/8.5",
                request_id=f"r_probe_{i // 2}", attempt=1 + i % 2, cache_write_tokens=0)
        for i in range(12)
    ]
    return merge(background(days=days, seed=seed), cross, loop, probe)


def run_pipeline(lines: Sequence[bytes]) -> list[bytes]:
    """Canonical alerts of the real detectors (default rules) over ``lines``; no line may be rejected."""
    p = Pipeline(load_rules(None))
    got = p.feed(list(lines), "test", range(1, len(lines) + 1))
    assert got.dead == [], [d.message for d in got.dead[:3]]
    return [encode_alert(a) for a in got.alerts + p.drain()]


def native_lines(events: Iterable[UsageEvent]) -> list[bytes]:
    return list(to_lines(events))


def replace(ev: UsageEvent, **changes: object) -> UsageEvent:
    """A copy of ``ev`` with ``changes`` applied (decoded again, so ts normalisation applies)."""
    got = EventDecoder().decode_one(msgspec.json.encode(msgspec.structs.replace(ev, **changes)))
    assert isinstance(got, UsageEvent), got
    return got


def adapt_all(name: str, records: Sequence[bytes], mapping: FieldMapping | None = None) -> AdaptedBatch:
    stats = PipelineStats()
    out = adapt_batch(get_format(name, mapping), records, range(1, len(records) + 1), "test", stats)
    assert out.dead == [], [(d.reason, d.field, d.message) for d in out.dead[:3]]
    return out


def assert_same_alerts(adapted: Sequence[bytes], natives: Sequence[UsageEvent]) -> list[bytes]:
    """The adapted lines decode to the native events and raise byte-identical alerts (at least one)."""
    dec = EventDecoder()
    got = [dec.decode_one(line) for line in adapted]
    assert len(got) == len(natives)
    for a, n in zip(got, natives, strict=True):
        assert a == n, f"{msgspec.json.encode(a)!r} != {msgspec.json.encode(n)!r}"
    alerts = run_pipeline(adapted)
    assert alerts == run_pipeline(native_lines(natives))
    assert alerts, "the scenario must raise alerts, or the comparison proves nothing"
    return alerts


# -- registry and batch adaptation ----------------------------------------------------------------


def test_registry_names_every_format() -> None:
    assert sorted(FORMATS) == ["bedrock", "litellm", "otel-genai", "usage-v1"]
    for name in FORMATS:
        adapter = get_format(name)
        assert adapter.name == name
    assert get_format("usage-v1").identity
    assert not get_format("litellm").identity


def test_unknown_format_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown input format 'splunk'; known: bedrock, litellm"):
        get_format("splunk")


def test_identity_batch_is_untouched() -> None:
    lines = [b'{"a":1}', b"", b"not json"]
    out = adapt_batch(get_format("usage-v1"), lines, [7, 8, 9], "f")
    assert out.lines == lines and out.positions == [7, 8, 9] and out.dead == []


def test_adapt_batch_keeps_positions_and_dead_letters_with_reason() -> None:
    good = (b'{"schemaType":"ModelInvocationLog","timestamp":"2026-11-02T10:00:00Z","accountId":"123456789012",'
            b'"identity":{"arn":"arn:aws:iam::123456789012:user/alice"},"requestId":"r1",'
            b'"modelId":"anthropic.claude-3-haiku-20240307-v1:0","input":{"inputTokenCount":5},'
            b'"output":{"outputTokenCount":7}}')
    envelope = (b'{"messageType":"DATA_MESSAGE","logEvents":[{"id":"1","timestamp":1,"message":'
                + msgspec.json.encode(good.decode().replace('"r1"', '"r2"'))
                + b'},{"id":"2","timestamp":2,"message":'
                + msgspec.json.encode(good.decode().replace('"r1"', '"r3"')) + b"}]}")
    secret = b'{"requestId": "r4", "note": "sk-proj-abcdefghijklmnop1234"}'
    stats = PipelineStats()
    out = adapt_batch(get_format("bedrock"), [good, b"  ", envelope, secret, b"{"], [10, 11, 12, 13, 14], "in.jsonl",
                      stats)
    assert out.positions == [10, 11, 12, 12]
    assert [msgspec.json.decode(x)["event_id"] for x in out.lines if x.strip()] == ["r1", "r2", "r3"]
    assert [(d.reason, d.field, d.position) for d in out.dead] == [
        ("missing_field", "timestamp", 13), ("malformed_json", None, 14)]
    assert "sk-proj" not in out.dead[0].raw and "REDACTED" in out.dead[0].raw
    assert out.dead[0].source == "in.jsonl" and out.dead[0].raw_bytes == len(secret)
    assert stats.rejected == {"missing_field": 1, "malformed_json": 1}


def test_adapt_batch_rejects_oversized_records() -> None:
    out = adapt_batch(get_format("litellm"), [b"[" + b" " * 100 + b"]"], [1], "f", max_line_bytes=50)
    assert [(d.reason, d.message) for d in out.dead] == [("line_too_long", "102 bytes > 50")]


def test_mapping_helpers() -> None:
    assert pick("k", {"k": None}, {"k": True}, {"k": 3}) == "3"
    assert pick("k", {"k": ""}, {"k": []}) is None
    long = "arn:aws:sts::123456789012:assumed-role/" + "r" * 64 + "/" + "s" * 64
    short = bounded_id(long)
    assert len(short) == 128 and short != bounded_id(long[:-1] + "t") and short.startswith(long[:100])
    assert epoch_s("2026-11-02T10:00:00", "ts") == T0 + 10 * HOUR  # naive = UTC
    assert epoch_s(1793656800000, "ts") == 1793656800.0
    with pytest.raises(FormatError) as err:
        opt_int("12x", "usage.tokens")
    assert err.value.rejection == Rejection("wrong_type", "usage.tokens", "expected an integer", "12x")


def test_mapping_is_a_settings_group(monkeypatch: pytest.MonkeyPatch) -> None:
    from sentinel.config import Settings

    monkeypatch.setenv("SENTINEL_MAPPING__TENANT_KEY", "org")
    monkeypatch.setenv("SENTINEL_MAPPING__DEFAULT_TENANT", "")
    s = Settings()
    assert s.mapping.tenant_key == "org"
    assert s.mapping.default_tenant is None
    assert Settings.model_fields["mapping"].default == FieldMapping()


def test_scenario_raises_alerts_of_several_detectors() -> None:
    alerts = [msgspec.json.decode(a) for a in run_pipeline(native_lines(scenario()))]
    assert {"cross_tenant", "runaway_loop"} <= {a["detector"] for a in alerts}
