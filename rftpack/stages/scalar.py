"""``scalar``: uniform scalar quantization with centroid reconstruction, for the identity
transform (the ``scalar`` profile).

    code   q = round(x / Δ)                       (zigzag-mapped to symbols for the coder)
    value  x̂ = sign(q) · (|q| − δ_|q|) · Δ        δ₁ for |q| = 1, δ₂ for |q| ≥ 2, 0 for q = 0

Δ is ``step`` (absolute) when set, else ``rel_step`` × the block's RMS; it is raised to
max|x| / 32000 if needed so every code fits a 16-bit alphabet. δ₁, δ₂ (the mean distance of
the weights from their reconstruction levels, toward zero) are measured per block and stored
in the side info: a free gain where weights are peaked around zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rftpack.errors import FormatError, StageError
from rftpack.stages.base import Codes, Quantizer

MAX_CODE = 32000


def zigzag(q: np.ndarray) -> np.ndarray:
    """Signed codes → non-negative symbols: 0, −1, 1, −2, 2 … → 0, 1, 2, 3, 4 …

    >>> zigzag(np.array([0, -1, 1, -2, 2])).tolist()
    [0, 1, 2, 3, 4]
    """
    q = q.astype(np.int64)
    return ((q << 1) ^ (q >> 63)).astype(np.uint16)


def unzigzag(symbols: np.ndarray) -> np.ndarray:
    """Inverse of :func:`zigzag`."""
    s = symbols.astype(np.int64)
    return (s >> 1) ^ -(s & 1)


@dataclass(frozen=True)
class SteppedQuantizer(Quantizer):
    """What ``scalar`` and ``dq`` share: an absolute or RMS-relative step Δ, one ``codes``
    stream of zig-zag symbols whose alphabet is in the side info, and their checks."""

    step: float = 0.0
    rel_step: float = 0.05

    def __post_init__(self) -> None:
        for name in ("step", "rel_step"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and not isinstance(value, bool)
                    and math.isfinite(value) and value >= 0):
                raise StageError(f"{self.id}: {name} must be a finite number ≥ 0, "
                                 f"got {value!r}")
        if self.step == 0 and self.rel_step == 0:
            raise StageError(f"{self.id}: set step or rel_step")

    def block_step(self, x: np.ndarray) -> float:
        """The step Δ used for a block (before the 16-bit range guard)."""
        if self.step > 0:
            return float(self.step)
        rms = float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0
        return self.rel_step * rms if rms > 0 else 1.0

    def stream_alphabets(self, side: dict[str, Any]) -> dict[str, int]:
        alphabet = side.get("alphabet")
        if not isinstance(alphabet, int) or not 1 <= alphabet <= 2 * MAX_CODE + 1:
            raise FormatError(f"{self.id}: side.alphabet must be in [1, {2 * MAX_CODE + 1}]")
        return {"codes": alphabet}

    def checked_codes(self, streams: dict[str, np.ndarray], side: dict[str, Any],
                      count: int) -> tuple[float, np.ndarray]:
        """(Δ, codes) of a block, validated against the side info."""
        step = side.get("step")
        if not (isinstance(step, int | float) and math.isfinite(step) and step > 0):
            raise FormatError(f"{self.id}: side.step must be a positive finite number")
        codes = streams.get("codes")
        if codes is None or codes.shape[0] != count:
            raise FormatError(f"{self.id}: expected {count} codes")
        if codes.size and int(codes.max()) >= self.stream_alphabets(side)["codes"]:
            raise FormatError(f"{self.id}: code outside its alphabet")
        return float(step), codes


@dataclass(frozen=True)
class ScalarQuantizer(SteppedQuantizer):
    """Uniform scalar quantizer (absolute or RMS-relative step) with centroid reconstruction.

    Example:
        >>> q = ScalarQuantizer(step=0.1)
        >>> streams, side = q.quantize(np.array([0.0, 0.26, -0.31]), [])
        >>> np.round(q.dequantize({"codes": streams["codes"].symbols}, side, 3), 2).tolist()
        [0.0, 0.3, -0.3]
    """

    id: ClassVar[str] = "scalar"
    centroid: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.centroid, bool):
            raise StageError("scalar: centroid must be true or false")

    def quantize(self, coefficients: np.ndarray, bands: list[tuple[int, int]]
                 ) -> tuple[dict[str, Codes], dict[str, Any]]:
        x = np.real(coefficients).astype(np.float64, copy=False)
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        step = max(self.block_step(x), peak / MAX_CODE, np.finfo(np.float64).tiny)
        scaled = x / step
        q = np.rint(scaled)
        offsets = [0.0, 0.0]
        if self.centroid and x.size:
            magnitude, distance = np.abs(q), np.abs(q) - np.abs(scaled)
            for i, mask in enumerate((magnitude == 1, magnitude >= 2)):
                if mask.any():
                    offsets[i] = float(np.clip(distance[mask].mean(), -0.5, 0.5))
        symbols = zigzag(q)
        alphabet = int(symbols.max()) + 1 if symbols.size else 1
        side = {"step": step, "offsets": offsets, "alphabet": alphabet}
        return {"codes": Codes(symbols, alphabet)}, side

    def dequantize(self, streams: dict[str, np.ndarray], side: dict[str, Any], count: int,
                   refine: Any = None) -> np.ndarray:
        offsets = side.get("offsets")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(v, int | float) and abs(v) <= 0.5 for v in offsets)):
            raise FormatError("scalar: side.offsets must be two numbers in [-0.5, 0.5]")
        step, codes = self.checked_codes(streams, side, count)
        alphabet = self.stream_alphabets(side)["codes"]
        # Every symbol has one reconstruction value: decode is a single table lookup.
        q = unzigzag(np.arange(alphabet))
        magnitude = np.abs(q).astype(np.float64)
        shift = np.where(magnitude == 1, offsets[0], np.where(magnitude >= 2, offsets[1], 0.0))
        table = np.sign(q) * (magnitude - shift) * step
        return table[codes]
