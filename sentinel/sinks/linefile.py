"""A record sink that appends one line per alert version to a local file.

The JSONL alert file and the OCSF findings file differ only in how a
notification becomes a line; opening, appending, fsync per batch and the
error on a failed write live here once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from sentinel.alerting.notify import DeliveryError, Notification


class LineFileSink:
    """Appends ``encode(n) + b"\\n"`` for each notification; flushed and fsynced per batch.

    A failed write closes the file (reopened on the next batch) and raises a retryable
    :class:`DeliveryError`, so the outbox keeps the batch and only this sink waits.
    """

    name: str
    record: bool = True
    supports_resolve: bool = True
    max_batch: int = 500
    #: what the error message calls the file
    what: str = "file"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh: IO[bytes] | None = None

    def encode(self, n: Notification) -> bytes:
        raise NotImplementedError

    def send(self, batch: list[Notification]) -> None:
        try:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.path.open("ab")
            self._fh.write(b"".join(self.encode(n) + b"\n" for n in batch))
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as err:
            self.close()
            raise DeliveryError(f"cannot write {self.what} {self.path.name}: {err.strerror}") from None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
