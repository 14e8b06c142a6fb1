"""Log lines stay whole JSON objects when threads log at once, and secrets are scrubbed from every line."""

from __future__ import annotations

import io
import json
import logging
import threading

from sentinel.logs import configure, get_logger

SECRET = "sk-ant-api03-" + "Zq7" * 12


def test_structlog_and_stdlib_lines_from_many_threads_never_interleave() -> None:
    buf = io.StringIO()
    configure("debug", stream=buf)
    ours, theirs = get_logger("sentinel.test"), logging.getLogger("kafka.conn")
    n = 3000

    def structured() -> None:
        for i in range(n):
            ours.info("delivery_started", i=i, token=SECRET)

    def foreign() -> None:
        for i in range(n):
            theirs.info("connected to broker %s with %s", i, SECRET)

    threads = [threading.Thread(target=f) for f in (structured, foreign, structured, foreign)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 4 * n
    docs = [json.loads(line) for line in lines]          # raises on a line another thread broke into
    assert sum(d["event"] == "delivery_started" for d in docs) == 2 * n
    foreign_docs = [d for d in docs if d.get("logger") == "kafka.conn"]
    assert len(foreign_docs) == 2 * n and all(d["level"] == "info" and d["timestamp"].endswith("Z")
                                              for d in foreign_docs)
    assert SECRET not in buf.getvalue() and "[REDACTED sha256:" in foreign_docs[0]["event"]


def test_kafka_never_logs_below_info_and_a_second_configure_replaces_the_first() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure("debug", stream=first)
    configure("debug", stream=second)
    assert logging.getLogger("kafka").getEffectiveLevel() == logging.INFO
    logging.getLogger("kafka.protocol").debug("raw bytes %r", b"secret payload")
    logging.getLogger("urllib3").debug("starting connection")
    get_logger().warning("sink_down", sink="slack")
    assert first.getvalue() == ""
    events = [json.loads(line)["event"] for line in second.getvalue().splitlines()]
    assert events == ["starting connection", "sink_down"]
