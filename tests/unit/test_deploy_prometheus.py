"""deploy/prometheus and deploy/grafana: the alert rules pass ``promtool check rules`` and their unit
tests (``promtool test rules``), every rule has a firing test, and the rules and the dashboard use only
metric names the code exports; the dashboard's structure is checked and its queries parse as PromQL."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "sentinel-rules.yaml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "sentinel-rules.test.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "sentinel-dashboard.json"
_NAME = re.compile(r"\b(sentinel_[a-z0-9_]+|up)\b(?!\s*\()")
_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created"),
             "summary": ("_sum", "_count", "_created", ""), "info": ("_info",), "unknown": ("",)}


@pytest.fixture(scope="module")
def promtool() -> str:
    if shutil.which("promtool") is None:
        res = subprocess.run(["bash", str(REPO / "scripts" / "ensure_tools.sh"), "prometheus"], capture_output=True,
                             text=True)
        if res.returncode != 0 or shutil.which("promtool") is None:
            pytest.fail(f"promtool is missing and could not be installed (Debian package 'prometheus'): "
                        f"{res.stderr.strip()[-600:]}")
    return str(shutil.which("promtool"))


def exported_metric_names() -> set[str]:
    """Every sample name sentinel can expose on /metrics (daemon registry + the process-wide one)."""
    from sentinel.metrics import DaemonMetrics

    for module in ("sentinel.alerting.delivery", "sentinel.sinks.alertmanager"):  # they register on import
        importlib.import_module(module)

    names: set[str] = set()
    for registry in (DaemonMetrics(CollectorRegistry()).registry, REGISTRY):
        for family in registry.collect():
            names.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
    return names


def metric_names(expr: str) -> set[str]:
    # Label values and names inside {...} and by (...) are not metric names.
    stripped = re.sub(r"\{[^}]*\}", "", expr)
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped)
    return set(_NAME.findall(stripped))


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_rules(promtool: str) -> None:
    res = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in res.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    res = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], capture_output=True, text=True,
                         cwd=RULE_TESTS.parent)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_every_rule_has_a_firing_unit_test_and_the_issue_topics_are_covered() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names <= fired, f"rules without a firing test: {sorted(names - fired)}"
    assert names <= quiet, f"rules without a quiet (negative) case: {sorted(names - quiet)}"
    # The issue's list: lag growing, a sink failing / dead-lettering, checkpoint stale, dead-letter rate,
    # no events consumed, readiness false.
    assert {"SentinelConsumerLagGrowing", "SentinelSinkFailing", "SentinelSinkDeadLettering",
            "SentinelCheckpointStale", "SentinelDeadLetterRateHigh", "SentinelNoEventsConsumed",
            "SentinelNotReady"} <= names
    for r in alert_rules():
        assert r["labels"]["severity"] in ("warning", "critical"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


def test_rules_use_only_exported_metric_names() -> None:
    known = exported_metric_names() | {"up"}
    for r in alert_rules():
        used = metric_names(r["expr"])
        assert used, r["alert"]
        assert used <= known, f"{r['alert']} uses unknown metrics {sorted(used - known)}"


def test_metric_name_extraction_can_fail() -> None:
    assert metric_names('sum by (sink) (rate(sentinel_nope_total{sink="x"}[5m]))') == {"sentinel_nope_total"}
    assert "sentinel_nope_total" not in exported_metric_names()


# -- Grafana -----------------------------------------------------------------------------------------

def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def test_dashboard_structure() -> None:
    d = dashboard()
    assert d["uid"] == "sentinel-daemon" and d["title"] and isinstance(d["schemaVersion"], int)
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"job", "instance"} <= set(variables)
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in panels(d):
        g = p["gridPos"]
        assert set(g) == {"x", "y", "w", "h"} and g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0, p["title"]
        cover = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cover & cells, f"panel {p['title']!r} overlaps another"
        cells |= cover
        assert p["type"] in ("row", "timeseries", "stat", "table"), p["type"]
        if p["type"] == "row":
            continue
        assert p["title"] and p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and 'job=~"$job"' in t["expr"] and 'instance=~"$instance"' in t["expr"], t


def test_dashboard_covers_the_daemon_and_uses_only_exported_metrics() -> None:
    known = exported_metric_names()
    exprs = {p["title"]: [t["expr"] for t in p["targets"]] for p in panels(dashboard()) if p["type"] != "row"}
    used: set[str] = set()
    for title, es in exprs.items():
        for e in es:
            names = metric_names(e)
            assert names, title
            assert names <= known, f"panel {title!r} uses unknown metrics {sorted(names - known)}"
            used |= names
    # events/s by outcome, lag per partition, batch latency quantiles, alerts by detector/severity,
    # sink failures, outbox depth, checkpoint age, tracked keys
    required = {"sentinel_events_total", "sentinel_consumer_lag", "sentinel_batch_seconds_bucket",
                "sentinel_alerts_total", "sentinel_sink_failures_total", "sentinel_outbox_depth",
                "sentinel_checkpoint_age_seconds", "sentinel_tracked_keys"}
    assert required <= used, sorted(required - used)
    flat = " ".join(e for es in exprs.values() for e in es)
    assert "sum by (outcome) (rate(sentinel_events_total" in flat
    assert "sum by (topic, partition) (sentinel_consumer_lag" in flat
    assert all(f"histogram_quantile({q}, sum by (le) (rate(sentinel_batch_seconds_bucket" in flat
               for q in ("0.5", "0.95", "0.99"))
    assert "sum by (detector)" in flat and "sum by (severity)" in flat


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Grafana's variables replaced by values, each query becomes a recording rule that promtool parses."""
    subs = {"$__rate_interval": "5m", "$__range": "6h", "$__interval": "1m", "$job": ".*", "$instance": ".*"}
    rules = []
    for i, p in enumerate(x for x in panels(dashboard()) if x["type"] != "row"):
        for t in p["targets"]:
            expr = t["expr"]
            for k, v in subs.items():
                expr = expr.replace(k, v)
            assert "$" not in expr, expr
            rules.append({"record": f"dashboard:panel{i}:{t['refId'].lower()}", "expr": expr})
    f = tmp_path / "dashboard-queries.yaml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    res = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum by (le ("}]}]}))
    assert subprocess.run([promtool, "check", "rules", str(bad)], capture_output=True).returncode != 0
