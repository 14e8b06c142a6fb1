"""Bytes to usage events: batch decoding with precise rejection reasons.

The fast path decodes a chunk of up to :data:`DECODE_CHUNK` lines with one
msgspec call (the lines joined into a JSON array), which costs far less per
event than a call per line. When the chunk holds a bad line, msgspec's error
names the array index for validation errors, so only that line is decoded alone
and the chunk resumes after it; a JSON syntax error (no index) splits the chunk
in halves until the bad line is isolated. Every rejection carries a reason code, the
field, a human message and a redacted excerpt of the value, so that an
operator reading the dead-letter file can fix the producer.

msgspec only checks types and constraints (and parses RFC 3339 ``ts`` in C);
the contract's other rules (:func:`sentinel.events.finish_event`) run in one
loop over each decoded batch (:func:`finish_batch`), not as a per-object
``__post_init__`` callback. A line msgspec rejects is decoded again with ``ts``
as text (:data:`~sentinel.events.UsageEventText`), which decides it exactly as
when ``ts`` was always text: accepted (an ISO 8601 spelling outside RFC 3339),
or rejected with the same reason and message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from sentinel.events import (
    CLEAN_KEY_IDS,
    SCHEMA_V1,
    TS_MAX,
    TS_MIN,
    EventRuleError,
    UsageEvent,
    UsageEventText,
    finish_event,
    from_text,
)
from sentinel.redact import excerpt, looks_like_secret

MAX_LINE_BYTES: Final = 64 * 1024
# Lines per msgspec call. A call's events are checked by finish_batch right after it, while they
# are still in the CPU cache; the events of a 4,096-line batch (~6 MB with their strings) are not:
# decoding such a batch in chunks of 256 lines measured ~1.2x the events/s of one call.
DECODE_CHUNK: Final = 256

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

    __slots__ = ("_many", "_many_text", "_one", "_one_text", "max_line_bytes")

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self._one = msgspec.json.Decoder(UsageEvent)
        self._many = msgspec.json.Decoder(list[UsageEvent])
        self._one_text = msgspec.json.Decoder(UsageEventText)
        self._many_text = msgspec.json.Decoder(list[UsageEventText])  # type: ignore[valid-type]  # a runtime-built Struct

    def decode_one(self, line: bytes) -> UsageEvent | Rejection:
        if len(line) > self.max_line_bytes:
            return Rejection("line_too_long", None, f"{len(line)} bytes > {self.max_line_bytes}")
        try:
            event = self._one.decode(line)
        except (msgspec.DecodeError, ValueError):
            return self._decode_text(line)
        try:
            return finish_event(event)
        except EventRuleError as err:
            return explain_error(line, err)

    def _decode_text(self, line: bytes) -> UsageEvent | Rejection:
        """The second opinion on a line UsageEvent does not take: ``ts`` decoded as text."""
        try:
            raw = self._one_text.decode(line)
        except (msgspec.DecodeError, ValueError) as err:
            return explain_error(line, err)
        try:
            return finish_event(from_text(raw))
        except EventRuleError as err:
            return explain_error(line, err)

    def decode_batch(self, lines: Sequence[bytes]) -> tuple[list[UsageEvent], list[tuple[int, Rejection]]]:
        """Decode ``lines``; return the events in order and ``(index, reason)`` of the rest.

        Blank lines are neither: callers count them separately (see ``is_blank``).
        """
        events: list[UsageEvent] = []
        rejected: list[tuple[int, Rejection]] = []
        n = len(lines)
        for lo in range(0, n, DECODE_CHUNK):
            self._decode_chunk(lines, lo, min(n, lo + DECODE_CHUNK), events, rejected)
        return events, rejected

    def _decode_chunk(self, lines: Sequence[bytes], lo: int, hi: int, events: list[UsageEvent],
                      rejected: list[tuple[int, Rejection]]) -> None:
        limit = self.max_line_bytes
        if hi - lo > 1:
            # Fast path: no empty or over-long line (C-level min/max, no per-line Python loop) and
            # the whole chunk decodes. Anything else -- a bad or whitespace-only line included --
            # takes the careful path below, which starts the chunk over.
            chunk = lines[lo:hi]
            sizes = list(map(len, chunk))
            if min(sizes) > 0 and max(sizes) <= limit:
                try:
                    batch = self._many.decode(json_array(chunk))
                except (msgspec.DecodeError, ValueError):
                    pass
                else:
                    if len(batch) == hi - lo:
                        _finish_into(batch, lines, lo, events, rejected)
                        return
        start = lo
        for i in range(lo, hi):
            ln = lines[i]
            if len(ln) > limit or not ln.strip():
                self._decode_run(lines, start, i, events, rejected)
                if ln.strip():
                    rejected.append((i, Rejection("line_too_long", None, f"{len(ln)} bytes > {limit}")))
                start = i + 1
        self._decode_run(lines, start, hi, events, rejected)

    def _decode_run(
        self,
        lines: Sequence[bytes],
        lo: int,
        hi: int,
        events: list[UsageEvent],
        rejected: list[tuple[int, Rejection]],
        text: bool = False,
    ) -> None:
        """Decode ``lines[lo:hi]`` (no blank or over-long line) into ``events`` and ``rejected``.

        ``text``: decode with ``ts`` as text. A run switches to it after a line that only the
        text decoder accepts (an ISO 8601 ``ts`` outside RFC 3339): a producer that writes all its
        times that way must not cost a re-decode of the rest of the batch per line.
        """
        while lo < hi:
            if hi - lo == 1:
                got = self.decode_one(lines[lo])
                if isinstance(got, Rejection):
                    rejected.append((lo, got))
                else:
                    events.append(got)
                return
            many = self._many_text if text else self._many
            try:
                batch: list[Any] = many.decode(json_array(lines[lo:hi]))
            except msgspec.ValidationError as err:
                m = _AT_INDEX_RE.search(str(err))
                if m is None:
                    self._bisect(lines, lo, hi, events, rejected, text)
                    return
                bad = lo + int(m.group(1))
                self._decode_run(lines, lo, bad, events, rejected, text)
                got = self.decode_one(lines[bad])
                if isinstance(got, Rejection):
                    rejected.append((bad, got))
                else:
                    events.append(got)
                    text = True
                lo = bad + 1
                continue
            except (msgspec.DecodeError, ValueError):
                self._bisect(lines, lo, hi, events, rejected, text)
                return
            if len(batch) != hi - lo:
                # A line held more than one JSON value ("{...},{...}"): find it line by line.
                self._bisect(lines, lo, hi, events, rejected, text)
                return
            if text:
                for j, raw in enumerate(batch, lo):
                    try:
                        events.append(finish_event(from_text(raw)))
                    except EventRuleError as err:
                        rejected.append((j, explain_error(lines[j], err)))
                return
            _finish_into(batch, lines, lo, events, rejected)
            return

    def _bisect(
        self,
        lines: Sequence[bytes],
        lo: int,
        hi: int,
        events: list[UsageEvent],
        rejected: list[tuple[int, Rejection]],
        text: bool,
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
        self._decode_run(lines, lo, mid, events, rejected, text)
        self._decode_run(lines, mid, hi, events, rejected, text)


def json_array(lines: Sequence[bytes]) -> bytes:
    """``[line,line,...]`` for one msgspec call, copying the lines once (at least two lines).

    ``b"[" + b",".join(lines) + b"]"`` would copy them three times.
    """
    return b",".join([b"[" + lines[0], *lines[1:-1], lines[-1] + b"]"])


def finish_batch(batch: list[UsageEvent]) -> list[tuple[int, EventRuleError]]:
    """:func:`~sentinel.events.finish_event` over a decoded batch: ``(index, error)`` of the events
    that break a rule (the others are finished, ``ts`` in epoch seconds).

    The common event -- ``ts`` an aware datetime or epoch seconds within range, cached input
    within input, no ``schema`` or v1, an ``api_key_id`` already checked -- is passed inline, without
    a function call per event; any other goes through ``finish_event`` itself, so each rule and
    its message live in one place.
    """
    broken: list[tuple[int, EventRuleError]] = []
    clean = CLEAN_KEY_IDS
    i = -1
    for ev in batch:
        i += 1
        ts = ev.ts
        t = ts if ts.__class__ is float else ts.timestamp()  # type: ignore[union-attr]
        if (TS_MIN <= t < TS_MAX and ev.cached_input_tokens <= ev.input_tokens
                and ((schema := ev.schema) is None or schema == SCHEMA_V1) and ev.api_key_id in clean):
            ev.ts = t
            continue
        try:
            finish_event(ev)
        except EventRuleError as err:
            broken.append((i, err))
    return broken


def _finish_into(batch: list[UsageEvent], lines: Sequence[bytes], lo: int, events: list[UsageEvent],
                 rejected: list[tuple[int, Rejection]]) -> None:
    """:func:`finish_batch` over ``batch`` (decoded from ``lines[lo:]``); its events to ``events``
    and those that break a rule to ``rejected``, in order."""
    broken = finish_batch(batch)
    if not broken:
        events += batch
        return
    prev = 0
    for i, err in broken:
        events += batch[prev:i]
        rejected.append((lo + i, explain_error(lines[lo + i], err)))
        prev = i + 1
    events += batch[prev:]


def is_blank(line: bytes) -> bool:
    return not line.strip()
