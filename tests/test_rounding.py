"""Mantissa rounding (rftpack.rounding): checked against independent conversions (float16,
bfloat16 and float32 casts round to nearest, ties to even, just as it must), and the rules
rate control uses to pick the number of bits."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rftpack.ratecontrol import TensorStats
from rftpack.rounding import (
    BUDGET_SHARE,
    MIN_BITS,
    Candidate,
    bits_for_budget,
    bits_for_relative_error,
    mantissa_bits,
    round_mantissa,
    squared_errors,
    total_errors,
)

words32 = st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=500).map(
    lambda w: np.array(w, np.uint32).view(np.float32))


@settings(max_examples=200, deadline=None)
@given(words32)
def test_seven_bits_is_bfloat16s_rounding(x: np.ndarray) -> None:
    """bfloat16 has float32's exponent range: a cast rounds every finite float32 just so."""
    with np.errstate(over="ignore", invalid="ignore"):
        cast = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    ours = round_mantissa(x, 7)
    finite = np.isfinite(x) & np.isfinite(cast)  # the cast overflows to inf near the top
    assert np.array_equal(ours[finite].view(np.uint32), cast[finite].view(np.uint32))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-65000, 65000, width=32), min_size=1, max_size=500))
def test_ten_bits_is_float16s_rounding_in_its_normal_range(values: list[float]) -> None:
    x = np.array(values, np.float32)
    x = x[(np.abs(x) >= 2.0**-14) | (x == 0)]  # float16's subnormals keep fewer bits
    assert np.array_equal(round_mantissa(x, 10), x.astype(np.float16).astype(np.float32))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e30, 1e30), min_size=1, max_size=300))
def test_float64_to_23_bits_is_a_float32_cast(values: list[float]) -> None:
    x = np.array(values, np.float64)
    x = x[(np.abs(x) >= 2.0**-126) | (x == 0)]
    assert np.array_equal(round_mantissa(x, 23), x.astype(np.float32).astype(np.float64))


@settings(max_examples=100, deadline=None)
@given(words32, st.integers(0, 22))
def test_finite_values_stay_finite_and_within_half_a_unit(x: np.ndarray, bits: int) -> None:
    y = round_mantissa(x, bits)
    finite = np.isfinite(x)
    assert np.all(np.isfinite(y[finite]))
    big = finite & (np.abs(x) >= 2.0**-126)
    error = np.abs(y[big].astype(np.float64) - x[big].astype(np.float64))
    assert np.all(error <= np.abs(x[big].astype(np.float64)) * 2.0 ** -(bits + 1))
    assert np.array_equal(np.signbit(y[finite]), np.signbit(x[finite]))


def test_specials_keep_their_bits() -> None:
    x = np.array([np.inf, -np.inf, np.nan, -0.0, 0.0], np.float32)
    payload = np.array([0x7FC12345, 0xFF800001], np.uint32).view(np.float32)  # NaNs
    both = np.concatenate([x, payload])
    assert round_mantissa(both, 3).view(np.uint32).tolist() == both.view(np.uint32).tolist()


def test_the_largest_float_rounds_down_not_to_infinity() -> None:
    top = np.array([np.finfo(np.float32).max, -np.finfo(np.float32).max], np.float32)
    y = round_mantissa(top, 10)
    assert np.all(np.isfinite(y)) and np.all(np.abs(y) < np.abs(top))


def test_byte_order_and_full_precision() -> None:
    x = np.array([1.0 + 2.0**-20, -3.3], dtype=">f4")
    assert round_mantissa(x, 10).tolist() == [1.0, round_mantissa(np.float32([-3.3]), 10)[0]]
    y = np.array([0.1, 0.2], np.float32)
    assert np.array_equal(round_mantissa(y, 23), y) and round_mantissa(y, 30) is not y


def test_only_float32_and_float64_round() -> None:
    assert mantissa_bits(np.dtype(np.float32)) == 23
    assert mantissa_bits(np.dtype(">f8")) == 52
    for dtype in (np.float16, ml_dtypes.bfloat16, np.int32, np.bool_):
        assert mantissa_bits(np.dtype(dtype)) is None
    with pytest.raises(TypeError):
        round_mantissa(np.zeros(3, np.float16), 5)
    with pytest.raises(ValueError):
        round_mantissa(np.zeros(3, np.float32), -1)


def test_errors_shrink_with_more_bits() -> None:
    x = np.random.default_rng(0).normal(size=2000).astype(np.float32)
    errors = squared_errors(x, range(MIN_BITS, 23))
    values = [errors[b] for b in range(MIN_BITS, 23)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    # each bit quarters the error (uniform rounding error of relative size 2^-bits)
    assert 3.0 < values[0] / values[1] < 5.0


def test_bits_for_a_budget_and_for_a_relative_error() -> None:
    errors = {10: 8.0, 11: 2.0, 12: 0.5, 13: 0.1}
    assert bits_for_budget(errors, 2.0 / BUDGET_SHARE) == 11
    assert bits_for_budget(errors, 0.01 / BUDGET_SHARE) is None  # store exactly
    for bound in (1e-3, 3e-5, 1e-6, 2.0**-17):
        bits = bits_for_relative_error(bound)
        assert 2.0 ** -(bits + 1) <= bound
        assert bits == MIN_BITS or 2.0 ** -bits > bound  # and no fewer bits would do
    assert bits_for_relative_error(0.1) == MIN_BITS


def test_candidates_cost_one_more_bit_per_value_per_bit() -> None:
    stats = TensorStats("b", 80, False, 1.0, 0.0, exact_bytes=320)
    c = Candidate(stats, {10: 1e-6, 11: 2e-7}, rounded_bytes=150, exact_bytes=320)
    c.choose(11)
    assert (stats.exact_bytes, stats.fixed_error) == (160, 2e-7)
    c.choose(23)  # not a candidate: exact
    assert (stats.exact_bytes, stats.fixed_error) == (320, 0.0)
    c.choose(None)
    assert stats.exact_bytes == 320
    assert total_errors([c, c]) == {10: 2e-6, 11: 4e-7}
