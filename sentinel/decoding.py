"""Bytes to usage events: batch decoding with precise rejection reasons.

The fast path decodes a whole batch of lines with one msgspec call (the lines
joined into a JSON array), which costs far less per event than a call per
line. When the batch holds a bad line, msgspec's error names the array index
for validation errors, so only that line is decoded alone and the batch
resumes after it; a JSON syntax error (no index) splits the batch in halves
until the bad line is isolated. Every rejection carries a reason code, the
field, a human message and a redacted excerpt of the value, so that an
operator reading the dead-letter file can fix the producer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Final

import msgspec

from sentinel.events import UsageEvent
from sentinel.redact import excerpt, looks_like_secret

MAX_LINE_BYTES: Final = 64 * 1024

_AT_INDEX_RE: Final = re.compile(r" - at `\$\[(\d+)\]")
_PATH_RE: Final = re.compile(r" - at `\$(?:\[\d+\])?\.?([A-Za-z0-9_.]*)`")
_MISSING_RE: Final = re.compile(r"Object missing required field `([^`]+)`")
_RULE_RE: Final = re.compile(r"^([a-z_]+):([a-z_]+): (.*?)(?: - at `[^`]*`)?$")


class Rejection(msgspec.Struct, frozen=True):
    """Why one input line was not accepted."""

    code: str
    field: str | None
    message: str
    value: str | None = None

    def render(self) -> str:
        """One line for logs and summaries: ``code field=... (message) value=...``."""
        parts = [self.code]
        if self.field:
            parts.append(f"field={self.field}")
        parts.append(f"({self.message})")
        if self.value is not None:
            parts.append(f"value={self.value}")
        return " ".join(parts)


def _field_value(line: bytes, field: str) -> str | None:
    """Redacted excerpt of ``field``'s value in a rejected line, if it parses."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(obj, dict) or field not in obj:
        return None
    return excerpt(obj[field])


def explain_error(line: bytes, err: Exception) -> Rejection:
    """Turn a msgspec/EventRuleError message into a structured rejection."""
    text = str(err)
    if isinstance(err, msgspec.DecodeError) and not isinstance(err, msgspec.ValidationError):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return Rejection("invalid_utf8", None, "line is not valid UTF-8")
        if "UTF-8" in text:
            return Rejection("invalid_utf8", None, "line is not valid UTF-8")
        return Rejection("malformed_json", None, text.split(" - at ")[0])
    m = _RULE_RE.match(text)
    if m:
        code, field, msg = m.groups()
        value = None if code == "secret_in_api_key_id" else _field_value(line, field)
        if code == "secret_in_api_key_id":
            msg = msg + " (value withheld)"
        return Rejection(code, field, msg, value)
    m = _MISSING_RE.search(text)
    if m:
        return Rejection("missing_field", m.group(1), "required field is missing")
    pm = _PATH_RE.search(text)
    field = pm.group(1) if pm and pm.group(1) else None
    msg = text.split(" - at ")[0]
    if field is None:
        if "Expected `object`" in msg:
            return Rejection("not_an_object", None, msg)
        return Rejection("invalid_event", None, msg)
    code = "wrong_type" if ", got `" in msg else "out_of_range"
    value = _field_value(line, field.split(".")[0])
    if field == "api_key_id" and value is not None and looks_like_secret(value):
        value = None
    return Rejection(code, field, msg, value)


