"""Helpers shared by the hostile tests: bit-exact comparison and whole-archive reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import rftpack


def same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-for-bit equal arrays (NaN payloads included), of any float dtype.

    >>> same_values(np.array([np.nan]), np.array([np.nan])), same_values(np.zeros(1), -np.zeros(1))
    (True, False)
    """
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.itemsize == 0 or a.size == 0:
        return True
    view = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    return bool(np.array_equal(np.ascontiguousarray(a).view(view),
                               np.ascontiguousarray(b).view(view)))


def decode_all(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of an archive, decoded."""
    with rftpack.open(path) as archive:
        return {name: np.asarray(archive.get_tensor(name)) for name in archive.keys()}


def containers(path: Path) -> dict[str, dict[str, Any]]:
    """Every tensor container of an archive, by tensor name."""
    with rftpack.open(path) as archive:
        return {name: archive.container(name) for name in archive.keys()}
