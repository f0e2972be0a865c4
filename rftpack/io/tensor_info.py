"""``TensorInfo``: what a checkpoint says about one tensor, without its data."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    """Name, numpy dtype and shape of one stored tensor.

    Example:
        >>> info = TensorInfo("w", np.dtype("float32"), (2, 3))
        >>> info.numel, info.nbytes
        (6, 24)
    """

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def numel(self) -> int:
        """Number of elements (1 for a scalar, 0 for an empty tensor)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Size of the raw data in bytes."""
        return self.numel * self.dtype.itemsize
