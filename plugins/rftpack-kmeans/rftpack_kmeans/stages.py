"""``example.kmeans``: a non-uniform quantizer — each block gets its own 2**bits-level
codebook, fitted by Lloyd's algorithm (1-D k-means) and stored in the side info.

Uses only rftpack's public plugin API: ``hookimpl``, ``Quantizer``/``Codes`` and the error
classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rftpack.errors import FormatError, StageError
from rftpack.hookspecs import hookimpl
from rftpack.stages.base import Codes, Quantizer

RFTPACK_PLUGIN_API = 1


def lloyd(x: np.ndarray, levels: int, iterations: int) -> np.ndarray:
    """Sorted codebook of ``levels`` values minimising squared error on ``x``.

    >>> lloyd(np.array([0.0, 0.0, 1.0, 1.0]), 2, 5).tolist()
    [0.0, 1.0]
    """
    if x.size == 0:
        return np.zeros(levels)
    codebook = np.quantile(x, (np.arange(levels) + 0.5) / levels)
    for _ in range(iterations):
        codes = assign(x, codebook)
        sums = np.bincount(codes, weights=x, minlength=levels)
        counts = np.bincount(codes, minlength=levels)
        used = counts > 0
        codebook = np.where(used, sums / np.maximum(counts, 1), codebook)
        codebook.sort()
    return codebook


def assign(x: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of the nearest codebook value (codebook sorted)."""
    return np.searchsorted((codebook[1:] + codebook[:-1]) / 2.0, x).astype(np.uint16)


@dataclass(frozen=True)
class KMeansQuantizer(Quantizer):
    """Per-block k-means codebook (example plugin): non-uniform levels where weights gather."""

    id: ClassVar[str] = "example.kmeans"
    bits: int = 4
    iterations: int = 20

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 12:
            raise StageError(f"example.kmeans: bits must be in [1, 12], got {self.bits!r}")
        if not isinstance(self.iterations, int) or not 0 <= self.iterations <= 1000:
            raise StageError("example.kmeans: iterations must be in [0, 1000]")

    def quantize(self, coefficients: np.ndarray, bands: list[tuple[int, int]]
                 ) -> tuple[dict[str, Codes], dict[str, Any]]:
        x = np.real(coefficients).astype(np.float64)
        codebook = lloyd(x, 1 << self.bits, self.iterations)
        codes = assign(x, codebook)
        return {"codes": Codes(codes, 1 << self.bits)}, {"codebook": codebook.tolist()}

    def stream_alphabets(self, side: dict[str, Any]) -> dict[str, int]:
        return {"codes": 1 << self.bits}

    def dequantize(self, streams: dict[str, np.ndarray], side: dict[str, Any], count: int,
                   refine: Any = None) -> np.ndarray:
        codebook = side.get("codebook")
        if (not isinstance(codebook, list) or len(codebook) != 1 << self.bits
                or not all(isinstance(v, int | float) and math.isfinite(v) for v in codebook)):
            raise FormatError(f"example.kmeans: side.codebook must hold {1 << self.bits} "
                              f"finite numbers")
        codes = streams.get("codes")
        if codes is None or codes.shape[0] != count:
            raise FormatError(f"example.kmeans: expected {count} codes")
        if codes.size and int(codes.max()) >= 1 << self.bits:
            raise FormatError("example.kmeans: code outside the codebook")
        return np.asarray(codebook, dtype=np.float64)[codes]


@hookimpl
def rftpack_quantizers() -> list[type]:
    return [KMeansQuantizer]
