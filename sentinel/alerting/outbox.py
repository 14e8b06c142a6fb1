"""The durable outbox: an alert is stored before any sink sees it.

Each sink has its own FIFO queue. :meth:`Outbox.enqueue` writes a batch of
notifications in one atomic step -- the entries, the claim that makes
``(sink, alert_id, version)`` unique (a second replica or a replay of the same
alert enqueues nothing), and the notification state the dedup/cooldown stage
reads -- and returns only when that step is durable. A delivery worker then
reads the head of its sink's queue, sends, and acknowledges (deletes) or
records a failed attempt; an entry that reached the attempt limit or failed
for good moves to the sink's dead-letter list. Whatever was not acknowledged
when the process died is simply still at the head after a restart.

Two backends, one interface:

* :class:`RedisOutbox` -- a Redis stream per sink (``<prefix>:outbox:<sink>``),
  attempts in a hash, dead letters in ``<prefix>:outbox:<sink>:dead``; the
  enqueue is one Lua script (atomic; durable as the Redis server's
  persistence is configured). A lease per sink makes one replica the
  deliverer of that sink at a time; when it dies, the lease lapses and
  another replica resumes the queue.
* :class:`SqliteOutbox` -- a local SQLite file in WAL mode with
  ``synchronous=FULL``: an enqueue is one committed transaction, so a crash
  (even ``kill -9``) loses nothing that ``enqueue`` returned from. ``":memory:"``
  gives a non-durable outbox for tests and one-shot replays.

Both also hold a small key-value table (Slack thread and message ids), so
the sinks need no third store.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec


class NotifyRecord(msgspec.Struct, frozen=True):
    """The last version of an alert that went to a sink (what dedup/cooldown compare against)."""

    version: int
    severity: str
    status: str


class OutboxItem(msgspec.Struct, frozen=True):
    sink: str
    alert_id: str
    version: int
    payload: bytes
    record: NotifyRecord
    entity_key: str = ""  # cooldown key; empty = do not touch the cooldown clock
    event_at: float = 0.0


class Entry(msgspec.Struct, frozen=True):
    id: str
    payload: bytes
    attempts: int


class DeadEntry(msgspec.Struct, frozen=True):
    id: str
    payload: bytes
    attempts: int
    reason: str
    at: float


class Outbox(Protocol):
    durable: bool

    def enqueue(self, items: Sequence[OutboxItem]) -> list[int]:
        """Store ``items`` atomically; the indexes of those accepted (not already claimed)."""
        ...

    def notify_record(self, sink: str, alert_id: str) -> NotifyRecord | None: ...
    def notify_records(self, sink: str, alert_ids: Sequence[str]) -> dict[str, NotifyRecord]:
        """The records that exist among ``alert_ids`` (one round trip)."""
        ...

    def cooldown_since(self, sink: str, entity_key: str) -> float | None: ...
    def head(self, sink: str, limit: int) -> list[Entry]: ...
    def ack(self, sink: str, ids: Sequence[str]) -> None: ...
    def failed(self, sink: str, ids: Sequence[str]) -> list[int]:
        """Count one more attempt for each id; return the new attempt counts."""
        ...

    def bury(self, sink: str, entries: Sequence[Entry], reason: str) -> None: ...
    def depth(self, sink: str) -> int: ...
    def dead(self, sink: str) -> list[DeadEntry]: ...
    def acquire(self, sink: str, owner: str, ttl_s: float) -> bool:
        """Take or renew the right to deliver ``sink`` (always True for a local outbox)."""
        ...

    def release(self, sink: str, owner: str) -> None: ...
    def kv_get(self, key: str) -> str | None: ...
    def kv_set(self, key: str, value: str, ttl_s: float) -> None: ...
    def close(self) -> None: ...


_rec_enc = msgspec.msgpack.Encoder()
_rec_dec = msgspec.msgpack.Decoder(NotifyRecord)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, sink TEXT NOT NULL, payload BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_sink ON outbox (sink, id);
CREATE TABLE IF NOT EXISTS claims (
    sink TEXT NOT NULL, alert_id TEXT NOT NULL, version INTEGER NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (sink, alert_id, version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notify_state (
    sink TEXT NOT NULL, alert_id TEXT NOT NULL, record BLOB NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (sink, alert_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cooldown (
    sink TEXT NOT NULL, entity_key TEXT NOT NULL, event_at REAL NOT NULL,
    PRIMARY KEY (sink, entity_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead (
    id INTEGER PRIMARY KEY, sink TEXT NOT NULL, payload BLOB NOT NULL, attempts INTEGER NOT NULL,
    reason TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID;
"""


