"""Syslog CEF over TCP (RFC 5424, octet counting) into a real rsyslog; escaping checked as received."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest

from sentinel.alerting.notify import Notification
from sentinel.sinks.syslog_cef import SyslogCefSink
from tests.receivers.alerts import make_alert

pytestmark = pytest.mark.syslog

_EXT_KEY = re.compile(r"(?:^| )([A-Za-z0-9]+)=")


def split_header(cef: str) -> list[str]:
    """Split a CEF header on unescaped pipes (unescaping ``\\|``, ``\\\\``); the extension stays raw."""
    out, cur, i = [], "", 0
    while i < len(cef):
        if len(out) == 7:  # the extension keeps its own escaping
            return [*out, cef[i:]]
        c = cef[i]
        if c == "\\" and i + 1 < len(cef):
            cur += cef[i + 1]
            i += 2
            continue
        if c == "|":
            out.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    out.append(cur)
    return out


def parse_extension(ext: str) -> dict[str, str]:
    """Keys start at an unescaped ``key=``; values are unescaped (``\\=``, ``\\\\``, ``\\n``, ``\\r``)."""
    fields: dict[str, str] = {}
    starts = [m for m in _EXT_KEY.finditer(ext) if not _escaped(ext, m.start(1) + len(m.group(1)))]
    for k, m in enumerate(starts):
        end = starts[k + 1].start() if k + 1 < len(starts) else len(ext)
        raw = ext[m.end():end]
        fields[m.group(1)] = re.sub(r"\\(.)", lambda x: {"n": "\n", "r": "\r"}.get(x.group(1), x.group(1)), raw)
    return fields


def _escaped(s: str, i: int) -> bool:
    n = 0
    while i - 1 - n >= 0 and s[i - 1 - n] == "\\":
        n += 1
    return n % 2 == 1


def wait_lines(path: Path, marker: str, count: int, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if marker in ln]
        if len(lines) >= count:
            return lines
        time.sleep(0.02)
    return lines


def test_cef_escaping_survives_rsyslog(syslog_endpoint: tuple[str, int, Path]) -> None:
    host, port, received = syslog_endpoint
    marker = uuid.uuid4().hex[:10]
    title = f"spike {marker} a|b\\c=d\nsecond line"
    summary = f"ratio=12x | path C:\\keys\\{marker}\r\nnext=line"
    tricky = make_alert(1, title=title, summary=summary, tenant="t|pipe=eq")
    plain = make_alert(2, title=f"plain {marker}", severity="critical", status="resolved", version=3)
    sink = SyslogCefSink(host, port, hostname="sentinel-test")
    sink.send([Notification(alert=tricky, sink="syslog_cef", reason="new", group_key="tenant:t|pipe=eq"),
               Notification(alert=plain, sink="syslog_cef", reason="resolved", group_key="tenant:t_alpha")])
    sink.close()
    lines = wait_lines(received, marker, 2)
    assert len(lines) == 2, lines  # every newline inside was escaped: one record, one line
    first = lines[0]
    m = re.match(r"^<(\d+)>1 (\S+) sentinel-test sentinel \d+ spend_spike - (CEF:0\|.*)$", first)
    assert m, first
    assert int(m.group(1)) == 10 * 8 + 3  # authpriv, high -> err
    head = split_header(m.group(3))
    assert head[:7] == ["CEF:0", "sentinel", "sentinel", head[3], "spend_spike:spend_spike",
                        f"spike {marker} a|b\\c=d second line", "8"]
    assert "a\\|b\\\\c=d second line" in first  # header escapes as received
    ext = parse_extension(head[7])
    assert ext["msg"] == summary.replace("\r\n", "\n")
    assert ext["cs1"] == "t|pipe=eq" and ext["cs1Label"] == "tenant"
    assert "t|pipe\\=eq" in first and "C:\\\\keys\\\\" in first and "\\nnext\\=line" in first
    assert ext["externalId"] == tricky.alert_id and ext["cfp1"] == "0.95"
    second = lines[1]
    assert "|10|" in second and "outcome=resolved" in second and "act=resolved" in second
    assert second.startswith(f"<{10 * 8 + 2}>1 ")
