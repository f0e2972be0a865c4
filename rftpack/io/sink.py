"""``ModelSink``: write a checkpoint tensor by tensor to a temp file, then rename it in place.

Nothing ever appears under the final name unless every tensor was written and flushed.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType

import numpy as np

from rftpack._fs import fsync_dir, remove_stale_partials
from rftpack.dtypes import to_little_endian
from rftpack.errors import OutputError
from rftpack.io.dtypes import is_supported
from rftpack.io.tensor_info import TensorInfo


class ModelSink:
    """Base of all sinks: order/dtype/shape checks and the temp-file life cycle.

    ``write`` must be called once per tensor, in ``infos`` order. A wrong call raises
    ``OutputError`` and leaves the sink as it was; an ``OSError`` aborts the sink.
    As a context manager, an exception in the block aborts, a clean exit closes.

    Example:
        >>> with open_sink("out.safetensors", infos) as sink:  # doctest: +SKIP
        ...     for info in infos:
        ...         sink.write(info.name, arrays[info.name])
    """

    format: str = ""

    def __init__(self, path: str | os.PathLike[str], infos: list[TensorInfo]) -> None:
        self.path = Path(path)
        self.infos = list(infos)
        self.temp_path = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        self._next = 0
        self._finished = False
        names = [info.name for info in self.infos]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise OutputError(f"{self.path}: tensor {dup!r} is listed twice")
        for info in self.infos:
            if not is_supported(info.dtype):
                raise OutputError(
                    f"{self.path}: tensor {info.name!r}: unsupported dtype {info.dtype}"
                )
        if self.path.is_dir():
            raise OutputError(f"{self.path}: is a directory")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(self.path)
            self._start()
        except OSError as exc:
            self.abort()
            raise self._disk_error(exc) from None

    # -- subclass hooks ----------------------------------------------------------------------

    def _start(self) -> None:
        """Create the temp file (called once, from ``__init__``)."""

    def _write(self, info: TensorInfo, array: np.ndarray) -> None:
        """Store one validated, little-endian array."""
        raise NotImplementedError

    def _finish(self) -> None:
        """Complete, flush and fsync the temp file."""
        raise NotImplementedError

    def _discard(self) -> None:
        """Close open handles without finishing (the temp file is removed afterwards)."""

    # -- public ------------------------------------------------------------------------------

    def write(self, name: str, array: np.ndarray) -> None:
        """Write the next tensor; ``name``, dtype and shape must match the next info."""
        if self._finished:
            raise OutputError(f"{self.path}: write({name!r}) after the sink was closed")
        if self._next >= len(self.infos):
            raise OutputError(f"{self.path}: write({name!r}) but all tensors are written")
        info = self.infos[self._next]
        if name != info.name:
            raise OutputError(f"{self.path}: expected tensor {info.name!r} next, got {name!r}")
        array = to_little_endian(np.asarray(array))
        if array.dtype != info.dtype or array.shape != info.shape:
            raise OutputError(
                f"{self.path}: tensor {name!r}: got {array.dtype}{list(array.shape)}, "
                f"expected {info.dtype}{list(info.shape)}"
            )
        try:
            self._write(info, array)
        except OSError as exc:
            self.abort()
            raise self._disk_error(exc) from None
        self._next += 1

    def close(self) -> None:
        """Finish the file and atomically move it to ``path`` (replacing any old file)."""
        if self._finished:
            return
        missing = [info.name for info in self.infos[self._next :]]
        if missing:
            self.abort()
            raise OutputError(
                f"{self.path}: closed with {len(missing)} tensor(s) unwritten, "
                f"first {missing[0]!r}; nothing was written"
            )
        try:
            self._finish()
            os.replace(self.temp_path, self.path)
        except OSError as exc:
            self.abort()
            raise self._disk_error(exc) from None
        self._finished = True
        fsync_dir(self.path.parent)

    def abort(self) -> None:
        """Drop everything written so far; nothing is left under the final or the temp name."""
        if self._finished:
            return
        self._finished = True
        with contextlib.suppress(OSError):
            self._discard()
        with contextlib.suppress(OSError):  # missing, or never creatable in the first place
            self.temp_path.unlink()

    def _disk_error(self, exc: OSError) -> OutputError:
        return OutputError(f"{self.path}: cannot write ({exc.strerror or exc})")

    def __enter__(self) -> ModelSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, {self._next}/{len(self.infos)} written)"


