"""The ``polar`` quantizer: phase grid, pruning rules, error bounds, side-info validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rftpack.errors import FormatError, StageError
from rftpack.stages.polar import PolarQuantizer, wrap_phase


def random_coefficients(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=n) + 1j * rng.normal(size=n)


def symbols(streams: dict) -> dict[str, np.ndarray]:
    return {key: codes.symbols for key, codes in streams.items()}


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_phase_grid_has_exactly_two_pow_bits_codes(bits: int) -> None:
    q = PolarQuantizer(phase_bits=bits, prune_threshold=0.0)
    angles = np.linspace(-math.pi, math.pi, 20001)
    streams, _ = q.quantize(np.exp(1j * angles), [(0, angles.size)])
    codes = streams["phase_codes"].symbols
    assert streams["phase_codes"].alphabet == 2**bits
    assert set(np.unique(codes).tolist()) == set(range(2**bits))


def test_minus_pi_and_plus_pi_share_a_code() -> None:
    q = PolarQuantizer(phase_bits=5, prune_threshold=0.0)
    plus = complex(-1.0, 0.0)     # angle +π
    minus = complex(-1.0, -0.0)   # angle −π
    assert np.angle(plus) == math.pi and np.angle(minus) == -math.pi
    streams, _ = q.quantize(np.array([plus, minus, 1.0 + 0j]), [(0, 3)])
    codes = streams["phase_codes"].symbols.tolist()
    assert codes[0] == codes[1]
    assert codes[2] != codes[0]


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 16), st.integers(1, 16), st.integers(0, 300), st.integers(0, 2**32 - 1))
def test_codes_in_range(amp_bits: int, phase_bits: int, n: int, seed: int) -> None:
    q = PolarQuantizer(amp_bits=amp_bits, phase_bits=phase_bits, prune_threshold=0.0)
    streams, side = q.quantize(random_coefficients(n, seed), [(0, n)])
    alphabets = q.stream_alphabets(side)
    for key, codes in streams.items():
        assert codes.alphabet == alphabets[key]
        assert codes.symbols.ndim == 1
        if codes.symbols.size:
            assert int(codes.symbols.max()) < codes.alphabet
            assert int(codes.symbols.min()) >= 0
    assert streams["amp_codes"].symbols.shape == (side["kept"],)
    assert streams["phase_codes"].symbols.shape == (side["kept"],)


def test_amp_codes_span_both_ends_of_the_grid() -> None:
    q = PolarQuantizer(amp_bits=6, prune_threshold=0.0)
    streams, side = q.quantize(random_coefficients(500, 1), [(0, 500)])
    codes = streams["amp_codes"].symbols
    assert int(codes.min()) == 0 and int(codes.max()) == 63
    lo, hi = side["amp_scale"]
    assert lo < hi


def test_relative_threshold_is_scale_invariant() -> None:
    c = random_coefficients(4000, 2)
    q = PolarQuantizer(prune_threshold=0.5, prune_mode="relative")
    s1, side1 = q.quantize(c, [(0, c.size)])
    s2, side2 = q.quantize(c * 1000.0, [(0, c.size)])
    assert "keep_mask" in s1
    assert 0 < side1["kept"] < c.size
    np.testing.assert_array_equal(s1["keep_mask"].symbols, s2["keep_mask"].symbols)
    assert side1["kept"] == side2["kept"]


def test_relative_threshold_scales_with_rms() -> None:
    c = random_coefficients(3000, 3)
    q = PolarQuantizer(prune_threshold=0.7, prune_mode="relative")
    streams, side = q.quantize(c, [(0, c.size)])
    rms = math.sqrt(float(np.mean(np.abs(c) ** 2)))
    expected = np.abs(c) >= 0.7 * rms
    np.testing.assert_array_equal(streams["keep_mask"].symbols.astype(bool), expected)
    assert side["kept"] == int(expected.sum())


def test_absolute_threshold_prunes_by_magnitude() -> None:
    c = random_coefficients(3000, 4)
    t = 0.8
    q = PolarQuantizer(prune_threshold=t, prune_mode="absolute")
    streams, side = q.quantize(c, [(0, c.size)])
    expected = np.abs(c) >= t
    np.testing.assert_array_equal(streams["keep_mask"].symbols.astype(bool), expected)
    assert side["kept"] == int(expected.sum())
    # Absolute does not scale: the same threshold prunes nothing once the input is large.
    streams_big, side_big = q.quantize(c * 1000.0, [(0, c.size)])
    assert "keep_mask" not in streams_big or streams_big["keep_mask"].symbols.all()
    assert side_big["kept"] == int((np.abs(c * 1000.0) >= t).sum())


def test_absolute_threshold_keeps_value_equal_to_threshold() -> None:
    c = np.array([0.5 + 0j, 0.49999 + 0j, 2.0 + 0j])
    streams, side = PolarQuantizer(prune_threshold=0.5, prune_mode="absolute").quantize(c, [(0, 3)])
    assert streams["keep_mask"].symbols.tolist() == [1, 0, 1]
    assert side["kept"] == 2


@pytest.mark.parametrize("threshold", [0.0, 1e-9])
def test_keep_mask_absent_when_nothing_pruned(threshold: float) -> None:
    c = random_coefficients(200, 5) + 10.0
    streams, side = PolarQuantizer(prune_threshold=threshold).quantize(c, [(0, 200)])
    assert "keep_mask" not in streams
    assert side["kept"] == 200
    assert sorted(streams) == ["amp_codes", "phase_codes"]


def test_pruned_positions_dequantize_to_zero() -> None:
    c = random_coefficients(1000, 6)
    q = PolarQuantizer(prune_threshold=1.0, prune_mode="relative")
    streams, side = q.quantize(c, [(0, 1000)])
    out = q.dequantize(symbols(streams), side, 1000)
    mask = streams["keep_mask"].symbols.astype(bool)
    assert np.all(out[~mask] == 0)
    assert np.all(out[mask] != 0)


@pytest.mark.parametrize("amp_bits,phase_bits", [(6, 5), (3, 3), (10, 9), (1, 1)])
def test_dequantize_error_within_half_a_step(amp_bits: int, phase_bits: int) -> None:
    c = random_coefficients(2000, amp_bits)
    q = PolarQuantizer(amp_bits=amp_bits, phase_bits=phase_bits, prune_threshold=0.0)
    streams, side = q.quantize(c, [(0, c.size)])
    view = q.view(symbols(streams), side, c.size)
    lo, hi = side["amp_scale"]
    amp_step = (hi - lo) / (2**amp_bits - 1)
    log_err = np.abs(view.log_amp - np.log(np.abs(c)))
    assert float(log_err.max()) <= amp_step / 2 * (1 + 1e-9)
    phase_err = np.abs(wrap_phase(view.phase - np.angle(c)))
    assert float(phase_err.max()) <= q.phase_step / 2 * (1 + 1e-9)
    out = q.dequantize(symbols(streams), side, c.size)
    np.testing.assert_allclose(np.log(np.abs(out)), view.log_amp, atol=1e-12)


def test_constant_magnitude_block() -> None:
    c = np.exp(1j * np.linspace(-3, 3, 10)) * 2.0
    q = PolarQuantizer(prune_threshold=0.0)
    streams, side = q.quantize(c, [(0, 10)])
    assert side["amp_scale"][0] == pytest.approx(side["amp_scale"][1])
    out = q.dequantize(symbols(streams), side, 10)
    np.testing.assert_allclose(np.abs(out), 2.0, rtol=1e-12)


def test_empty_block() -> None:
    q = PolarQuantizer()
    streams, side = q.quantize(np.zeros(0, np.complex128), [])
    assert side["kept"] == 0
    out = q.dequantize(symbols(streams), side, 0)
    assert out.shape == (0,)


def test_refine_hook_is_applied() -> None:
    c = random_coefficients(50, 7)
    q = PolarQuantizer(prune_threshold=0.0)
    streams, side = q.quantize(c, [(0, 50)])
    seen = []

    def refine(view):
        seen.append(view.count)
        return view.log_amp + math.log(2.0), view.phase

    plain = q.dequantize(symbols(streams), side, 50)
    refined = q.dequantize(symbols(streams), side, 50, refine)
    assert seen == [50]
    np.testing.assert_allclose(refined, 2.0 * plain, rtol=1e-12)


# -- side-info validation -------------------------------------------------------------------------

def encoded(n: int = 100, threshold: float = 0.0):
    q = PolarQuantizer(prune_threshold=threshold)
    streams, side = q.quantize(random_coefficients(n, 8), [(0, n)])
    return q, symbols(streams), side


@pytest.mark.parametrize("amp_scale", [None, "0,1", [0.0], [0.0, 1.0, 2.0], [0.0, float("nan")],
                                       [float("-inf"), 1.0], ["a", "b"], {"lo": 0, "hi": 1}])
def test_bad_amp_scale_raises_format_error(amp_scale) -> None:
    q, streams, side = encoded()
    side = dict(side, amp_scale=amp_scale)
    if amp_scale is None:
        del side["amp_scale"]
    with pytest.raises(FormatError):
        q.dequantize(streams, side, 100)


@pytest.mark.parametrize("kept", [None, -1, 101, 50, 100.0, "100", True])
def test_bad_kept_raises_format_error(kept) -> None:
    q, streams, side = encoded()
    side = dict(side, kept=kept)
    if kept is None:
        del side["kept"]
    with pytest.raises(FormatError):
        q.dequantize(streams, side, 100)


def test_keep_mask_disagreeing_with_kept_raises() -> None:
    q, streams, side = encoded(threshold=0.5)
    assert "keep_mask" in streams
    mask = streams["keep_mask"].copy()
    mask[np.flatnonzero(mask)[0]] = 0
    with pytest.raises(FormatError):
        q.dequantize(dict(streams, keep_mask=mask), side, 100)


def test_missing_keep_mask_when_pruned_raises() -> None:
    q, streams, side = encoded(threshold=0.5)
    streams = {k: v for k, v in streams.items() if k != "keep_mask"}
    with pytest.raises(FormatError):
        q.dequantize(streams, side, 100)


def test_wrong_code_count_raises() -> None:
    q, streams, side = encoded()
    with pytest.raises(FormatError):
        q.dequantize(dict(streams, amp_codes=streams["amp_codes"][:-1]), side, 100)


# -- configuration --------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"amp_bits": 0}, {"amp_bits": 17}, {"phase_bits": 0}, {"phase_bits": 17},
    {"amp_bits": 6.0}, {"phase_bits": "5"},
    {"prune_threshold": -0.1}, {"prune_threshold": float("nan")},
    {"prune_threshold": float("inf")}, {"prune_threshold": "0.1"},
    {"prune_mode": "bogus"}, {"prune_mode": "Relative"},
])
def test_bad_config_raises_stage_error(kwargs) -> None:
    with pytest.raises(StageError):
        PolarQuantizer(**kwargs)


@pytest.mark.parametrize("bits", [1, 16])
def test_bit_width_limits_accepted(bits: int) -> None:
    q = PolarQuantizer(amp_bits=bits, phase_bits=bits)
    assert q.stream_alphabets({}) == {"keep_mask": 2, "amp_codes": 2**bits,
                                      "phase_codes": 2**bits}


def test_wrap_phase_range() -> None:
    angles = np.array([-3 * math.pi, -math.pi, 0.0, math.pi, 3 * math.pi, 7.0])
    wrapped = wrap_phase(angles)
    assert np.all(wrapped >= -math.pi) and np.all(wrapped < math.pi)
    np.testing.assert_allclose(np.exp(1j * wrapped), np.exp(1j * angles), atol=1e-12)


# -- rate-distortion band allocation ---------------------------------------------------------

def _rd_round_trip(x: np.ndarray, bands: list[tuple[int, int]]):
    q = PolarQuantizer(band_allocation="rd", prune_threshold=0.0)
    streams, side = q.quantize(x, bands)
    symbols = {k: v.symbols for k, v in streams.items()}
    return q, side, q.dequantize(symbols, side, x.shape[0])


def test_rd_allocation_moves_bits_to_energetic_bands() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(size=256) * 10, rng.normal(size=768) * 0.1]) * (1 + 0j)
    bands = [(0, 256), (256, 1024)]
    q, side, y = _rd_round_trip(x, bands)
    assert side["band_shift"][0] > 0 > side["band_shift"][1]
    assert side["band_ends"] == [256, 1024]
    uniform = PolarQuantizer(prune_threshold=0.0)
    streams, uside = uniform.quantize(x, bands)
    yu = uniform.dequantize({k: v.symbols for k, v in streams.items()}, uside, 1024)
    assert np.sum(np.abs(x - y) ** 2) < np.sum(np.abs(x - yu) ** 2)
    assert not q.refinable and uniform.refinable


@pytest.mark.parametrize("patch", [{"band_shift": [99, 0]}, {"band_ends": [1024, 256]},
                                   {"band_ends": [256]}, {"band_shift": "x"}])
def test_rd_side_info_is_checked(patch: dict) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=1024) * (1 + 0j)
    q, side, _ = _rd_round_trip(x, [(0, 256), (256, 1024)])
    streams, side = q.quantize(x, [(0, 256), (256, 1024)])
    with pytest.raises(FormatError):
        q.dequantize({k: v.symbols for k, v in streams.items()}, {**side, **patch}, 1024)


@pytest.mark.parametrize("amp_bits,phase_bits,threshold", [(6, 5, 0.0), (6, 5, 0.5),
                                                           (10, 9, 0.0), (1, 1, 0.3)])
def test_dequantize_is_the_product_of_its_amplitude_and_phasor(amp_bits: int, phase_bits: int,
                                                               threshold: float) -> None:
    """Whether decoded through the table of (amplitude, phase) products (≤ 12 bits a pair)
    or through one table each, every kept coefficient is exactly amplitude × unit phasor."""
    c = random_coefficients(3000, amp_bits + phase_bits)
    q = PolarQuantizer(amp_bits=amp_bits, phase_bits=phase_bits, prune_threshold=threshold)
    streams, side = q.quantize(c, [(0, c.size)])
    codes = symbols(streams)
    out = q.dequantize(codes, side, c.size)
    lo, hi = side["amp_scale"]
    amp = np.exp(lo + np.arange(1 << amp_bits) * ((hi - lo) / (2**amp_bits - 1)))
    phasor = np.exp(1j * (-math.pi + np.arange(1 << phase_bits) * q.phase_step))
    expected = np.zeros(c.size, np.complex128)
    kept = codes["keep_mask"].astype(bool) if "keep_mask" in codes else np.ones(c.size, bool)
    expected[kept] = amp[codes["amp_codes"]] * phasor[codes["phase_codes"]]
    assert np.array_equal(out, expected)


@pytest.mark.parametrize("stream", ["amp_codes", "phase_codes"])
def test_a_code_past_its_bit_width_raises_format_error(stream: str) -> None:
    q, streams, side = encoded()
    bad = streams[stream].astype(np.uint16)
    bad[3] = 1 << (q.amp_bits if stream == "amp_codes" else q.phase_bits)
    with pytest.raises(FormatError, match="bit width"):
        q.dequantize(dict(streams, **{stream: bad}), side, 100)
