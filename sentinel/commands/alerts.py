"""``sentinel alerts FILE``: print an alerts JSONL file as a readable table.

One row per incident (its latest version): when, severity, detector, entity,
title, and the first evidence numbers; ``--all`` shows every version.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sentinel.alerts import Alert, decode_alert

_SEV_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("alerts", help="print an alerts JSONL file as a table")
    p.add_argument("file", help="alerts JSONL (from replay --out or the JSONL sink), - for stdin")
    p.add_argument("--all", action="store_true", help="every version, not just the latest per incident")
    p.set_defaults(func=run)


def load(path: str) -> list[Alert]:
    data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    return [decode_alert(line) for line in data.splitlines() if line.strip()]


def _evidence_brief(ev: dict[str, Any], limit: int = 3) -> str:
    parts = []
    for k, v in ev.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            continue
        if isinstance(v, float):
            v = f"{v:,.2f}"
        parts.append(f"{k}={v}")
        if len(parts) >= limit:
            break
    return " ".join(parts)


def render(alerts: list[Alert], show_all: bool = False) -> str:
    if not show_all:
        latest: dict[str, Alert] = {}
        for a in alerts:
            latest[a.alert_id] = a
        alerts = list(latest.values())
    alerts.sort(key=lambda a: a.first_seen or a.detected_at)
    lines = [f"{'first seen (UTC)':<20} {'sev':<8} {'status':<8} {'detector':<16} {'entity':<34} title"]
    for a in alerts:
        entity = f"{a.entity.type}:{a.entity.id}"
        when = (a.first_seen or a.detected_at)[:19].replace("T", " ")
        lines.append(
            f"{when:<20} {a.severity:<8} {a.status:<8} {a.detector:<16} {entity[:34]:<34} {a.title}"
        )
        brief = _evidence_brief(a.evidence)
        if brief:
            lines.append(f"{'':<20} {'':<8} {'':<8} {'':<16} {'':<34}   {brief}")
    by_det: dict[str, int] = {}
    for a in alerts:
        by_det[a.detector] = by_det.get(a.detector, 0) + 1
    lines.append("")
    lines.append(f"{len(alerts)} incident(s): " + ", ".join(f"{k} {v}" for k, v in sorted(by_det.items())))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        alerts = load(args.file)
    except OSError as err:
        print(f"sentinel alerts: {err}", file=sys.stderr)
        return 2
    print(render(alerts, args.all))
    return 0
