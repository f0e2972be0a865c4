"""Row steps: per-row step levels from row weights (RowSteps), the scalar and dq quantizers
with them (every row within its own error bound, a ``row_levels`` stream and side info only
when given), encode_lossy over blocks of whole rows, and refusals of bad side info."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rftpack.codec import LossyPipeline, decode_container, encode_lossy
from rftpack.errors import FormatError, StageError
from rftpack.profiles import hybrid_pipeline
from rftpack.stages.dq import DependentQuantizer
from rftpack.stages.identity import Identity
from rftpack.stages.rans import RansCoder
from rftpack.stages.scalar import ROW_LEVELS, RowSteps, ScalarQuantizer

QUANTIZERS = [ScalarQuantizer(step=0.1), DependentQuantizer(step=0.1)]
IDS = ["scalar", "dq"]


def symbols(streams: dict) -> dict[str, np.ndarray]:
    return {key: codes.symbols for key, codes in streams.items()}


def round_trip(quantizer, x: np.ndarray, rows: RowSteps | None):
    streams, side = quantizer.quantize(x, [], rows=rows)
    return quantizer.dequantize(symbols(streams), side, x.shape[0]), streams, side


def row_errors(x: np.ndarray, y: np.ndarray, length: int) -> np.ndarray:
    """Largest |x − y| of each row of ``length`` (the last one may be short)."""
    pad = -x.shape[0] % length
    diff = np.concatenate([np.abs(x - y), np.zeros(pad)])
    return diff.reshape(-1, length).max(axis=1)


def weights_rows(seed: int, count: int = 40, length: int = 16, top: int = 12):
    rng = np.random.default_rng(seed)
    levels = rng.integers(0, top + 1, size=count).astype(np.uint8)
    x = rng.normal(size=count * length - 5) * 0.3  # the last row cut short
    return x, RowSteps(levels, length)


# -- RowSteps ------------------------------------------------------------------------------


def test_from_weights_levels_and_base() -> None:
    # mean 6: 2·log2(1/6) = −5.17 → −5 and 2·log2(16/6) = 2.83 → 3, shifted up by 5
    levels, base = RowSteps.from_weights(np.array([1.0, 1.0, 16.0]))
    assert levels.dtype == np.uint8
    assert levels.tolist() == [0, 0, 8]
    assert base == pytest.approx(2 ** (5 / 4))


@pytest.mark.parametrize("seed", range(4))
def test_from_weights_gives_steps_of_one_over_root_weight(seed: int) -> None:
    w = np.exp(np.random.default_rng(seed).normal(size=300) * 1.5)
    levels, base = RowSteps.from_weights(w)
    steps = base * RowSteps(levels, 1).per_row()
    # quarter octaves of step: within an eighth of an octave of 1/√(w / mean w)
    assert np.all(np.abs(np.log2(steps) + 0.5 * np.log2(w / w.mean())) <= 1 / 8 + 1e-9)
    assert levels.min() == 0
    # relative weights: any common scale gives the same levels and base
    again, base_again = RowSteps.from_weights(w * 1e6)
    assert np.array_equal(again, levels) and base_again == pytest.approx(base)


def test_equal_weights_give_level_zero_and_base_one() -> None:
    levels, base = RowSteps.from_weights(np.full(7, 3.5))
    assert levels.tolist() == [0] * 7 and base == 1.0


def test_levels_span_at_most_63_below_the_finest() -> None:
    # mean ≈ 2^39: exponents −78 and +2; the finest row keeps its step (level 63 at base
    # 2^(61/4)) and the tiny row gets the coarsest level, not a shift of every other row.
    levels, base = RowSteps.from_weights(np.array([1.0, 2.0 ** 40]))
    assert levels.tolist() == [0, ROW_LEVELS - 1] == [0, 63]
    assert base == pytest.approx(2 ** (61 / 4))
    # One near-zero weight among ordinary rows leaves the ordinary rows' steps alone.
    w = np.ones(512)
    w[0] = 1e-30
    levels, base = RowSteps.from_weights(w)
    steps = base * RowSteps(levels, 1).per_row()
    assert np.allclose(steps[1:], 1 / np.sqrt(w[1:] / w.mean()), rtol=0.1)
    assert levels[0] == 0 and steps[0] == steps.max()


def test_multipliers() -> None:
    rows = RowSteps(np.array([0, 4, 8], np.uint8), 3)
    assert rows.per_row().tolist() == [1.0, 0.5, 0.25]
    assert rows.multipliers(8).tolist() == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert RowSteps(np.array([1], np.uint8), 2).multipliers(2) == pytest.approx(2 ** -0.25)


# -- quantizers with row steps -------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_scalar_without_centroid_keeps_each_row_within_half_its_step(seed: int) -> None:
    x, rows = weights_rows(seed)
    y, _, side = round_trip(ScalarQuantizer(step=0.1, centroid=False), x, rows)
    assert side["step"] == 0.1 and side["offsets"] == [0.0, 0.0]
    own = side["step"] * rows.per_row()
    assert np.all(row_errors(x, y, rows.length) <= own / 2 + 1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_scalar_with_centroid_keeps_each_row_within_its_shifted_step(seed: int) -> None:
    x, rows = weights_rows(seed)
    y, _, side = round_trip(ScalarQuantizer(step=0.1), x, rows)
    shift = max(abs(v) for v in side["offsets"])
    assert 0 < shift <= 0.5  # centroids moved the levels toward zero
    own = side["step"] * rows.per_row()
    assert np.all(row_errors(x, y, rows.length) <= (0.5 + shift) * own + 1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_dq_keeps_each_row_within_twice_its_step(seed: int) -> None:
    x, rows = weights_rows(seed)
    y, _, side = round_trip(DependentQuantizer(step=0.1), x, rows)
    own = side["step"] * rows.per_row()
    assert np.all(row_errors(x, y, rows.length) <= 2 * own + 1e-12)


@pytest.mark.parametrize("quantizer", QUANTIZERS, ids=IDS)
def test_finer_rows_get_smaller_error(quantizer) -> None:
    length = 256
    x = np.random.default_rng(7).normal(size=4 * length) * 0.3
    rows = RowSteps(np.array([0, 8, 0, 8], np.uint8), length)  # 8 levels: a quarter step
    y, _, _ = round_trip(quantizer, x, rows)
    mse = ((x - y) ** 2).reshape(4, length).mean(axis=1)
    coarse, fine = mse[[0, 2]].mean(), mse[[1, 3]].mean()
    assert fine < coarse / 8  # ≈ 1/16 at a quarter of the step


@pytest.mark.parametrize("quantizer", QUANTIZERS, ids=IDS)
def test_row_stream_and_side_only_with_rows(quantizer) -> None:
    x, rows = weights_rows(3)
    plain, streams, side = round_trip(quantizer, x, None)
    assert set(streams) == {"codes"}
    assert "row_length" not in side and "row_levels" not in side
    assert quantizer.stream_alphabets(side) == {"codes": side["alphabet"]}

    _, streams, side = round_trip(quantizer, x, rows)
    assert set(streams) == {"codes", "row_levels"}
    assert streams["row_levels"].symbols.tolist() == rows.levels.tolist()
    assert streams["row_levels"].alphabet == side["row_levels"] == int(rows.levels.max()) + 1
    assert side["row_length"] == rows.length
    assert quantizer.stream_alphabets(side) == {"codes": side["alphabet"],
                                                "row_levels": side["row_levels"]}

    # Level 0 everywhere: the same codes and values as without row steps.
    flat = RowSteps(np.zeros_like(rows.levels), rows.length)
    same, streams, side = round_trip(quantizer, x, flat)
    assert side["row_levels"] == 1
    assert np.array_equal(same, plain)


@pytest.mark.parametrize("quantizer", QUANTIZERS, ids=IDS)
@pytest.mark.parametrize("count, length", [(48, 16), (48, 7), (0, 16)])
def test_levels_that_do_not_cover_the_block_are_refused(quantizer, count: int,
                                                        length: int) -> None:
    x = np.random.default_rng(0).normal(size=count)
    needed = math.ceil(count / length)
    for wrong in (needed - 1, needed + 1):
        if wrong < 0:
            continue
        with pytest.raises(StageError, match="row levels do not cover"):
            quantizer.quantize(x, [], rows=RowSteps(np.zeros(wrong, np.uint8), length))
    with pytest.raises(StageError, match="row levels do not cover"):
        quantizer.quantize(x, [], rows=RowSteps(np.zeros(needed, np.uint8), 0))


# -- bad side info / streams at decode -----------------------------------------------------


@pytest.fixture(params=QUANTIZERS, ids=IDS)
def encoded(request):
    """(quantizer, streams, side, count) of a block with row steps."""
    quantizer = request.param
    x, rows = weights_rows(5, count=6, length=8, top=5)
    streams, side = quantizer.quantize(x, [], rows=rows)
    return quantizer, symbols(streams), side, x.shape[0]


def test_the_valid_block_decodes(encoded) -> None:
    quantizer, streams, side, count = encoded
    assert quantizer.dequantize(streams, side, count).shape == (count,)


@pytest.mark.parametrize("length", [1.5, True, False, 0, -8, "8", None])
def test_bad_row_length_is_a_format_error(encoded, length) -> None:
    quantizer, streams, side, count = encoded
    with pytest.raises(FormatError, match="row_length"):
        quantizer.dequantize(streams, {**side, "row_length": length}, count)


def test_missing_or_wrong_length_row_levels_stream_is_a_format_error(encoded) -> None:
    quantizer, streams, side, count = encoded
    levels = streams["row_levels"]
    for bad in ({k: v for k, v in streams.items() if k != "row_levels"},
                {**streams, "row_levels": levels[:-1]},
                {**streams, "row_levels": np.append(levels, 0)}):
        with pytest.raises(FormatError, match="row levels"):
            quantizer.dequantize(bad, side, count)
    # A row length that does not fit the stream's count is the same mismatch.
    with pytest.raises(FormatError, match="row levels"):
        quantizer.dequantize(streams, {**side, "row_length": side["row_length"] * 2}, count)


def test_row_level_outside_its_alphabet_is_a_format_error(encoded) -> None:
    quantizer, streams, side, count = encoded
    levels = streams["row_levels"].copy()
    levels[2] = side["row_levels"]
    with pytest.raises(FormatError, match="row level outside its alphabet"):
        quantizer.dequantize({**streams, "row_levels": levels}, side, count)


@pytest.mark.parametrize("alphabet", [0, ROW_LEVELS + 1, 1.5, "3", None])
def test_bad_row_levels_alphabet_is_a_format_error(encoded, alphabet) -> None:
    quantizer, streams, side, count = encoded
    bad = {**side, "row_levels": alphabet}
    with pytest.raises(FormatError, match="row_levels"):
        quantizer.stream_alphabets(bad)
    with pytest.raises(FormatError, match="row_levels"):
        quantizer.dequantize(streams, bad, count)
    without = {k: v for k, v in side.items() if k != "row_levels"}
    with pytest.raises(FormatError, match="row_levels"):
        quantizer.stream_alphabets(without)


# -- encode_lossy with row steps -----------------------------------------------------------


def scalar_pipeline(block_size: int, **settings) -> LossyPipeline:
    settings.setdefault("step", 0.01)
    return LossyPipeline(Identity(), ScalarQuantizer(**settings), RansCoder(),
                         block_size=block_size)


def reader(payload: bytes):
    return lambda seg: payload[seg["offset"]:seg["offset"] + seg["length"]]


@pytest.mark.parametrize("quantizer", [ScalarQuantizer(step=0.01), DependentQuantizer(step=0.01)],
                         ids=IDS)
def test_encode_lossy_hands_each_block_its_own_rows(quantizer) -> None:
    x = (np.random.default_rng(2).normal(size=(10, 8)) * 0.05).astype(np.float32)
    levels = (4 * np.arange(10)).astype(np.uint8)  # row r: step / 2^r
    pipeline = LossyPipeline(Identity(), quantizer, RansCoder(), block_size=32)  # 4 rows
    encoded = encode_lossy("w", x, pipeline, rows=RowSteps(levels, 8))
    blocks = encoded.container["payload"]["blocks"]
    assert [b["count"] for b in blocks] == [32, 32, 16]
    assert [b["streams"]["row_levels"]["count"] for b in blocks] == [4, 4, 2]
    assert all(b["side"]["row_length"] == 8 for b in blocks)
    decoded = decode_container(encoded.container, reader(encoded.payload))
    assert decoded.shape == x.shape and decoded.dtype == np.float32
    # Each block decodes as its slice of the levels, quantized on its own.
    flat = x.reshape(-1).astype(np.float64)
    for i in range(3):
        part = flat[32 * i:32 * (i + 1)]
        expected, _, _ = round_trip(quantizer, part, RowSteps(levels[4 * i:4 * i + 4], 8))
        assert np.array_equal(decoded.reshape(-1)[32 * i:32 * (i + 1)],
                              expected.astype(np.float32))
    errors = np.abs(decoded.astype(np.float64) - x).max(axis=1)
    assert np.all(errors <= 2 * 0.01 * 2.0 ** -np.arange(10) + 1e-7)
    assert errors[-1] < errors[0] / 64


def test_encode_lossy_refuses_rows_it_cannot_honour() -> None:
    x = np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32)
    rows = RowSteps(np.zeros(8, np.uint8), 16)
    with pytest.raises(StageError, match="scalar or dq quantizer on the identity"):
        encode_lossy("w", x, hybrid_pipeline(), rows=rows)
    with pytest.raises(StageError, match="whole rows"):
        encode_lossy("w", x, scalar_pipeline(block_size=40), rows=rows)
    with pytest.raises(StageError, match="7 row levels for 8 rows"):
        encode_lossy("w", x, scalar_pipeline(block_size=32),
                     rows=RowSteps(np.zeros(7, np.uint8), 16))


def test_tampered_row_side_info_fails_decoding_cleanly() -> None:
    x = np.random.default_rng(1).normal(size=(8, 16)).astype(np.float32)
    encoded = encode_lossy("w", x, scalar_pipeline(block_size=64),
                           rows=RowSteps(np.arange(8, dtype=np.uint8), 16))
    for key, value in (("row_length", True), ("row_length", 0), ("row_levels", 65),
                       ("row_levels", 0)):
        container = {**encoded.container}
        payload = dict(container["payload"])
        blocks = [dict(b) for b in payload["blocks"]]
        blocks[0]["side"] = {**blocks[0]["side"], key: value}
        container["payload"] = {**payload, "blocks": blocks}
        with pytest.raises(FormatError):
            decode_container(container, reader(encoded.payload))
    # Side info of row steps removed: the row_levels stream is unknown to the quantizer.
    container = {**encoded.container}
    payload = dict(container["payload"])
    blocks = [dict(b) for b in payload["blocks"]]
    blocks[0]["side"] = {k: v for k, v in blocks[0]["side"].items()
                         if k not in ("row_length", "row_levels")}
    container["payload"] = {**payload, "blocks": blocks}
    with pytest.raises(FormatError, match="row_levels"):
        decode_container(container, reader(encoded.payload))
