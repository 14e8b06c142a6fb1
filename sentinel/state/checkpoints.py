"""Per-partition checkpoints: a pipeline snapshot and the partition's next offset, saved together.

The live daemon keeps one pipeline per assigned Kafka partition. A checkpoint
is that pipeline's whole state (:meth:`sentinel.pipeline.Pipeline.snapshot`)
plus the offset of the first record *not* reflected in it. Both go to the
store in one atomic write, so a replica that takes the partition over (after a
rebalance or a ``kill -9``) restores exactly the state that belongs to the
offset it seeks to: the events after it are re-read and re-processed, which
gives the same alerts as an uninterrupted run.

:class:`RedisCheckpointStore` keeps one hash per (group, topic, partition),
``{prefix}:ckpt:{group}:{topic}:{partition}`` with fields ``state``,
``offset``, ``saved_at`` and ``owner``, written by one Lua script that also
refuses to move a partition's offset backwards (a late write from a replica
that has already lost the partition must not undo the new owner's progress).
:class:`MemoryCheckpointStore` has the same interface for the demo and tests;
it lives and dies with the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "CheckpointWrite",
    "MemoryCheckpointStore",
    "RedisCheckpointStore",
    "StoreUnavailable",
]


class StoreUnavailable(Exception):
    """The store cannot be reached now; retry later. The message never holds credentials."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    state: bytes
    offset: int
    saved_at: float
    owner: str


@dataclass(frozen=True, slots=True)
class CheckpointWrite:
    partition: int
    state: bytes
    offset: int


class CheckpointStore(Protocol):
    """Where partition checkpoints live. ``save_many`` writes each partition atomically."""

    def load_many(self, group: str, topic: str, partitions: Sequence[int]) -> dict[int, Checkpoint]:
        """Checkpoints of the partitions that have one. Raises StoreUnavailable."""
        ...

    def save_many(self, group: str, topic: str, writes: Sequence[CheckpointWrite], owner: str,
                  now: float | None = None) -> list[bool]:
        """Save each write atomically (state and offset together); False where the stored offset is
        already ahead (the write is refused). Raises StoreUnavailable."""
        ...

    def delete(self, group: str, topic: str, partitions: Iterable[int]) -> None: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


class MemoryCheckpointStore:
    """In-process store with the Redis store's semantics (demo, tests without Redis)."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str, int], Checkpoint] = {}
        self._lock = threading.Lock()

    def load_many(self, group: str, topic: str, partitions: Sequence[int]) -> dict[int, Checkpoint]:
        with self._lock:
            return {p: cp for p in partitions if (cp := self._data.get((group, topic, p))) is not None}

    def save_many(self, group: str, topic: str, writes: Sequence[CheckpointWrite], owner: str,
                  now: float | None = None) -> list[bool]:
        at = time.time() if now is None else now
        out = []
        with self._lock:
            for w in writes:
                key = (group, topic, w.partition)
                cur = self._data.get(key)
                if cur is not None and cur.offset > w.offset:
                    out.append(False)
                    continue
                self._data[key] = Checkpoint(w.state, w.offset, at, owner)
                out.append(True)
        return out

    def delete(self, group: str, topic: str, partitions: Iterable[int]) -> None:
        with self._lock:
            for p in partitions:
                self._data.pop((group, topic, p), None)

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


# KEYS[1] = checkpoint hash; ARGV = state, offset, saved_at, owner.
# One script = one atomic step: the fencing check and both fields.
_SAVE = """
local cur = redis.call('HGET', KEYS[1], 'offset')
if cur and tonumber(cur) > tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'offset', ARGV[2], 'saved_at', ARGV[3], 'owner', ARGV[4])
return 1
"""


class RedisCheckpointStore:
    """Checkpoints in Redis: one hash per partition, written by one Lua script (see module doc)."""

    def __init__(self, url: str, prefix: str = "sentinel", socket_timeout_s: float = 5.0) -> None:
        self.prefix = prefix
        self._redis: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=min(socket_timeout_s, 2.0),
            health_check_interval=30,
        )
        self._save = self._redis.register_script(_SAVE)

    def key(self, group: str, topic: str, partition: int) -> str:
        return f"{self.prefix}:ckpt:{group}:{topic}:{partition}"

    def load_many(self, group: str, topic: str, partitions: Sequence[int]) -> dict[int, Checkpoint]:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for p in partitions:
                pipe.hgetall(self.key(group, topic, p))
            rows: list[dict[bytes, bytes]] = pipe.execute()
        except redis.RedisError as err:
            raise StoreUnavailable(f"redis: {type(err).__name__}") from None
        out: dict[int, Checkpoint] = {}
        for p, row in zip(partitions, rows, strict=True):
            if row and b"offset" in row:
                out[p] = Checkpoint(
                    state=row.get(b"state", b""),
                    offset=int(row[b"offset"]),
                    saved_at=float(row.get(b"saved_at", b"0")),
                    owner=row.get(b"owner", b"").decode(),
                )
        return out

    def save_many(self, group: str, topic: str, writes: Sequence[CheckpointWrite], owner: str,
                  now: float | None = None) -> list[bool]:
        if not writes:
            return []
        at = repr(time.time() if now is None else now)
        try:
            pipe = self._redis.pipeline(transaction=False)
            for w in writes:
                self._save(keys=[self.key(group, topic, w.partition)], args=[w.state, w.offset, at, owner],
                           client=pipe)
            res: list[Any] = pipe.execute()
        except redis.RedisError as err:
            raise StoreUnavailable(f"redis: {type(err).__name__}") from None
        return [bool(r) for r in res]

    def delete(self, group: str, topic: str, partitions: Iterable[int]) -> None:
        keys = [self.key(group, topic, p) for p in partitions]
        if keys:
            try:
                self._redis.delete(*keys)
            except redis.RedisError as err:
                raise StoreUnavailable(f"redis: {type(err).__name__}") from None

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self._redis.close()
