"""``rft``: the Φ-phase FFT ("closed-form RFT") of the reference codec.

    Ψ = D_φ · C_σ · F,  F the unitary DFT,
    C_kk = exp(iπ σ k² / n),  D_kk = exp(2πi β frac(k / φ)),  φ = (1 + √5) / 2.

It is exactly unitary and its amplitudes equal the plain FFT's: it only rotates phases.
For real input only the non-redundant half spectrum k = 0 … ⌊n/2⌋ is kept (real input of
length n has n real degrees of freedom), computed with ``rfft``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from rftpack.errors import StageError
from rftpack.stages.base import Transform

GOLDEN_RATIO = (1.0 + np.sqrt(5.0)) / 2.0


def phase_factors(n: int, count: int, beta: float = 1.0, sigma: float = 1.0) -> np.ndarray:
    """``D_kk · C_kk`` for k = 0 … count − 1 of a length-``n`` transform (read-only, cached).

    >>> phase_factors(4, 1)
    array([1.+0.j])
    """
    return _factors(int(n), int(count), float(beta), float(sigma))


@functools.lru_cache(maxsize=4)
def _factors(n: int, count: int, beta: float, sigma: float) -> np.ndarray:
    # Blocks repeat (every full block has the same n), and forward/inverse pair up: cache.
    k = np.arange(count, dtype=np.float64)
    # k² / n is formed as (k / n) · k so that large n stays exact enough in float64.
    chirp = np.pi * sigma * (k / n) * k
    golden = 2.0 * np.pi * beta * np.mod(k / GOLDEN_RATIO, 1.0)
    factors = np.exp(1j * (chirp + golden))
    factors.setflags(write=False)
    return factors


def forward_full(x: np.ndarray, beta: float = 1.0, sigma: float = 1.0) -> np.ndarray:
    """All n complex coefficients (the reference's layout, no halving)."""
    n = x.shape[0]
    return phase_factors(n, n, beta, sigma) * np.fft.fft(x, norm="ortho")


def inverse_full(y: np.ndarray, beta: float = 1.0, sigma: float = 1.0) -> np.ndarray:
    """Inverse of :func:`forward_full` (complex result)."""
    n = y.shape[0]
    return np.fft.ifft(np.conj(phase_factors(n, n, beta, sigma)) * y, norm="ortho")


@dataclass(frozen=True)
class RFT(Transform):
    """Φ-phase FFT (golden-ratio phase RFT), half spectrum for real input; exact inverse.

    Example:
        >>> x = np.arange(8.0)
        >>> t = RFT()
        >>> bool(np.allclose(t.inverse(t.forward(x), 8), x))
        True
    """

    id: ClassVar[str] = "rft"
    beta: float = 1.0
    sigma: float = 1.0

    def __post_init__(self) -> None:
        for name in ("beta", "sigma"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and not isinstance(value, bool)
                    and np.isfinite(value) and abs(value) <= 1e6):
                raise StageError(f"rft: {name} must be a number in [-1e6, 1e6], got {value!r}")

    def coefficient_count(self, n: int) -> int:
        return n // 2 + 1 if n else 0

    def forward(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if n == 0:
            return np.zeros(0, np.complex128)
        spectrum = np.fft.rfft(x, norm="ortho")
        spectrum *= phase_factors(n, spectrum.shape[0], self.beta, self.sigma)
        return spectrum

    def inverse(self, coefficients: np.ndarray, n: int) -> np.ndarray:
        if n == 0:
            return np.zeros(0, np.float64)
        m = coefficients.shape[0]
        unrotated = coefficients * np.conj(phase_factors(n, m, self.beta, self.sigma))
        return np.fft.irfft(unrotated, n=n, norm="ortho")
