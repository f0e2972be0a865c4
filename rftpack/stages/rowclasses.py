"""Row classes: a block's codes coded as C groups of whole rows, each with its own table.

Rows of a weight matrix differ in scale (on MiniLM the RMS of a token-embedding table's rows
spans ~2 octaves), so one histogram of the block's codes is wider than the histogram of any
row. The encoder sorts the rows into C classes by their RMS (equal numbers of rows, by
quantile) and the coder keeps one table per class; the decoder reads each row's class (one
symbol per row) and puts every class's codes back in place. Side info: one symbol per row
and C − 1 more tables. On MiniLM's matrices at 3.5–6 bits per weight, classes by row RMS save
0.028 bit per weight net of both with 4 classes (8: 0.026, 16: 0.018); ``--profile dq --bpw 5``
with up to 4 a block: 4.995 → 4.968 bits per weight at equal error, +0.18 dB at equal rate.

Example:
    >>> x = np.repeat([0.1, 1.0, 0.1, 1.0], 3)
    >>> classes = quantile_classes(row_levels(x, 3), 2)
    >>> classes.tolist()
    [0, 1, 0, 1]
    >>> parts = split(np.arange(12), classes, 3, 2)
    >>> [p.tolist() for p in parts]
    [[0, 1, 2, 6, 7, 8], [3, 4, 5, 9, 10, 11]]
    >>> merge(parts, classes, 3, 12).tolist() == list(range(12))
    True
"""

from __future__ import annotations

import math

import numpy as np

from rftpack import native
from rftpack.errors import FormatError
from rftpack.stages.rans import table_bytes

#: most classes a block may have (the row-class stream's alphabet)
MAX_CLASSES = 16
#: bytes of a ``rans`` table besides its level nibbles (runs, escapes), for estimates
TABLE_EXTRA_BYTES = 6
#: codes from this one up share a bin in :func:`estimated_gain`
ESTIMATE_ALPHABET = 4096
#: bytes each further stream of a block costs besides its codes and table: its segment record
#: in the container (≈ 20 deflated, measured on MiniLM) and the coder's final state
SEGMENT_BYTES = 26


#: values squared at a time by :func:`row_levels` (8 MB of float64: its transient memory,
#: which rate control's peak includes)
ROW_LEVEL_CHUNK = 1 << 20