class SqliteOutbox:
    """Outbox in one SQLite file (WAL, synchronous=FULL). Thread-safe through one lock."""

    def __init__(self, path: str | Path, record_ttl_s: float = 30 * 86400.0, clock: Any = time.time) -> None:
        self.path = str(path)
        self.durable = self.path != ":memory:"
        if self.durable:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.record_ttl_s = record_ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        if self.durable:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._purge_at = 0.0

    def enqueue(self, items: Sequence[OutboxItem]) -> list[int]:
        if not items:
            return []
        now = self.clock()
        accepted: list[int] = []
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for i, it in enumerate(items):
                    cur = db.execute("INSERT OR IGNORE INTO claims VALUES (?, ?, ?, ?)",
                                     (it.sink, it.alert_id, it.version, now))
                    if cur.rowcount != 1:
                        continue
                    db.execute("INSERT INTO outbox (sink, payload, created_at) VALUES (?, ?, ?)",
                               (it.sink, it.payload, now))
                    db.execute("INSERT OR REPLACE INTO notify_state VALUES (?, ?, ?, ?)",
                               (it.sink, it.alert_id, _rec_enc.encode(it.record), now))
                    if it.entity_key:
                        db.execute("INSERT OR REPLACE INTO cooldown VALUES (?, ?, ?)",
                                   (it.sink, it.entity_key, it.event_at))
                    accepted.append(i)
                if now >= self._purge_at:
                    self._purge(now)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return accepted

    def _purge(self, now: float) -> None:
        old = now - self.record_ttl_s
        self._db.execute("DELETE FROM claims WHERE at < ?", (old,))
        self._db.execute("DELETE FROM notify_state WHERE at < ?", (old,))
        self._db.execute("DELETE FROM kv WHERE expires_at < ?", (now,))
        self._purge_at = now + 3600.0

    def notify_record(self, sink: str, alert_id: str) -> NotifyRecord | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM notify_state WHERE sink = ? AND alert_id = ?",
                                   (sink, alert_id)).fetchone()
        return _rec_dec.decode(row[0]) if row else None

    def notify_records(self, sink: str, alert_ids: Sequence[str]) -> dict[str, NotifyRecord]:
        out: dict[str, NotifyRecord] = {}
        ids = list(dict.fromkeys(alert_ids))
        with self._lock:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                rows = self._db.execute(
                    f"SELECT alert_id, record FROM notify_state WHERE sink = ? AND alert_id IN "
                    f"({','.join('?' * len(chunk))})", (sink, *chunk)).fetchall()
                out.update((str(r[0]), _rec_dec.decode(r[1])) for r in rows)
        return out

    def cooldown_since(self, sink: str, entity_key: str) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT event_at FROM cooldown WHERE sink = ? AND entity_key = ?",
                                   (sink, entity_key)).fetchone()
        return float(row[0]) if row else None

    def head(self, sink: str, limit: int) -> list[Entry]:
        with self._lock:
            rows = self._db.execute("SELECT id, payload, attempts FROM outbox WHERE sink = ? ORDER BY id LIMIT ?",
                                    (sink, limit)).fetchall()
        return [Entry(str(r[0]), bytes(r[1]), int(r[2])) for r in rows]

    def ack(self, sink: str, ids: Sequence[str]) -> None:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")  # one commit (one fsync) for the batch
            db.executemany("DELETE FROM outbox WHERE id = ? AND sink = ?", [(int(i), sink) for i in ids])
            db.execute("COMMIT")

    def failed(self, sink: str, ids: Sequence[str]) -> list[int]:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            out = []
            for i in ids:
                row = db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE id = ? AND sink = ? "
                                 "RETURNING attempts", (int(i), sink)).fetchone()
                out.append(int(row[0]) if row else 0)
            db.execute("COMMIT")
        return out

    def bury(self, sink: str, entries: Sequence[Entry], reason: str) -> None:
        now = self.clock()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            for e in entries:
                db.execute("INSERT OR REPLACE INTO dead VALUES (?, ?, ?, ?, ?, ?)",
                           (int(e.id), sink, e.payload, e.attempts, reason, now))
                db.execute("DELETE FROM outbox WHERE id = ? AND sink = ?", (int(e.id), sink))
            db.execute("COMMIT")

    def depth(self, sink: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM outbox WHERE sink = ?", (sink,)).fetchone()
        return int(row[0])

    def dead(self, sink: str) -> list[DeadEntry]:
        with self._lock:
            rows = self._db.execute("SELECT id, payload, attempts, reason, at FROM dead WHERE sink = ? ORDER BY id",
                                    (sink,)).fetchall()
        return [DeadEntry(str(r[0]), bytes(r[1]), int(r[2]), str(r[3]), float(r[4])) for r in rows]

    def acquire(self, sink: str, owner: str, ttl_s: float) -> bool:
        return True

    def release(self, sink: str, owner: str) -> None:
        return None

    def kv_get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE key = ? AND expires_at >= ?",
                                   (key, self.clock())).fetchone()
        return str(row[0]) if row else None

    def kv_set(self, key: str, value: str, ttl_s: float) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (key, value, self.clock() + ttl_s))

    def close(self) -> None:
        with self._lock:
            self._db.close()


