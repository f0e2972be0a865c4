"""Test tables whose neighbouring rows are alike, as learned position embeddings are."""

from __future__ import annotations

import numpy as np


def position_table(rows: int = 512, width: int = 64, seed: int = 0) -> np.ndarray:
    """Rows that change smoothly, like learned position embeddings (plus a little noise)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, rows)[:, None]
    freq = rng.uniform(0.5, 12.0, size=width)[None, :]
    phase = rng.uniform(0, 2 * np.pi, size=width)[None, :]
    return (0.05 * np.sin(2 * np.pi * freq * t + phase)
            + 0.002 * rng.normal(size=(rows, width))).astype(np.float32)
