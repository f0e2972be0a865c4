"""Write an ``.npz`` archive (as ``np.savez`` does), streaming one member per tensor."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from rftpack.errors import OutputError
from rftpack.io.dtypes import EXTENSION_DTYPES
from rftpack.io.npz_source import DTYPES_MEMBER
from rftpack.io.sink import ModelSink
from rftpack.io.tensor_info import TensorInfo


class NpzSink(ModelSink):
    """An uncompressed ``.npz``; bfloat16/float8 are stored as unsigned ints of the same size
    (``np.load`` gives those bits) and their real dtype is recorded in ``DTYPES_MEMBER``.

    Example:
        >>> with NpzSink("weights.npz", infos) as sink:  # doctest: +SKIP
        ...     sink.write("w", w)
    """

    format = "npz"
    _zip: zipfile.ZipFile | None = None

    def _start(self) -> None:
        if any(info.name == DTYPES_MEMBER for info in self.infos):
            raise OutputError(f"{self.path}: tensor name {DTYPES_MEMBER!r} is reserved")
        self._zip = zipfile.ZipFile(self.temp_path, "w", zipfile.ZIP_STORED, allowZip64=True)
        self._extension: dict[str, str] = {}

    def _write(self, info: TensorInfo, array: np.ndarray) -> None:
        assert self._zip is not None
        if info.dtype.name in EXTENSION_DTYPES:
            # numpy cannot describe ml_dtypes types in a .npy header: store the raw bits
            self._extension[info.name] = info.dtype.name
            array = array.view(f"<u{info.dtype.itemsize}")
        with self._zip.open(f"{info.name}.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, array, allow_pickle=False)

    def _finish(self) -> None:
        assert self._zip is not None
        if self._extension:
            self._zip.writestr(DTYPES_MEMBER, json.dumps(self._extension))
        self._zip.close()
        self._zip = None
        with open(self.temp_path, "rb+") as f:
            os.fsync(f.fileno())

    def _discard(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None
