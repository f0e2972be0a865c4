"""``raw``: no entropy coding; symbols bit-packed at their real width (6-bit codes take 6 bits)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from rftpack.errors import FormatError
from rftpack.stages.base import Coder, symbol_dtype


def bit_width(alphabet: int) -> int:
    """Bits needed per symbol of an alphabet.

    >>> bit_width(64), bit_width(65), bit_width(1)
    (6, 7, 0)
    """
    return max(0, int(alphabet - 1).bit_length())


@dataclass(frozen=True)
class RawCoder(Coder):
    """Bit-packing at ceil(log2(alphabet)) bits per symbol, LSB first.

    Example:
        >>> c = RawCoder()
        >>> len(c.encode(np.arange(8, dtype=np.uint8), 8))  # 8 symbols × 3 bits
        3
    """

    id: ClassVar[str] = "raw"

    def encode(self, symbols: np.ndarray, alphabet: int) -> bytes:
        bits = bit_width(alphabet)
        if bits == 0 or symbols.size == 0:
            return b""
        values = symbols.astype(np.uint64)
        planes = ((values[:, None] >> np.arange(bits, dtype=np.uint64)) & 1).astype(np.uint8)
        return np.packbits(planes.ravel(), bitorder="little").tobytes()

    def decode(self, data: bytes, count: int, alphabet: int) -> np.ndarray:
        bits = bit_width(alphabet)
        dtype = symbol_dtype(alphabet)
        if bits == 0 or count == 0:
            return np.zeros(count, dtype)
        expected = (count * bits + 7) // 8
        if len(data) != expected:
            raise FormatError(f"raw: stream holds {len(data)} bytes, expected {expected}")
        planes = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[: count * bits]
        weights = np.uint64(1) << np.arange(bits, dtype=np.uint64)
        values = (planes.reshape(count, bits).astype(np.uint64) * weights).sum(axis=1)
        if int(values.max()) >= alphabet:
            raise FormatError(f"raw: decoded symbol outside alphabet {alphabet}")
        return values.astype(dtype)
