"""JSON-lines files for alerts and dead letters.

The alert file is the canonical output of ``sentinel replay``: one alert
version per line, canonical JSON (see :func:`sentinel.alerts.encode_alert`),
so two runs over the same events and rules give byte-identical files.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO

import msgspec

from sentinel.alerts import Alert, encode_alert
from sentinel.pipeline import DeadLetter


class JsonlAlertSink:
    """Appends alerts to a file (``-`` = standard output)."""

    name = "jsonl"

    def __init__(self, path: str | Path, append: bool = False) -> None:
        self.path = str(path)
        self.append = append
        self._fh: IO[bytes] | None = None
        self.written = 0

    def _open(self) -> IO[bytes]:
        if self._fh is None:
            if self.path == "-":
                self._fh = sys.stdout.buffer
            else:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "ab" if self.append else "wb")  # noqa: SIM115 - kept open for the run
        return self._fh

    def write(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        fh = self._open()
        fh.write(b"".join(encode_alert(a) + b"\n" for a in alerts))
        self.written += len(alerts)

    def flush(self) -> None:
        # Opening here creates the output file even when a run raised no alert.
        self._open().flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            if self._fh is not sys.stdout.buffer:
                self._fh.close()
            self._fh = None


class JsonlDeadLetterSink:
    """Dead-letter file: one JSON object per rejected line (reason, position, redacted raw).

    The file is created on the first rejected line only.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh: IO[bytes] | None = None
        self.written = 0
        self._enc = msgspec.json.Encoder()

    def write(self, dead: list[DeadLetter]) -> None:
        if not dead:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("ab")
        self._fh.write(b"".join(self._enc.encode(d) + b"\n" for d in dead))
        self.written += len(dead)

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
