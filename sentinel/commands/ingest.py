"""``sentinel ingest``: run the HTTP receiver that turns OTLP traces and LiteLLM posts into usage events.

Settings come from the environment (``SENTINEL_INGEST__*``, ``SENTINEL_KAFKA__*``,
``SENTINEL_MAPPING__*``); the flags override the common ones. The bearer token
is never a flag (it would show in ``ps``): set ``SENTINEL_INGEST__TOKEN`` or
pass ``--token-file``. Runs until SIGTERM/SIGINT, then stops accepting, finishes
the requests in flight, flushes and closes the producer. Exit status: 0 after a
clean stop, 2 for a configuration error, 1 when Kafka is unreachable at start.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from sentinel.config import Settings
from sentinel.ingest import IngestServer, KafkaEventSink, Normalizer
from sentinel.logs import configure, get_logger


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "ingest", help="HTTP receiver: OTLP GenAI traces and LiteLLM logging posts -> usage events on Kafka",
        description="Accept OTLP/HTTP traces on POST /v1/traces (JSON or protobuf) and LiteLLM generic "
        "HTTP logging callback posts on POST /litellm, map them to usage-v1 events and produce them "
        "to the usage topic (key = tenant_id). Bearer-token authenticated.",
    )
    p.add_argument("--host", help="listen address (default: SENTINEL_INGEST__HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default: SENTINEL_INGEST__PORT or 4318; 0 = any free)")
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (default: settings)")
    p.add_argument("--topic", help="usage topic to produce to (default: SENTINEL_INGEST__TOPIC or kafka.topic)")
    p.add_argument("--token-file", metavar="FILE", help="read the bearer token from FILE (first line)")
    p.add_argument("--max-body-bytes", type=int, metavar="N", help="request size limit (default 16 MiB)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings()
    except ValueError as err:
        print(f"sentinel ingest: bad settings: {err}", file=sys.stderr)
        return 2
    configure(settings.log_level, settings.log_format)
    log = get_logger("sentinel.ingest")
    cfg = settings.ingest
    token = cfg.token.get_secret_value() if cfg.token is not None else ""
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().splitlines()[0].strip()
        except (OSError, IndexError):
            print(f"sentinel ingest: cannot read a token from {args.token_file}", file=sys.stderr)
            return 2
    if not token:
        print("sentinel ingest: no bearer token: set SENTINEL_INGEST__TOKEN or --token-file", file=sys.stderr)
        return 2
    kafka = settings.kafka
    if args.bootstrap:
        kafka = kafka.model_copy(update={"bootstrap_servers": args.bootstrap})
    topic = args.topic or cfg.topic or kafka.topic
    try:
        sink = KafkaEventSink(kafka, topic, cfg.produce_timeout_s)
    except Exception as err:  # kafka-python raises NoBrokersAvailable, KafkaConfigurationError ...
        log.error("kafka_unavailable", bootstrap=kafka.bootstrap_servers, error=type(err).__name__)
        return 1
    try:
        server = IngestServer(args.host or cfg.host, cfg.port if args.port is None else args.port, token, sink,
                              Normalizer(settings.mapping), args.max_body_bytes or cfg.max_body_bytes)
    except OSError as err:
        sink.close()
        print(f"sentinel ingest: cannot listen: {err}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    log.info("ingest_listening", url=server.url, topic=topic)
    while not stop.wait(1.0):
        pass
    server.close()
    log.info("ingest_stopped")
    return 0
