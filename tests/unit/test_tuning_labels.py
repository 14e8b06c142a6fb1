"""Labels files, entity matching, event scopes, scenario discovery and the tenants overlay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sentinel.alerts import Alert, Entity
from sentinel.rules import load_rules
from sentinel.tuning.labels import (
    LabelError,
    apply_tenants,
    load_labels,
    load_tenants_table,
    parse_time,
    scenario_datasets,
)


def alert(**kw: Any) -> Alert:
    base: dict[str, Any] = dict(alert_id="al_x", version=1, status="firing", detector="spend_spike",
                                rule="spend_spike", severity="high", score=0.8, entity=Entity("api_key", "key_a"),
                                tenant_id="t_a", detected_at="2026-11-02T10:00:00.000Z", title="t", evidence={})
    base.update(kw)
    return Alert(**base)


def write_labels(path: Path, labels: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(labels))
    return path


LABEL = {"detector": "spend_spike", "kind": "llmjacking", "start": "2026-11-02T09:00:00Z",
         "end": "2026-11-02T11:00:00.000Z", "entities": {"tenant_id": "t_a", "api_key_id": "key_a",
                                                       "source_ip": ["1.2.3.4", "5.6.7.8"]},
         "description": "stolen key", "also_expected": ["quota_burn"]}


def test_load_labels_fields(tmp_path: Path) -> None:
    neg = {**LABEL, "kind": "negative:nightly_batch", "also_expected": []}
    labels = load_labels(write_labels(tmp_path / "l.json", [LABEL, neg]))
    pos, negative = labels
    assert (pos.start, pos.end) == (parse_time("2026-11-02T09:00:00Z"), parse_time("2026-11-02T11:00:00Z"))
    assert not pos.negative and negative.negative
    assert pos.also_expected == ("quota_burn",)
    assert pos.name == "spend_spike:llmjacking#0" and negative.index == 1
    assert pos.tenant_ids == {"t_a"} and pos.ids == {"key_a", "1.2.3.4", "5.6.7.8"}


@pytest.mark.parametrize(("content", "message"), [
    ("{}", "expected a JSON list"),
    ("[1]", "label 0: expected an object"),
    (json.dumps([{"detector": "x", "kind": "k", "start": "2026-11-02T00:00:00Z"}]), "label 0: missing field 'end'"),
    (json.dumps([{**LABEL, "start": "yesterday"}]), "label 0:"),
    (json.dumps([{**LABEL, "start": "2026-11-02T09:00:00"}]), "without a UTC offset"),
    (json.dumps([{**LABEL, "end": "2026-11-02T08:00:00Z"}]), "is before start"),
    ("not json", "cannot read labels"),
])
def test_load_labels_errors_name_file_and_entry(tmp_path: Path, content: str, message: str) -> None:
    p = tmp_path / "bad.labels.json"
    p.write_text(content)
    with pytest.raises(LabelError) as err:
        load_labels(p)
    assert str(p) in str(err.value) and message in str(err.value)


def test_relates_by_tenant_key_session_feature_and_budget(tmp_path: Path) -> None:
    [lab] = load_labels(write_labels(tmp_path / "l.json", [LABEL]))
    assert lab.relates(alert())
    assert lab.relates(alert(tenant_id="t_other", entity=Entity("api_key", "key_a")))  # same key, other tenant
    assert not lab.relates(alert(tenant_id="t_b", entity=Entity("api_key", "key_b")))
    assert lab.relates(alert(tenant_id="t_b", entity=Entity("feature", "key_a|chat")))  # key|feature by its parts
    budget = {**LABEL, "entities": {"budget": {"name": "wayne-monthly", "scope": "tenant", "id": "t_w"}}}
    [blab] = load_labels(write_labels(tmp_path / "b.json", [budget]))
    assert blab.relates(alert(tenant_id="t_x", entity=Entity("budget", "wayne-monthly")))
    assert not blab.relates(alert(tenant_id="t_x", entity=Entity("budget", "other-monthly")))
    # No tenant in the label (a shared prompt shape): the alert's evidence strings count.
    shape = {**LABEL, "entities": {"prompt_shape": ["shp_generic"]}}
    [slab] = load_labels(write_labels(tmp_path / "s.json", [shape]))
    assert slab.relates(alert(tenant_id="t_z", evidence={"leaked_shapes": ["shp_generic"]}))
    assert not slab.relates(alert(tenant_id="t_z", evidence={"leaked_shapes": ["shp_private"]}))


def test_event_scope_most_specific(tmp_path: Path) -> None:
    raw = [
        {**LABEL, "entities": {"tenant_id": "t_a", "api_key_id": "k", "session_id": "s1"}},
        {**LABEL, "entities": {"tenant_id": "t_a", "api_key_id": "k", "feature": "chat"}},
        {**LABEL, "entities": {"budget": {"name": "b", "scope": "api_key", "id": "k9"}}},
        {**LABEL, "entities": {"tenant_id": ["t_a", "t_b"]}},
    ]
    scopes = [lb.event_scope() for lb in load_labels(write_labels(tmp_path / "l.json", raw))]
    assert scopes == [("session_id", frozenset({"s1"}), None), ("api_key_id", frozenset({"k"}), frozenset({"chat"})),
                      ("api_key_id", frozenset({"k9"}), None), ("tenant_id", frozenset({"t_a", "t_b"}), None)]


def test_scenario_datasets_pairs_files(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl.gz").write_bytes(b"")
    write_labels(tmp_path / "a.labels.json", [LABEL])
    (tmp_path / "a.tenants.json").write_text(json.dumps({"tenants": [], "budgets": []}))
    (tmp_path / "b.jsonl").write_bytes(b"")
    write_labels(tmp_path / "b.labels.json", [])
    (tmp_path / "c.jsonl").write_bytes(b"")  # no labels: not a scenario
    got = scenario_datasets(tmp_path)
    assert [(d.name, len(d.labels), d.tenants is not None) for d in got] == [("a", 1, True), ("b", 0, False)]
    assert [d.name for d in scenario_datasets(tmp_path, ["b"])] == ["b"]
    with pytest.raises(LabelError, match="no <name>"):
        scenario_datasets(tmp_path, ["zzz"])


def test_tenants_overlay(tmp_path: Path) -> None:
    table = {"tenants": [{"tenant_id": "t_support", "timezone": "Europe/Berlin", "cross_tenant_allowed": True,
                          "description": "ignored extra"}],
             "budgets": [{"name": "a-monthly", "scope": "tenant", "id": "t_a", "limit_usd": 50.0, "period": "month"}]}
    p = tmp_path / "x.tenants.json"
    p.write_text(json.dumps(table))
    rules = apply_tenants(load_rules(None), load_tenants_table(p))
    assert rules.tenants.tenants["t_support"].cross_tenant_allowed
    assert rules.context().tenant("t_support").cross_tenant_allowed
    assert [b.name for b in rules.budgets.budgets] == ["a-monthly"]
    p.write_text(json.dumps({"tenants": [{"timezone": "UTC"}]}))
    with pytest.raises(LabelError, match="missing tenant_id"):
        load_tenants_table(p)
    p.write_text(json.dumps({"tenants": [{"tenant_id": "t", "timezone": "Mars/Olympus"}]}))
    with pytest.raises(LabelError, match="unknown IANA timezone"):
        load_tenants_table(p)
