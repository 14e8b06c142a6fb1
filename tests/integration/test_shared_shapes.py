"""The global shape view across replicas: two cross_tenant detectors pool shape -> tenants through a registry.

Replica 1 holds tenant t_alpha's partition and sees it use ``shp_secret`` alone for two days; replica 2
holds t_beta's and sees t_beta issue the same shape. Locally, replica 2 cannot tell that the shape is
t_alpha's; after both publish through the registry, it can, and t_beta's next use is flagged.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from detectors.base import Finding
from detectors.cross_tenant import CrossTenant, CrossTenantParams
from sentinel.events import UsageEvent
from sentinel.rules import load_rules
from sentinel.state.shapes import MemoryShapeRegistry, RedisShapeRegistry, ShapeRegistry
from tests.synth import DAY, HOUR, T0, Factory

SHAPE = "shp_secret_contract_review"


def _detector() -> CrossTenant:
    return CrossTenant(CrossTenantParams(), load_rules(None).context())


def _owner_events(f: Factory) -> list[UsageEvent]:
    # t_alpha uses the shape every 30 minutes for two days: long private.
    return [f.event(T0 + i * 1800.0, tenant_id="t_alpha", api_key_id="key_alpha_1", prompt_shape=SHAPE,
                    user_id="u_alpha_1") for i in range(96)]


def _intruder(f: Factory, t: float) -> UsageEvent:
    return f.event(t, tenant_id="t_beta", api_key_id="key_beta_3", prompt_shape=SHAPE, user_id="u_beta_3")


def _feed(det: CrossTenant, events: list[UsageEvent]) -> list[Finding]:
    out: list[Finding] = []
    for ev in events:
        got = det.update(ev)
        if got:
            out.extend(got)
    return out


def _checkpoint(det: CrossTenant, registry: ShapeRegistry) -> dict[str, list[str]]:
    delta = det.shared_delta()
    view = registry.publish(delta)
    det.merge_shared(view)
    return delta


def _leaks(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.status == "firing" and "shape_leak" in f.signals]


def _two_replicas(registry: ShapeRegistry) -> tuple[list[Finding], list[Finding], dict[str, list[str]]]:
    f = Factory("shapes")
    r1, r2 = _detector(), _detector()
    assert not _feed(r1, _owner_events(f))
    delta1 = _checkpoint(r1, registry)
    # Replica 2 sees t_beta issue the shape: locally it is just a new shape of t_beta's.
    before = _feed(r2, [_intruder(f, T0 + 2 * DAY + HOUR)])
    _checkpoint(r2, registry)
    after = _feed(r2, [_intruder(f, T0 + 2 * DAY + 2 * HOUR)])
    return before, after, delta1


def _assert_detected(before: list[Finding], after: list[Finding], delta1: dict[str, list[str]]) -> None:
    assert delta1 == {SHAPE: ["t_alpha"]}, "replica 1 publishes the owner once its private use is established"
    assert not before, "without the global view replica 2 has nothing to compare with"
    leaks = _leaks(after)
    assert len(leaks) == 1
    f = leaks[0]
    assert f.entity_id == "key_beta_3" and f.tenant_id == "t_beta"
    assert f.evidence["leaked_shapes"] == [{"shape": SHAPE, "owner_tenant": "t_alpha"}]
    assert f.attack is not None and f.attack["id"] == "AML.T0057"


def test_memory_registry_carries_a_private_shape_to_the_other_replica() -> None:
    _assert_detected(*_two_replicas(MemoryShapeRegistry()))


def test_without_a_registry_the_second_replica_is_blind() -> None:
    f = Factory("blind")
    r2 = _detector()
    out = _feed(r2, [_intruder(f, T0 + 2 * DAY + HOUR), _intruder(f, T0 + 2 * DAY + 2 * HOUR)])
    assert not _leaks(out)


def test_memory_registry_semantics_and_cap() -> None:
    reg = MemoryShapeRegistry(max_shapes=2)
    assert reg.publish({"a": ["t1"], "b": []}) == {"a": ["t1"], "b": []}
    assert reg.publish({"a": ["t2"]}) == {"a": ["t1", "t2"]}
    reg.publish({"b": ["t1"]})
    reg.publish({"c": ["t3"]})  # cap 2: "a" is the least recently published
    assert len(reg) == 2
    assert reg.publish({"a": []}) == {"a": []}


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c: redis.Redis = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    p = f"test-shapes-{uuid.uuid4().hex[:10]}"
    yield p
    keys = list(client.scan_iter(f"{p}:*"))
    if keys:
        client.delete(*keys)


@pytest.mark.redis
def test_redis_registry_carries_a_private_shape_to_the_other_replica(client: redis.Redis, prefix: str) -> None:
    # Each replica has its own connection, as two processes would.
    reg = RedisShapeRegistry(client, prefix)
    _assert_detected(*_two_replicas(reg))
    members = {m.decode() for m in client.smembers(reg.key(SHAPE))}
    assert members == {"t_alpha"}, "t_beta is published as a follower only at the next checkpoint"
    ttl = client.ttl(reg.key(SHAPE))
    assert 0 < ttl <= reg.ttl_s


@pytest.mark.redis
def test_redis_registry_after_the_leak_the_shape_is_shared(client: redis.Redis, prefix: str) -> None:
    reg = RedisShapeRegistry(client, prefix)
    _, after, _ = _two_replicas(reg)
    assert _leaks(after)
    # Replica 3 (t_gamma's) then sees the shape: it is shared now (two tenants), nothing to flag.
    f = Factory("third")
    r2_delta_view = reg.publish({SHAPE: ["t_beta"]})  # what replica 2's next checkpoint publishes
    assert r2_delta_view[SHAPE] == ["t_alpha", "t_beta"]
    r3 = _detector()
    first = _feed(r3, [f.event(T0 + 3 * DAY, tenant_id="t_gamma", api_key_id="key_gamma_1", prompt_shape=SHAPE)])
    _checkpoint(r3, reg)
    later = _feed(r3, [f.event(T0 + 3 * DAY + 60, tenant_id="t_gamma", api_key_id="key_gamma_1",
                               prompt_shape=SHAPE)])
    assert not _leaks(first + later)


@pytest.mark.redis
def test_redis_registry_semantics_ttl_and_cap(client: redis.Redis, prefix: str) -> None:
    clock: list[float] = [1000.0]

    def now() -> float:
        return clock[0]

    reg = RedisShapeRegistry(client, prefix, ttl_s=3600, max_shapes=3, clock=now)
    assert reg.publish({}) == {}
    assert reg.publish({"s1": ["t1", "t2"], "s2": []}) == {"s1": ["t1", "t2"], "s2": []}
    assert not client.exists(reg.key("s2")), "a query creates nothing"
    for i, shape in enumerate(["s2", "s3", "s4"]):
        clock[0] += 10.0 * (i + 1)
        reg.publish({shape: ["t9"]})
    # Cap 3: s1, published first, was dropped with its set.
    assert client.zcard(reg.index_key) == 3
    assert not client.exists(reg.key("s1"))
    assert reg.publish({"s1": []}) == {"s1": []}
    assert reg.publish({"s4": []}) == {"s4": ["t9"]}
    assert 0 < client.ttl(reg.key("s4")) <= 3600
    decoded: Any = redis.Redis(connection_pool=client.connection_pool, decode_responses=True)
    assert RedisShapeRegistry(decoded, prefix).publish({"s4": []}) == {"s4": ["t9"]}
    assert reg.delete_all() >= 1
    assert not list(client.scan_iter(f"{prefix}:*"))


@pytest.mark.redis
def test_redis_unavailable_is_reported() -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from sentinel.state.checkpoints import StoreUnavailable

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    with pytest.raises(StoreUnavailable):
        RedisShapeRegistry(dead, "x").publish({"s": ["t"]})
