"""Fuzz target: raw bytes -> event decoding and the pipeline intake must never raise.

Any input splits into lines; every line must end up accepted, rejected with a
reason, or counted as blank/duplicate -- and the counts must add up.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from sentinel.decoding import EventDecoder
    from sentinel.pipeline import Pipeline, PipelineOptions
    from sentinel.rules import RuleSet

_DEC = EventDecoder(max_line_bytes=4096)
_RULES = RuleSet()


def test_one(data: bytes) -> None:
    lines = data.split(b"\n")
    events, rejected = _DEC.decode_batch(lines)
    blank = sum(1 for ln in lines if not ln.strip())
    if len(events) + len(rejected) + blank != len(lines):
        raise AssertionError(f"lost lines: {len(events)}+{len(rejected)}+{blank} != {len(lines)}")
    for _, why in rejected:
        why.render()
    pipe = Pipeline(_RULES, PipelineOptions(max_line_bytes=4096), detectors=[])
    res = pipe.feed(lines, "fuzz", range(len(lines)))
    pipe.drain()
    s = pipe.stats
    if s.accepted + s.rejected_total + s.duplicates + s.blank != len(lines):
        raise AssertionError("pipeline accounting does not add up")
    for d in res.dead:
        if not d.reason:
            raise AssertionError("dead letter without reason")


def main() -> None:
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
