"""``sentinel replay``: run the pipeline over JSON-lines files (or stdin) and write alerts.

Replay is the live pipeline with a file source and event-time clock, so the
alerts it writes are the ones the daemon would have sent. At the end it prints
a summary: lines read, accepted, rejected by reason, duplicates, alerts by
detector and throughput. Exit status: 0 when it ran (even with rejected
lines), 2 when an input or the rules cannot be read.

Replay with partitions. ``sentinel run`` keeps one pipeline per Kafka
partition, and some detectors keep state across the keys of their pipeline
(spend_spike's population prior, cross_tenant's shape owners and user
fan-out, the cardinality cap), so one pipeline over everything does not
give the daemon's alerts. ``--partitions N`` replays what the daemon does
on a topic of N partitions keyed by ``tenant_id``: every line goes to the
partition kafka-python's default partitioner picks for its tenant_id
(:mod:`sentinel.partitioning`; a line without a readable tenant_id, which a
producer sends keyless to a random partition, goes to partition 0 -- it is
rejected wherever it goes and changes no state), each partition's pipeline
sees its lines in input order, and the alerts are written at the end sorted
by ``(detected_at, alert_id, version)``. The daemon's alerts file has no
fixed order across partitions (polls interleave partitions as fetches
return), so compare it with this output as a sorted set.

What can still differ: cross_tenant's global shape view. The daemon
publishes each partition's shape delta to its ShapeRegistry and merges the
global view back at every checkpoint of that partition (every
``state.checkpoint_every_s`` of wall time or ``checkpoint_every_events``
records, and on revoke and shutdown). What a partition gets back depends on
how far the *other* partitions have got by then, which depends on fetch
timing and wall time, so it is not a function of the events: two daemon
runs over the same topic can differ in cross_tenant's shape-leak and
rare-shape (probing) judgments, and no replay schedule can reproduce them.
Replay exchanges nothing while it runs: it equals a daemon that did not
checkpoint before its last alert (``tests/integration/test_daemon_sample.py``
runs the daemon that way and checks it byte for byte on the whole sample).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sentinel.alerts import Alert
from sentinel.config import Settings
from sentinel.formats import DEFAULT_FORMAT, FORMATS, RECORD_MAX_BYTES, Adapter, adapt_batch, get_format
from sentinel.partitioning import TenantRouter
from sentinel.pipeline import Pipeline, PipelineOptions, PipelineStats
from sentinel.progress import Progress
from sentinel.rules import RuleSet, load_rules
from sentinel.sinks.jsonl import JsonlAlertSink, JsonlDeadLetterSink
from sentinel.sources.files import InputError, batches
from sentinel.yamlfile import RulesFileError


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "replay", help="replay usage events from files through the detectors",
        description="Replay JSON-lines usage events (.jsonl, .jsonl.gz, or - for stdin) through the same "
        "pipeline as the live daemon and write the alerts it raises.",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help=".jsonl, .jsonl.gz or - (stdin)")
    p.add_argument("--rules", metavar="DIR", help="rules directory (default: ./rules if present, else built-ins)")
    p.add_argument("--out", metavar="ALERTS.jsonl", default="-", help="alert output (default: stdout)")
    p.add_argument("--dead-letter", metavar="FILE", default="dead-letter.jsonl",
                   help="where rejected lines go, with the reason (default: ./dead-letter.jsonl)")
    p.add_argument("--summary-json", metavar="FILE", help="also write the run summary as JSON")
    p.add_argument("--lateness", type=float, default=30.0, metavar="SECONDS",
                   help="allowed out-of-order lateness in event time (default 30)")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--format", default=DEFAULT_FORMAT, choices=sorted(FORMATS),
                   help="input format (default usage-v1); see sentinel/formats/ for the mappings, "
                   "SENTINEL_MAPPING__* for the metadata keys")
    p.add_argument("--partitions", type=_positive_int, default=1, metavar="N",
                   help="replay as the daemon does on a topic of N partitions keyed by tenant_id: one pipeline "
                   "per partition, alerts sorted by (detected_at, alert_id, version) (default 1: one pipeline)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    k = p.add_argument_group("replay from Kafka (instead of INPUT files)")
    k.add_argument("--from-kafka", metavar="TOPIC", help="read the events of TOPIC between --since and --until")
    k.add_argument("--since", metavar="T", help="RFC 3339 or epoch seconds: first record timestamp to replay")
    k.add_argument("--until", metavar="T", help="last record timestamp to replay (default: the topic's end)")
    k.add_argument("--bootstrap", metavar="HOST:PORT",
                   help="brokers (default: SENTINEL_KAFKA__BOOTSTRAP_SERVERS; TLS/SASL from SENTINEL_KAFKA__*)")
    p.set_defaults(func=run)


def resolve_rules(path: str | None) -> RuleSet:
    if path is not None:
        return load_rules(path)
    default = Path("rules")
    return load_rules(default if default.is_dir() else None)


@dataclass
class ReplayResult:
    stats: PipelineStats
    seconds: float
    alerts_written: int
    dead_written: int


def replay(pipeline: Pipeline, inputs: list[str], alert_sink: JsonlAlertSink, dead_sink: JsonlDeadLetterSink,
           batch_size: int = 4096, progress: Progress | None = None, adapter: Adapter | None = None) -> ReplayResult:
    """Feed every input through ``pipeline``; write alerts and dead letters as they come.

    ``adapter`` maps records of another input format to usage-v1 lines first (positions kept).
    """
    start = time.perf_counter()
    mapper = adapter if adapter is not None and not adapter.identity else None
    limit = pipeline.options.max_line_bytes
    if mapper is not None:  # a foreign record (an OTLP export of many spans) may hold many events
        limit = max(RECORD_MAX_BYTES, limit)
    for batch in batches(inputs, batch_size, limit):
        lines: list[bytes] = batch.lines
        positions: Sequence[int] = batch.positions
        if mapper is not None:
            adapted = adapt_batch(mapper, lines, positions, batch.source, pipeline.stats, limit)
            dead_sink.write(adapted.dead)
            lines, positions = adapted.lines, adapted.positions
        result = pipeline.feed(lines, batch.source, positions)
        alert_sink.write(result.alerts)
        dead_sink.write(result.dead)
        if progress is not None:
            progress.update(len(batch.lines), alerts=pipeline.stats.alerts.total())
    alert_sink.write(pipeline.drain())
    alert_sink.flush()
    dead_sink.flush()
    return ReplayResult(pipeline.stats, time.perf_counter() - start, alert_sink.written, dead_sink.written)


def replay_partitioned(pipelines: Sequence[Pipeline], inputs: list[str], alert_sink: JsonlAlertSink,
                       dead_sink: JsonlDeadLetterSink, batch_size: int = 4096,
                       progress: Progress | None = None) -> ReplayResult:
    """``replay`` as the live daemon runs it on a topic of ``len(pipelines)`` partitions keyed by tenant_id.

    Each line goes to the pipeline of the partition a producer keying by ``tenant_id`` picks
    (:mod:`sentinel.partitioning`; lines without a readable tenant_id to partition 0), and each pipeline
    sees its own lines in input order. The partitions share nothing while they run: see "Replay with
    partitions" in the module docstring for the one thing the daemon shares (cross_tenant's shape view)
    and why it is not replayed. Alerts of all partitions are written at the end, sorted by
    ``(detected_at, alert_id, version)``; dead letters as they come, partition by partition.
    """
    start = time.perf_counter()
    n = len(pipelines)
    route = TenantRouter(n).partition
    alerts: list[Alert] = []
    for batch in batches(inputs, batch_size, pipelines[0].options.max_line_bytes):
        parts: list[tuple[list[bytes], list[int]]] = [([], []) for _ in range(n)]
        for line, position in zip(batch.lines, batch.positions, strict=True):
            lines, positions = parts[route(line)]
            lines.append(line)
            positions.append(position)
        for pipeline, (lines, positions) in zip(pipelines, parts, strict=True):
            if lines:
                result = pipeline.feed(lines, batch.source, positions)
                alerts.extend(result.alerts)
                dead_sink.write(result.dead)
        if progress is not None:
            progress.update(len(batch.lines), alerts=len(alerts))
    for pipeline in pipelines:
        alerts.extend(pipeline.drain())
    alerts.sort(key=alert_order)
    alert_sink.write(alerts)
    alert_sink.flush()
    dead_sink.flush()
    stats = PipelineStats()
    for pipeline in pipelines:
        add_stats(stats, pipeline.stats)
    return ReplayResult(stats, time.perf_counter() - start, alert_sink.written, dead_sink.written)


def alert_order(alert: Alert) -> tuple[str, str, int]:
    """The order of ``replay --partitions`` output: event time, then incident, then version."""
    return alert.detected_at, alert.alert_id, alert.version


def add_stats(total: PipelineStats, part: PipelineStats) -> None:
    """Add one partition's counters to ``total`` (every field: ints are summed, Counters merged)."""
    for f in fields(PipelineStats):
        mine, theirs = getattr(total, f.name), getattr(part, f.name)
        if isinstance(mine, Counter):
            mine.update(theirs)
        else:
            setattr(total, f.name, mine + theirs)


