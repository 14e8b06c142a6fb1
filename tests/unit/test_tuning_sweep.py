"""Sweeps end to end on a small synthetic stream: settings, isolation, recommendation, rules written, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentinel.cli import main
from sentinel.rules import load_rules
from sentinel.tuning.labels import Dataset, load_labels
from sentinel.tuning.sweep import (
    BASELINE,
    Job,
    Setting,
    SweepError,
    apply_setting,
    build_settings,
    parse_sweep,
    run_job,
    tune,
    write_rules,
)
from tests.synth import HOUR, T0, Factory, background, iso, merge, to_lines

F = Factory("inc")


def reads(t: float, n: int, tenant: str, key: str, victim: str, step: float = 120.0) -> list:  # type: ignore[type-arg]
    return [F.event(t + i * step, tenant_id=tenant, api_key_id=key, resource_tenant_id=victim, feature="search",
                    user_id=f"u_{key}") for i in range(n)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    d = tmp_path_factory.mktemp("tune")
    events = merge(
        background(days=2.0, seed=5),
        reads(T0 + 20 * HOUR, 8, "t_beta", "key_beta_1", "t_alpha"),  # the incident
        reads(T0 + 30 * HOUR, 1, "t_gamma", "key_gamma_1", "t_beta"),  # one stray read nobody labelled: FP
        reads(T0 + 40 * HOUR, 1, "t_alpha", "key_alpha_2", "t_gamma"),  # inside a hard negative: hard FP
    )
    (d / "events.jsonl").write_bytes(b"\n".join(to_lines(events)) + b"\n")
    labels = [
        {"detector": "cross_tenant", "kind": "cross_tenant_read", "start": iso(T0 + 20 * HOUR),
         "end": iso(T0 + 20 * HOUR + 8 * 120), "entities": {"tenant_id": "t_beta", "api_key_id": "key_beta_1"},
         "description": "t_beta reads t_alpha's index"},
        {"detector": "cross_tenant", "kind": "negative:migration", "start": iso(T0 + 39 * HOUR),
         "end": iso(T0 + 41 * HOUR), "entities": {"tenant_id": "t_alpha"}, "description": "data migration"},
    ]
    (d / "events.labels.json").write_text(json.dumps(labels))
    return Dataset("events", (str(d / "events.jsonl"),), tuple(load_labels(d / "events.labels.json")))


def test_parse_sweep_validates_against_params() -> None:
    rules = load_rules(None)
    spec = parse_sweep("cross_tenant.min_score=0.5, 0.7,0.5", rules)
    assert (spec.detector, spec.param, spec.values, spec.key) == ("cross_tenant", "min_score", (0.5, 0.7),
                                                                  "cross_tenant.min_score")
    assert parse_sweep("quota_burn.notice_fractions=[0.5,0.9],[0.8]", rules).values == ((0.5, 0.9), (0.8,))
    for bad, msg in [("nodot=1", "expected detector.param"), ("nope.x=1", "no detector 'nope'"),
                     ("cross_tenant.nope=1", "has no parameter 'nope'"),
                     ("cross_tenant.min_score=abc", "cross_tenant.min_score=abc: Input should be a valid number"),
                     ("cross_tenant.min_score=1.5", "less than or equal to 1"),
                     ("retry_storm.max_keys=-5", "retry_storm.max_keys=-5: Input should be greater than or equal")]:
        with pytest.raises(SweepError, match=msg):
            parse_sweep(bad, rules)


def test_build_settings_one_at_a_time_grid_and_dedup() -> None:
    rules = load_rules(None)
    base = rules.detectors["cross_tenant"].params
    specs = [parse_sweep(f"cross_tenant.min_score={base.min_score},0.7,0.9", rules),  # type: ignore[attr-defined]
             parse_sweep("cross_tenant.fanout_min_tenants=2,4", rules)]
    names = [s.name for s in build_settings(specs, rules)]
    assert names == [BASELINE, "cross_tenant.min_score=0.7", "cross_tenant.min_score=0.9",
                     "cross_tenant.fanout_min_tenants=2", "cross_tenant.fanout_min_tenants=4"]
    grid = build_settings(specs, rules, grid=True)
    assert len(grid) == 1 + 3 * 2 - 0 and grid[1].name == "cross_tenant.fanout_min_tenants=2"  # (base, 2): base dropped
    assert "cross_tenant.min_score=0.9,fanout_min_tenants=4" in [s.name for s in grid]


def test_apply_setting_isolates_and_overrides_tenant_params(tmp_path: Path) -> None:
    (tmp_path / "detectors").mkdir()
    (tmp_path / "detectors" / "cross_tenant.yaml").write_text(
        "min_score: 0.3\ntenants:\n  t_a: {page_score: 0.8}\n  t_b: {min_score: 0.5}\n")
    rules = load_rules(tmp_path)
    got = apply_setting(rules, Setting("x", "cross_tenant", {"min_score": 0.6}))
    ct = got.detectors["cross_tenant"]
    assert [d.detector for d in got.enabled_detectors()] == ["cross_tenant"]
    assert ct.params.min_score == 0.6  # type: ignore[attr-defined]
    assert ct.tenant_params["t_a"].min_score == 0.6  # type: ignore[attr-defined]  # followed the baseline
    assert ct.tenant_params["t_b"].min_score == 0.5  # type: ignore[attr-defined]  # its own override kept
    assert apply_setting(rules, Setting(BASELINE)) is rules


def test_isolated_detector_run_equals_its_alerts_in_a_full_run(dataset: Dataset) -> None:
    rules = load_rules(None)
    full = run_job(Job(0, 0, dataset.inputs, rules, True, dataset))
    alone = run_job(Job(0, 1, dataset.inputs, apply_setting(rules, Setting("x", "cross_tenant", {})), False, dataset))
    mine = [a for a in full.alerts if b'"detector":"cross_tenant"' in a]
    assert mine and mine == alone.alerts
    assert full.record is not None and full.record.events == full.lines and alone.record is None
    assert full.record.days == pytest.approx(2.0, abs=0.05)


def test_tune_scores_sweeps_and_recommends(dataset: Dataset, tmp_path: Path) -> None:
    rules = load_rules(None)
    spec = parse_sweep("cross_tenant.min_score=0.65,0.95", rules)
    res = tune([dataset], rules, [spec], target_fp_per_day=0.5, workers=1)
    base = res.scores[BASELINE]["cross_tenant"]
    assert (base.labels, base.detected, base.fp, base.hard_negative_fp) == (1, 1, 2, 1)
    assert base.fp_per_day == pytest.approx(1.0, rel=0.05)
    mid = res.scores["cross_tenant.min_score=0.65"]["cross_tenant"]
    high = res.scores["cross_tenant.min_score=0.95"]["cross_tenant"]
    assert (mid.detected, mid.fp) == (1, 0)
    assert mid.ttd_median_s is not None and base.ttd_median_s is not None
    assert mid.ttd_median_s > base.ttd_median_s  # a higher bar waits for the escalation
    assert (high.detected, high.fp, high.recall) == (0, 0, 0.0)
    rec = res.recommendations["cross_tenant"]
    assert rec.setting == "cross_tenant.min_score=0.65" and rec.under_target and rec.overrides == {"min_score": 0.65}
    # Nothing meets an impossible target: keep the baseline and say so.
    strict = tune([dataset], rules, [spec], target_fp_per_day=-1.0, workers=1)
    assert not strict.recommendations["cross_tenant"].under_target
    assert strict.recommendations["cross_tenant"].setting == BASELINE
    out = tmp_path / "tuned"
    changed = write_rules(None, out, res.recommendations)
    assert changed == [out / "detectors" / "cross_tenant.yaml"]
    assert load_rules(out).detectors["cross_tenant"].params.min_score == 0.65  # type: ignore[attr-defined]


def test_write_rules_keeps_comments_and_refuses_source(tmp_path: Path, dataset: Dataset) -> None:
    src = tmp_path / "rules"
    (src / "detectors").mkdir(parents=True)
    (src / "alerting.yaml").write_text("resolve_after_s: 1800\n")
    (src / "detectors" / "cross_tenant.yaml").write_text(
        "# who may read what\nmin_score: 0.3   # lower = noisier\npage_score: 0.75\n")
    rules = load_rules(src)
    res = tune([dataset], rules, [parse_sweep("cross_tenant.min_score=0.65", rules)], target_fp_per_day=0.5,
               workers=1)
    out = tmp_path / "out"
    write_rules(src, out, res.recommendations)
    text = (out / "detectors" / "cross_tenant.yaml").read_text()
    assert text.splitlines() == ["# who may read what", "min_score: 0.65   # lower = noisier  # tuned by sentinel tune",
                                 "page_score: 0.75"]
    assert (out / "alerting.yaml").read_text() == "resolve_after_s: 1800\n"
    assert (src / "detectors" / "cross_tenant.yaml").read_text().startswith("# who may read what\nmin_score: 0.3")
    with pytest.raises(SweepError, match="refusing"):
        write_rules(src, src, res.recommendations)


def test_cli_tune_end_to_end(dataset: Dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = dataset.inputs[0]
    labels = str(Path(inp).with_name("events.labels.json"))
    code = main(["tune", inp, "--labels", labels, "--sweep", "cross_tenant.min_score=0.65,0.95",
                 "--target-fp-per-day", "0.5", "--jobs", "2", "--json", str(tmp_path / "t.json"),
                 "--write-rules", str(tmp_path / "rules"), "--report", str(tmp_path / "r.html"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "sweep cross_tenant" in out and "min_score=0.65" in out
    rec_line = next(ln for ln in out.splitlines() if ln.startswith("cross_tenant ") and "min_score=0.65" in ln)
    assert "1.00" in rec_line
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["recommendations"]["cross_tenant"]["overrides"] == {"min_score": 0.65}
    assert data["scores"]["baseline"]["cross_tenant"]["fp"] == 2
    assert data["labels"][0]["detected"] is True
    html = (tmp_path / "r.html").read_text()
    assert html.count("<svg") >= 3 and "cross_tenant.min_score" in html and "http" not in html.split("<body")[0]
    assert (tmp_path / "rules" / "detectors" / "cross_tenant.yaml").is_file()


def test_cli_tune_errors(dataset: Dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = dataset.inputs[0]
    labels = str(Path(inp).with_name("events.labels.json"))
    assert main(["tune", inp]) == 2
    assert "--labels is required" in capsys.readouterr().err
    assert main(["tune", inp, "--labels", labels, "--sweep", "cross_tenant.nope=1"]) == 2
    assert "has no parameter 'nope'" in capsys.readouterr().err
    assert main(["tune", inp, inp, "--labels", labels, "--labels", labels, "--labels", labels]) == 2
    assert "3 --labels files for 2 inputs" in capsys.readouterr().err
    assert main(["tune", str(tmp_path / "missing.jsonl"), "--labels", labels]) == 2
    assert "no such file" in capsys.readouterr().err
