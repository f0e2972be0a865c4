"""``rans``: static-model rANS (constriction's ``AnsCoder``) over one block of symbols.

Segment layout (little-endian):

    varint  number of distinct symbols d (0 for an empty block)
    d ×     varint symbol gap (symbol − previous symbol − 1, first: symbol), varint frequency
    rest    constriction AnsCoder words (uint32 LE); absent when d ≤ 1

Frequencies are counts quantized to sum exactly 2**16 (each present symbol ≥ 1), so the model
is stored exactly and the decoder rebuilds the same table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from rftpack.errors import FormatError, StageError
from rftpack.stages._varint import read_varint, write_varint
from rftpack.stages.base import Coder, symbol_dtype

PROBABILITY_BITS = 16
MAX_ALPHABET = 1 << 16


def quantize_frequencies(counts: np.ndarray, total: int = 1 << PROBABILITY_BITS) -> np.ndarray:
    """Integer frequencies summing to ``total``; every symbol with a count keeps ≥ 1.

    >>> quantize_frequencies(np.array([3, 1, 0])).tolist()
    [49152, 16384, 0]
    """
    counts = counts.astype(np.int64)
    present = counts > 0
    freqs = np.where(present, np.maximum(1, (counts * total) // max(1, counts.sum())), 0)
    # Give the rounding remainder to (or take it from) the most frequent symbols, in a fixed order.
    deficit = int(total - freqs.sum())
    order = np.argsort(-counts, kind="stable")
    i = 0
    while deficit != 0:
        sym = order[i % int(present.sum())]
        if deficit > 0:
            freqs[sym] += deficit
            deficit = 0
        elif freqs[sym] > 1:
            take = min(-deficit, int(freqs[sym]) - 1)
            freqs[sym] -= take
            deficit += take
        i += 1
    return freqs


def _model(freqs: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(
        freqs.astype(np.float64) / float(1 << PROBABILITY_BITS), perfect=False
    )


@dataclass(frozen=True)
class RansCoder(Coder):
    """rANS entropy coder (constriction) with a stored per-block frequency table.

    Example:
        >>> c = RansCoder()
        >>> s = np.array([0, 1, 1, 3, 1], dtype=np.uint8)
        >>> c.decode(c.encode(s, 4), 5, 4).tolist()
        [0, 1, 1, 3, 1]
    """

    id: ClassVar[str] = "rans"

    def encode(self, symbols: np.ndarray, alphabet: int) -> bytes:
        if alphabet > MAX_ALPHABET:
            raise StageError(f"rans: alphabet {alphabet} exceeds {MAX_ALPHABET}; use zstd or raw")
        header = bytearray()
        if symbols.size == 0:
            write_varint(0, header)
            return bytes(header)
        counts = np.bincount(symbols.astype(np.int64), minlength=alphabet)
        if counts.shape[0] > alphabet:
            raise StageError(f"rans: symbol {int(symbols.max())} outside alphabet {alphabet}")
        freqs = quantize_frequencies(counts)
        present = np.flatnonzero(freqs)
        write_varint(int(present.size), header)
        previous = -1
        for sym in present.tolist():
            write_varint(sym - previous - 1, header)
            write_varint(int(freqs[sym]), header)
            previous = sym
        if present.size == 1:
            return bytes(header)
        import constriction

        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(symbols.astype(np.int32), _model(freqs))
        words = coder.get_compressed().astype("<u4")
        return bytes(header) + words.tobytes()

    def decode(self, data: bytes, count: int, alphabet: int) -> np.ndarray:
        out_dtype = symbol_dtype(alphabet)
        view = memoryview(data)
        distinct, pos = read_varint(view, 0)
        if distinct > min(alphabet, MAX_ALPHABET):
            raise FormatError(f"rans: table has {distinct} symbols for alphabet {alphabet}")
        if count == 0 or distinct == 0:
            if count:
                raise FormatError("rans: empty frequency table for a non-empty block")
            return np.zeros(0, out_dtype)
        freqs = np.zeros(alphabet, np.int64)
        symbol = -1
        for _ in range(distinct):
            gap, pos = read_varint(view, pos)
            freq, pos = read_varint(view, pos)
            symbol += gap + 1
            if symbol >= alphabet:
                raise FormatError("rans: frequency table names a symbol outside the alphabet")
            if not 0 < freq <= 1 << PROBABILITY_BITS:
                raise FormatError(f"rans: frequency {freq} outside (0, 2**16]")
            freqs[symbol] = freq
        if int(freqs.sum()) != 1 << PROBABILITY_BITS:
            raise FormatError("rans: frequency table does not sum to 2**16")
        if distinct == 1:
            return np.full(count, symbol, out_dtype)
        body = view[pos:]
        if len(body) % 4:
            raise FormatError("rans: compressed body is not a whole number of 32-bit words")
        import constriction

        words = np.frombuffer(body, dtype="<u4").astype(np.uint32)
        try:
            decoder = constriction.stream.stack.AnsCoder(words)
            symbols = decoder.decode(_model(freqs), count)
        except Exception as exc:  # constriction raises plain errors on corrupt input
            raise FormatError(f"rans: corrupt stream ({exc})") from exc
        return symbols.astype(out_dtype)
