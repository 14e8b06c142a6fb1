"""Kafka source: a kafka-python consumer in a consumer group, polled in batches of raw values.

:class:`KafkaSource` subscribes to the usage-event topic, hands the daemon
:class:`PartitionBatch` es (values + offsets of one partition, never decoded
here) and tells it about rebalances through :class:`PartitionListener`. Offsets
are committed only by the daemon, after alerts are flushed and the checkpoint
is saved (auto-commit is off).

Two kafka-python 3 details shape this module. Rebalance callbacks run on the
client's IO thread while the caller is blocked in :meth:`poll`, so they must
not call blocking consumer APIs (``commit``, ``position``): the revoke hook
commits with ``commit_async``, and newly assigned partitions are paused until
the daemon has restored their checkpoint and seeked. And lag is
``highwater - position``: ``end_offsets()`` is wrong on some brokers (Tansu
returns the base offset of the last batch + 1), while the high watermark in
fetch responses is right.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from sentinel.config import KafkaSettings
from sentinel.logs import get_logger

__all__ = [
    "KafkaSource",
    "PartitionBatch",
    "PartitionListener",
    "broker_reachable",
    "client_config",
    "tls_diagnosis",
]

log = get_logger("sentinel.kafka")


def client_config(settings: KafkaSettings) -> dict[str, Any]:
    """Connection options shared by the consumer, producers and admin client (TLS, SASL)."""
    cfg: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in settings.bootstrap_servers.split(",") if s.strip()],
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        cfg["sasl_mechanism"] = settings.sasl_mechanism or "PLAIN"
        cfg["sasl_plain_username"] = settings.sasl_username
        cfg["sasl_plain_password"] = (settings.sasl_password.get_secret_value()
                                      if settings.sasl_password is not None else None)
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        for key, value in (("ssl_cafile", settings.ssl_cafile), ("ssl_certfile", settings.ssl_certfile),
                           ("ssl_keyfile", settings.ssl_keyfile)):
            if value is not None:
                cfg[key] = str(value)
    return cfg


def _connect_first(bootstrap_servers: str, timeout_s: float) -> tuple[socket.socket, str] | None:
    """A TCP connection to the first bootstrap server that accepts one, with its host name."""
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        host = host or "127.0.0.1"
        try:
            return socket.create_connection((host, int(port or 9092)), timeout=timeout_s), host
        except (OSError, ValueError):
            continue
    return None


def broker_reachable(bootstrap_servers: str, timeout_s: float = 0.5) -> bool:
    """A TCP connect to any bootstrap server (cheap readiness probe; no Kafka protocol)."""
    conn = _connect_first(bootstrap_servers, timeout_s)
    if conn is None:
        return False
    conn[0].close()
    return True


def tls_diagnosis(settings: KafkaSettings, timeout_s: float = 3.0) -> str | None:
    """Why a TLS handshake with the first reachable bootstrap server fails, or None.

    kafka-python reports a refused broker certificate only as a timeout; this repeats the
    handshake with the same trust settings (CA file, client certificate, hostname check) so the
    log can say e.g. ``certificate verify failed: self-signed certificate in certificate chain``.
    """
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    try:
        ctx = ssl.create_default_context(cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None)
        if settings.ssl_certfile is not None:
            ctx.load_cert_chain(str(settings.ssl_certfile),
                                str(settings.ssl_keyfile) if settings.ssl_keyfile is not None else None)
    except (OSError, ssl.SSLError) as err:
        return f"cannot load TLS files: {getattr(err, 'strerror', None) or err}"
    conn = _connect_first(settings.bootstrap_servers, timeout_s)
    if conn is None:
        return None  # nothing listens: not a TLS problem
    raw, host = conn
    try:
        with ctx.wrap_socket(raw, server_hostname=host):
            return None
    except ssl.SSLCertVerificationError as err:
        return f"certificate verify failed: {err.verify_message}"
    except (ssl.SSLError, OSError) as err:
        return f"TLS handshake failed: {getattr(err, 'reason', None) or type(err).__name__}"
    finally:
        raw.close()


@dataclass(slots=True)
class PartitionBatch:
    partition: int
    values: list[bytes]
    offsets: list[int]


class PartitionListener(Protocol):
    """Rebalance hooks. They run on the Kafka IO thread while :meth:`KafkaSource.poll` blocks."""

    def on_assigned(self, partitions: list[int]) -> None: ...

    def on_revoked(self, partitions: list[int]) -> None: ...

    def on_lost(self, partitions: list[int]) -> None: ...


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    def on_partitions_assigned(self, assigned: Any) -> None:
        parts = sorted(tp.partition for tp in assigned if tp.topic == self.source.topic)
        if not parts:
            return
        # Paused until the daemon restored the checkpoint and seeked (see module doc).
        self.source.consumer.pause(*[TopicPartition(self.source.topic, p) for p in parts])
        self.source.listener.on_assigned(parts)

    def on_partitions_revoked(self, revoked: Any) -> None:
        parts = sorted(tp.partition for tp in revoked if tp.topic == self.source.topic)
        if parts:  # the first join revokes an empty set
            self.source.listener.on_revoked(parts)

    def on_partitions_lost(self, lost: Any) -> None:
        parts = sorted(tp.partition for tp in lost if tp.topic == self.source.topic)
        if parts:
            self.source.listener.on_lost(parts)


class KafkaSource:
    """Consumer-group source of raw usage-event values (see the module doc)."""

    def __init__(self, settings: KafkaSettings, listener: PartitionListener, client_id: str = "sentinel",
                 bootstrap_timeout_ms: int = 5000,
                 consumer_factory: Callable[..., Any] = KafkaConsumer) -> None:
        self.settings = settings
        self.topic = settings.topic
        self.listener = listener
        self.consumer: Any = consumer_factory(
            **client_config(settings),
            client_id=client_id,
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset=settings.auto_offset_reset,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            max_poll_records=settings.max_poll_records,
            bootstrap_timeout_ms=bootstrap_timeout_ms,
            # The value is handed to the decoder as is: no deserializer.
        )
        self.consumer.subscribe([self.topic], listener=_Rebalance(self))

    def _tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topic, partition)

    def poll(self, timeout_ms: int, max_records: int | None = None) -> list[PartitionBatch]:
        got = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records or self.settings.max_poll_records)
        out = []
        for tp, records in got.items():
            if tp.topic != self.topic or not records:
                continue
            out.append(PartitionBatch(tp.partition, [r.value for r in records], [r.offset for r in records]))
        return out

    def assignment(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment() if tp.topic == self.topic}

    def seek(self, partition: int, offset: int) -> None:
        self.consumer.seek(self._tp(partition), offset)

    def pause(self, partitions: Sequence[int]) -> None:
        if partitions:
            self.consumer.pause(*[self._tp(p) for p in partitions])

    def resume(self, partitions: Sequence[int]) -> None:
        if partitions:
            self.consumer.resume(*[self._tp(p) for p in partitions])

    def highwater(self, partition: int) -> int | None:
        try:
            hw = self.consumer.highwater(self._tp(partition))
        except Exception:  # partition no longer assigned
            return None
        return int(hw) if hw is not None else None

    def commit(self, offsets: dict[int, int]) -> None:
        """Synchronous commit (main thread only)."""
        if offsets:
            self.consumer.commit({self._tp(p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()},
                                 timeout_ms=10_000)

    def commit_async(self, offsets: dict[int, int]) -> None:
        """Non-blocking commit: safe inside rebalance hooks."""
        if offsets:
            self.consumer.commit_async({self._tp(p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})

    def close(self) -> None:
        """Leave the group (runs the revoke hook first, so the daemon can checkpoint)."""
        self.consumer.close(autocommit=False)
