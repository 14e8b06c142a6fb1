"""Detector registry: name -> detector class.

Adding a detector means one new module in ``detectors/``, decorated with
:func:`register`, and one entry in ``BUILTIN_MODULES`` below. The rules loader
validates ``rules/detectors/<name>.yaml`` against the registered class's
``Params``; the pipeline builds one instance per enabled detector.
"""

from __future__ import annotations

import importlib
from typing import Any, TypeVar

from detectors.base import Detector

BUILTIN_MODULES: tuple[str, ...] = (
    "detectors.spend_spike",
    "detectors.quota_burn",
    "detectors.runaway_loop",
    "detectors.cache_collapse",
    "detectors.cross_tenant",
    "detectors.retry_storm",
    "detectors.cancellation_tax",
)

_REGISTRY: dict[str, type[Detector[Any, Any]]] = {}
_loaded = False

D = TypeVar("D", bound=type[Detector[Any, Any]])


def register(cls: D) -> D:
    """Class decorator: make a detector known under ``cls.name``."""
    name = cls.name
    if not name.isidentifier() or name.lower() != name:
        raise ValueError(f"detector name must be snake_case: {name!r}")
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(f"detector {name!r} registered twice ({existing.__module__}, {cls.__module__})")
    _REGISTRY[name] = cls
    return cls


def load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    _loaded = True


def registered() -> dict[str, type[Detector[Any, Any]]]:
    """All registered detectors, built-ins loaded, in a stable (sorted) order."""
    load_builtins()
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> type[Detector[Any, Any]]:
    load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