def summary(result: ReplayResult, dead_path: str, out: str) -> dict[str, Any]:
    s = result.stats
    return {
        "lines": s.lines,
        "accepted": s.accepted,
        "rejected": s.rejected_total,
        "rejected_by_reason": dict(sorted(s.rejected.items())),
        "duplicates": s.duplicates,
        "blank": s.blank,
        "late": s.late,
        "alerts": result.alerts_written,
        "alerts_by_detector": dict(sorted(s.alerts.items())),
        "seconds": round(result.seconds, 3),
        "events_per_s": round(s.lines / result.seconds) if result.seconds > 0 else None,
        "dead_letter": dead_path if result.dead_written else None,
        "out": out,
        "unknown_models": dict(s.unknown_models.most_common(20)),
    }


def print_summary(data: dict[str, Any]) -> None:
    w = sys.stderr.write
    w("\nreplay summary\n")
    w(f"  lines read      {data['lines']:>12,}\n")
    w(f"  accepted        {data['accepted']:>12,}\n")
    w(f"  rejected        {data['rejected']:>12,}\n")
    for reason, n in data["rejected_by_reason"].items():
        w(f"    {reason:<22}{n:>8,}\n")
    w(f"  duplicates      {data['duplicates']:>12,}\n")
    if data["blank"]:
        w(f"  blank lines     {data['blank']:>12,}\n")
    if data["late"]:
        w(f"  late (processed){data['late']:>12,}\n")
    w(f"  alerts          {data['alerts']:>12,}\n")
    for det, n in data["alerts_by_detector"].items():
        w(f"    {det:<22}{n:>8,}\n")
    eps = data["events_per_s"]
    w(f"  time            {data['seconds']:>11.2f}s  ({eps:,} lines/s)\n" if eps else "")
    if data["dead_letter"]:
        w(f"  dead letters -> {data['dead_letter']}\n")
    if data["unknown_models"]:
        w("  warning: models not in prices.yaml, priced at the fallback price (events):\n")
        for model, n in data["unknown_models"].items():
            w(f"    {model:<40}{n:>8,}\n")


