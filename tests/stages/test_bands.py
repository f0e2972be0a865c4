"""Geometric coefficient bands (the reference's partition)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rftpack.stages.bands import band_ids, geometric_bands


def reference_bands(count: int, min_band: int = 64, growth: float = 2.0) -> list[tuple[int, int]]:
    """The reference implementation's loop, written independently."""
    bands, start, size = [], 0, min_band
    while start < count:
        end = start + size
        if end > count:
            end = count
        bands.append((start, end))
        start = end
        size = int(size * growth)
    return bands


def test_spec_example() -> None:
    assert geometric_bands(300) == [(0, 64), (64, 192), (192, 300)]


@pytest.mark.parametrize("count,expected", [
    (0, []),
    (1, [(0, 1)]),
    (64, [(0, 64)]),
    (65, [(0, 64), (64, 65)]),
    (192, [(0, 64), (64, 192)]),
    (448, [(0, 64), (64, 192), (192, 448)]),
    (449, [(0, 64), (64, 192), (192, 448), (448, 449)]),
])
def test_band_edges(count: int, expected: list[tuple[int, int]]) -> None:
    assert geometric_bands(count) == expected


def test_non_integer_growth_truncates_like_reference() -> None:
    # 10 -> int(15.0) = 15 -> int(22.5) = 22 -> int(33.0) = 33
    assert geometric_bands(100, min_band=10, growth=1.5) == [(0, 10), (10, 25), (25, 47),
                                                              (47, 80), (80, 100)]


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 500), st.floats(1.0, 4.0))
def test_bands_cover_range_contiguously(count: int, min_band: int, growth: float) -> None:
    bands = geometric_bands(count, min_band, growth)
    assert bands == reference_bands(count, min_band, growth)
    if count == 0:
        assert bands == []
        return
    assert bands[0][0] == 0 and bands[-1][1] == count
    for (_, e0), (s1, _) in zip(bands, bands[1:], strict=False):
        assert e0 == s1
    assert all(s < e for s, e in bands)


@pytest.mark.parametrize("min_band,growth", [(0, 2.0), (-1, 2.0), (64, 0.5)])
def test_invalid_parameters(min_band: int, growth: float) -> None:
    with pytest.raises(ValueError):
        geometric_bands(100, min_band, growth)


def test_band_ids() -> None:
    bands = geometric_bands(300)
    ids = band_ids(300, bands)
    assert ids[:64].tolist() == [0] * 64
    assert ids[64:192].tolist() == [1] * 128
    assert ids[192:].tolist() == [2] * 108
