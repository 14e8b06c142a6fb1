"""Progress bars for long work (replay, tuning), shown only on a terminal.

A thin wrapper over tqdm so that callers need not care whether stderr is a
terminal: off a terminal (CI, pipes) it prints nothing.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


class Progress:
    def __init__(self, desc: str, total: int | None = None, unit: str = "ev", enabled: bool = True) -> None:
        self._bar: Any = None
        if enabled and sys.stderr.isatty():
            self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr,
                             dynamic_ncols=True, mininterval=0.25)

    def update(self, n: int, **postfix: Any) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
