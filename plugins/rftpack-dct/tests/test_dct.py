"""The example plugin passes rftpack's conformance checks and is a real DCT-II."""

from __future__ import annotations

import numpy as np
from rftpack_dct.stages import DCT2, dct2, idct2

from rftpack.testing import check_stage


def direct_dct(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    basis = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    basis[0] /= np.sqrt(2.0)
    return basis @ x


def test_matches_the_definition() -> None:
    for n in (1, 2, 5, 8, 33):
        x = np.random.default_rng(n).normal(size=n)
        np.testing.assert_allclose(dct2(x), direct_dct(x), atol=1e-12)
        np.testing.assert_allclose(idct2(dct2(x)), x, atol=1e-12)


def test_conformance() -> None:
    check_stage(DCT2())
