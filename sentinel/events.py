"""The usage event: one LLM provider attempt, as the gateway reports it.

`UsageEvent` implements ``shared/contracts/usage-event.v1.schema.json`` as a
msgspec Struct so that the hot path decodes straight into typed, slotted
objects without building dicts. Normalisation that the schema allows several
spellings for, and the rules msgspec's type checks cannot express, are done by
:func:`finish_event` (the batch decoder in :mod:`sentinel.decoding` runs an
inlined copy of it over each decoded batch):

* ``ts`` arrives as RFC 3339 text with an offset, epoch seconds or epoch
  milliseconds (a number >= 1e11 is milliseconds); after decoding it is always
  a float of epoch seconds. msgspec parses RFC 3339 text into an aware
  ``datetime`` in C; text it does not take (other ISO 8601 spellings that
  ``datetime.fromisoformat`` reads, naive times, garbage) is decoded again with
  ``ts`` as text (:data:`UsageEventText`) and judged by :func:`parse_ts`, so
  such lines are accepted or rejected with the same reasons as always. Two
  things differ from ``fromisoformat`` alone, both within RFC 3339: a lower-case
  ``t``/``z`` is accepted (RFC 3339 section 5.6 allows it), and digits past the
  microsecond are rounded, not truncated.
* ``api_key_id`` must be an identifier. A value that looks like the secret
  itself (``sk-...``, ``AKIA...``) is rejected, and the value never reaches a log,
  alert or dead-letter record in clear (see :mod:`sentinel.redact`).

The checks are not a ``__post_init__``: msgspec calling back into Python for
every decoded object cost ~0.4 us per event more than one loop over the decoded
batch. Code that builds a ``UsageEvent`` directly (tests, tools) passes it
through :func:`finish_event`.

Decoding a batch of lines, and turning msgspec's errors into precise reasons,
lives in :mod:`sentinel.decoding`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

import msgspec

from sentinel.redact import looks_like_secret

SCHEMA_V1: Final = "llm.usage.v1"

# Epoch numbers at or above this are milliseconds (schema: "seconds if < 1e11").
_MS_THRESHOLD: Final = 1e11
# Sanity range for event time: 2000-01-01 .. 2100-01-01 UTC. Relative checks
# (too far ahead of the stream) are the pipeline's job.
TS_MIN: Final = 946684800.0
TS_MAX: Final = 4102444800.0

# api_key_ids already checked for secret patterns (a bounded memo: the check is a regex scan).
# The batch decoder reads it too, to pass the common event without a call to finish_event.
CLEAN_KEY_IDS: dict[str, None] = {}
_CLEAN_KEY_IDS_MAX: Final = 200_000

Id128 = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
OptStr128 = Annotated[str, msgspec.Meta(max_length=128)] | None
Tokens = Annotated[int, msgspec.Meta(ge=0)]


class EventRuleError(ValueError):
    """A rule of the contract that msgspec's type checks cannot express.

    The message is ``"<code>:<field>: <text>"`` so that the decoder can turn it
    back into a structured rejection.
    """

    def __init__(self, code: str, field: str, text: str) -> None:
        super().__init__(f"{code}:{field}: {text}")


def parse_ts(value: datetime | str | float) -> float:
    """Event time in epoch seconds from any spelling the contract allows.

    >>> parse_ts("2026-11-02T08:00:00Z")
    1793606400.0
    >>> parse_ts(1793606400000)
    1793606400.0
    >>> parse_ts("2026-11-02T09:00:00+01:00")
    1793606400.0
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise EventRuleError("invalid_ts", "ts", "not RFC 3339 and not an epoch number") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise EventRuleError("invalid_ts", "ts", "RFC 3339 time without a UTC offset")
        t = value.timestamp()
    else:
        t = float(value)
        if t >= _MS_THRESHOLD:
            t = t / 1000.0
    if not TS_MIN <= t < TS_MAX:
        raise EventRuleError("ts_out_of_range", "ts", "outside 2000-01-01..2100-01-01")
    return t


#: ``ts`` as decoded: RFC 3339 text becomes an aware datetime (msgspec's C parser; a time without
#: an offset fails here and is judged again as text), a JSON number a float (ints converted).
TsIn = Annotated[datetime, msgspec.Meta(tz=True)] | float


