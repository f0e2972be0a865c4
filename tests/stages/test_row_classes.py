"""Row classes (``scalar`` and ``dq``, FORMAT.md §8.5): rows of like scale share a table.
Splitting and merging are inverse, classes nest, the quantizers decode to the same values
with or without them and write fewer bits where rows differ (none where they do not), bad
side info or streams are refused, the record's format version says when they are used, and
rate control's estimate of their gain matches what the coder writes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rftpack.codec import LossyPipeline, encode_lossy
from rftpack.errors import FormatError, StageError
from rftpack.ratecontrol import TensorStats, estimate, extremes_of, sample_of
from rftpack.stages import rowclasses
from rftpack.stages.dq import DependentQuantizer
from rftpack.stages.identity import Identity
from rftpack.stages.rans import RansCoder
from rftpack.stages.scalar import RowSteps, ScalarQuantizer

LENGTH = 96


def scaled_rows(seed: int, rows: int = 400, spread: float = 1.0) -> np.ndarray:
    """Gaussian rows whose RMS is log-normal with ``spread`` octaves of deviation."""
    rng = np.random.default_rng(seed)
    scale = np.exp2(rng.normal(size=(rows, 1)) * spread) * 0.02
    return (rng.normal(size=(rows, LENGTH)) * scale).reshape(-1)


def quantizers(classes: int, length: int = LENGTH) -> list:
    return [ScalarQuantizer(step=0.002, row_classes=classes, row_length=length),
            DependentQuantizer(step=0.002, row_classes=classes, row_length=length, states=16)]


def symbols(streams: dict) -> dict[str, np.ndarray]:
    return {key: codes.symbols for key, codes in streams.items()}


def coded_bytes(streams: dict) -> int:
    return sum(len(RansCoder().encode(c.symbols, c.alphabet)) for c in streams.values())


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 9), st.integers(1, 300), st.integers(0, 2 ** 32 - 1))
def test_split_and_merge_are_inverse(length: int, classes: int, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 50, count).astype(np.uint16)
    row_class = rng.integers(0, classes, -(-count // length)).astype(np.uint8)
    parts = rowclasses.split(codes, row_class, length, classes)
    assert sum(p.shape[0] for p in parts) == count
    assert np.array_equal(rowclasses.merge(parts, row_class, length, count), codes)


def test_merge_refuses_parts_that_do_not_fit_their_rows() -> None:
    codes = np.arange(12, dtype=np.uint16)
    row_class = np.array([0, 1, 0, 1], np.uint8)
    parts = rowclasses.split(codes, row_class, 3, 2)
    with pytest.raises(FormatError):
        rowclasses.merge([parts[0][:-1], parts[1]], row_class, 3, 12)
    with pytest.raises(FormatError):
        rowclasses.merge(parts, row_class[:-1], 3, 12)
    with pytest.raises(FormatError):  # a row names a class that has no stream
        rowclasses.merge(parts, np.array([0, 1, 2, 1], np.uint8), 3, 12)


def test_quantile_classes_nest_so_one_histogram_serves_all() -> None:
    levels = np.random.default_rng(0).normal(size=1000).round(1)  # with ties
    finest = rowclasses.quantile_classes(levels, 16)
    for classes in (2, 4, 8):
        assert np.array_equal(rowclasses.quantile_classes(levels, classes),
                              finest // (16 // classes))
    assert np.bincount(finest).min() >= 1000 // 16 - 30


@pytest.mark.parametrize("index", [0, 1], ids=["scalar", "dq"])
def test_classes_decode_to_the_same_values_in_fewer_bits(index: int) -> None:
    x = scaled_rows(1)
    plain, classed = quantizers(1)[index], quantizers(4)[index]
    s1, side1 = plain.quantize(x, [])
    s4, side4 = classed.quantize(x, [])
    assert side4["row_classes"] == 4 and side4["class_length"] == LENGTH
    assert sorted(s4) == ["codes", "codes_1", "codes_2", "codes_3", "row_classes"]
    y1 = plain.dequantize(symbols(s1), side1, x.shape[0])
    y4 = classed.dequantize(symbols(s4), side4, x.shape[0])
    assert np.array_equal(y1, y4)
    # an octave of spread between rows: the classes save well over 1 % of the codes' bits
    assert coded_bytes(s4) < 0.97 * coded_bytes(s1)


@pytest.mark.parametrize("index", [0, 1], ids=["scalar", "dq"])
def test_rows_alike_keep_one_table(index: int) -> None:
    x = scaled_rows(2, spread=0.0)
    streams, side = quantizers(4)[index].quantize(x, [])
    assert sorted(streams) == ["codes"] and "row_classes" not in side


@pytest.mark.parametrize("rows", [1, 3, 7, 8])
def test_few_rows_get_at_most_one_class_per_two_rows(rows: int) -> None:
    x = scaled_rows(3, rows=rows, spread=3.0)
    streams, side = ScalarQuantizer(step=0.002, row_classes=16, row_length=LENGTH).quantize(
        x, [])
    assert side.get("row_classes", 1) <= max(1, rows // 2)
    y = ScalarQuantizer(step=0.002).dequantize(symbols(ScalarQuantizer(step=0.002).quantize(
        x, [])[0]), ScalarQuantizer(step=0.002).quantize(x, [])[1], x.shape[0])
    assert np.array_equal(ScalarQuantizer(step=0.002).dequantize(symbols(streams), side,
                                                                 x.shape[0]), y)


def test_a_short_last_row_and_row_steps_combine_with_classes() -> None:
    x = scaled_rows(4, rows=50)[:-37]
    levels = np.random.default_rng(4).integers(0, 6, 50).astype(np.uint8)
    rows = RowSteps(levels, LENGTH)
    for quantizer in quantizers(8):
        streams, side = quantizer.quantize(x, [], rows=rows)
        assert "row_classes" in side and "row_length" in side
        plain = dataclasses.replace(quantizer, row_classes=1)
        s1, side1 = plain.quantize(x, [], rows=rows)
        assert np.array_equal(quantizer.dequantize(symbols(streams), side, x.shape[0]),
                              plain.dequantize(symbols(s1), side1, x.shape[0]))


@pytest.mark.parametrize("edit", [
    lambda st, side: st.pop("codes_2"),
    lambda st, side: st.pop("row_classes"),
    lambda st, side: side.pop("class_length"),
    lambda st, side: side.update(row_classes=3),
    lambda st, side: side.update(row_classes=17),
    lambda st, side: side.update(row_classes=True),
    lambda st, side: side.update(class_length=0),
    lambda st, side: side.update(class_length=LENGTH + 1),
    lambda st, side: st.update(row_classes=np.full_like(st["row_classes"], 4)),
    lambda st, side: st.update(codes=st["codes"][:-1]),
], ids=["missing-stream", "missing-classes", "no-length", "fewer-classes", "too-many",
        "bool", "zero-length", "other-length", "class-out-of-range", "short-stream"])
def test_bad_class_side_info_or_streams_are_refused(edit) -> None:
    x = scaled_rows(5)
    quantizer = quantizers(4)[0]
    streams, side = quantizer.quantize(x, [])
    decoded = symbols(streams)
    edit(decoded, side)
    with pytest.raises(FormatError):
        quantizer.dequantize(decoded, side, x.shape[0])


@pytest.mark.parametrize("value", [0, 17, 2.0, True, "4", None])
def test_row_classes_parameter_is_checked(value) -> None:
    with pytest.raises(StageError):
        ScalarQuantizer(row_classes=value)
    with pytest.raises(StageError):
        DependentQuantizer(row_classes=value)


def test_record_format_version_says_when_rows_are_classed() -> None:
    assert ScalarQuantizer().record_format_version() == 1
    assert ScalarQuantizer(row_classes=4).record_format_version() == 2
    assert DependentQuantizer(states=8).record_format_version() == 2
    assert DependentQuantizer(states=64).record_format_version() == 3
    assert DependentQuantizer(states=8, row_classes=2).record_format_version() == 4


def test_encode_lossy_codes_whole_rows_per_block() -> None:
    x = scaled_rows(6).astype(np.float32).reshape(-1, LENGTH)
    quantizer = ScalarQuantizer(step=0.002, row_classes=4, row_length=LENGTH)
    pipeline = LossyPipeline(Identity(), quantizer, RansCoder(), block_size=LENGTH * 100)
    classed = encode_lossy("w", x, pipeline)
    plain = encode_lossy("w", x, dataclasses.replace(
        pipeline, quantizer=dataclasses.replace(quantizer, row_classes=1)))
    blocks = classed.container["payload"]["blocks"]
    # (100 rows a block: 2 or 4 classes, whichever costs less with their tables)
    assert len(blocks) == 4 and all(b["side"]["row_classes"] in (2, 4) for b in blocks)
    assert len(classed.payload) < 0.98 * len(plain.payload)
    assert classed.snr_db == plain.snr_db


# -- rate control's estimate of the gain ---------------------------------------------------


def stats_of(x: np.ndarray, length: int) -> TensorStats:
    """What api._plan_rate keeps of a lossy tensor whose rows are coded in classes."""
    extremes, where = extremes_of(x)
    levels = rowclasses.row_levels(x, length)
    return TensorStats("w", x.shape[0], True, float(x @ x), float(np.max(np.abs(x))),
                       sample_of(x), extremes=extremes, extreme_positions=where,
                       row_length=length, row_levels=levels)


@pytest.mark.parametrize("spread", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("step", [0.0005, 0.002, 0.006])  # ≈ 7.5, 5.5 and 4 bits per weight
def test_estimate_with_classes_is_within_accuracy_of_the_coded_size(spread: float,
                                                                    step: float) -> None:
    x = scaled_rows(7, rows=2000, spread=spread)
    block = LENGTH * 1000
    stats = stats_of(x, LENGTH)
    classed, plain = ScalarQuantizer(step=step, row_classes=4), ScalarQuantizer(step=step)
    coded = 0.0
    for start in range(0, x.shape[0], block):
        streams = dataclasses.replace(classed, row_length=LENGTH).quantize(
            x[start:start + block], [])[0]
        # further streams cost their segment records too
        coded += 8 * (coded_bytes(streams) + rowclasses.SEGMENT_BYTES * (len(streams) - 1))
    estimated = estimate(stats, classed, block)[0]
    # as accurate as the estimate without classes (tests/test_ratecontrol_accuracy.py)
    assert abs(estimated / coded - 1) <= 0.015, (estimated, coded)
    gain = estimate(stats, plain, block)[0] - estimated
    if spread == 0.0:
        assert gain == 0.0  # alike rows: no gain claimed
    else:
        assert gain / x.shape[0] > 0.01


# -- compress: which tensors get row classes -------------------------------------------------


@pytest.fixture(scope="module")
def classed_model(tmp_path_factory: pytest.TempPathFactory):
    from safetensors.numpy import save_file

    tmp = tmp_path_factory.mktemp("classes")
    rng = np.random.default_rng(8)
    state = {
        "rows.weight": scaled_rows(8, rows=3000).astype(np.float32).reshape(-1, LENGTH),
        "conv.weight": scaled_rows(9, rows=64).astype(np.float32).reshape(64, 6, 4, 4),
        "flat": (rng.normal(size=4096) * 0.02).astype(np.float32),
        "bias": (rng.normal(size=LENGTH) * 0.02).astype(np.float32),
    }
    path = tmp / "m.safetensors"
    save_file(state, str(path))
    return path, state, tmp


@pytest.mark.parametrize("profile", ["scalar", "dq"])
def test_compress_codes_matrix_rows_in_classes(classed_model, profile: str) -> None:
    import rftpack

    path, state, tmp = classed_model
    archives = {}
    for classes in (1, 4):
        out = tmp / f"{profile}-{classes}.rftp"
        rftpack.compress(path, out, profile=profile, lossy_1d=True, min_lossy_numel=64,
                         quantizer_overrides={"step": 0.002, "row_classes": classes},
                         overwrite=True)
        archives[classes] = out
    with rftpack.open(archives[1]) as plain, rftpack.open(archives[4]) as classed:
        for name in state:
            assert np.array_equal(plain.get_tensor(name), classed.get_tensor(name))
        rows = classed.container("rows.weight")
        conv = classed.container("conv.weight")
        flat = classed.container("flat")
        stage = next(s for s in rows["stages"] if s["kind"] == "quantizer")
        assert stage["configuration"]["row_length"] == LENGTH
        assert rows["block_size"] % LENGTH == 0  # blocks of whole rows
        assert all("row_classes" in b["side"] for b in rows["payload"]["blocks"])
        # a 4-D tensor's rows are its output channels: 6·4·4 weights each
        assert next(s for s in conv["stages"] if s["kind"] == "quantizer")[
            "configuration"]["row_length"] == 96
        # a 1-D tensor has no rows
        assert next(s for s in flat["stages"] if s["kind"] == "quantizer")[
            "configuration"]["row_length"] == 0
        assert plain.container("rows.weight")["stored_bytes"] * 0.97 > rows["stored_bytes"]
