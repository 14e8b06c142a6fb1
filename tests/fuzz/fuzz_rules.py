"""Fuzz target: any text as a rules file must load or fail with RulesFileError naming the file."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from sentinel.rules import load_rules
    from sentinel.yamlfile import RulesFileError

_DIR = Path(tempfile.mkdtemp(prefix="fuzz-rules-"))
_NAMES = ("tenants.yaml", "budgets.yaml", "prices.yaml", "alerting.yaml", "routes.yaml")


def test_one(data: bytes) -> None:
    if not data:
        return
    name = _NAMES[data[0] % len(_NAMES)]
    for n in _NAMES:
        (_DIR / n).unlink(missing_ok=True)
    (_DIR / name).write_bytes(data[1:])
    try:
        load_rules(_DIR)
    except RulesFileError as err:
        for e in err.errors:
            if not e.file.endswith(name):
                raise AssertionError(f"error names the wrong file: {e.render()}") from None
            e.render()


def main() -> None:
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