class UsageEvent(msgspec.Struct, kw_only=True, gc=False):
    """One attempt of one model call. Field meanings: see the JSON Schema.

    ``ts`` is a float of epoch seconds once :func:`finish_event` (or the decoder) has run.

    The fields are declared in the order the gateway writes them (``replay_data``'s sample):
    msgspec looks a JSON key up starting after the field it matched last, so a line whose keys
    come in declaration order decodes ~0.18 us faster than one that keeps jumping back (any
    order decodes to the same event). ``kw_only`` lets required and optional fields mix.
    """

    event_id: Id128
    ts: TsIn
    schema: str | None = None
    tenant_id: Id128
    api_key_id: Id128
    user_id: OptStr128 = None
    session_id: OptStr128 = None
    request_id: OptStr128 = None
    attempt: Annotated[int, msgspec.Meta(ge=1)] = 1
    feature: OptStr128 = None
    provider: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    model: Id128
    input_tokens: Tokens
    cached_input_tokens: Tokens = 0
    cache_write_tokens: Tokens = 0
    output_tokens: Tokens
    cost_usd: Annotated[float, msgspec.Meta(ge=0)] | None = None
    status: Annotated[int, msgspec.Meta(ge=100, le=599)] = 200
    latency_ms: Tokens | None = None
    cancelled: bool = False
    source_ip: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    user_agent: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    prompt_shape: OptStr128 = None
    prefix_hash: OptStr128 = None
    resource_tenant_id: OptStr128 = None

    @property
    def t(self) -> float:
        """Event time in epoch seconds (``ts`` after decoding)."""
        return self.ts  # type: ignore[return-value]


def _text_fields() -> list[tuple[str, Any] | tuple[str, Any, Any]]:
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for f in msgspec.structs.fields(UsageEvent):
        typ = str | float if f.name == "ts" else f.type
        fields.append((f.name, typ) if f.required else (f.name, typ, f.default))
    return fields


#: UsageEvent's fields (same order, types and defaults) with ``ts`` kept as text: the decoder's
#: second opinion on a line that UsageEvent does not take, so that ISO 8601 spellings outside
#: RFC 3339 that ``datetime.fromisoformat`` reads are still accepted, and every rejection keeps
#: the reason and message it had when ``ts`` was decoded as text.
UsageEventText: Final = msgspec.defstruct("UsageEventText", _text_fields(), kw_only=True, gc=False)


def finish_event(event: UsageEvent) -> UsageEvent:
    """Normalise ``ts`` to epoch seconds and check the contract's rules; returns ``event``.

    Raises :class:`EventRuleError` for the first rule broken, in this order: ``ts``,
    cached input above input, schema, a secret-looking ``api_key_id``. Idempotent.
    (``sentinel.decoding`` inlines the common case of this for whole batches: keep them in step.)
    """
    ts = event.ts
    if ts.__class__ is not float or not TS_MIN <= ts < TS_MAX:
        event.ts = parse_ts(ts)
    if event.cached_input_tokens > event.input_tokens:
        raise EventRuleError(
            "cached_exceeds_input",
            "cached_input_tokens",
            f"{event.cached_input_tokens} > input_tokens {event.input_tokens}",
        )
    if event.schema is not None and event.schema != SCHEMA_V1:
        raise EventRuleError("unsupported_schema", "schema", f"expected {SCHEMA_V1}")
    key = event.api_key_id
    if key not in CLEAN_KEY_IDS:
        if looks_like_secret(key):
            raise EventRuleError("secret_in_api_key_id", "api_key_id", "looks like an API key secret")
        if len(CLEAN_KEY_IDS) >= _CLEAN_KEY_IDS_MAX:
            CLEAN_KEY_IDS.clear()
        CLEAN_KEY_IDS[key] = None
    return event


def from_text(raw: Any) -> UsageEvent:
    """A :data:`UsageEventText` as a UsageEvent (same field values, ``ts`` still to be finished)."""
    return UsageEvent(**msgspec.structs.asdict(raw))


def encode_event(event: UsageEvent) -> bytes:
    """JSON of an event with ``ts`` as epoch seconds (used by tests and tools)."""
    return msgspec.json.encode(event)
