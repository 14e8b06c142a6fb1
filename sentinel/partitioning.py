"""Which Kafka partition a usage event lands on: the producer's rule, for ``sentinel replay --partitions``.

Gateways produce usage events keyed by ``tenant_id``, so a tenant's events live
on one partition and the live daemon runs one pipeline per partition. To replay
what the daemon saw, a line must go to the partition a producer would have
chosen: kafka-python's ``DefaultPartitioner`` (the same formula as the Java
client's), ``murmur2(key) & 0x7fffffff % partitions`` with ``key`` the UTF-8
bytes of ``tenant_id``. The hash is kafka-python's own ``murmur2``, not a copy.

A line without a readable ``tenant_id`` (malformed JSON, not an object, the field
missing or not a string) has no key. A producer sends such a record to a random
(kafka-python < 2.1: ``DefaultPartitioner``) or "sticky" (KIP-480) partition;
replay sends it to partition :data:`KEYLESS_PARTITION` (0). Such a line is
rejected by whichever pipeline gets it, and a rejected line changes no detector
state, so the alerts do not depend on where it goes (only the dead letter's
position does).
"""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = ["KEYLESS_PARTITION", "TenantRouter", "kafka_partition"]

KEYLESS_PARTITION: Final = 0


class _TenantKey(msgspec.Struct):
    """Only the routing key: every other field of the line is skipped, not decoded."""

    tenant_id: str


_decode_key = msgspec.json.Decoder(_TenantKey).decode


def kafka_partition(key: bytes | None, partitions: int) -> int:
    """The partition kafka-python's default partitioner picks for ``key`` (keyless: :data:`KEYLESS_PARTITION`).

    >>> kafka_partition(b"t_acme", 4), kafka_partition(b"t_acme", 1), kafka_partition(None, 4)
    (1, 0, 0)
    """
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    if key is None:
        return KEYLESS_PARTITION
    from kafka.partitioner.default import murmur2  # here: importing kafka costs ~0.2 s at every CLI start

    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


class TenantRouter:
    """Raw usage-v1 line -> partition, by its ``tenant_id`` (memoised per tenant: murmur2 is pure Python)."""

    def __init__(self, partitions: int) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self.partitions = partitions
        self._of: dict[str, int] = {}

    def key(self, line: bytes) -> bytes | None:
        """The record key a gateway keying by tenant would send, or None when the line has no tenant_id."""
        try:
            return _decode_key(line).tenant_id.encode()
        except (msgspec.DecodeError, UnicodeEncodeError):
            return None

    def partition(self, line: bytes) -> int:
        try:
            tenant = _decode_key(line).tenant_id
        except msgspec.DecodeError:
            return KEYLESS_PARTITION
        p = self._of.get(tenant)
        if p is None:
            try:
                p = kafka_partition(tenant.encode(), self.partitions)
            except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape: not a valid key either
                return KEYLESS_PARTITION
            if len(self._of) < 100_000:
                self._of[tenant] = p
        return p
