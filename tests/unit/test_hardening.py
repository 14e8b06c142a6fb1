"""Hostile input: bombs, garbage, huge lines, absurd timestamps. Rejected with a reason, memory flat.

Also runs the atheris fuzz targets for a bounded time (no crash allowed).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.synth import T0, Factory, background, to_lines

REPO = Path(__file__).resolve().parents[2]


def replay_peak(tmp: Path, src: Path) -> tuple[dict, int]:
    """Run `sentinel replay` in a child process; return its summary and its own peak RSS in KiB.

    The peak is VmHWM of the child's own address space: ru_maxrss would also count the
    parent's RSS at fork time (Linux keeps it across exec).
    """
    summary = tmp / f"{src.name}.summary.json"
    code = (
        "import sys; from sentinel.cli import main; "
        f"rc = main(['replay', '--out', {str(tmp / 'alerts.jsonl')!r}, '--dead-letter', "
        f"{str(tmp / (src.name + '.dead.jsonl'))!r}, '--summary-json', {str(summary)!r}, '--no-progress', "
        f"{str(src)!r}]); "
        "print([ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0]); sys.exit(rc)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(summary.read_text()), int(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> int:
    tmp = tmp_path_factory.mktemp("base")
    src = tmp / "normal.jsonl"
    src.write_bytes(b"\n".join(to_lines(background(days=0.3, seed=5))) + b"\n")
    _, peak = replay_peak(tmp, src)
    return peak


def test_gzip_bomb_costs_time_not_memory(tmp_path: Path, baseline: int) -> None:
    src = tmp_path / "bomb.jsonl.gz"
    zeros = b"\0" * (1 << 20)
    with gzip.GzipFile(src, "wb", compresslevel=9, mtime=0) as fh:
        for _ in range(300):  # 300 MiB of NUL bytes without a newline, ~300 KiB compressed
            fh.write(zeros)
        fh.write(b"\n" + b"\n".join(to_lines(background(days=0.05, seed=1))) + b"\n")
    assert src.stat().st_size < 2 * 1024 * 1024
    summary, peak = replay_peak(tmp_path, src)
    assert summary["rejected_by_reason"] == {"line_too_long": 1}
    assert summary["accepted"] > 0
    assert peak - baseline < 60 * 1024, f"peak RSS grew by {(peak - baseline) / 1024:.0f} MiB"


def test_ten_megabyte_lines_and_binary_garbage(tmp_path: Path, baseline: int) -> None:
    rng = random.Random(4)
    good = list(to_lines(background(days=0.1, seed=8)))
    lines = list(good)
    for _ in range(5):
        lines.insert(rng.randrange(len(lines)), b'{"event_id":"' + b"A" * (10 * 1024 * 1024) + b'"}')
    for _k in range(200):
        garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))).replace(b"\n", b"")
        lines.insert(rng.randrange(len(lines)), garbage or b"\x00")
    src = tmp_path / "hostile.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    summary, peak = replay_peak(tmp_path, src)
    assert summary["rejected_by_reason"].get("line_too_long") == 5
    assert summary["accepted"] == len(good)
    assert summary["accepted"] + summary["rejected"] + summary["duplicates"] + summary["blank"] == len(lines)
    assert peak - baseline < 60 * 1024, f"peak RSS grew by {(peak - baseline) / 1024:.0f} MiB"
    dead = [json.loads(x) for x in (tmp_path / "hostile.jsonl.dead.jsonl").read_text().splitlines()]
    assert len(dead) == summary["rejected"] and all(d["reason"] for d in dead)
    assert max(len(d["raw"]) for d in dead) <= 4 * 64 * 1024  # raw kept bounded (escaped bytes)


def test_absurd_timestamps_rejected_with_reason(tmp_path: Path) -> None:
    f = Factory("ts")
    evs = [f.event(T0 + i) for i in range(200)]
    lines = list(to_lines(evs))
    lines.insert(50, json.dumps({**json.loads(lines[0]), "event_id": "far-future", "ts": T0 + 400 * 86400}).encode())
    lines.insert(80, json.dumps({**json.loads(lines[0]), "event_id": "far-past", "ts": T0 - 400 * 86400}).encode())
    lines.insert(90, json.dumps({**json.loads(lines[0]), "event_id": "y2200", "ts": "2200-01-01T00:00:00Z"}).encode())
    lines.insert(95, json.dumps({**json.loads(lines[0]), "event_id": "neg", "ts": -5}).encode())
    src = tmp_path / "ts.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    summary, _ = replay_peak(tmp_path, src)
    assert summary["rejected_by_reason"] == {"ts_in_future": 1, "ts_too_old": 1, "ts_out_of_range": 2}
    assert summary["accepted"] == 200


@pytest.mark.parametrize("target", ["fuzz_events.py", "fuzz_rules.py"])
def test_bounded_fuzz_run_finds_no_crash(tmp_path: Path, target: str) -> None:
    pytest.importorskip("atheris", reason="atheris is a dev dependency; `make install` installs it")
    seconds = os.environ.get("SENTINEL_FUZZ_SECONDS", "8")
    res = subprocess.run(
        [sys.executable, str(REPO / "tests" / "fuzz" / target), f"-max_total_time={seconds}", "-seed=1",
         f"-artifact_prefix={tmp_path}/", "-rss_limit_mb=1024"],
        capture_output=True, text=True, cwd=REPO, timeout=int(seconds) + 120,
    )
    crashes = list(tmp_path.glob("crash-*")) + list(tmp_path.glob("leak-*")) + list(tmp_path.glob("oom-*"))
    assert res.returncode == 0 and not crashes, res.stderr[-3000:]
    assert "Done" in res.stderr
