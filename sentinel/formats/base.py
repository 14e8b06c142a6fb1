"""The adapter contract and the small helpers every adapter shares.

An adapter turns one raw input record (bytes: a line of a replay file, a
Kafka message value, or one HTTP body) into zero or more usage-v1 JSON lines,
or into one :class:`~sentinel.decoding.Rejection`. It only *maps*: checking
the result against the contract is the decoder's job, downstream, on the one
pipeline path every event takes. A record that holds nothing to account for
(a non-GenAI span, a LiteLLM cache hit) maps to no line at all, which is not an
error.

Inside an adapter, problems are raised as :class:`FormatError` and turned into
a rejection at the edge (:class:`MappingAdapter`), so the mapping code reads straight.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Protocol

import msgspec

from sentinel.decoding import Rejection
from sentinel.formats.mapping import FieldMapping
from sentinel.redact import excerpt

_json_decode: Final = msgspec.json.Decoder().decode
_json_encode: Final = msgspec.json.Encoder().encode


class Adapter(Protocol):
    """One input format. ``identity`` adapters pass records through untouched."""

    name: ClassVar[str]
    identity: ClassVar[bool]

    def adapt(self, record: bytes) -> list[bytes] | Rejection:
        """usage-v1 JSON lines for one raw record, or why it cannot be mapped."""
        ...


class FormatError(Exception):
    """A record that cannot be mapped; becomes a :class:`Rejection` (field = upstream path)."""

    def __init__(self, code: str, field: str | None, message: str, value: object = None) -> None:
        super().__init__(message)
        self.rejection = Rejection(code, field, message, None if value is None else excerpt(value))


class MappingAdapter:
    """Base of the adapters that map a foreign record: ``map_record`` raises, ``adapt`` rejects."""

    name: ClassVar[str] = ""
    identity: ClassVar[bool] = False

    def __init__(self, mapping: FieldMapping | None = None) -> None:
        self.mapping = mapping or FieldMapping()

    def adapt(self, record: bytes) -> list[bytes] | Rejection:
        try:
            return self.map_record(record)
        except FormatError as err:
            return err.rejection

    def map_record(self, record: bytes) -> list[bytes]:  # pragma: no cover - abstract
        raise NotImplementedError


def load_json(record: bytes, what: str) -> Any:
    """Parse one JSON document; a syntax or encoding error is a FormatError naming the format."""
    try:
        return _json_decode(record)
    except msgspec.DecodeError as err:
        text = str(err)
        try:
            record.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError("invalid_utf8", None, f"{what} record is not valid UTF-8") from None
        raise FormatError("malformed_json", None, f"{what} record: {text.split(' - at ')[0]}") from None


def encode(fields: Mapping[str, object]) -> bytes:
    """A usage-v1 JSON line from mapped fields; ``None`` values are left out (contract defaults apply)."""
    return _json_encode({k: v for k, v in fields.items() if v is not None})


def obj(value: object, field: str) -> Mapping[str, Any]:
    """``value`` as a JSON object (``None`` -> empty), else a FormatError."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FormatError("wrong_type", field, "expected an object", value)
    return value


def opt_int(value: object, field: str) -> int | None:
    """A count: int, integral float, or decimal text (OTLP/JSON writes int64 as text)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise FormatError("wrong_type", field, "expected an integer", value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise FormatError("wrong_type", field, "expected an integer", value)


def opt_float(value: object, field: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise FormatError("wrong_type", field, "expected a number", value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise FormatError("wrong_type", field, "expected a number", value)


def opt_str(value: object) -> str | None:
    """Non-empty text, numbers as text; anything else is absent."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def epoch_s(value: object, field: str) -> float | None:
    """Event time in epoch seconds from epoch seconds/ms, or ISO 8601 text (naive = UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        t = float(value)
        return t / 1000.0 if t >= 1e11 else t
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise FormatError("invalid_ts", field, "not ISO 8601 time", value) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    raise FormatError("invalid_ts", field, "expected a time", value)
