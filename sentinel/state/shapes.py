"""The global prompt-shape view: shape -> tenants seen, shared by all replicas.

The cross_tenant detector flags a tenant-private prompt shape showing up under
another tenant. Tenants live on different partitions, so on different
replicas: "which tenants used this shape" must be global. Detectors do no
I/O, so the detector keeps a local, bounded view and the pipeline moves it
at checkpoints::

    view = registry.publish(detector.shared_delta())
    detector.merge_shared(view)

``publish(delta)`` adds each shape's newly seen tenants to the global view
(a shape with an empty list only asks) and returns the global view of the
shapes in ``delta``. :class:`MemoryShapeRegistry` serves one process (demo,
replay, tests; also several detectors in one process), and
:class:`RedisShapeRegistry` all replicas: one Redis set per shape with a TTL,
one pipelined round trip (``SADD``/``EXPIRE``/``SMEMBERS``) per publish, and a
cap on the shapes tracked (a sorted-set index by last publish time; the least
recently published shapes are dropped past the cap).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import redis

from sentinel.state.checkpoints import StoreUnavailable

__all__ = ["MemoryShapeRegistry", "RedisShapeRegistry", "ShapeRegistry"]

DEFAULT_TTL_S = 30 * 86400.0
DEFAULT_MAX_SHAPES = 1_000_000
DEFAULT_MAX_TENANTS = 16


@runtime_checkable
class ShapeRegistry(Protocol):
    """Where replicas pool what they saw: shape -> tenants."""

    def publish(self, delta: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        """Add ``delta``'s tenants to the global view; return the global view of ``delta``'s shapes."""
        ...


class MemoryShapeRegistry:
    """In-process registry with the same semantics (no TTL; the cap evicts the least recently published).

    >>> reg = MemoryShapeRegistry()
    >>> reg.publish({"shp_1": ["t_a"]})
    {'shp_1': ['t_a']}
    >>> reg.publish({"shp_1": ["t_b"], "shp_2": []})
    {'shp_1': ['t_a', 't_b'], 'shp_2': []}
    """

    def __init__(self, max_shapes: int = DEFAULT_MAX_SHAPES, max_tenants: int = DEFAULT_MAX_TENANTS) -> None:
        self.max_shapes = max_shapes
        self.max_tenants = max_tenants
        self._shapes: dict[str, set[str]] = {}

    def publish(self, delta: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        shapes = self._shapes
        view: dict[str, list[str]] = {}
        for shape, tenants in delta.items():
            seen = shapes.get(shape)
            if tenants:
                if seen is None:
                    seen = set()
                else:
                    del shapes[shape]  # re-insert: the dict is in last-published order
                shapes[shape] = seen
                seen.update(tenants)
            view[shape] = sorted(seen)[: self.max_tenants] if seen else []
        while len(shapes) > self.max_shapes:
            del shapes[next(iter(shapes))]
        return view

    def __len__(self) -> int:
        return len(self._shapes)


class RedisShapeRegistry:
    """One Redis set per shape (``<prefix>:shape:<shape>``) with a TTL, and an index to cap the count.

    ``redis_client`` is a ``redis.Redis`` (``decode_responses`` either way). Errors
    raise :class:`~sentinel.state.checkpoints.StoreUnavailable`; the caller keeps
    its delta and may publish it again (SADD is idempotent).
    """

    def __init__(self, redis_client: redis.Redis, prefix: str = "sentinel", ttl_s: float = DEFAULT_TTL_S,
                 max_shapes: int = DEFAULT_MAX_SHAPES, max_tenants: int = DEFAULT_MAX_TENANTS,
                 clock: Callable[[], float] = time.time) -> None:
        self._redis = redis_client
        self.prefix = prefix
        self.ttl_s = int(ttl_s)
        self.max_shapes = max_shapes
        self.max_tenants = max_tenants
        self._clock = clock
        self.index_key = f"{prefix}:shapes"

    def key(self, shape: str) -> str:
        return f"{self.prefix}:shape:{shape}"

    def publish(self, delta: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        if not delta:
            return {}
        shapes = list(delta)
        now = self._clock()
        try:
            pipe = self._redis.pipeline(transaction=False)
            published: dict[str, float] = {}
            for shape in shapes:
                tenants = delta[shape]
                key = self.key(shape)
                if tenants:
                    pipe.sadd(key, *tenants)
                    pipe.expire(key, self.ttl_s)
                    published[shape] = now
                pipe.smembers(key)
            if published:
                pipe.zadd(self.index_key, published)
                pipe.expire(self.index_key, self.ttl_s)
                pipe.zcard(self.index_key)
            replies = pipe.execute()
            count = int(replies[-1]) if published else 0
            if count > self.max_shapes:
                self._trim(count - self.max_shapes)
        except redis.RedisError as err:
            raise StoreUnavailable(f"redis: {type(err).__name__}") from None
        view: dict[str, list[str]] = {}
        i = 0
        for shape in shapes:
            if delta[shape]:
                i += 2  # SADD, EXPIRE
            view[shape] = sorted(_text(m) for m in replies[i])[: self.max_tenants]
            i += 1
        return view

    def _trim(self, excess: int) -> None:
        oldest: list[Any] = self._redis.zpopmin(self.index_key, excess)
        if oldest:
            self._redis.delete(*(self.key(_text(member)) for member, _score in oldest))

    def delete_all(self) -> int:
        """Drop every shape set under this prefix and the index (tests, operators). Returns keys deleted."""
        try:
            members = self._redis.zrange(self.index_key, 0, -1)
            keys = [self.key(_text(m)) for m in members]
            keys.append(self.index_key)
            return int(self._redis.delete(*keys))
        except redis.RedisError as err:
            raise StoreUnavailable(f"redis: {type(err).__name__}") from None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
