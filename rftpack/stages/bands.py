"""Geometric coefficient bands (the spec's partition: 64, 128, 256, … with the last band cut)."""

from __future__ import annotations

import numpy as np


def geometric_bands(count: int, min_band: int = 64, growth: float = 2.0) -> list[tuple[int, int]]:
    """Partition ``[0, count)`` into bands of sizes min_band, ·growth, ·growth², …

    Sizes follow the reference: ``size = int(size * growth)``; the last band is cut at ``count``.

    >>> geometric_bands(300)
    [(0, 64), (64, 192), (192, 300)]
    """
    if min_band < 1 or growth < 1.0:
        raise ValueError("min_band must be ≥ 1 and growth ≥ 1.0")
    bands: list[tuple[int, int]] = []
    start, size = 0, min_band
    while start < count:
        end = min(count, start + size)
        bands.append((start, end))
        start = end
        size = int(size * growth)
    return bands


def band_ids(count: int, bands: list[tuple[int, int]]) -> np.ndarray:
    """Band id of every index in ``[0, count)``.

    >>> band_ids(3, [(0, 1), (1, 3)]).tolist()
    [0, 1, 1]
    """
    ids = np.zeros(count, dtype=np.int64)
    for i, (start, end) in enumerate(bands):
        ids[start:end] = i
    return ids
