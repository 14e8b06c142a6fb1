"""Replay source: JSON-lines files (plain or gzip) and standard input.

Yields batches of raw lines with their 1-based line numbers, never decoded
here. Memory stays bounded whatever the input: lines are read with a size
limit, and an over-long line is cut to ``max_line_bytes + 1`` bytes (enough for
the decoder to reject it as too long) while the rest of it is skipped in
chunks. gzip is read as a stream, so a decompression bomb costs time, not
memory.
"""

from __future__ import annotations

import gzip
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sentinel.decoding import MAX_LINE_BYTES

_SKIP_CHUNK = 1 << 20


@dataclass(frozen=True)
class LineBatch:
    source: str
    lines: list[bytes]
    positions: range


class InputError(Exception):
    """An input that cannot be read at all (missing file, not gzip ...)."""


def open_input(path: str) -> tuple[str, BinaryIO]:
    if path == "-":
        return "<stdin>", sys.stdin.buffer
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    raw = p.open("rb")
    head = raw.peek(2)[:2] if isinstance(raw, io.BufferedReader) else b""
    if head == b"\x1f\x8b" or p.suffix == ".gz":
        return str(p), gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return str(p), raw


def read_lines(stream: BinaryIO, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """Lines without their line ending; over-long lines cut to ``max_line_bytes + 1`` bytes."""
    limit = max_line_bytes + 2
    readline = stream.readline
    while True:
        line = readline(limit)
        if not line:
            return
        if line.endswith(b"\n"):
            yield line[:-2] if line.endswith(b"\r\n") else line[:-1]
            continue
        if len(line) < limit:  # last line without a newline
            yield line
            return
        while True:  # skip the rest of an over-long line
            rest = readline(_SKIP_CHUNK)
            if not rest or rest.endswith(b"\n"):
                break
        yield line[: max_line_bytes + 1]


def batches(paths: list[str], batch_size: int = 4096, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[LineBatch]:
    """Batches of lines from each input in order. Raises InputError for unreadable inputs."""
    for path in paths:
        name, stream = open_input(path)
        try:
            lines: list[bytes] = []
            first = 1
            try:
                for line in read_lines(stream, max_line_bytes):
                    lines.append(line)
                    if len(lines) >= batch_size:
                        yield LineBatch(name, lines, range(first, first + len(lines)))
                        first += len(lines)
                        lines = []
            except (OSError, EOFError, gzip.BadGzipFile) as err:
                if lines:
                    yield LineBatch(name, lines, range(first, first + len(lines)))
                raise InputError(f"{name}: {err}") from None
            if lines:
                yield LineBatch(name, lines, range(first, first + len(lines)))
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
