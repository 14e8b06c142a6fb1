"""End-to-end benchmark of the live daemon: Kafka in, every registered detector, alerts topic out.

Rows (``rows()`` is picked up by ``bench/bench.py``; run alone with ``python bench/bench_kafka.py``):

* **raw consume** -- a kafka-python consumer in a group, doing what the source does per record
  (values + offsets per partition) and nothing else: the ceiling for this client and broker;
* **replay (same events, in-process)** -- the pipeline alone, all detectors, no Kafka;
* **daemon end to end** -- ``Daemon`` in this process: consumer group, per-partition pipelines,
  alerts to a topic through the notification ledger, checkpoints (Redis when available);
  events/s from its first batch to the last one flushed, and its ratio to raw consume;
* **checkpoint** -- time per save round and bytes per partition snapshot;
* **latency at a steady 10k events/s** -- a producer process writes live events (``ts`` = now) at
  10k/s; per record, the time from its ``ts`` to the end of the daemon step that processed it and
  flushed its alerts (p50/p99), and for injected cross-tenant reads the time until the alert is on
  the alerts topic. The reorder buffer (``lateness_s``) delays every alert by that much event time
  by design, so the latency run uses ``lateness_s=0`` and says so.

A broker (Tansu) and Redis are started for the run unless ``KAFKA_BOOTSTRAP`` / ``REDIS_URL`` are set.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inputs import load_lines  # noqa: E402  (bench/ is on sys.path: the script's folder)
from kafka import KafkaConsumer, KafkaProducer  # noqa: E402
from kafka.admin import KafkaAdminClient, NewTopic  # noqa: E402

from sentinel import logs  # noqa: E402
from sentinel.commands.replay import replay  # noqa: E402
from sentinel.config import DaemonSettings, KafkaSettings, Settings, StateSettings  # noqa: E402
from sentinel.daemon import Daemon, build_stores  # noqa: E402
from sentinel.pipeline import Pipeline  # noqa: E402
from sentinel.rules import load_rules  # noqa: E402
from sentinel.sinks.jsonl import JsonlAlertSink, JsonlDeadLetterSink  # noqa: E402
from sentinel.sources.kafka import PartitionBatch  # noqa: E402

Row = tuple[str, str, str, str]


class _Key(msgspec.Struct):
    tenant_id: str = ""


class _Ts(msgspec.Struct):
    ts: float = 0.0


@contextmanager
def services() -> Iterator[tuple[str, str | None]]:
    """(bootstrap, redis_url): from the environment, else started here (and stopped)."""
    from tests.services import start_redis, start_tansu

    started: list[Any] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
        if not bootstrap:
            svc = start_tansu(tmp / "tansu")
            started.append(svc)
            bootstrap = svc.address
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            try:
                rsvc = start_redis(tmp / "redis")
                started.append(rsvc)
                redis_url = f"redis://{rsvc.address}/0"
            except BaseException:  # no redis-server here: in-memory checkpoints, said in the table
                redis_url = None
        yield bootstrap, redis_url
    finally:
        for svc in started:
            svc.stop()


def produce(bootstrap: str, topic: str, lines: list[bytes]) -> float:
    decode = msgspec.json.Decoder(_Key).decode
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024, acks=1,
                             enable_idempotence=False)
    t = time.perf_counter()
    for ln in lines:
        producer.send(topic, value=ln, key=decode(ln).tenant_id.encode())
    producer.flush()
    producer.close()
    return len(lines) / (time.perf_counter() - t)


def create_topics(bootstrap: str, *topics: tuple[str, int]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(t, n, 1) for t, n in topics])
    admin.close()


def raw_consume(bootstrap: str, topic: str, n: int) -> tuple[float, float]:
    """(events/s of wall time, events/s of this process's CPU time): the client's per-record cost."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"raw-{uuid.uuid4().hex[:6]}",
                             auto_offset_reset="earliest", enable_auto_commit=False, session_timeout_ms=2000,
                             heartbeat_interval_ms=500, max_poll_records=5000)
    got = 0
    first = cpu0 = 0.0
    try:
        deadline = time.monotonic() + 120
        while got < n and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                if not first:
                    first, cpu0 = time.perf_counter(), time.process_time()
                batch = PartitionBatch(tp.partition, [r.value for r in records], [r.offset for r in records])
                got += len(batch.values)
        return got / (time.perf_counter() - first), got / (time.process_time() - cpu0)
    finally:
        consumer.close(autocommit=False)


def replay_rate(lines: list[bytes], tmp: Path) -> float:
    src = tmp / "bench-input.jsonl"
    src.write_bytes(b"".join(ln + b"\n" for ln in lines))
    sink, dead = JsonlAlertSink(tmp / "bench-alerts.jsonl"), JsonlDeadLetterSink(tmp / "bench-dead.jsonl")
    try:
        res = replay(Pipeline(load_rules(REPO / "rules")), [str(src)], sink, dead)
    finally:
        sink.close()
        dead.close()
    return res.stats.lines / res.seconds


