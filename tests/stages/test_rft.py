"""The Φ-phase FFT transform (``rft``): exact inverse, half spectrum, unitarity, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rftpack.errors import StageError
from rftpack.stages.rft import RFT, forward_full, inverse_full, phase_factors

LENGTHS = [0, 1, 2, 3, 4, 5, 7, 8, 16, 17, 31, 64, 97, 100, 101, 255, 256, 1000, 1009, 4096,
           7919, 65537]


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.linalg.norm(b)), 1e-300)
    return float(np.linalg.norm(a - b)) / scale


def half_energy(c: np.ndarray, n: int) -> float:
    """Energy of a real signal from its half spectrum: DC and Nyquist once, interior twice."""
    if c.shape[0] == 0:
        return 0.0
    weights = np.full(c.shape[0], 2.0)
    weights[0] = 1.0
    if n % 2 == 0 and n > 0:
        weights[-1] = 1.0
    return float(np.sum(weights * np.abs(c) ** 2))


@pytest.mark.parametrize("n", LENGTHS)
def test_round_trip_exact_without_quantization(n: int) -> None:
    x = np.random.default_rng(n).normal(size=n)
    t = RFT()
    c = t.forward(x)
    assert c.shape == (t.coefficient_count(n),)
    y = t.inverse(c, n)
    assert y.shape == (n,) and y.dtype == np.float64
    if n:
        assert rel_err(y, x) <= 1e-12


def test_round_trip_large_odd_length() -> None:
    n = 2**20 + 3
    x = np.random.default_rng(1).normal(size=n)
    t = RFT()
    y = t.inverse(t.forward(x), n)
    assert rel_err(y, x) <= 1e-12


@pytest.mark.parametrize("n", [0, 1, 2, 3, 10, 11, 128, 129])
def test_coefficient_count_is_half_spectrum(n: int) -> None:
    expected = n // 2 + 1 if n else 0
    assert RFT().coefficient_count(n) == expected
    assert RFT().forward(np.ones(n)).shape == (expected,)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 9, 100, 101, 1024, 1031])
def test_half_spectrum_equals_full_transform_prefix(n: int) -> None:
    x = np.random.default_rng(n + 7).normal(size=n)
    half = RFT().forward(x)
    full = forward_full(x)
    np.testing.assert_allclose(half, full[: n // 2 + 1], rtol=0, atol=1e-12 * np.sqrt(n))


@pytest.mark.parametrize("n", [1, 2, 5, 64, 333, 4096])
def test_amplitudes_equal_plain_fft(n: int) -> None:
    x = np.random.default_rng(n).normal(size=n)
    amp = np.abs(RFT().forward(x))
    np.testing.assert_allclose(amp, np.abs(np.fft.rfft(x, norm="ortho")), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("n", [3, 8, 100])
def test_phases_are_actually_rotated(n: int) -> None:
    # The transform is not the plain FFT: some coefficient's phase differs.
    x = np.random.default_rng(n).normal(size=n)
    assert not np.allclose(RFT().forward(x), np.fft.rfft(x, norm="ortho"))


def test_parameters_change_the_phases_not_the_round_trip() -> None:
    x = np.random.default_rng(3).normal(size=50)
    a, b = RFT(), RFT(beta=0.5, sigma=2.0)
    assert not np.allclose(a.forward(x), b.forward(x))
    assert rel_err(b.inverse(b.forward(x), 50), x) <= 1e-12


def test_deterministic_bytes() -> None:
    x = np.random.default_rng(5).normal(size=12345)
    first = RFT().forward(x).tobytes()
    second = RFT().forward(x.copy()).tobytes()
    assert first == second
    assert RFT().inverse(RFT().forward(x), 12345).tobytes() == \
        RFT().inverse(RFT().forward(x), 12345).tobytes()


@pytest.mark.parametrize("n", [1, 2, 3, 4, 63, 64, 1000, 1001])
def test_unitary_energy_with_half_spectrum_weighting(n: int) -> None:
    x = np.random.default_rng(n).normal(size=n)
    c = RFT().forward(x)
    assert half_energy(c, n) == pytest.approx(float(x @ x), rel=1e-12)


def test_dc_coefficient_is_real_mean() -> None:
    x = np.random.default_rng(0).normal(size=37)
    c = RFT().forward(x)
    assert c[0].imag == pytest.approx(0.0, abs=1e-14)
    assert c[0].real == pytest.approx(x.sum() / np.sqrt(37), rel=1e-12)


def test_full_transform_is_unitary_and_inverts() -> None:
    x = np.random.default_rng(2).normal(size=77)
    y = forward_full(x)
    assert float(np.sum(np.abs(y) ** 2)) == pytest.approx(float(x @ x), rel=1e-12)
    assert rel_err(inverse_full(y).real, x) <= 1e-12
    assert np.max(np.abs(inverse_full(y).imag)) < 1e-12


def test_phase_factors_are_unit_modulus_and_follow_the_formula() -> None:
    n = 10
    k = np.arange(n)
    f = phase_factors(n, n)
    np.testing.assert_allclose(np.abs(f), 1.0, rtol=1e-14)
    phi = (1 + np.sqrt(5)) / 2
    expected = np.exp(1j * np.pi * k**2 / n) * np.exp(2j * np.pi * np.mod(k / phi, 1.0))
    np.testing.assert_allclose(f, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_parameters_rejected(bad: float) -> None:
    with pytest.raises(StageError):
        RFT(beta=bad)
    with pytest.raises(StageError):
        RFT(sigma=bad)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, st.integers(0, 600),
                  elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)))
def test_property_round_trip_and_energy(x: np.ndarray) -> None:
    n = x.shape[0]
    t = RFT()
    c = t.forward(x)
    assert c.shape == (t.coefficient_count(n),)
    y = t.inverse(c, n)
    assert y.shape == (n,)
    scale = float(np.linalg.norm(x))
    assert float(np.linalg.norm(y - x)) <= 1e-12 * max(scale, 1.0) * max(1.0, np.log2(n + 1))
    assert half_energy(c, n) == pytest.approx(scale**2, rel=1e-10, abs=1e-20)
