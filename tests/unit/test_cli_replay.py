"""`sentinel replay` end to end, as a user runs it (a subprocess of the installed CLI)."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

from tests.synth import background, to_lines

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-proj-Zk3u9SecretValue0123456789"


def sentinel(*args: str, stdin: bytes | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "sentinel.cli", *args], input=stdin, capture_output=True,
                          cwd=cwd, timeout=300)


def corrupt(lines: list[bytes], share: float, seed: int = 9) -> tuple[list[bytes], dict[int, str]]:
    rng = random.Random(seed)
    bad_at = sorted(rng.sample(range(len(lines)), int(len(lines) * share)))
    kinds = [
        (b"{not json", "malformed_json"),
        (b'{"event_id": "x"}', "missing_field"),
        (b"\xff\xfe\xfd", "invalid_utf8"),
        (None, "secret_in_api_key_id"),
        (None, "out_of_range"),
        (b"[1,2]", "not_an_object"),
    ]
    expected: dict[int, str] = {}
    out = list(lines)
    for n, i in enumerate(bad_at):
        raw, code = kinds[n % len(kinds)]
        if code == "secret_in_api_key_id":
            obj = json.loads(lines[i])
            obj["api_key_id"] = SECRET
            raw = json.dumps(obj).encode()
        elif code == "out_of_range":
            obj = json.loads(lines[i])
            obj["input_tokens"] = -7
            raw = json.dumps(obj).encode()
        assert raw is not None
        out[i] = raw
        expected[i + 1] = code
    return out, expected


def test_one_percent_malformed_all_dead_lettered_and_counts_add_up(tmp_path: Path) -> None:
    lines = list(to_lines(background(days=1.0, seed=21)))
    lines, expected = corrupt(lines, 0.01)
    # plus exact duplicates of 25 lines, sent again right after the original
    with_dups: list[bytes] = []
    dup_count = 0
    for i, ln in enumerate(lines):
        with_dups.append(ln)
        if i % 100 == 50 and (i + 1) not in expected and dup_count < 25:
            with_dups.append(ln)
            dup_count += 1
    src = tmp_path / "in.jsonl.gz"
    with gzip.open(src, "wb") as fh:
        fh.write(b"\n".join(with_dups) + b"\n")
    out, dead, summ = tmp_path / "alerts.jsonl", tmp_path / "dead.jsonl", tmp_path / "summary.json"
    res = sentinel("replay", "--rules", str(REPO / "rules"), "--out", str(out), "--dead-letter", str(dead),
                   "--summary-json", str(summ), str(src))
    assert res.returncode == 0, res.stderr.decode()
    s = json.loads(summ.read_text())
    assert s["lines"] == len(with_dups)
    assert s["accepted"] + s["rejected"] + s["duplicates"] == len(with_dups)
    assert s["rejected"] == len(expected) and s["duplicates"] == dup_count
    records = [json.loads(x) for x in dead.read_text().splitlines()]
    assert len(records) == len(expected)
    # positions are line numbers in the file as read (duplicates shift them): map back by content
    by_reason = sorted(r["reason"] for r in records)
    assert by_reason == sorted(expected.values())
    for r in records:
        assert r["source"] == str(src) and isinstance(r["position"], int) and r["message"]
    everything = dead.read_bytes() + res.stderr + res.stdout + (out.read_bytes() if out.exists() else b"")
    assert SECRET.encode() not in everything
    assert SECRET[:14].encode() not in everything
    assert b"replay summary" in res.stderr


def test_stdin_and_plain_files_give_the_same_alerts(tmp_path: Path) -> None:
    data = b"\n".join(to_lines(background(days=0.5, seed=2))) + b"\n"
    (tmp_path / "a.jsonl").write_bytes(data)
    r1 = sentinel("replay", "--out", str(tmp_path / "o1"), "--dead-letter", str(tmp_path / "d1"),
                  "--summary-json", str(tmp_path / "s1"), str(tmp_path / "a.jsonl"))
    r2 = sentinel("replay", "--out", str(tmp_path / "o2"), "--dead-letter", str(tmp_path / "d2"),
                  "--summary-json", str(tmp_path / "s2"), "-", stdin=data)
    assert r1.returncode == 0 and r2.returncode == 0
    assert (tmp_path / "o1").read_bytes() == (tmp_path / "o2").read_bytes()
    s1, s2 = json.loads((tmp_path / "s1").read_text()), json.loads((tmp_path / "s2").read_text())
    assert s1["accepted"] == s2["accepted"] > 0


def test_unreadable_input_or_rules_exit_nonzero_with_a_message(tmp_path: Path) -> None:
    res = sentinel("replay", str(tmp_path / "missing.jsonl"))
    assert res.returncode == 2 and b"no such file" in res.stderr
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "tenants.yaml").write_text("default_timezone: Nowhere/Land\n")
    (tmp_path / "x.jsonl").write_bytes(b"")
    res = sentinel("replay", "--rules", str(tmp_path / "rules"), str(tmp_path / "x.jsonl"))
    assert res.returncode == 2 and b"tenants.yaml:1: default_timezone" in res.stderr
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8bnot really gzip")
    res = sentinel("replay", "--dead-letter", str(tmp_path / "d"), str(tmp_path / "bad.gz"))
    assert res.returncode == 2 and b"bad.gz" in res.stderr


def test_oversized_lines_are_rejected_without_reading_them_whole(tmp_path: Path) -> None:
    good = list(to_lines(background(days=0.2, seed=3)))
    huge = b'{"event_id": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    (tmp_path / "in.jsonl").write_bytes(b"\n".join([*good[:10], huge, *good[10:]]) + b"\n")
    res = sentinel("replay", "--dead-letter", str(tmp_path / "dead.jsonl"), "--summary-json",
                   str(tmp_path / "s.json"), "--out", str(tmp_path / "o.jsonl"), str(tmp_path / "in.jsonl"))
    assert res.returncode == 0, res.stderr.decode()
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["rejected_by_reason"] == {"line_too_long": 1} and s["accepted"] == len(good)
    rec = json.loads((tmp_path / "dead.jsonl").read_text())
    assert rec["position"] == 11 and rec["raw_bytes"] <= 64 * 1024 + 1


def test_unknown_models_are_priced_at_fallback_and_reported(tmp_path: Path) -> None:
    events = background(days=0.1, seed=6)
    for ev in events[::10]:
        ev.model = "mystery-model-9000"
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(to_lines(events)) + b"\n")
    res = sentinel("replay", "--rules", str(REPO / "rules"), "--out", str(tmp_path / "o"), "--dead-letter",
                   str(tmp_path / "d"), "--summary-json", str(tmp_path / "s.json"), str(tmp_path / "in.jsonl"))
    assert res.returncode == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["unknown_models"] == {"mystery-model-9000": len(events[::10])}
    assert b"mystery-model-9000" in res.stderr and b"fallback price" in res.stderr
