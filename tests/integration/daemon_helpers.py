"""Shared pieces of the daemon integration tests: a firing event stream, replay, daemon subprocesses.

The stream is benign multi-tenant traffic with three injected incidents on
different tenants (so on different partitions when keyed by ``tenant_id``): a
stolen-key spend spike (t_alpha), cross-tenant reads (t_beta) and a runaway
agent loop (t_gamma). It is sorted by event time, as a gateway writes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sentinel.commands.replay import replay
from sentinel.events import UsageEvent
from sentinel.pipeline import Pipeline
from sentinel.rules import load_rules
from sentinel.sinks.jsonl import JsonlAlertSink, JsonlDeadLetterSink
from tests.contract.streams import runaway_loop, spend_spike
from tests.synth import DAY, HOUR, T0, Factory, background, merge, to_lines

REPO = Path(__file__).resolve().parents[2]


def cross_tenant_reads(start: float, n: int = 30) -> list[UsageEvent]:
    f = Factory("xt")
    return [
        f.event(start + i * 40.0, tenant_id="t_beta", api_key_id="key_beta_9", user_id="u_t_beta_9",
                request_id=f"r_xt_{i}", feature="search", prompt_shape="shp_t_beta_1",
                resource_tenant_id=("t_alpha", "t_gamma", "t_beta")[i % 3])
        for i in range(n)
    ]


def firing_events(days: float = 2.0, rate_per_min: float = 4.0) -> list[UsageEvent]:
    return merge(
        background(days=days, seed=3, rate_per_min=rate_per_min, factory=Factory("bg")),
        spend_spike.attack(T0 + DAY + 1.5 * HOUR),
        cross_tenant_reads(T0 + DAY + 10 * HOUR),
        runaway_loop.loop(T0 + DAY + 19.5 * HOUR, minutes=120, tenant="t_gamma", api_key="key_gamma_1",
                          session="s_gamma_loop"),
    )


def lines_and_keys(events: list[UsageEvent]) -> tuple[list[bytes], list[bytes | None]]:
    return list(to_lines(events)), [e.tenant_id.encode() for e in events]


def replay_alerts(lines: list[bytes], tmp: Path, rules: str | None = None, cli: bool = False) -> set[bytes]:
    """Encoded alerts of ``sentinel replay`` over the lines (the reference for the daemon).

    ``cli=True`` runs the real command in a subprocess; otherwise the same replay function in-process
    (the command minus argument parsing; saves an interpreter start on a busy machine).
    """
    src = tmp / "replay-input.jsonl"
    src.write_bytes(b"".join(ln + b"\n" for ln in lines))
    out = tmp / "replay-alerts.jsonl"
    dead = tmp / "replay-dead.jsonl"
    if cli:
        cmd = [sys.executable, "-m", "sentinel.cli", "replay", str(src), "--out", str(out), "--no-progress",
               "--dead-letter", str(dead)]
        if rules:
            cmd += ["--rules", rules]
        subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
    else:
        sink, dead_sink = JsonlAlertSink(out), JsonlDeadLetterSink(dead)
        try:
            replay(Pipeline(load_rules(rules or REPO / "rules")), [str(src)], sink, dead_sink)
        finally:
            sink.close()
            dead_sink.close()
    return {ln for ln in out.read_bytes().splitlines() if ln}


def daemon_env(bootstrap: str, topic: str, group: str, *, redis_url: str | None = None, prefix: str = "sentinel",
               alerts_topic: str | None = None, dlq_topic: str | None = None, extra: dict[str, str] | None = None,
               ) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    env.update({
        "SENTINEL_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "SENTINEL_KAFKA__TOPIC": topic,
        "SENTINEL_KAFKA__GROUP_ID": group,
        "SENTINEL_KAFKA__ALERTS_TOPIC": alerts_topic or f"{topic}-alerts",
        "SENTINEL_KAFKA__DEAD_LETTER_TOPIC": dlq_topic or f"{topic}-dead",
        "SENTINEL_KAFKA__SESSION_TIMEOUT_MS": "2000",
        "SENTINEL_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
        "SENTINEL_KAFKA__POLL_TIMEOUT_MS": "200",
        # Small polls: more batches, checkpoints and kill points per test. (Also keeps a fresh partition's
        # first batch within a day of event time: the pipeline takes that batch's median time as the stream's
        # reference and dead-letters events more than max_late_s older -- reported upstream.)
        "SENTINEL_KAFKA__MAX_POLL_RECORDS": "200",
        "SENTINEL_HTTP_PORT": "0",
        "SENTINEL_DAEMON__IDLE_ADVANCE": "drain",
        "SENTINEL_DAEMON__IDLE_AFTER_S": "1.0",
        "SENTINEL_DAEMON__RETRY_INITIAL_S": "0.2",
        "SENTINEL_DAEMON__RETRY_MAX_S": "2.0",
        "SENTINEL_STATE__KEY_PREFIX": prefix,
        "SENTINEL_LOG_LEVEL": "info",
    })
    if redis_url:
        env["SENTINEL_STATE__REDIS_URL"] = redis_url
    if extra:
        env.update(extra)
    return env


def start_daemon(env: dict[str, str], log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
    try:
        return subprocess.Popen([sys.executable, "-m", "sentinel.cli", "run", *args], env=env, cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        log.close()


def wait_exit(proc: subprocess.Popen[bytes], timeout: float, log_path: Path) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        tail = log_path.read_text()[-3000:]
        raise AssertionError(f"daemon did not finish in {timeout}s; log tail:\n{tail}") from None


def wait_for(cond: object, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def log_events(log: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def http_port(log: Path) -> int:
    wait_for(lambda: any(e["event"] == "http_listening" for e in log_events(log)), 20, "http server")
    return int(next(e for e in log_events(log) if e["event"] == "http_listening")["port"])


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
