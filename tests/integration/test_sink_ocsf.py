"""OCSF 1.1.0 Detection Findings: every line the file sink writes, and every HEC event in OCSF mode,
validates against sentinel/sinks/schemas/ocsf-1.1.0-detection_finding.schema.json."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from sentinel.alerting.delivery import Delivery, RetryPolicy
from sentinel.alerting.outbox import SqliteOutbox
from sentinel.alerting.routes import Router
from sentinel.rules import RoutesFile
from sentinel.sinks.ocsf import SCHEMA_PATH, OcsfFileSink, to_ocsf
from sentinel.sinks.splunk_hec import SplunkHecSink
from tests.receivers.alerts import make_alert
from tests.receivers.splunk_hec import HecReceiver

VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def lifecycle() -> list:  # type: ignore[type-arg]
    return [make_alert(1, severity="medium", score=0.6), make_alert(1, version=2, severity="critical", score=0.97),
            make_alert(1, version=3, status="resolved", severity="critical"),
            make_alert(2, detector="quota_burn", severity="high", key=None)]


def test_file_findings_validate_and_map_the_lifecycle(tmp_path: Path) -> None:
    VALIDATOR.check_schema(VALIDATOR.schema)
    routes = RoutesFile.model_validate({"routes": [], "default_sinks": ["ocsf"]})
    d = Delivery([OcsfFileSink(tmp_path / "findings.jsonl")], SqliteOutbox(":memory:"), Router(routes),
                 retry=RetryPolicy(initial_s=0.05, seed=1), idle_poll_s=0.02).start()
    try:
        d.enqueue(lifecycle())
        assert d.wait_idle(10)
    finally:
        d.close()
    findings = [json.loads(x) for x in (tmp_path / "findings.jsonl").read_text().splitlines()]
    assert len(findings) == 4
    for f in findings:
        VALIDATOR.validate(f)
    assert [(f["activity_id"], f["type_uid"], f["status_id"]) for f in findings[:3]] == [
        (1, 200401, 1), (2, 200402, 1), (3, 200403, 4)]
    assert [f["severity_id"] for f in findings[:3]] == [3, 5, 5]
    assert {f["finding_info"]["uid"] for f in findings[:3]} == {make_alert(1).alert_id}
    assert findings[0]["metadata"]["version"] == "1.1.0" and findings[0]["class_uid"] == 2004
    assert findings[0]["confidence_score"] == 60
    assert findings[3]["unmapped"]["sentinel"]["inhibited_by"] is None


@pytest.mark.parametrize("breakage", [
    lambda f: f["finding_info"].pop("uid"),
    lambda f: f.__setitem__("type_uid", 200401 if f["activity_id"] != 1 else 200402),
    lambda f: f["metadata"]["product"].pop("vendor_name"),
    lambda f: f.__setitem__("time", "2026-11-02T08:00:00Z"),
    lambda f: f.__setitem__("class_uid", 2001),
    lambda f: f.__setitem__("not_an_ocsf_attribute", 1),
])
def test_schema_rejects_broken_findings(breakage) -> None:  # type: ignore[no-untyped-def]
    from sentinel.alerting.notify import Notification

    good = to_ocsf(Notification(alert=make_alert(1), sink="ocsf", reason="new", group_key="tenant:t_alpha"))
    VALIDATOR.validate(good)
    bad = copy.deepcopy(good)
    breakage(bad)
    assert not VALIDATOR.is_valid(bad)


def test_ocsf_to_hec() -> None:
    hec = HecReceiver("tok-ocsf-1").start()
    try:
        from sentinel.alerting.notify import Notification

        sink = SplunkHecSink(hec.url, "tok-ocsf-1", ocsf=True, sourcetype="ocsf:detection_finding")
        sink.send([Notification(alert=a, sink="splunk_hec", reason="new" if a.version == 1 else "escalated",
                                group_key="g") for a in lifecycle()])
    finally:
        hec.stop()
    assert len(hec.events) == 4
    for e in hec.events:
        assert e["sourcetype"] == "ocsf:detection_finding"
        VALIDATOR.validate(e["event"])