class TimedDaemon(Daemon):
    """Records when the first batch arrived, when the target count was flushed, and per-record latency."""

    def __init__(self, *args: Any, target: int, measure_latency: bool = False, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.target = target
        self.first_at = self.first_cpu = 0.0
        self.done_at = self.done_cpu = 0.0
        self.measure_latency = measure_latency
        self.latencies: list[float] = []
        self._last_values: list[list[bytes]] = []
        self._ts = msgspec.json.Decoder(_Ts).decode

    def _feed(self, batches: list[PartitionBatch]) -> int:
        if batches and not self.first_at:
            self.first_at = time.perf_counter()
            self.first_cpu = time.process_time()
        if self.measure_latency:
            self._last_values = [b.values for b in batches]
        return super()._feed(batches)

    def _step(self) -> None:
        super()._step()
        if self._last_values:
            now = time.time()  # alerts of these records are flushed, checkpoint done if due
            for values in self._last_values:
                for v in values[:: max(1, len(values) // 50)]:  # a sample per batch is plenty
                    self.latencies.append(now - self._ts(v).ts)
            self._last_values = []
        if not self.done_at and self.records_in >= self.target:
            self.done_at = time.perf_counter()
            self.done_cpu = time.process_time()
            if not self.measure_latency:
                self.request_stop()


def daemon_settings(bootstrap: str, topic: str, redis_url: str | None, **top: Any) -> Settings:
    from pydantic import SecretStr

    return Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, topic=topic, group_id=f"bench-{uuid.uuid4().hex[:6]}",
                            alerts_topic=f"{topic}-alerts", dead_letter_topic=f"{topic}-dead",
                            session_timeout_ms=2000, heartbeat_interval_ms=500, poll_timeout_ms=100),
        state=StateSettings(redis_url=SecretStr(redis_url) if redis_url else None,
                            key_prefix=f"bench-{uuid.uuid4().hex[:6]}"),
        daemon=DaemonSettings(idle_advance="off"),
        **top,
    )


def make_daemon(settings: Settings, target: int, measure_latency: bool = False) -> TimedDaemon:
    store, ledger = build_stores(settings)
    return TimedDaemon(settings, load_rules(REPO / "rules"), store, ledger, target=target,
                       measure_latency=measure_latency, http=False)


PRODUCER = r"""
import sys, time, json
from kafka import KafkaProducer
bootstrap, topic, rate, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks=1, enable_idempotence=False)
tenants = ["t_alpha", "t_beta", "t_gamma", "t_delta"]
tmpl = ('{"event_id":"%s","ts":%.6f,"api_key_id":"key_%s_%d","tenant_id":"%s","provider":"openai",'
        '"model":"gpt-4o-mini","input_tokens":800,"output_tokens":150,"source_ip":"10.0.0.%d",'
        '"user_agent":"app/1.0","session_id":"s_%d","prompt_shape":"shp_%s_1"%s}')
start = time.time(); n = 0; tick = 0.01; per_tick = max(1, int(rate * tick)); trig = 0
while time.time() - start < seconds:
    t0 = time.time()
    for _ in range(per_tick):
        n += 1
        ten = tenants[n % 4]
        extra = ""
        key = n % 50
        if n % (rate // 2) == 0:  # two cross-tenant reads a second, each by a new key: one alert each
            trig += 1
            key = 100000 + trig
            extra = ',"resource_tenant_id":"%s"' % tenants[(n + 1) % 4]
        line = tmpl % ("lat-%d" % n, time.time(), ten, key, ten, n % 200, n % 97, ten, extra)
        p.send(topic, value=line.encode(), key=ten.encode())
    sleep = tick - (time.time() - t0)
    if sleep > 0:
        time.sleep(sleep)
p.flush(); p.close()
print(n, trig)
"""


def latency_run(bootstrap: str, redis_url: str | None, seconds: float, rate: int = 10_000) -> dict[str, float]:
    topic = f"bench-lat-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, (topic, 4), (f"{topic}-alerts", 1), (f"{topic}-dead", 1))
    d = make_daemon(daemon_settings(bootstrap, topic, redis_url, lateness_s=0.0), target=10**12,
                    measure_latency=True)
    th = threading.Thread(target=d.run, name="bench-daemon")
    th.start()
    time.sleep(3.0)  # group join
    prod = subprocess.run([sys.executable, "-c", PRODUCER, bootstrap, topic, str(rate), str(seconds)],
                          capture_output=True, text=True, check=True)
    sent, triggers = (int(x) for x in prod.stdout.split())
    time.sleep(2.0)
    d.request_stop()
    th.join(30)
    lat = sorted(d.latencies)
    # Alert latency: alerts-topic record time (daemon's producer) minus the trigger's event time.
    consumer = KafkaConsumer(f"{topic}-alerts", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=3000)
    alert_lat = []
    for r in consumer:
        a = msgspec.json.decode(r.value)
        if a["detector"] == "cross_tenant" and a["version"] == 1:
            detected = datetime.fromisoformat(a["detected_at"].replace("Z", "+00:00")).timestamp()
            alert_lat.append(r.timestamp / 1000.0 - detected)
    consumer.close()
    alert_lat.sort()

    def pct(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    return {"sent": sent, "rate": sent / seconds, "p50": pct(lat, 0.5), "p99": pct(lat, 0.99),
            "max": lat[-1] if lat else float("nan"), "alerts": len(alert_lat), "triggers": triggers,
            "alert_p50": pct(alert_lat, 0.5), "alert_p99": pct(alert_lat, 0.99)}


def rows(quick: bool = False) -> list[Row]:
    n = 50_000 if quick else 200_000
    lat_s = 8.0 if quick else 20.0
    lines, origin = load_lines(n)
    logs.configure("warning", "console")
    logging.getLogger("kafka").setLevel(logging.ERROR)  # "task blocked the event loop" notes under load
    out: list[Row] = [("machine", f"load {os.getloadavg()[0]:.1f}", f"{os.cpu_count()} cores",
                       "numbers below scale with free CPU")]
    with services() as (bootstrap, redis_url), tempfile.TemporaryDirectory() as tmp:
        topic = f"bench-{uuid.uuid4().hex[:6]}"
        create_topics(bootstrap, (topic, 4), (f"{topic}-alerts", 1), (f"{topic}-dead", 1))
        prod_rate = produce(bootstrap, topic, lines)
        raw = raw_consume(bootstrap, topic, n)
        rep = replay_rate(lines, Path(tmp))
        d = make_daemon(daemon_settings(bootstrap, topic, redis_url), target=n)
        d.run()
        e2e = d.records_in / (d.done_at - d.first_at) if d.done_at else float("nan")
        e2e_cpu = d.records_in / (d.done_cpu - d.first_cpu) if d.done_at else float("nan")
        store = "Redis" if redis_url else "memory"
        out.append(("kafka produce (setup)", f"{prod_rate:,.0f} ev/s", f"{n:,} events, {origin}", "kafka-python"))
        out.append(("kafka raw consume", f"{raw[0]:,.0f} ev/s",
                     f"{raw[1]:,.0f} ev/s of CPU = {1e6 / raw[1]:.1f} us/record in kafka-python", "client ceiling"))
        out.append(("replay, same events", f"{rep:,.0f} ev/s", "pipeline alone, all detectors", ""))
        out.append(("daemon end to end", f"{e2e:,.0f} ev/s",
                    f"{e2e_cpu:,.0f} ev/s of CPU; {e2e / raw[0]:.2f} of raw, {e2e / rep:.2f} of replay",
                    "target >= 100k ev/s (one core)"))
        cp = next(iter(d.metrics.checkpoint_seconds.collect())).samples
        cp_count = next(s.value for s in cp if s.name.endswith("_count"))
        cp_sum = next(s.value for s in cp if s.name.endswith("_sum"))
        sizes = [s.value for s in next(iter(d.metrics.checkpoint_bytes.collect())).samples]
        if cp_count:
            out.append((f"checkpoint ({store})", f"{1000 * cp_sum / cp_count:,.1f} ms/round",
                        f"{cp_count:.0f} rounds, {statistics.mean(sizes) / 1024:,.0f} KiB/partition" if sizes
                        else f"{cp_count:.0f} rounds", "snapshot + atomic save"))
        lat = latency_run(bootstrap, redis_url, lat_s)
        out.append(("latency @10k ev/s: record->flushed", f"p99 {lat['p99'] * 1000:,.0f} ms",
                    f"p50 {lat['p50'] * 1000:,.0f} ms, max {lat['max'] * 1000:,.0f} ms, {lat['rate']:,.0f} ev/s sent",
                    "p99 < 1 s"))
        out.append(("latency @10k ev/s: event->alert on topic", f"p99 {lat['alert_p99'] * 1000:,.0f} ms",
                    f"p50 {lat['alert_p50'] * 1000:,.0f} ms, {lat['alerts']}/{lat['triggers']} alerts, lateness_s=0",
                    "p99 < 1 s (+ lateness_s by design)"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    table = rows(quick=args.quick)
    widths = [max(len(r[i]) for r in [*table, ("what", "result", "detail", "target")]) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(("what", "result", "detail", "target"), widths, strict=True)))
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