# One atomic step per batch: claim (alert_id, version) per sink, append to the sink's stream,
# remember what was notified and when the entity was last notified (cooldown).
_ENQUEUE_LUA = """
local p = ARGV[1]
local ttl = tonumber(ARGV[2])
local cttl = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local accepted = {}
for i = 0, n - 1 do
  local b = 5 + i * 7
  local sink, aid, ver, ekey, payload, rec, at =
    ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], ARGV[b + 6]
  if redis.call('SET', p .. ':claim:' .. sink .. ':' .. aid .. ':' .. ver, '1', 'NX', 'EX', ttl) then
    redis.call('XADD', p .. ':outbox:' .. sink, '*', 'p', payload)
    redis.call('SET', p .. ':nstate:' .. sink .. ':' .. aid, rec, 'EX', ttl)
    if ekey ~= '' then redis.call('SET', p .. ':cool:' .. sink .. ':' .. ekey, at, 'EX', cttl) end
    accepted[#accepted + 1] = i
  end
end
return accepted
"""

_RENEW_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisOutbox:
    """Outbox in Redis: a stream per sink, shared by replicas; one deliverer per sink through a lease."""

    durable = True

    def __init__(self, client: Any, prefix: str = "sentinel", record_ttl_s: int = 30 * 86400,
                 cooldown_ttl_s: int = 7 * 86400, clock: Any = time.time) -> None:
        self.client = client
        self.prefix = prefix
        self.record_ttl_s = int(record_ttl_s)
        self.cooldown_ttl_s = max(1, int(cooldown_ttl_s))
        self.clock = clock
        self._enqueue = client.register_script(_ENQUEUE_LUA)
        self._renew = client.register_script(_RENEW_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    def _stream(self, sink: str) -> str:
        return f"{self.prefix}:outbox:{sink}"

    def enqueue(self, items: Sequence[OutboxItem]) -> list[int]:
        if not items:
            return []
        args: list[Any] = [self.prefix, self.record_ttl_s, self.cooldown_ttl_s, len(items)]
        for it in items:
            args += [it.sink, it.alert_id, it.version, it.entity_key, it.payload, _rec_enc.encode(it.record),
                     repr(it.event_at)]
        return [int(i) for i in self._enqueue(keys=[], args=args)]

    def notify_record(self, sink: str, alert_id: str) -> NotifyRecord | None:
        raw = self.client.get(f"{self.prefix}:nstate:{sink}:{alert_id}")
        return _rec_dec.decode(raw) if raw is not None else None

    def notify_records(self, sink: str, alert_ids: Sequence[str]) -> dict[str, NotifyRecord]:
        ids = list(dict.fromkeys(alert_ids))
        if not ids:
            return {}
        raws = self.client.mget([f"{self.prefix}:nstate:{sink}:{a}" for a in ids])
        return {a: _rec_dec.decode(r) for a, r in zip(ids, raws, strict=True) if r is not None}

    def cooldown_since(self, sink: str, entity_key: str) -> float | None:
        raw = self.client.get(f"{self.prefix}:cool:{sink}:{entity_key}")
        return float(raw) if raw is not None else None

    def head(self, sink: str, limit: int) -> list[Entry]:
        stream = self._stream(sink)
        rows = self.client.xrange(stream, "-", "+", count=limit)
        if not rows:
            return []
        ids = [r[0] for r in rows]
        counts = self.client.hmget(stream + ":attempts", ids)
        return [Entry(_s(rid), fields[b"p"], int(c) if c is not None else 0)
                for (rid, fields), c in zip(rows, counts, strict=True)]

    def ack(self, sink: str, ids: Sequence[str]) -> None:
        if ids:
            stream = self._stream(sink)
            pipe = self.client.pipeline(transaction=True)
            pipe.xdel(stream, *ids)
            pipe.hdel(stream + ":attempts", *ids)
            pipe.execute()

    def failed(self, sink: str, ids: Sequence[str]) -> list[int]:
        key = self._stream(sink) + ":attempts"
        pipe = self.client.pipeline(transaction=True)
        for i in ids:
            pipe.hincrby(key, i, 1)
        return [int(x) for x in pipe.execute()]

    def bury(self, sink: str, entries: Sequence[Entry], reason: str) -> None:
        if not entries:
            return
        stream = self._stream(sink)
        now = repr(self.clock())
        pipe = self.client.pipeline(transaction=True)
        for e in entries:
            pipe.xadd(stream + ":dead", {"p": e.payload, "id": e.id, "attempts": e.attempts, "reason": reason,
                                         "at": now})
        pipe.xdel(stream, *[e.id for e in entries])
        pipe.hdel(stream + ":attempts", *[e.id for e in entries])
        pipe.execute()

    def depth(self, sink: str) -> int:
        return int(self.client.xlen(self._stream(sink)))

    def dead(self, sink: str) -> list[DeadEntry]:
        rows = self.client.xrange(self._stream(sink) + ":dead", "-", "+")
        return [DeadEntry(_s(f[b"id"]), f[b"p"], int(f[b"attempts"]), _s(f[b"reason"]), float(f[b"at"]))
                for _, f in rows]

    def acquire(self, sink: str, owner: str, ttl_s: float) -> bool:
        return bool(self._renew(keys=[f"{self._stream(sink)}:lease"], args=[owner, int(ttl_s * 1000)]))

    def release(self, sink: str, owner: str) -> None:
        self._release(keys=[f"{self._stream(sink)}:lease"], args=[owner])

    def kv_get(self, key: str) -> str | None:
        raw = self.client.get(f"{self.prefix}:kv:{key}")
        return _s(raw) if raw is not None else None

    def kv_set(self, key: str, value: str, ttl_s: float) -> None:
        self.client.set(f"{self.prefix}:kv:{key}", value, ex=max(1, int(ttl_s)))

    def close(self) -> None:
        return None


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