def row_levels(x: np.ndarray, length: int) -> np.ndarray:
    """log2 of the RMS of each row of ``length`` consecutive values (the last row may be
    shorter; an all-zero row is −1100, below any float's).

    >>> row_levels(np.array([3.0, 4.0, 0.0, 0.0, 2.0]), 2).tolist()
    [1.8219280948873624, -1100.0, 1.0]
    """
    starts = np.arange(0, x.shape[0], length)
    rows = max(1, ROW_LEVEL_CHUNK // length)

    def energy_of(chunk: np.ndarray) -> np.ndarray:
        # whole rows at a time: the float64 squares of a chunk (in place), not of the tensor
        squares = np.array(chunk, np.float64)
        np.square(squares, out=squares)
        return np.add.reduceat(squares, np.arange(0, squares.shape[0], length))

    energy = np.concatenate([energy_of(x[i:i + rows * length])
                             for i in range(0, x.shape[0], rows * length)]) \
        if x.size else np.zeros(0)
    sizes = np.minimum(length, x.shape[0] - starts)
    with np.errstate(divide="ignore"):
        return np.maximum(0.5 * np.log2(energy / sizes), -1100.0)


def quantile_classes(levels: np.ndarray, classes: int) -> np.ndarray:
    """Class 0 … ``classes`` − 1 of each level: equal numbers of rows per class, by rank
    (ties go to the lower class)."""
    if classes <= 1 or not levels.size:
        return np.zeros(levels.shape[0], np.uint8)
    edges = np.quantile(levels, np.arange(1, classes) / classes)
    return np.searchsorted(edges, levels, side="left").astype(np.uint8)


def code_classes(row_class: np.ndarray, length: int, count: int) -> np.ndarray:
    """The class of each of ``count`` codes in rows of ``length``."""
    return np.repeat(row_class, length)[:count]


def split(symbols: np.ndarray, row_class: np.ndarray, length: int, classes: int
          ) -> list[np.ndarray]:
    """The codes of each class, in block order (whole rows at a time: ~10x faster than a
    mask over every code).

    >>> [p.tolist() for p in split(np.arange(7), np.array([1, 0, 1, 0]), 2, 2)]
    [[2, 3, 6], [0, 1, 4, 5]]
    """
    whole = symbols.shape[0] // length
    grid = symbols[:whole * length].reshape(whole, length)
    parts = [grid[row_class[:whole] == c].reshape(-1) for c in range(classes)]
    if whole < row_class.shape[0]:  # a short last row
        last = int(row_class[whole])
        parts[last] = np.concatenate([parts[last], symbols[whole * length:]])
    return parts


def merge(parts: list[np.ndarray], row_class: np.ndarray, length: int, count: int
          ) -> np.ndarray:
    """Inverse of :func:`split`; parts of the wrong sizes are a FormatError."""
    if row_class.shape[0] != -(-count // length):
        raise FormatError(f"expected {-(-count // length)} row classes, got "
                          f"{row_class.shape[0]}")
    rows = row_class.shape[0]
    row_lengths = np.full(rows, length, np.int64)
    if rows:
        row_lengths[-1] = count - (rows - 1) * length
    sizes = np.bincount(row_class, weights=row_lengths, minlength=len(parts)).astype(np.int64)
    if sizes.shape[0] > len(parts) or any(p.shape[0] != s for p, s in zip(parts, sizes,
                                                                           strict=False)):
        raise FormatError(f"class streams hold {[p.shape[0] for p in parts]} codes, their "
                          f"rows {sizes.tolist()}")
    dtype = np.result_type(*parts) if parts else np.uint16
    # Row by row: every class's rows are whole rows of its stream (the last row may be short).
    out = np.empty(rows * length, dtype)
    whole = count // length
    grid = out[:whole * length].reshape(whole, length)
    classes = row_class[:whole]
    for c, part in enumerate(parts):
        mask = classes == c
        taken = int(np.count_nonzero(mask)) * length
        grid[mask] = part[:taken].reshape(-1, length)
        if whole < rows and c == row_class[whole]:
            out[whole * length:count] = part[taken:]
    return out[:count]


def coded_bits(counts: np.ndarray) -> float:
    """Bits of symbols with these ``counts`` under one static table: their entropy plus the
    ``rans`` coder's table (its fast estimate, within a few bytes)."""
    total = float(counts.sum())
    if total == 0:
        return 0.0
    seen = counts[counts > 0].astype(np.float64)
    return float(-(seen * np.log2(seen / total)).sum()) \
        + 8.0 * table_bytes(counts, approximate=True)


def finest(most: int, rows: float) -> int:
    """The most classes a block of ``rows`` rows may have under a limit of ``most``: the
    largest power of two with at least 2 rows per class (1: no classes).

    >>> finest(4, 100), finest(4, 5), finest(16, 1)
    (4, 2, 1)
    """
    classes = 1
    while 2 * classes <= min(most, MAX_CLASSES) and rows >= 4 * classes:
        classes *= 2
    return classes


def choose(x: np.ndarray, symbols: np.ndarray, alphabet: int, length: int, most: int
           ) -> np.ndarray | None:
    """Row classes for the block's codes ``symbols`` of values ``x``: the number of classes
    (a power of two ≤ ``most``, each of at least 2 rows) whose codes and class stream cost
    least, or None when one table is cheapest. Quantile classes nest (2 classes are pairs of
    4), so one histogram of the finest serves them all."""
    k = finest(most, -(-x.shape[0] // length))
    if k == 1:
        return None
    finest_class = quantile_classes(row_levels(x, length), k)
    if native.available():
        counts = np.zeros((k, alphabet), np.int64)
        seen = native.histogram(symbols, alphabet, finest_class, length)
        counts[:seen.shape[0]] = seen
    else:
        counts = np.bincount(code_classes(finest_class, length, x.shape[0]).astype(np.int64)
                             * alphabet + symbols, minlength=k * alphabet).reshape(k, alphabet)
    best, best_bits, classes = None, coded_bits(counts.sum(axis=0)), 2
    while classes <= k:
        row_class = finest_class // (k // classes)
        merged = counts.reshape(classes, k // classes, alphabet).sum(axis=1)
        bits = sum(coded_bits(c) for c in merged) \
            + coded_bits(np.bincount(row_class, minlength=classes)) \
            + 8.0 * SEGMENT_BYTES * classes
        if bits < best_bits:
            best, best_bits = row_class, bits
        classes *= 2
    return best


def sample_classes(levels: np.ndarray, rows: float, most: int) -> tuple[int, np.ndarray]:
    """(k, class of each sampled code) of a sample whose codes' rows have these ``levels``,
    in the finest classes :func:`choose` would try on blocks of ``rows`` rows (k = 1: none).
    They do not depend on the step: rate control computes them once."""
    k = finest(most, rows)
    return k, quantile_classes(levels, k).astype(np.int64)


def estimated_gain(codes: np.ndarray, classes: tuple[int, np.ndarray], weights: np.ndarray,
                   size: float, rows: float, blocks: int = 1) -> float:
    """Bits that row classes save on ``size`` codes in ``rows`` rows, cut into ``blocks``
    coder blocks (each with its own tables), estimated from a sample: its ``codes``, their
    :func:`sample_classes` and how many codes each stands for (rate control's mirror of
    :func:`choose`, with its finest classes only; 0 when one table is cheaper).

    >>> rng = np.random.default_rng(0)
    >>> levels = np.repeat(rng.normal(size=256), 64)
    >>> codes = np.abs(np.rint(rng.normal(size=16384) * 8 * 2.0 ** levels)).astype(np.int64)
    >>> classes = sample_classes(levels, 256, 4)
    >>> round(estimated_gain(codes, classes, np.ones(16384), 16384, 256) / 16384, 2)
    0.22
    """
    k, finest_class = classes
    if k == 1 or not codes.size:
        return 0.0
    # Wide codes (fine steps, far from any target): their rare tail in one bin is enough.
    alphabet = min(int(codes.max()) + 1, ESTIMATE_ALPHABET)
    codes = np.minimum(codes, alphabet - 1)

    def histogram(every: int) -> np.ndarray:
        joint = finest_class[::every] * alphabet + codes[::every]
        return np.bincount(joint, weights=weights[::every],
                           minlength=k * alphabet).reshape(k, alphabet)

    full, half = histogram(1), histogram(2)

    def information(counts: np.ndarray, classes: int) -> tuple[float, np.ndarray]:
        """(plug-in entropy of the codes given their class, symbols seen per class)."""
        merged = counts.reshape(classes, k // classes, alphabet).sum(axis=1)
        total = merged.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = merged / total[:, None]
            per_class = -np.where(merged > 0, p * np.log2(p), 0.0).sum(axis=1)
        return float((per_class * total).sum() / total.sum()), np.count_nonzero(merged, axis=1)

    def bits(classes: int) -> float:
        # A sample's plug-in entropy is low by about (symbols − 1) / (2n ln 2), more so the
        # more classes share it: extrapolate from the half sample to an unbiased one.
        entropy, seen = information(full, classes)
        entropy = 2.0 * entropy - information(half, classes)[0]
        # each table: a nibble per symbol seen and a few bytes of runs and escapes (what
        # matters is the difference between one table and several, within a few bytes)
        tables = float(seen.sum() / 2 + TABLE_EXTRA_BYTES * classes) * blocks
        return entropy * size + 8.0 * tables

    # Only the finest classes: where fewer would pay more (small blocks) the encoder does
    # better than estimated, which errs on the side of meeting a target.
    return max(0.0, bits(1) - bits(k) - rows * math.log2(k)
               - 8.0 * SEGMENT_BYTES * k * blocks)
