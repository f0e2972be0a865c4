"""``zstd``: symbols packed into the smallest unsigned type, then Zstandard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from rftpack.errors import FormatError, StageError
from rftpack.stages.base import Coder, symbol_dtype


@dataclass(frozen=True)
class ZstdCoder(Coder):
    """Zstandard over symbols packed little-endian in the smallest unsigned type.

    Example:
        >>> c = ZstdCoder(level=3)
        >>> s = np.arange(10, dtype=np.uint8)
        >>> c.decode(c.encode(s, 256), 10, 256).tolist() == list(range(10))
        True
    """

    id: ClassVar[str] = "zstd"
    level: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.level, int) or not -7 <= self.level <= 22:
            raise StageError(f"zstd: level must be an integer in [-7, 22], got {self.level!r}")

    def encode(self, symbols: np.ndarray, alphabet: int) -> bytes:
        import zstandard

        packed = np.ascontiguousarray(symbols, dtype=symbol_dtype(alphabet).newbyteorder("<"))
        return zstandard.ZstdCompressor(level=self.level).compress(packed.tobytes())

    def decode(self, data: bytes, count: int, alphabet: int) -> np.ndarray:
        import zstandard

        dtype = symbol_dtype(alphabet).newbyteorder("<")
        expected = count * dtype.itemsize
        try:
            # A frame header may claim any size; refuse before zstandard allocates it.
            declared = zstandard.frame_content_size(data)
            if declared > expected:
                raise FormatError(f"zstd: stream declares {declared} bytes, expected {expected}")
            raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=expected)
        except zstandard.ZstdError as exc:
            raise FormatError(f"zstd: corrupt stream ({exc})") from exc
        if len(raw) != expected:
            raise FormatError(f"zstd: stream holds {len(raw)} bytes, expected {expected}")
        symbols = np.frombuffer(raw, dtype=dtype)
        if alphabet < 1 << (8 * dtype.itemsize) and symbols.size and int(symbols.max()) >= alphabet:
            raise FormatError(f"zstd: decoded symbol outside alphabet {alphabet}")
        return symbols.astype(dtype.newbyteorder("="))