def run(args: argparse.Namespace) -> int:
    try:
        rules = resolve_rules(args.rules)
    except RulesFileError as err:
        print(f"sentinel replay: cannot load rules:\n{err}", file=sys.stderr)
        return 2
    if args.from_kafka is not None or args.since is not None or args.until is not None:
        if args.partitions != 1:
            print("sentinel replay: --partitions applies to INPUT files (--from-kafka reads one pipeline)",
                  file=sys.stderr)
            return 2
        return run_from_kafka(args, rules)
    if not args.inputs:
        print("sentinel replay: give INPUT files (or - for stdin), or --from-kafka TOPIC --since T", file=sys.stderr)
        return 2
    for path in args.inputs:
        if path != "-" and not Path(path).is_file():
            print(f"sentinel replay: {path}: no such file", file=sys.stderr)
            return 2
    if args.partitions != 1 and args.format != DEFAULT_FORMAT:
        print(f"sentinel replay: --partitions needs usage-v1 input (the routing key is its tenant_id), "
              f"not {args.format}", file=sys.stderr)
        return 2
    options = PipelineOptions(lateness_s=args.lateness)
    pipeline = Pipeline(rules, options)
    try:
        adapter = get_format(args.format, Settings().mapping if args.format != DEFAULT_FORMAT else None)
    except ValueError as err:
        print(f"sentinel replay: bad mapping settings: {err}", file=sys.stderr)
        return 2
    alert_sink = JsonlAlertSink(args.out)
    dead_sink = JsonlDeadLetterSink(args.dead_letter)
    progress = Progress("replay", enabled=not args.no_progress)
    try:
        if args.partitions == 1:
            result = replay(pipeline, args.inputs, alert_sink, dead_sink, args.batch_size, progress, adapter)
        else:
            pipelines = [pipeline, *(Pipeline(rules, options) for _ in range(args.partitions - 1))]
            result = replay_partitioned(pipelines, args.inputs, alert_sink, dead_sink, args.batch_size, progress)
    except InputError as err:
        progress.close()
        print(f"sentinel replay: {err}", file=sys.stderr)
        return 2
    finally:
        alert_sink.close()
        dead_sink.close()
    progress.close()
    data = summary(result, args.dead_letter, args.out)
    print_summary(data)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(data, indent=2) + "\n")
    return 0


