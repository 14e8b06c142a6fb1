"""The contract every registered detector passes (in the spirit of river's check_estimator).

For each detector in the registry, with its default parameters:

* it fires on its own firing stream, and gives the same findings on the same input;
* snapshot -> restore at several points mid-stream gives exactly the findings
  of an uninterrupted run afterwards;
* state is bounded: snapshot size does not grow with the number of distinct
  keys past ``max_keys``, and idle keys expire;
* it stays silent on benign background traffic (no alert during warm-up);
* it tolerates out-of-order events within the allowed lateness;
* every finding is well formed (score in 0..1, entity type, evidence encodable).
"""

from __future__ import annotations

import importlib
import random
from types import ModuleType
from typing import Any

import msgspec
import pytest

from detectors import registry
from detectors.base import Detector, DetectorContext, DetectorParams, Finding
from sentinel.events import UsageEvent
from sentinel.rules import load_rules
from tests.synth import DAY, Factory, background

NAMES = sorted(registry.registered())
LATENESS_S = 30.0
TICK_S = 60.0


def _streams(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"tests.contract.streams.{name}")
    except ModuleNotFoundError:  # pragma: no cover - a failure message for a new detector
        pytest.fail(f"detector {name!r} has no tests/contract/streams/{name}.py with firing_stream()")


def _context(name: str) -> DetectorContext:
    mod = _streams(name)
    if hasattr(mod, "context"):
        ctx: DetectorContext = mod.context()
        return ctx
    return load_rules(None).context()


def _make(name: str, **overrides: Any) -> Detector[Any, Any]:
    cls = registry.get(name)
    params = cls.Params.model_validate(overrides) if overrides else cls.Params()
    return cls(params, _context(name))


def run(
    det: Detector[Any, Any], events: list[UsageEvent], next_tick: float | None = None
) -> tuple[list[Finding], float | None]:
    """Feed events the way the pipeline does: ticks at each TICK_S boundary of event time."""
    out: list[Finding] = []
    for ev in events:
        t = ev.t
        if next_tick is None:
            next_tick = (t // TICK_S + 1) * TICK_S
        while t >= next_tick:
            got = det.tick(next_tick)
            if got:
                out.extend(got)
            next_tick += TICK_S
        got = det.update(ev)
        if got:
            out.extend(got)
    return out, next_tick


def enc(findings: list[Finding]) -> list[bytes]:
    return [msgspec.json.encode(f) for f in findings]


@pytest.fixture(params=NAMES)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_registry_is_not_empty() -> None:
    assert NAMES, "no detector registered"


def test_declares_contract_attributes(name: str) -> None:
    cls = registry.get(name)
    assert cls.name == name
    assert issubclass(cls.Params, DetectorParams)
    assert issubclass(cls.State, msgspec.Struct)
    assert (cls.__doc__ or "").strip(), "detector needs a docstring"
    det = _make(name)
    assert det.is_warm("never-seen-key") is False
    assert det.tracked_keys() == 0


def test_fires_and_is_deterministic(name: str) -> None:
    events = _streams(name).firing_stream()
    a, _ = run(_make(name), events)
    b, _ = run(_make(name), events)
    assert a, f"{name} did not fire on its firing stream"
    assert enc(a) == enc(b)


@pytest.mark.parametrize("cut", [0.25, 0.5, 0.8])
def test_snapshot_restore_gives_identical_later_findings(name: str, cut: float) -> None:
    events = _streams(name).firing_stream()
    k = int(len(events) * cut)
    full, _ = run(_make(name), events)
    first = _make(name)
    head, tick = run(first, events[:k])
    blob = first.snapshot()
    second = _make(name)
    second.restore(blob)
    assert second.snapshot() == blob
    tail, _ = run(second, events[k:], tick)
    assert enc(head + tail) == enc(full)


def _random_keys(n: int, seed: int, start: float) -> list[UsageEvent]:
    rng = random.Random(seed)
    f = Factory(f"card{seed}")
    out = []
    for i in range(n):
        tenant = f"t_rand_{rng.randrange(10**9)}"
        out.append(
            f.event(
                start + i * 0.01,
                tenant_id=tenant,
                api_key_id=f"key_rand_{rng.randrange(10**12)}",
                session_id=f"s_rand_{rng.randrange(10**12)}",
                request_id=f"r_rand_{rng.randrange(10**12)}",
                user_id=f"u_rand_{rng.randrange(10**12)}",
                prompt_shape=f"shp_{rng.randrange(10**12)}",
                prefix_hash=f"pfx_{rng.randrange(10**12)}",
                feature=f"feat_{rng.randrange(10**12)}",
                source_ip=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
                resource_tenant_id=tenant,
                model="gpt-4o-mini",
            )
        )
    return out


def test_state_is_bounded_by_max_keys(name: str) -> None:
    cap = 50
    events = _streams(name).firing_stream()
    start = events[-1].t + 1.0
    det = _make(name, max_keys=cap)
    run(det, events)
    run(det, _random_keys(2_000, 1, start))
    size_small = len(det.snapshot())
    assert det.tracked_keys() <= cap
    run(det, _random_keys(20_000, 2, start + 100.0))
    size_large = len(det.snapshot())
    assert det.tracked_keys() <= cap
    assert size_large <= size_small * 1.5 + 4096, (size_small, size_large)


def test_idle_keys_expire(name: str) -> None:
    events = _streams(name).firing_stream()
    det = _make(name)
    run(det, events)
    assert det.tracked_keys() > 0
    later = events[-1].t + det.params.idle_ttl_s + 2 * DAY
    det.tick(later)
    det.tick(later + TICK_S)
    assert det.tracked_keys() == 0


def test_silent_on_benign_background(name: str) -> None:
    events = background(days=2.0, seed=11)
    findings, _ = run(_make(name), events)
    firing = [f for f in findings if f.status == "firing" and (f.severity or "") != "info"]
    assert not firing, f"{name} fired on benign traffic: {[(f.entity_id, f.title, f.score) for f in firing[:3]]}"


def test_tolerates_out_of_order_within_lateness(name: str) -> None:
    events = _streams(name).firing_stream()
    rng = random.Random(5)
    # Shuffle within buckets of LATENESS_S: every event is at most LATENESS_S late.
    buckets: dict[int, list[UsageEvent]] = {}
    for ev in events:
        buckets.setdefault(int(ev.t // LATENESS_S), []).append(ev)
    shuffled = []
    for key in sorted(buckets):
        chunk = buckets[key]
        rng.shuffle(chunk)
        shuffled.extend(chunk)
    findings, _ = run(_make(name), shuffled)
    assert findings, f"{name} stopped firing when events arrive slightly out of order"
    _check_wellformed(name, findings)


def _check_wellformed(name: str, findings: list[Finding]) -> None:
    for f in findings:
        assert f.detector == name
        assert 0.0 <= f.score <= 1.0, f.score
        assert f.status in ("firing", "resolved")
        assert f.entity_id and f.tenant_id
        assert f.first_seen <= f.ts + LATENESS_S
        assert f.title
        msgspec.json.encode(f.evidence)
        for v in f.signals.values():
            assert isinstance(v, float)


def test_findings_are_well_formed(name: str) -> None:
    findings, _ = run(_make(name), _streams(name).firing_stream())
    _check_wellformed(name, findings)
