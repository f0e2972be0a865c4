"""The tensor dtypes rftpack reads and writes, and their safetensors names.

All dtypes are little-endian; bfloat16 and float8 come from ``ml_dtypes``.
"""

from __future__ import annotations

import sys

import ml_dtypes
import numpy as np

#: safetensors dtype name -> numpy dtype (the complete set of supported dtypes).
SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("bool"),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}

_NAMES: dict[np.dtype, str] = {dt: name for name, dt in SAFETENSORS_DTYPES.items()}

#: ml_dtypes types, by name: a .npy header cannot describe them (numpy writes ``V2`` or worse).
EXTENSION_DTYPES: dict[str, np.dtype] = {
    SAFETENSORS_DTYPES[code].name: SAFETENSORS_DTYPES[code]
    for code in ("BF16", "F8_E4M3", "F8_E5M2")
}


def is_supported(dtype: np.dtype) -> bool:
    """True if ``dtype`` is one rftpack can read and write.

    Example:
        >>> is_supported(np.dtype("float32")), is_supported(np.dtype("complex64"))
        (True, False)
    """
    return np.dtype(dtype) in _NAMES


def safetensors_name(dtype: np.dtype) -> str:
    """safetensors dtype name of a supported numpy dtype (``KeyError`` otherwise).

    Example:
        >>> safetensors_name(np.dtype(ml_dtypes.bfloat16))
        'BF16'
    """
    return _NAMES[np.dtype(dtype)]


def little_endian(array: np.ndarray) -> np.ndarray:
    """``array`` itself if little-endian (or byte order irrelevant), else a little-endian copy.

    Example:
        >>> little_endian(np.arange(2, dtype=">i4")).dtype.str
        '<i4'
    """
    order = array.dtype.byteorder
    if order == ">" or (order == "=" and sys.byteorder == "big"):
        return array.astype(array.dtype.newbyteorder("<"))
    return array
