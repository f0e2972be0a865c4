"""``example.dct2``: orthonormal DCT-II (and its inverse, DCT-III), computed with one FFT.

Uses only rftpack's public plugin API: ``rftpack.hookspecs.hookimpl`` and
``rftpack.stages.base.Transform``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from rftpack.hookspecs import hookimpl
from rftpack.stages.base import Transform

RFTPACK_PLUGIN_API = 1


def dct2(x: np.ndarray) -> np.ndarray:
    """Orthonormal DCT-II of a 1-D array (Makhoul's FFT algorithm).

    >>> float(np.round(dct2(np.ones(4))[0], 6))
    2.0
    """
    n = x.shape[0]
    if n == 0:
        return np.zeros(0)
    v = np.concatenate([x[::2], x[1::2][::-1]])
    k = np.arange(n)
    y = np.real(np.fft.fft(v) * np.exp(-1j * np.pi * k / (2 * n)))
    y *= np.sqrt(2.0 / n)
    y[0] /= np.sqrt(2.0)
    return y


def idct2(y: np.ndarray) -> np.ndarray:
    """Inverse of :func:`dct2`."""
    n = y.shape[0]
    if n == 0:
        return np.zeros(0)
    c = y * np.sqrt(n / 2.0)
    c[0] *= np.sqrt(2.0)
    k = np.arange(n)
    shifted = np.concatenate([[0.0], c[:0:-1]])  # c[N-k], with c[N] = 0
    w = np.exp(1j * np.pi * k / (2 * n)) * (c - 1j * shifted)
    v = np.real(np.fft.ifft(w))
    x = np.empty(n)
    x[::2] = v[: (n + 1) // 2]
    x[1::2] = v[(n + 1) // 2:][::-1]
    return x


@dataclass(frozen=True)
class DCT2(Transform):
    """Orthonormal DCT-II (example plugin): compacts energy of smooth rows, e.g. conv kernels."""

    id: ClassVar[str] = "example.dct2"

    def coefficient_count(self, n: int) -> int:
        return n

    def forward(self, x: np.ndarray) -> np.ndarray:
        return dct2(np.asarray(x, dtype=np.float64))

    def inverse(self, coefficients: np.ndarray, n: int) -> np.ndarray:
        return idct2(np.real(np.asarray(coefficients)).astype(np.float64))[:n]


@hookimpl
def rftpack_transforms() -> list[type]:
    return [DCT2]
