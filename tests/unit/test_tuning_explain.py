"""``sentinel explain``: finds the alert by replaying, prints signals, evidence and the events behind it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentinel.alerts import decode_alert
from sentinel.cli import main
from tests.synth import HOUR, T0, Factory, background, merge, to_lines

F = Factory("x")


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("explain")
    reads = [F.event(T0 + 20 * HOUR + 60 * i, tenant_id="t_beta", api_key_id="key_beta_1", resource_tenant_id="t_alpha",
                     user_id="u_b", feature="search", cost_usd=0.25) for i in range(5)]
    events = merge(background(days=1.5, seed=11), reads)
    inp = d / "events.jsonl"
    inp.write_bytes(b"\n".join(to_lines(events)) + b"\n")
    out = d / "alerts.jsonl"
    assert main(["replay", str(inp), "--rules", str(d / "missing-rules-dir"), "--out", str(out),
                 "--dead-letter", str(d / "dead.jsonl"), "--no-progress"]) == 2  # a bad rules dir is an error ...
    assert main(["replay", str(inp), "--out", str(out), "--dead-letter", str(d / "dead.jsonl"), "--no-progress"]) == 0
    return inp, out


def cross_alert(out: Path) -> str:
    for line in out.read_bytes().splitlines():
        a = decode_alert(line)
        if a.detector == "cross_tenant" and a.entity.id == "key_beta_1":
            return a.alert_id
    raise AssertionError("no cross_tenant alert on key_beta_1")


def test_explain_text(replayed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    inp, out = replayed
    aid = cross_alert(out)
    assert main(["explain", aid, "--input", str(inp), "--no-progress", "--limit", "3"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"alert {aid}  (cross_tenant / rule cross_tenant)")
    assert "entity      api_key key_beta_1   tenant t_beta" in text
    assert "signal contributions" in text and "foreign_reads" in text
    assert "reads_by_victim" in text  # evidence
    # The first sample event is the first foreign read, found in the input with its cost.
    samples = text.split("sample events", 1)[1].split("entity events", 1)[0]
    assert "x-1 " in samples and "0.25" in samples
    around = text.split("entity events", 1)[1]
    # Entity events of key_beta_1 in [detected - 1h, detected + 15 min]: the first read closes the "before"
    # part (it is what fired), a few after it are listed and the rest counted.
    before, after = around.split("---- detected", 1)
    assert "x-1 " in before and "x-2 " in after and "x-1 " not in after
    assert "later event(s) not shown" in after


def test_explain_json_and_from_alerts_file(replayed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    inp, out = replayed
    aid = cross_alert(out)
    assert main(["explain", aid, "--input", str(inp), "--alerts", str(out), "--json", "--no-progress"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["alert"]["alert_id"] == aid and doc["versions"][0]["version"] == 1
    assert list(doc["signals"]) == sorted(doc["signals"], key=lambda k: -doc["signals"][k])
    ev = doc["events"]
    assert [s["event_id"] for s in ev["samples"]][:1] == ["x-1"] and ev["missing_samples"] == []
    assert {r["api_key_id"] for r in ev["around"]} == {"key_beta_1"}
    assert ev["events_before"] >= 1 and ev["cost_usd"] >= 5 * 0.25 - 1e-9
    # The same answer by replaying the detectors.
    assert main(["explain", aid, "--input", str(inp), "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["versions"] == doc["versions"]


def test_explain_unknown_alert_and_missing_input(replayed: tuple[Path, Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    inp, _ = replayed
    assert main(["explain", "al_000000000000000000000000", "--input", str(inp), "--no-progress"]) == 1
    assert "is not raised by a replay" in capsys.readouterr().err
    assert main(["explain", "al_x", "--input", str(inp.with_name("nope.jsonl")), "--no-progress"]) == 2
    assert "no such file" in capsys.readouterr().err
