"""SIGHUP swaps the delivery pipeline's routes of ``sentinel run``, after validating the rules.

The daemon runs with two delivery sinks (the JSONL and OCSF files) and a ``routes.yaml`` that sends
everything to ``jsonl``. The first part of a firing stream is consumed; then a broken ``routes.yaml`` is
refused on SIGHUP (routes kept), a valid one that sends everything to ``ocsf`` is applied, and the rest of
the stream is consumed: every alert version of the first part reached ``jsonl`` only, every later one
``ocsf`` only.
"""

from __future__ import annotations

import json
import shutil
import signal
import uuid
from pathlib import Path

import pytest

from tests.integration.daemon_helpers import (
    REPO,
    daemon_env,
    firing_events,
    lines_and_keys,
    log_events,
    replay_alerts,
    start_daemon,
    wait_exit,
    wait_for,
)
from tests.services import create_topic, produce_lines
from tests.synth import DAY, HOUR, T0

pytestmark = pytest.mark.kafka


def _versions(path: Path) -> set[tuple[str, int]]:
    """(alert_id, version) of each line of a JSONL alert file or an OCSF findings file."""
    if not path.exists():
        return set()
    out = set()
    for line in path.read_bytes().splitlines():
        doc = json.loads(line)
        if "alert_id" in doc:
            out.add((doc["alert_id"], doc["version"]))
        else:
            alert_id, _, version = doc["metadata"]["uid"].rpartition(":")
            out.add((alert_id, int(version)))
    return out


def _routes(rules: Path, text: str) -> None:
    (rules / "routes.yaml").write_text(text)


def test_sighup_swaps_the_delivery_routes_after_validating_them(kafka_bootstrap: str, tmp_path: Path) -> None:
    events = firing_events(days=1.5)
    cut = T0 + DAY + 6 * HOUR  # the spend spike before, the cross-tenant reads and the agent loop after
    first = [e for e in events if e.ts < cut]  # type: ignore[operator]
    rest = [e for e in events if e.ts >= cut]  # type: ignore[operator]
    lines1, keys1 = lines_and_keys(first)
    lines2, keys2 = lines_and_keys(rest)
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    before = {(a["alert_id"], a["version"]) for a in map(json.loads, replay_alerts(lines1, tmp_path / "r1"))}
    everything = {(a["alert_id"], a["version"]) for a in map(json.loads, replay_alerts(lines1 + lines2,
                                                                                       tmp_path / "r2"))}
    after = everything - before
    assert before and after and before < everything, "alerts on both sides of the reload"

    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    _routes(rules, "routes: []\ndefault_sinks: [jsonl]\n")
    topic = f"usage-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 4)
    produce_lines(kafka_bootstrap, topic, lines1, keys1)
    delivered_jsonl, delivered_ocsf = tmp_path / "delivered.jsonl", tmp_path / "delivered-ocsf.jsonl"
    env = daemon_env(kafka_bootstrap, topic, f"grp-{uuid.uuid4().hex[:8]}", extra={
        "SENTINEL_SINKS__JSONL_PATH": str(delivered_jsonl),
        "SENTINEL_SINKS__OCSF_PATH": str(delivered_ocsf),
        "SENTINEL_SINKS__OUTBOX_PATH": str(tmp_path / "outbox.sqlite"),
    })
    log = tmp_path / "daemon.log"
    alerts_file = tmp_path / "alerts.jsonl"
    proc = start_daemon(env, log, "--rules", str(rules), "--alerts-file", str(alerts_file))
    try:
        # The first part is consumed and drained (idle), and delivered by the routes of the start.
        wait_for(lambda: _versions(alerts_file) == before, 40, "the first part's alerts")
        wait_for(lambda: _versions(delivered_jsonl) == before, 20, "the first part delivered to jsonl")

        # A broken routes.yaml: refused, the delivery keeps its routes.
        _routes(rules, "routes:\n  - name: x\n    match: {min_severity: extreme}\n    sinks: [ocsf]\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: any(e["event"] == "rules_reload_failed" for e in log_events(log)), 10, "reload refused")
        failed = next(e for e in log_events(log) if e["event"] == "rules_reload_failed")
        assert "routes.yaml" in str(failed["detail"]) and "min_severity" in str(failed["detail"])
        assert not any(e["event"] == "delivery_routes_reloaded" for e in log_events(log))

        # A valid one: applied to the delivery pipeline.
        _routes(rules, "routes: []\ndefault_sinks: [ocsf]\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: any(e["event"] == "rules_reloaded" for e in log_events(log)), 10, "reload applied")
        swapped = [e for e in log_events(log) if e["event"] == "delivery_routes_reloaded"]
        assert len(swapped) == 1 and swapped[0]["default_sinks"] == ["ocsf"] and swapped[0]["routes"] == []

        produce_lines(kafka_bootstrap, topic, lines2, keys2)
        wait_for(lambda: _versions(alerts_file) == everything, 40, "the rest of the alerts")
        wait_for(lambda: _versions(delivered_ocsf) == after, 20, "the later alerts delivered to ocsf")
        assert _versions(delivered_jsonl) == before  # nothing more on the old route

        proc.send_signal(signal.SIGTERM)
        assert wait_exit(proc, 30, log) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
