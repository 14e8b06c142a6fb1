"""Input formats: read what gateways and SDKs already emit, as usage-v1 events.

Most teams will not write an emitter for our schema. An *adapter* maps one raw
record of a foreign format to zero or more usage-v1 JSON lines (or a
:class:`~sentinel.decoding.Rejection`), **before** the pipeline: decoding,
validation, dead-lettering, de-duplication and the detectors stay the one
existing path, so an adapted event and the equivalent native event give the
same alerts.

========== ======================================== ==========================
name       what a record is                         module
========== ======================================== ==========================
usage-v1   our own event (default; pass-through)    :mod:`.usage_v1`
litellm    LiteLLM StandardLoggingPayload (object   :mod:`.litellm`
           or array) or a LiteLLM_SpendLogs row
otel-genai OTLP/JSON ExportTraceServiceRequest      :mod:`.otel_genai`
           with GenAI-convention spans
bedrock    Bedrock ModelInvocationLog (or a         :mod:`.bedrock`
           CloudWatch Logs subscription envelope)
========== ======================================== ==========================

Each module documents its mapping field by field. Fields a format lacks come
from :class:`~sentinel.formats.mapping.FieldMapping` (settings group
``mapping``: ``SENTINEL_MAPPING__TENANT_KEY`` ...).

Where formats are selected:

* ``sentinel replay --format NAME`` (files, stdin);
* ``sentinel run``: ``SENTINEL_KAFKA__INPUT_FORMAT`` (``KafkaSettings.input_format``)
  names the format of the consumed topic; the consumer applies
  :func:`adapt_batch` to each polled batch before ``Pipeline.feed``, passing the
  offsets as positions;
* ``sentinel ingest`` (HTTP receiver for OTLP and LiteLLM callbacks) maps with
  these adapters and produces usage-v1 events, so the daemon reads usage-v1.

A record that maps to several events gives each of them the record's position
(line number or offset); a rejected record becomes one dead letter with the
reason, the format's field path and the redacted raw record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from sentinel.decoding import Rejection
from sentinel.formats.base import Adapter, FormatError
from sentinel.formats.bedrock import Bedrock
from sentinel.formats.litellm import LiteLLM
from sentinel.formats.mapping import FieldMapping
from sentinel.formats.otel_genai import OtelGenAI
from sentinel.formats.usage_v1 import UsageV1
from sentinel.redact import redact_text

if TYPE_CHECKING:  # the pipeline is imported lazily: settings import this package
    from sentinel.pipeline import DeadLetter, PipelineStats

__all__ = [
    "DEFAULT_FORMAT",
    "FORMATS",
    "RECORD_MAX_BYTES",
    "AdaptedBatch",
    "Adapter",
    "FieldMapping",
    "FormatError",
    "adapt_batch",
    "get_format",
]

DEFAULT_FORMAT: Final = "usage-v1"
# A foreign record (an OTLP export of many spans, a LiteLLM batch) may be far larger than one event.
RECORD_MAX_BYTES: Final = 16 << 20

FORMATS: Final[dict[str, Callable[[FieldMapping | None], Adapter]]] = {
    UsageV1.name: UsageV1,
    LiteLLM.name: LiteLLM,
    OtelGenAI.name: OtelGenAI,
    Bedrock.name: Bedrock,
}
_MAX_DEAD_RAW: Final = 64 * 1024


def get_format(name: str, mapping: FieldMapping | None = None) -> Adapter:
    """The adapter for input format ``name``, using ``mapping`` for the fields the format lacks."""
    try:
        factory = FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown input format {name!r}; known: {', '.join(sorted(FORMATS))}") from None
    return factory(mapping)


@dataclass
class AdaptedBatch:
    """usage-v1 lines with their source positions, and the records that could not be mapped."""

    lines: list[bytes]
    positions: list[int]
    dead: list[DeadLetter] = field(default_factory=list)


def dead_letter(record: bytes, why: Rejection, source: str, position: int | str) -> DeadLetter:
    """A rejected record in the pipeline's dead-letter shape (raw text redacted and bounded)."""
    from sentinel.pipeline import DeadLetter

    text = record[:_MAX_DEAD_RAW].decode("utf-8", "backslashreplace")
    return DeadLetter(reason=why.code, field=why.field, message=why.message, value=why.value,
                      source=source, position=position, raw=redact_text(text), raw_bytes=len(record))


def adapt_batch(adapter: Adapter, lines: Sequence[bytes], positions: Sequence[int], source: str,
                stats: PipelineStats | None = None, max_line_bytes: int = RECORD_MAX_BYTES) -> AdaptedBatch:
    """Map a batch of raw records for ``Pipeline.feed``; rejections are counted in ``stats.rejected``.

    Blank lines pass through (the pipeline counts them). An identity adapter
    returns the batch as it is.
    """
    if adapter.identity:
        return AdaptedBatch(list(lines), list(positions))
    out: list[bytes] = []
    pos: list[int] = []
    dead: list[DeadLetter] = []
    for i, record in enumerate(lines):
        if not record.strip():
            out.append(record)
            pos.append(positions[i])
            continue
        got: list[bytes] | Rejection
        if len(record) > max_line_bytes:
            got = Rejection("line_too_long", None, f"{len(record)} bytes > {max_line_bytes}")
        else:
            got = adapter.adapt(record)
        if isinstance(got, Rejection):
            dead.append(dead_letter(record, got, source, positions[i]))
            if stats is not None:
                stats.rejected[got.code] += 1
            continue
        out.extend(got)
        pos.extend([positions[i]] * len(got))
    return AdaptedBatch(out, pos, dead)
