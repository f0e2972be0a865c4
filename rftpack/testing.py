"""Helpers for testing code that reads archives (and, later, plugin conformance checks)."""

from __future__ import annotations

import io
import threading
from pathlib import Path


class CountingFile(io.RawIOBase):
    """A read-only file that counts the bytes it hands out: proves lazy reads are lazy.

    Example:
        >>> import rftpack                                     # doctest: +SKIP
        >>> counting = CountingFile("model.rftp")              # doctest: +SKIP
        >>> with rftpack.open(counting) as archive:            # doctest: +SKIP
        ...     archive.get_tensor("w")
        >>> counting.bytes_read                                # doctest: +SKIP
        3458
    """

    def __init__(self, path: str | Path) -> None:
        self.handle = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.name = str(path)
        self.bytes_read = 0
        self._lock = threading.Lock()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.handle.seek(offset, whence)

    def tell(self) -> int:
        return self.handle.tell()

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = self.handle.readinto(buffer)
        with self._lock:
            self.bytes_read += n or 0
        return n

    def close(self) -> None:
        self.handle.close()
        super().close()
