"""The scalar quantizer: exact code/value formulas, centroid gain, range guard, bad side info."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rftpack.errors import FormatError, StageError
from rftpack.stages.scalar import MAX_CODE, ScalarQuantizer, unzigzag, zigzag


@given(st.lists(st.integers(-MAX_CODE, MAX_CODE), max_size=200))
def test_zigzag_round_trip(values: list[int]) -> None:
    q = np.array(values, dtype=np.int64)
    assert unzigzag(zigzag(q)).tolist() == values


def round_trip(quantizer: ScalarQuantizer, x: np.ndarray) -> tuple[np.ndarray, dict]:
    streams, side = quantizer.quantize(x, [])
    return quantizer.dequantize({"codes": streams["codes"].symbols}, side, x.shape[0]), side


@settings(max_examples=50, deadline=None)
@given(st.floats(1e-4, 1.0), st.integers(1, 3000), st.integers(0, 2**31))
def test_error_is_at_most_half_a_step_without_centroid(step: float, n: int, seed: int) -> None:
    x = np.random.default_rng(seed).normal(size=n) * 0.3
    y, side = round_trip(ScalarQuantizer(step=step, centroid=False), x)
    assert np.max(np.abs(x - y)) <= side["step"] / 2 + 1e-12


def test_centroid_lowers_error_on_peaked_weights() -> None:
    x = np.random.default_rng(0).laplace(size=200_000) * 0.02
    plain, _ = round_trip(ScalarQuantizer(step=0.05, centroid=False), x)
    shifted, side = round_trip(ScalarQuantizer(step=0.05), x)
    assert side["offsets"][0] > 0  # Laplacian mass sits toward zero within each bin
    assert np.sum((x - shifted) ** 2) < 0.97 * np.sum((x - plain) ** 2)


def test_relative_step_scales_with_the_block() -> None:
    x = np.random.default_rng(1).normal(size=5000)
    _, a = round_trip(ScalarQuantizer(rel_step=0.1), x)
    _, b = round_trip(ScalarQuantizer(rel_step=0.1), x * 1000)
    assert b["step"] == pytest.approx(1000 * a["step"], rel=1e-9)


def test_step_is_raised_so_codes_fit_sixteen_bits() -> None:
    x = np.array([0.0, 1e-9, 1e6])
    streams, side = ScalarQuantizer(step=1e-9).quantize(x, [])
    assert side["alphabet"] <= 2 * MAX_CODE + 1
    assert side["step"] >= 1e6 / MAX_CODE


def test_all_zero_block_decodes_to_zeros() -> None:
    y, _ = round_trip(ScalarQuantizer(), np.zeros(100))
    assert not y.any()


@pytest.mark.parametrize("side", [
    {"step": 0.0, "offsets": [0, 0], "alphabet": 5},
    {"step": float("nan"), "offsets": [0, 0], "alphabet": 5},
    {"step": 1.0, "offsets": [0.9, 0], "alphabet": 5},
    {"step": 1.0, "offsets": [0], "alphabet": 5},
    {"step": 1.0, "offsets": [0, 0], "alphabet": 0},
    {"step": 1.0, "offsets": [0, 0], "alphabet": 10**6},
])
def test_bad_side_info_is_a_format_error(side: dict) -> None:
    with pytest.raises(FormatError):
        ScalarQuantizer().dequantize({"codes": np.zeros(3, np.uint16)}, side, 3)


def test_code_outside_alphabet_is_a_format_error() -> None:
    with pytest.raises(FormatError):
        ScalarQuantizer().dequantize({"codes": np.array([7], np.uint16)},
                                     {"step": 1.0, "offsets": [0, 0], "alphabet": 5}, 1)


@pytest.mark.parametrize("config", [{"step": -1.0}, {"step": 0.0, "rel_step": 0.0},
                                    {"rel_step": float("inf")}, {"centroid": "yes"}])
def test_bad_config_is_a_stage_error(config: dict) -> None:
    with pytest.raises(StageError):
        ScalarQuantizer(**config)
