"""Convert between torch tensors and numpy arrays, including bfloat16 and float8.

torch is imported lazily, inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ml_dtypes
import numpy as np

if TYPE_CHECKING:
    import torch

# torch dtype name -> (numpy dtype, torch dtype name to reinterpret through, or None if native)
_TABLE: dict[str, tuple[np.dtype, str | None]] = {
    "float64": (np.dtype("<f8"), None),
    "float32": (np.dtype("<f4"), None),
    "float16": (np.dtype("<f2"), None),
    "bfloat16": (np.dtype(ml_dtypes.bfloat16), "int16"),
    "int64": (np.dtype("<i8"), None),
    "int32": (np.dtype("<i4"), None),
    "int16": (np.dtype("<i2"), None),
    "int8": (np.dtype("i1"), None),
    "uint64": (np.dtype("<u8"), None),
    "uint32": (np.dtype("<u4"), None),
    "uint16": (np.dtype("<u2"), None),
    "uint8": (np.dtype("u1"), None),
    "bool": (np.dtype("bool"), None),
    "float8_e4m3fn": (np.dtype(ml_dtypes.float8_e4m3fn), "uint8"),
    "float8_e5m2": (np.dtype(ml_dtypes.float8_e5m2), "uint8"),
}
_BY_NUMPY = {dt: (name, via) for name, (dt, via) in _TABLE.items()}


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def numpy_dtype(dtype: torch.dtype) -> np.dtype | None:
    """numpy dtype for a torch dtype, or None if rftpack does not support it.

    Example:
        >>> import torch
        >>> numpy_dtype(torch.bfloat16).name, numpy_dtype(torch.complex64)
        ('bfloat16', None)
    """
    entry = _TABLE.get(_name(dtype))
    return entry[0] if entry else None


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A contiguous CPU tensor's data as a numpy array (a view, no copy where possible).

    Raises ``TypeError`` for dtypes without a numpy equivalent (complex, quantized, ...).

    Example:
        >>> import torch
        >>> to_numpy(torch.ones(2, dtype=torch.bfloat16)).dtype.name
        'bfloat16'
    """
    import torch

    entry = _TABLE.get(_name(tensor.dtype))
    if entry is None:
        raise TypeError(f"unsupported dtype {tensor.dtype}")
    dtype, via = entry
    tensor = tensor.detach().contiguous()
    if via is None:
        return tensor.numpy()
    return tensor.view(getattr(torch, via)).numpy().view(dtype)


def from_numpy(array: np.ndarray) -> torch.Tensor:
    """A numpy array of a supported dtype as a torch tensor owning a copy of the data.

    Example:
        >>> import ml_dtypes
        >>> from_numpy(np.ones(2, ml_dtypes.bfloat16)).dtype
        torch.bfloat16
    """
    import torch

    entry = _BY_NUMPY.get(array.dtype)
    if entry is None:
        raise TypeError(f"unsupported dtype {array.dtype}")
    name, via = entry
    copy = np.array(array, order="C", copy=True)
    if via is None:
        return torch.from_numpy(copy)
    return torch.from_numpy(copy.view(_TABLE[via][0])).view(getattr(torch, name))
