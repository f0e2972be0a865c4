"""``dct``: an orthonormal DCT-II down the rows of a matrix, for tables whose neighbouring
rows are alike — learned position embeddings, which change smoothly with position.

A block of ``m`` whole rows of ``row_length`` weights is read as an (m, row_length) matrix and
every column is transformed over its m entries:

    X[k, c] = s_k · Σ_r x[r, c] · cos(π k (2r + 1) / (2m)),   s_0 = √(1/m), s_k = √(2/m)

The coefficients are laid out like the weights (row k holds frequency k of every column). The
transform is orthonormal, so squared error and energy are the same in both domains: a step
that gives an error in the coefficients gives the same error in the weights. Most of a smooth
table's energy lands in its first rows, which row classes of ``scalar``/``dq`` then code with
their own tables: MiniLM's 512 × 384 position table takes 4.05 bits per weight as weights and
2.52 as coefficients at one step (plug-in entropies, 4 row classes).

With ``--row-dct auto`` (``CompressOptions.row_dct``), compress picks this stage per tensor
where it pays (:func:`rows_pay`). It is off by default: a smaller squared error is not a
better model there, as at low rates the error gathers in the table's first rows, the
positions every input uses (MiniLM at 3.43 bpw: +0.08 dB weight SNR, but sentence-embedding
cosine 0.961 → 0.910). Computed with numpy's FFT (Makhoul's reordering), in float64.

Example:
    >>> t = RowDCT(row_length=2)
    >>> x = np.array([1.0, 2.0, 1.0, 2.0, 1.0, 2.0])
    >>> np.round(t.forward(x), 6).tolist()
    [1.732051, 3.464102, 0.0, 0.0, 0.0, 0.0]
    >>> np.allclose(t.inverse(t.forward(x), 6), x)
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from rftpack.errors import FormatError, StageError
from rftpack.stages.base import Transform

#: the most weights per row (the longest rows of real checkpoints are far shorter)
MAX_ROW_LENGTH = 1 << 26


def dct_rows(x: np.ndarray) -> np.ndarray:
    """Orthonormal DCT-II of every column of ``x`` (m, c), over its m rows.

    >>> np.round(dct_rows(np.array([[1.0], [1.0]])), 6).tolist()
    [[1.414214], [0.0]]
    """
    m = x.shape[0]
    if m == 0:
        return np.zeros(x.shape)
    v = np.concatenate([x[0::2], x[1::2][::-1]], axis=0)
    spectrum = np.fft.fft(v, axis=0)
    k = np.arange(m)
    out = np.real(spectrum * np.exp(-0.5j * np.pi * k / m)[:, None])
    out[0] *= np.sqrt(1.0 / m)
    out[1:] *= np.sqrt(2.0 / m)
    return out


def idct_rows(coefficients: np.ndarray) -> np.ndarray:
    """Inverse of :func:`dct_rows` (an orthonormal DCT-III over the rows).

    >>> idct_rows(dct_rows(np.array([[3.0], [1.0], [2.0]]))).round(9).tolist()
    [[3.0], [1.0], [2.0]]
    """
    m = coefficients.shape[0]
    if m == 0:
        return np.zeros(coefficients.shape)
    k = np.arange(m)
    scaled = coefficients.astype(np.float64, copy=True)
    scaled[0] *= np.sqrt(float(m))
    scaled[1:] *= np.sqrt(m / 2.0)
    # V_k = e^{iπk/2m} (X_k − i·X_{m−k}), X_m = 0; then v = Re(IFFT(V))
    mirrored = np.zeros_like(scaled)
    mirrored[1:] = scaled[:0:-1]
    spectrum = np.exp(0.5j * np.pi * k / m)[:, None] * (scaled - 1j * mirrored)
    v = np.real(np.fft.ifft(spectrum, axis=0))
    x = np.empty_like(v)
    half = (m + 1) // 2
    x[0::2] = v[:half]
    x[1::2] = v[half:][::-1]
    return x


@dataclass(frozen=True)
class RowDCT(Transform):
    """Orthonormal DCT-II down the rows of each block (rows of ``row_length`` weights)."""

    id: ClassVar[str] = "dct"
    row_length: int = 1

    def __post_init__(self) -> None:
        if type(self.row_length) is not int or not 1 <= self.row_length <= MAX_ROW_LENGTH:
            raise StageError(f"dct: row_length must be an integer in [1, {MAX_ROW_LENGTH}], "
                             f"got {self.row_length!r}")

    def coefficient_count(self, n: int) -> int:
        return n

    def _rows(self, n: int, error: type[Exception]) -> int:
        if n % self.row_length:
            raise error(f"dct: a block of {n} values is not whole rows of {self.row_length}")
        return n // self.row_length

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        rows = self._rows(x.shape[0], StageError)
        return dct_rows(x.reshape(rows, self.row_length)).reshape(-1)

    def inverse(self, coefficients: np.ndarray, n: int) -> np.ndarray:
        c = np.real(coefficients).astype(np.float64)
        if c.shape[0] != n:
            raise FormatError(f"dct: {c.shape[0]} coefficients for a block of {n} values")
        rows = self._rows(n, FormatError)
        return idct_rows(c.reshape(rows, self.row_length)).reshape(-1)


#: rows_pay: fewest rows, least correlation of neighbouring rows, least saving (bits/weight)
MIN_ROWS = 16
MIN_CORRELATION = 0.5
MIN_SAVING_BITS = 0.1
#: rows_pay: the trial step, as a fraction of the weights' RMS (about 5 bits per weight)
TRIAL_STEP = 1.0 / 16
TRIAL_CLASSES = 4


def _class_entropy_bits(matrix: np.ndarray, step: float) -> float:
    """Bits to code ``matrix`` rounded to ``step``, rows in TRIAL_CLASSES classes of like RMS,
    each with its own (plug-in) table — what ``scalar``/``dq`` with row classes come close to."""
    order = np.argsort(np.sqrt(np.mean(matrix * matrix, axis=1)), kind="stable")
    total = 0.0
    for part in np.array_split(order, min(TRIAL_CLASSES, matrix.shape[0])):
        codes = np.rint(matrix[part] / step).astype(np.int64).reshape(-1)
        _, counts = np.unique(codes, return_counts=True)
        p = counts / codes.shape[0]
        total -= float(np.sum(counts * np.log2(p)))
    return total


def rows_pay(matrix: np.ndarray, block_rows: int) -> bool:
    """Whether :class:`RowDCT` (over blocks of ``block_rows`` rows) saves at least
    MIN_SAVING_BITS per weight on this finite (rows, row_length) float64 matrix at a trial
    step. Neighbouring rows must first correlate (ρ ≥ MIN_CORRELATION): the weight matrices of
    linear layers, whose rows are in no particular order, are rejected by that test alone.

    >>> t = np.linspace(0, 3, 256)[:, None] * np.linspace(1, 2, 64)[None, :]
    >>> smooth = np.sin(t) + 0.01 * np.random.default_rng(0).normal(size=t.shape)
    >>> rows_pay(smooth, 256), rows_pay(np.random.default_rng(1).normal(size=(256, 64)), 256)
    (True, False)
    """
    rows = matrix.shape[0]
    if rows < MIN_ROWS or block_rows < MIN_ROWS:
        return False
    energy = float(np.einsum("ij,ij->", matrix[:-1], matrix[:-1]))
    if energy <= 0 or float(np.einsum("ij,ij->", matrix[:-1], matrix[1:])) \
            < MIN_CORRELATION * energy:
        return False
    step = TRIAL_STEP * np.sqrt(float(np.mean(matrix * matrix)))
    coefficients = np.concatenate([dct_rows(matrix[r:r + block_rows])
                                   for r in range(0, rows, block_rows)])
    saved = _class_entropy_bits(matrix, step) - _class_entropy_bits(coefficients, step)
    return saved >= MIN_SAVING_BITS * matrix.size
