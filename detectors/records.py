"""Hot per-key state as plain ``__slots__`` objects, written to snapshots as msgspec record arrays.

Several detectors keep the state every event touches in a ``__slots__`` class rather than a
msgspec Struct: CPython 3.11 specialises attribute stores only for classes with the default
``__setattr__``, which Structs override (~25 ns more per store, and a key's event stores up to
ten). Snapshots stay msgspec: each slots class has a *record* Struct (``array_like=True``) naming
its saved fields in order. :func:`record_encoder` writes the objects as those arrays, and
:func:`from_record` builds an object back from a decoded record. Fields a class has beyond its
record are caches that the detector resets after :func:`from_record`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

#: ``new_object(cls)`` makes an instance without calling ``__init__`` (half the cost of a class call)
new_object = object.__new__


def from_record(cls: type[T], record: msgspec.Struct) -> T:
    """An instance of ``cls`` whose record fields are those of ``record``."""
    obj: T = new_object(cls)
    for name in record.__struct_fields__:
        setattr(obj, name, getattr(record, name))
    return obj


def record_encoder(*pairs: tuple[type, type[msgspec.Struct]]) -> msgspec.msgpack.Encoder:
    """A msgpack encoder writing each ``(slots class, record)`` pair's objects as the record's array."""
    getters: dict[type, Callable[[Any], Any]] = {}
    for cls, record in pairs:
        fields = record.__struct_fields__
        if len(fields) < 2:
            raise ValueError(f"{record.__name__}: a record needs at least two fields")
        getters[cls] = operator.attrgetter(*fields)  # one C call; returns the values in record order

    def enc_hook(obj: object) -> Any:
        get = getters.get(obj.__class__)
        if get is None:
            raise NotImplementedError(f"cannot encode {type(obj).__name__}")
        return get(obj)

    return msgspec.msgpack.Encoder(enc_hook=enc_hook)


S = TypeVar("S", bound=msgspec.Struct)


def record_decoder(state: type[S], *pairs: tuple[type, type[msgspec.Struct]],
                   build: Mapping[type, Callable[[Any], Any]] | None = None) -> msgspec.msgpack.Decoder[S]:
    """A msgpack decoder of a detector's ``state`` Struct whose slots-class values were written by
    :func:`record_encoder` with the same pairs: each is read as its record (validated by msgspec)
    and built with ``build[cls]`` (default :func:`from_record`). One State definition serves both
    ways; no mirror Struct with records in place of the objects."""
    records = dict(pairs)
    builders = dict(build or {})

    def dec_hook(cls: type, obj: Any) -> Any:
        record = records.get(cls)
        if record is None:
            raise NotImplementedError(f"cannot decode {cls.__name__}")
        rec = msgspec.convert(obj, record)
        make = builders.get(cls)
        return make(rec) if make is not None else from_record(cls, rec)

    return msgspec.msgpack.Decoder(state, dec_hook=dec_hook)