def run_from_kafka(args: argparse.Namespace, rules: RuleSet) -> int:
    """``--from-kafka TOPIC --since T [--until T]``: the records of that time range, through the same pipeline.

    Times map to offsets per partition (verified ``offsets_for_times``, else a binary search on record
    timestamps; ends from the fetch high watermark): see :mod:`sentinel.tuning.kafka_range`.
    """
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    from sentinel.events import EventRuleError, parse_ts
    from sentinel.sources.kafka import client_config
    from sentinel.tuning.kafka_range import KafkaRangeError, plan_range, replay_kafka

    if args.inputs or not args.from_kafka or args.since is None:
        print("sentinel replay: --from-kafka TOPIC needs --since T (and no INPUT files)", file=sys.stderr)
        return 2
    if args.format != DEFAULT_FORMAT:
        print("sentinel replay: --from-kafka reads usage-v1 records only", file=sys.stderr)
        return 2
    try:
        since = parse_ts(_number_or_text(args.since))
        until = parse_ts(_number_or_text(args.until)) if args.until is not None else None
    except EventRuleError as err:
        print(f"sentinel replay: bad --since/--until: {err}", file=sys.stderr)
        return 2
    if until is not None and until < since:
        print("sentinel replay: --until is before --since", file=sys.stderr)
        return 2
    settings = Settings().kafka
    cfg = client_config(settings)
    if args.bootstrap:
        cfg["bootstrap_servers"] = [s.strip() for s in args.bootstrap.split(",") if s.strip()]
    pipeline = Pipeline(rules, PipelineOptions(lateness_s=args.lateness))
    alert_sink = JsonlAlertSink(args.out)
    dead_sink = JsonlDeadLetterSink(args.dead_letter)
    start = time.perf_counter()
    progress: Progress | None = None
    try:
        consumer = KafkaConsumer(**cfg, enable_auto_commit=False, group_id=None, auto_offset_reset="earliest",
                                 max_poll_records=settings.max_poll_records, request_timeout_ms=30_000)
    except KafkaError as err:
        print(f"sentinel replay: cannot reach the brokers: {err}", file=sys.stderr)
        return 2
    try:
        plan = plan_range(consumer, args.from_kafka, int(since * 1000), int(until * 1000) if until else None)
        print(f"replaying {plan.records:,} records of {plan.topic} ("
              + ", ".join(f"p{p.partition} {p.start}..{p.end}" for p in plan.partitions)
              + f"; offsets by {', '.join(sorted({p.method for p in plan.partitions}))})", file=sys.stderr)
        progress = Progress("replay", total=plan.records, enabled=not args.no_progress)

        def feed(values: list[bytes], source: str, offsets: list[int]) -> None:
            result = pipeline.feed(values, source, offsets)
            alert_sink.write(result.alerts)
            dead_sink.write(result.dead)
            assert progress is not None
            progress.update(len(values), alerts=pipeline.stats.alerts.total())

        replay_kafka(consumer, plan, feed, args.lateness)
        alert_sink.write(pipeline.drain())
        alert_sink.flush()
        dead_sink.flush()
    except (KafkaRangeError, KafkaError) as err:
        print(f"sentinel replay: {err}", file=sys.stderr)
        return 2
    finally:
        if progress is not None:
            progress.close()
        consumer.close()
        alert_sink.close()
        dead_sink.close()
    result = ReplayResult(pipeline.stats, time.perf_counter() - start, alert_sink.written, dead_sink.written)
    data = summary(result, args.dead_letter, args.out)
    data["kafka"] = {"topic": plan.topic, "since": args.since, "until": args.until,
                     "partitions": [{"partition": p.partition, "start": p.start, "end": p.end, "method": p.method}
                                    for p in plan.partitions]}
    print_summary(data)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(data, indent=2) + "\n")
    return 0


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _number_or_text(value: str) -> str | float:
    try:
        return float(value)
    except ValueError:
        return value