class EventDecoder:
    """Decodes batches of raw lines into events and rejections.

    >>> dec = EventDecoder()
    >>> ok, bad = dec.decode_batch([
    ...     b'{"event_id":"e1","ts":1793606400,"api_key_id":"k1","tenant_id":"t1",'
    ...     b'"provider":"openai","model":"gpt-4o","input_tokens":10,"output_tokens":5}',
    ...     b'{"event_id":"e2"}',
    ... ])
    >>> [e.event_id for e in ok], [(i, r.code, r.field) for i, r in bad]
    (['e1'], [(1, 'missing_field', 'ts')])
    """

    __slots__ = ("_many", "_one", "max_line_bytes")

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self._one = msgspec.json.Decoder(UsageEvent)
        self._many = msgspec.json.Decoder(list[UsageEvent])

    def decode_one(self, line: bytes) -> UsageEvent | Rejection:
        if len(line) > self.max_line_bytes:
            return Rejection("line_too_long", None, f"{len(line)} bytes > {self.max_line_bytes}")
        try:
            return self._one.decode(line)
        except (msgspec.DecodeError, ValueError) as err:
            return explain_error(line, err)

    def decode_batch(self, lines: Sequence[bytes]) -> tuple[list[UsageEvent], list[tuple[int, Rejection]]]:
        """Decode ``lines``; return the events in order and ``(index, reason)`` of the rest.

        Blank lines are neither: callers count them separately (see ``is_blank``).
        """
        limit = self.max_line_bytes
        n = len(lines)
        if n > 1:
            # Fast path: no empty or over-long line (C-level min/max, no per-line Python loop) and
            # the whole batch decodes. Anything else -- a bad or whitespace-only line included --
            # takes the careful path below, which starts over.
            sizes = list(map(len, lines))
            if min(sizes) > 0 and max(sizes) <= limit:
                try:
                    batch = self._many.decode(b"[" + b",".join(lines) + b"]")
                except (msgspec.DecodeError, ValueError):
                    pass
                else:
                    if len(batch) == n:
                        return batch, []
        events: list[UsageEvent] = []
        rejected: list[tuple[int, Rejection]] = []
        start = 0
        for i in range(n):
            ln = lines[i]
            if len(ln) > limit or not ln.strip():
                self._decode_run(lines, start, i, events, rejected)
                if ln.strip():
                    rejected.append((i, Rejection("line_too_long", None, f"{len(ln)} bytes > {limit}")))
                start = i + 1
        self._decode_run(lines, start, n, events, rejected)
        return events, rejected

    def _decode_run(
        self,
        lines: Sequence[bytes],
        lo: int,
        hi: int,
        events: list[UsageEvent],
        rejected: list[tuple[int, Rejection]],
    ) -> None:
        while lo < hi:
            if hi - lo == 1:
                got = self.decode_one(lines[lo])
                if isinstance(got, Rejection):
                    rejected.append((lo, got))
                else:
                    events.append(got)
                return
            try:
                batch = self._many.decode(b"[" + b",".join(lines[lo:hi]) + b"]")
            except msgspec.ValidationError as err:
                m = _AT_INDEX_RE.search(str(err))
                if m is None:
                    self._bisect(lines, lo, hi, events, rejected)
                    return
                bad = lo + int(m.group(1))
                self._decode_run(lines, lo, bad, events, rejected)
                got = self.decode_one(lines[bad])
                if isinstance(got, Rejection):
                    rejected.append((bad, got))
                else:  # pragma: no cover - the index came from msgspec, kept for safety
                    events.append(got)
                lo = bad + 1
                continue
            except (msgspec.DecodeError, ValueError):
                self._bisect(lines, lo, hi, events, rejected)
                return
            if len(batch) != hi - lo:
                # A line held more than one JSON value ("{...},{...}"): find it line by line.
                self._bisect(lines, lo, hi, events, rejected)
                return
            events.extend(batch)
            return

    def _bisect(
        self,
        lines: Sequence[bytes],
        lo: int,
        hi: int,
        events: list[UsageEvent],
        rejected: list[tuple[int, Rejection]],
    ) -> None:
        if hi - lo <= 4:
            for i in range(lo, hi):
                got = self.decode_one(lines[i])
                if isinstance(got, Rejection):
                    rejected.append((i, got))
                else:
                    events.append(got)
            return
        mid = (lo + hi) // 2
        self._decode_run(lines, lo, mid, events, rejected)
        self._decode_run(lines, mid, hi, events, rejected)


def is_blank(line: bytes) -> bool:
    return not line.strip()
