"""The example k-means quantizer conforms, and beats uniform levels on peaked weights."""

from __future__ import annotations

import numpy as np
from rftpack_kmeans.stages import KMeansQuantizer

from rftpack.testing import check_stage


def test_conformance() -> None:
    check_stage(KMeansQuantizer())
    check_stage(KMeansQuantizer(bits=2, iterations=0))


def test_beats_uniform_levels_on_laplacian_weights() -> None:
    x = np.random.default_rng(0).laplace(size=20_000) * 0.02
    q = KMeansQuantizer(bits=4)
    streams, side = q.quantize(x, [])
    y = q.dequantize({"codes": streams["codes"].symbols}, side, x.size)
    grid = np.linspace(x.min(), x.max(), 16)
    uniform = grid[np.abs(x[:, None] - grid[None, :]).argmin(axis=1)]
    assert np.mean((x - y) ** 2) < 0.5 * np.mean((x - uniform) ** 2)
