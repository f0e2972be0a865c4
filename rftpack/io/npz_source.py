"""Read ``.npz`` archives (``np.savez``) one array at a time, never unpickling.

A ``.npy`` header cannot describe bfloat16/float8 (numpy writes raw ``V2``/``V1`` or even an
invalid descr). rftpack's npz sink stores such arrays as same-size unsigned ints and adds a JSON
member ``DTYPES_MEMBER`` mapping their names to the real dtype; this reader applies that map
(to ``uint``- or ``void``-stored arrays). Without it, raw void arrays are unsupported.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from rftpack.dtypes import to_little_endian
from rftpack.errors import InputError
from rftpack.io.dtypes import EXTENSION_DTYPES, is_supported
from rftpack.io.source import ModelSource
from rftpack.io.tensor_info import TensorInfo

#: Zip member (not an array): tensor name -> ml_dtypes dtype name, for raw-stored arrays.
DTYPES_MEMBER = "__rftpack_dtypes__.json"


class NpzSource(ModelSource):
    """A ``.npz`` file; tensor order is the archive's member order (the order saved).

    Example:
        >>> with NpzSource(Path("weights.npz")) as src:  # doctest: +SKIP
        ...     w = src.read(src.infos()[0].name)
    """

    def __init__(self, path: Path, name: str | None = None) -> None:
        super().__init__(path, name or path.stem, "npz")
        try:
            self._file = open(path, "rb")  # closed in close(); np.load leaks it on bad zips
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
        try:
            self._npz: Any = np.load(self._file, allow_pickle=False)
        except Exception as exc:  # numpy/zipfile raise many types on garbage
            self._file.close()
            raise InputError(f"{path}: not a valid .npz file ({exc})") from None
        if not isinstance(self._npz, np.lib.npyio.NpzFile):
            self._file.close()
            raise InputError(f"{path}: is a single .npy array, not an .npz archive")
        try:
            self._infos = self._read_infos()
            self._by_name = {info.name: info for info in self._infos}
        except BaseException:
            self.close()
            raise

    def _read_infos(self) -> list[TensorInfo]:
        overrides = self._dtype_overrides()
        infos = []
        for key in self._npz.files:
            if key == DTYPES_MEMBER:
                continue
            dtype, shape = self._header(key)
            if key in overrides:
                dtype = _override(self.path, key, dtype, overrides[key])
            dtype = dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype
            if not is_supported(dtype):
                raise InputError(f"{self.path}: tensor {key!r} has {_unsupported(dtype)}")
            infos.append(TensorInfo(key, dtype, shape))
        return infos

    def _dtype_overrides(self) -> dict[str, str]:
        if DTYPES_MEMBER not in self._npz.files:
            return {}
        try:
            doc = json.loads(self._npz.zip.read(DTYPES_MEMBER).decode("utf-8"))
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise InputError(f"{self.path}: bad {DTYPES_MEMBER} ({exc})") from None
        if not isinstance(doc, dict):
            raise InputError(f"{self.path}: bad {DTYPES_MEMBER} (not a JSON object)")
        return doc

    def _header(self, key: str) -> tuple[np.dtype, tuple[int, ...]]:
        fmt = np.lib.format
        try:
            with self._npz.zip.open(f"{key}.npy") as f:
                version = fmt.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = fmt.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = fmt.read_array_header_2_0(f)
                else:
                    shape, _, dtype = fmt._read_array_header(f, version)  # no public API for v3
        except Exception as exc:  # zipfile/numpy errors on a corrupt member
            raise InputError(f"{self.path}: tensor {key!r}: bad .npy header ({exc})") from None
        return np.dtype(dtype), tuple(shape)

    def infos(self) -> list[TensorInfo]:
        return list(self._infos)

    def read(self, name: str) -> np.ndarray:
        info = self._by_name.get(name)
        if info is None:
            raise self._unknown(name)
        try:
            array = self._npz[name]
        except Exception as exc:  # zlib/zipfile/numpy errors on corrupt data
            raise InputError(f"{self.path}: tensor {name!r}: cannot read ({exc})") from None
        if info.dtype.name in EXTENSION_DTYPES and array.dtype != info.dtype:
            array = array.view(info.dtype)
        return to_little_endian(array)

    def close(self) -> None:
        self._npz.close()
        self._file.close()


def _unsupported(dtype: np.dtype) -> str:
    if dtype.kind == "V":
        return f"raw {dtype} bytes (bfloat16/float8 need the {DTYPES_MEMBER} map of rftpack)"
    return f"unsupported dtype {dtype}"


def _override(path: Path, key: str, stored: np.dtype, name: Any) -> np.dtype:
    dtype = EXTENSION_DTYPES.get(name) if isinstance(name, str) else None
    if dtype is None or stored.kind not in "Vu" or stored.itemsize != dtype.itemsize:
        raise InputError(f"{path}: tensor {key!r}: {DTYPES_MEMBER} names bad dtype {name!r}")
    return dtype
