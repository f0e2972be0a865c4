"""Stream a safetensors file: header from the infos first, then each tensor's bytes."""

from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np

from rftpack.errors import OutputError
from rftpack.io.safetensors_format import METADATA_KEY, build_header
from rftpack.io.sink import ModelSink
from rftpack.io.tensor_info import TensorInfo


class SafetensorsSink(ModelSink):
    """Writes tensors straight to disk as they arrive; memory use is one tensor at most.

    Example:
        >>> with SafetensorsSink("out.safetensors", infos) as sink:  # doctest: +SKIP
        ...     sink.write("w", w)
    """

    format = "safetensors"
    _file: BinaryIO | None = None

    def _start(self) -> None:
        if any(info.name == METADATA_KEY for info in self.infos):
            raise OutputError(f"{self.path}: tensor name {METADATA_KEY!r} is reserved")
        self._file = open(self.temp_path, "wb")  # closed in _finish or _discard
        self._file.write(build_header(self.infos, {"format": "pt"}))

    def _write(self, info: TensorInfo, array: np.ndarray) -> None:
        assert self._file is not None
        if info.numel:
            data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
            self._file.write(memoryview(data))

    def _finish(self) -> None:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
