"""Silences: operator-made mutes with matchers and an expiry.

A silence mutes the *page* sinks (Slack, revoke webhook) for alerts it
matches, between ``starts_at`` and ``ends_at`` (wall-clock epoch seconds);
record sinks (SIEM, files) keep receiving every version -- a silence is about
people, not about the audit trail. Matchers use amtool's syntax
``name=value``, ``name!=value``, ``name=~regex``, ``name!~regex`` (regex
full-match) on the alert's labels: ``alert_id``, ``detector``, ``rule``,
``tenant``, ``api_key``, ``entity``, ``entity_type``, ``severity``,
``session``. All matchers of a silence must match.

Silences live in Redis (one hash, shared by all replicas) or in memory when
there is no Redis. ``sentinel silence add|list|expire`` and the Slack
"Silence 1h" button write them.

>>> s = Silence.create(["tenant=t1", "detector=~spend_.*"], 0.0, 3600.0, "ops", "maintenance", uid="s1")
>>> s.matches(alert_labels("al_1", "spend_spike", "spend_spike", "t1", "k1", "api_key", "k1", "high", None), 10.0)
True
>>> s.matches(alert_labels("al_1", "quota_burn", "quota_burn", "t1", None, "budget", "b", "high", None), 10.0)
False
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Mapping
from typing import Any, Literal, Protocol

import msgspec

from sentinel.alerts import Alert

LABELS = ("alert_id", "detector", "rule", "tenant", "api_key", "entity", "entity_type", "severity", "session")
_MATCHER_RE = re.compile(r"^\s*([a-z_]+)\s*(=~|!~|!=|=)\s*(.*?)\s*$")
_KEEP_EXPIRED_S = 7 * 86400.0


class SilenceError(ValueError):
    pass


class LabelMatcher(msgspec.Struct, frozen=True):
    name: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str

    @classmethod
    def parse(cls, text: str) -> LabelMatcher:
        m = _MATCHER_RE.match(text)
        if not m:
            raise SilenceError(f"bad matcher {text!r}: expected name=value, name!=value, name=~regex or name!~regex")
        name, op, value = m.group(1), m.group(2), m.group(3).strip("\"'")
        if name not in LABELS:
            raise SilenceError(f"bad matcher {text!r}: unknown label {name!r}; known: {', '.join(LABELS)}")
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as err:
                raise SilenceError(f"bad matcher {text!r}: {err}") from None
        return cls(name, op, value)  # type: ignore[arg-type]

    def matches(self, labels: Mapping[str, str | None]) -> bool:
        v = labels.get(self.name) or ""
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        hit = re.fullmatch(self.value, v) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


class Silence(msgspec.Struct, kw_only=True):
    id: str
    matchers: list[LabelMatcher]
    starts_at: float
    ends_at: float
    created_by: str = ""
    comment: str = ""

    @classmethod
    def create(cls, matchers: list[str], starts_at: float, ends_at: float, created_by: str = "",
               comment: str = "", uid: str | None = None) -> Silence:
        if not matchers:
            raise SilenceError("a silence needs at least one matcher")
        if ends_at <= starts_at:
            raise SilenceError("a silence must end after it starts")
        return cls(id=uid or uuid.uuid4().hex[:12], matchers=[LabelMatcher.parse(m) for m in matchers],
                   starts_at=starts_at, ends_at=ends_at, created_by=created_by, comment=comment)

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: Mapping[str, str | None], now: float) -> bool:
        return self.active(now) and all(m.matches(labels) for m in self.matchers)


def alert_labels(alert_id: str, detector: str, rule: str, tenant: str, api_key: str | None, entity_type: str,
                 entity: str, severity: str, session: str | None) -> dict[str, str | None]:
    return {"alert_id": alert_id, "detector": detector, "rule": rule, "tenant": tenant, "api_key": api_key,
            "entity_type": entity_type, "entity": entity, "severity": severity, "session": session}


def labels_of(a: Alert) -> dict[str, str | None]:
    return alert_labels(a.alert_id, a.detector, a.rule, a.tenant_id, a.api_key_id, a.entity.type, a.entity.id,
                        a.severity, a.session_id)


class SilenceStore(Protocol):
    def add(self, silence: Silence) -> None: ...
    def list(self) -> list[Silence]: ...
    def expire(self, silence_id: str, now: float) -> bool: ...


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(Silence)


class MemorySilenceStore:
    """Silences of one process (no Redis): the same interface, lost on restart."""

    def __init__(self) -> None:
        self._items: dict[str, Silence] = {}
        self._lock = threading.Lock()

    def add(self, silence: Silence) -> None:
        with self._lock:
            self._items[silence.id] = silence

    def list(self) -> list[Silence]:
        with self._lock:
            return sorted(self._items.values(), key=lambda s: (s.starts_at, s.id))

    def expire(self, silence_id: str, now: float) -> bool:
        with self._lock:
            s = self._items.get(silence_id)
            if s is None or s.ends_at <= now:
                return False
            s.ends_at = max(now, s.starts_at)
            return True


class RedisSilenceStore:
    """Silences in one Redis hash ``<prefix>:silences`` (id -> JSON), shared by every replica."""

    def __init__(self, client: Any, prefix: str = "sentinel") -> None:
        self.client = client
        self.key = f"{prefix}:silences"

    def add(self, silence: Silence) -> None:
        self.client.hset(self.key, silence.id, _enc.encode(silence))

    def list(self) -> list[Silence]:
        raw: dict[bytes, bytes] = self.client.hgetall(self.key)
        return sorted((_dec.decode(v) for v in raw.values()), key=lambda s: (s.starts_at, s.id))

    def expire(self, silence_id: str, now: float) -> bool:
        raw = self.client.hget(self.key, silence_id)
        if raw is None:
            return False
        s = _dec.decode(raw)
        if s.ends_at <= now:
            return False
        s.ends_at = max(now, s.starts_at)
        self.client.hset(self.key, silence_id, _enc.encode(s))
        return True

    def purge(self, now: float) -> int:
        """Drop silences that ended more than a week ago."""
        old = [s.id for s in self.list() if s.ends_at < now - _KEEP_EXPIRED_S]
        if old:
            self.client.hdel(self.key, *old)
        return len(old)


class Silencer:
    """The silence stage: caches the active silences for ``refresh_s`` so a burst costs one read."""

    def __init__(self, store: SilenceStore, refresh_s: float = 2.0) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._cache: list[Silence] = []
        self._loaded_at = float("-inf")

    def invalidate(self) -> None:
        self._loaded_at = float("-inf")

    def silenced_by(self, alert: Alert, now: float) -> str | None:
        if now - self._loaded_at >= self.refresh_s or now < self._loaded_at:
            self._cache = [s for s in self.store.list() if s.ends_at > now]
            self._loaded_at = now
        if not self._cache:
            return None
        labels = labels_of(alert)
        for s in self._cache:
            if s.matches(labels, now):
                return s.id
        return None
