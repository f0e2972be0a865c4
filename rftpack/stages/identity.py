"""``identity``: coefficients are the weights themselves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from rftpack.stages.base import Transform


@dataclass(frozen=True)
class Identity(Transform):
    """No transform: the quantizer sees the weights directly.

    Example:
        >>> Identity().forward(np.ones(3)).tolist()
        [1.0, 1.0, 1.0]
    """

    id: ClassVar[str] = "identity"

    def coefficient_count(self, n: int) -> int:
        return n

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    def inverse(self, coefficients: np.ndarray, n: int) -> np.ndarray:
        return np.asarray(np.real(coefficients), dtype=np.float64)[:n]  # no copy if float64
