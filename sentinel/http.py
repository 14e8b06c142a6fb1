"""The daemon's own HTTP endpoints on a small threaded stdlib server.

* ``/healthz`` -- 200 while the run loop is alive (it went round within
  ``stall_s``), else 503. For liveness probes: a 503 means "restart me".
* ``/readyz`` -- 200 when partitions are assigned and the broker and Redis are
  reachable and nothing is stuck waiting for them, else 503 with the reasons as
  JSON. For readiness probes and load balancers.
* ``/metrics`` -- Prometheus text format: the daemon's registry, then the
  process-wide default registry (delivery/sink metrics).

The server only reads: the run loop publishes a :class:`Health` snapshot and
the handlers render it, so no request ever touches Kafka or Redis.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Health", "HealthServer"]


@dataclass
class Health:
    """What the run loop last knew. Written by the loop, read by request threads (plain attributes)."""

    started: float = field(default_factory=time.monotonic)
    loop_at: float = field(default_factory=time.monotonic)
    stall_s: float = 60.0
    partitions: int = 0
    kafka_ok: bool = False
    redis_ok: bool = True
    blocked: str | None = None  # why processing is held back (delivery or checkpoint failing)
    stopping: bool = False

    def beat(self) -> None:
        self.loop_at = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self.loop_at < self.stall_s

    def reasons(self) -> list[str]:
        out = []
        if self.stopping:
            out.append("stopping")
        if not self.kafka_ok:
            out.append("kafka_unreachable")
        if not self.redis_ok:
            out.append("redis_unreachable")
        if self.partitions == 0:
            out.append("no_partitions_assigned")
        if self.blocked:
            out.append(self.blocked)
        if not self.alive():
            out.append("loop_stalled")
        return out

    def ready(self) -> bool:
        return not self.reasons()


class HealthServer:
    """Serves /healthz, /readyz and /metrics on a daemon thread; ``port=0`` picks a free port."""

    def __init__(self, health: Health, registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 9108,
                 include_default_registry: bool = True, on_scrape: Callable[[], None] | None = None) -> None:
        self.health = health
        self.registry = registry
        self.include_default = include_default_registry
        self.on_scrape = on_scrape
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                return  # no per-request logs

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="sentinel-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        path = req.path.split("?", 1)[0]
        if path == "/healthz":
            ok = self.health.alive()
            self._send(req, 200 if ok else 503, b"ok\n" if ok else b"stalled\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            reasons = self.health.reasons()
            doc = json.dumps({"ready": not reasons, "reasons": reasons, "partitions": self.health.partitions})
            self._send(req, 200 if not reasons else 503, doc.encode() + b"\n", "application/json")
        elif path == "/metrics":
            if self.on_scrape is not None:
                self.on_scrape()
            metrics = generate_latest(self.registry)
            if self.include_default:
                metrics += generate_latest(REGISTRY)
            self._send(req, 200, metrics, CONTENT_TYPE_LATEST)
        else:
            self._send(req, 404, b"not found\n", "text/plain; charset=utf-8")

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, code: int, body: bytes, ctype: str) -> None:
        req.send_response(code)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)
