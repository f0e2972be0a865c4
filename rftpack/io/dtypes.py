"""The tensor dtypes rftpack reads and writes, and their safetensors names.

All dtypes are little-endian; bfloat16 and float8 come from ``ml_dtypes``.
"""

from __future__ import annotations

import numpy as np

from rftpack.dtypes import DTYPES

#: safetensors dtype code -> the core's dtype name (rftpack.dtypes holds the dtypes themselves).
_CODES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
          "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U64": "uint64",
          "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
          "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
#: safetensors dtype name -> numpy dtype (the complete set of supported dtypes).
SAFETENSORS_DTYPES: dict[str, np.dtype] = {code: DTYPES[name] for code, name in _CODES.items()}

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
        >>> import ml_dtypes
        >>> safetensors_name(np.dtype(ml_dtypes.bfloat16))
        'BF16'
    """
    return _NAMES[np.dtype(dtype)]


