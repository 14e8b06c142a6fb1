"""Syslog CEF sink: ArcSight Common Event Format in RFC 5424 messages, octet-counted over TCP (optional TLS).

Framing is RFC 6587 octet counting (``MSG-LEN SP SYSLOG-MSG``), the framing
RFC 5425 mandates for TLS; the length counts UTF-8 bytes. The syslog message
is ``<PRI>1 TIMESTAMP HOST sentinel PROCID MSGID - CEF:0|...``, MSGID the
detector. CEF escaping (CEF implementation standard, "Character encoding"):

* header fields: ``\\`` -> ``\\\\`` and ``|`` -> ``\\|``; a header cannot hold
  a line break, so CR/LF become spaces;
* extension values: ``\\`` -> ``\\\\``, ``=`` -> ``\\=``, LF -> ``\\n``, CR -> ``\\r``
  (a ``|`` needs no escape there).

>>> cef_header("a|b\\\\c\\nd")
'a\\\\|b\\\\\\\\c d'
>>> cef_value("x=1\\\\2\\nthree|four")
'x\\\\=1\\\\\\\\2\\\\nthree|four'

Syslog over TCP has no acknowledgement: a peer that closed its side is
detected before each send (a zero-byte peek), and the connection is
re-opened, so a receiver restart loses nothing that was sent after it.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
from datetime import UTC, datetime
from pathlib import Path

from sentinel import __version__
from sentinel.alerting.notify import DeliveryError, Notification
from sentinel.sinks._http import tls_context
from sentinel.sinks.ocsf import epoch_ms

CEF_SEVERITY = {"info": 1, "low": 3, "medium": 5, "high": 8, "critical": 10}
SYSLOG_SEVERITY = {"info": 6, "low": 5, "medium": 4, "high": 3, "critical": 2}


def cef_header(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def cef_value(value: str) -> str:
    return (value.replace("\\", "\\\\").replace("=", "\\=").replace("\r\n", "\\n")
            .replace("\n", "\\n").replace("\r", "\\r"))


def _printascii(value: str, limit: int) -> str:
    out = "".join(c if 33 <= ord(c) <= 126 else "_" for c in value)[:limit]
    return out or "-"


def cef_message(n: Notification) -> str:
    a = n.alert
    ext: list[tuple[str, str]] = [
        ("rt", str(epoch_ms(a.detected_at))),
        ("start", str(epoch_ms(a.first_seen or a.detected_at))),
        ("externalId", f"{a.alert_id}"),
        ("cat", a.detector),
        ("act", n.reason),
        ("outcome", a.status),
        ("msg", a.summary or a.title),
        ("cs1Label", "tenant"), ("cs1", a.tenant_id),
        ("cs2Label", "api_key_id"), ("cs2", a.api_key_id or ""),
        ("cs3Label", "entity"), ("cs3", f"{a.entity.type}:{a.entity.id}"),
        ("cs4Label", "signals"), ("cs4", ",".join(f"{k}:{v:g}" for k, v in sorted(a.signals.items()))),
        ("cs5Label", "rule"), ("cs5", a.rule),
        ("cs6Label", "inhibited_by"), ("cs6", n.inhibited_by or ""),
        ("cn1Label", "version"), ("cn1", str(a.version)),
        ("cfp1Label", "score"), ("cfp1", f"{a.score:g}"),
        ("cfp2Label", "risk_usd_per_hour"), ("cfp2", f"{a.risk_usd_per_hour:g}"),
    ]
    extension = " ".join(f"{k}={cef_value(v)}" for k, v in ext if v != "")
    header = "|".join(cef_header(x) for x in (
        "sentinel", "sentinel", __version__, f"{a.detector}:{a.rule}", a.title, str(CEF_SEVERITY[a.severity])))
    return f"CEF:0|{header}|{extension}"


def syslog_frame(n: Notification, hostname: str, facility: int = 10, now: datetime | None = None,
                 procid: str | None = None) -> bytes:
    """One octet-counted RFC 5424 frame carrying the CEF message."""
    pri = facility * 8 + SYSLOG_SEVERITY[n.alert.severity]
    ts = (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    msgid = _printascii(n.alert.detector, 32)
    line = (f"<{pri}>1 {ts} {_printascii(hostname, 255)} sentinel {procid or os.getpid()} {msgid} - "
            f"{cef_message(n)}")
    data = line.encode("utf-8")
    return str(len(data)).encode() + b" " + data


class SyslogCefSink:
    name = "syslog_cef"
    record = True
    supports_resolve = True
    max_batch = 200

    def __init__(self, host: str, port: int, *, tls: bool = False, verify_tls: bool = True,
                 ca_file: Path | str | None = None, facility: int = 10, timeout: float = 5.0,
                 hostname: str | None = None) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self._ctx: ssl.SSLContext | None = tls_context(verify_tls, ca_file) if tls else None
        self.facility = facility
        self.timeout = timeout
        self.hostname = hostname or socket.gethostname()
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self._sock is not None and self._peer_closed(self._sock):
            self.close()
        if self._sock is None:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
                if self._ctx is not None:
                    sock = self._ctx.wrap_socket(sock, server_hostname=self.host)
            except ssl.SSLCertVerificationError as err:
                raise DeliveryError(f"syslog TLS verification failed: {err.verify_message}") from None
            except OSError as err:
                raise DeliveryError(f"syslog connect failed: {type(err).__name__}: {err.strerror or ''}") from None
            self._sock = sock
        return self._sock

    @staticmethod
    def _peer_closed(sock: socket.socket) -> bool:
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            if isinstance(sock, ssl.SSLSocket):
                return sock.pending() == 0 and sock.recv(1) == b""
            return sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def send(self, batch: list[Notification]) -> None:
        sock = self._connect()
        data = b"".join(syslog_frame(n, self.hostname, self.facility) for n in batch)
        try:
            sock.sendall(data)
        except OSError as err:
            self.close()
            raise DeliveryError(f"syslog send failed: {type(err).__name__}") from None

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
