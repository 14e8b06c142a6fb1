"""``usage-v1``: our own event schema, the default input format.

The record already *is* a usage event
(``shared/contracts/usage-event.v1.schema.json``), so the adapter is the
identity: the raw line goes to the normal decoder untouched, field for field.
Callers skip adapters with ``identity = True`` altogether, so the default path
costs nothing.
"""

from __future__ import annotations

from typing import ClassVar

from sentinel.decoding import Rejection
from sentinel.formats.mapping import FieldMapping


class UsageV1:
    """Pass-through adapter (see the module docstring)."""

    name: ClassVar[str] = "usage-v1"
    identity: ClassVar[bool] = True

    def __init__(self, mapping: FieldMapping | None = None) -> None:
        self.mapping = mapping or FieldMapping()

    def adapt(self, record: bytes) -> list[bytes] | Rejection:
        return [record]
