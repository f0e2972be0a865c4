"""The tensor dtypes rftpack stores, by the names containers use."""

from __future__ import annotations

import sys

import ml_dtypes
import numpy as np

from rftpack.errors import FormatError

DTYPES: dict[str, np.dtype] = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
    "int64": np.dtype(np.int64),
    "int32": np.dtype(np.int32),
    "int16": np.dtype(np.int16),
    "int8": np.dtype(np.int8),
    "uint64": np.dtype(np.uint64),
    "uint32": np.dtype(np.uint32),
    "uint16": np.dtype(np.uint16),
    "uint8": np.dtype(np.uint8),
    "bool": np.dtype(np.bool_),
}
#: dtypes the lossy pipeline may touch; everything else is stored exactly.
LOSSY_CAPABLE = frozenset({"float64", "float32", "float16", "bfloat16"})


def dtype_name(dtype: np.dtype) -> str:
    """Container name of a numpy dtype.

    >>> dtype_name(np.dtype("float32"))
    'float32'
    """
    dtype = np.dtype(dtype)
    if dtype.byteorder == ">":
        dtype = dtype.newbyteorder("=")
    for name, known in DTYPES.items():
        if known == dtype and known.name == dtype.name:
            return name
    raise FormatError(f"dtype {dtype} is not supported; supported: {', '.join(DTYPES)}")


def dtype_from_name(name: object) -> np.dtype:
    """numpy dtype for a container dtype name; unknown names are a FormatError."""
    if not isinstance(name, str) or name not in DTYPES:
        raise FormatError(f"unknown tensor dtype {name!r}; supported: {', '.join(DTYPES)}")
    return DTYPES[name]


def to_little_endian(array: np.ndarray) -> np.ndarray:
    """``array`` itself if little-endian (or byte order irrelevant), else a little-endian copy.

    >>> to_little_endian(np.arange(2, dtype=">i4")).dtype.str
    '<i4'
    """
    order = array.dtype.byteorder
    if order == ">" or (order == "=" and sys.byteorder == "big"):
        return array.astype(array.dtype.newbyteorder("<"))
    return array


def cast_float_into(x: np.ndarray, target: np.ndarray) -> None:
    """``target[...] = x`` cast to its float dtype, in one pass. Reconstruction error must not
    overflow a narrow float into ±inf: values are clipped to its finite range.

    >>> out = np.empty(2, np.float16)
    >>> cast_float_into(np.array([1.5, 1e6]), out)
    >>> out.tolist()
    [1.5, 65504.0]
    """
    if target.dtype == np.float64:
        target[...] = x
        return
    limit = float(ml_dtypes.finfo(target.dtype).max)
    np.clip(x, -limit, limit, out=target, casting="unsafe")
