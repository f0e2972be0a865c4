"""Entropy coders ``rans``, ``zstd``, ``raw``: exactness, sizes, and robustness to corruption."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rftpack.errors import FormatError, RftpackError, StageError
from rftpack.stages._varint import read_varint, write_varint
from rftpack.stages.base import symbol_dtype
from rftpack.stages.rans import (
    MAX_ALPHABET,
    MAX_LEVEL,
    TABLE_BITS,
    RansCoder,
    level_frequencies,
    levels_of,
    quantize_frequencies,
    table_bytes,
)
from rftpack.stages.raw import RawCoder, bit_width
from rftpack.stages.zstd import ZstdCoder

CODERS = [RansCoder(), ZstdCoder(), ZstdCoder(level=-3), RawCoder()]
CODER_IDS = ["rans", "zstd3", "zstd-3", "raw"]


@st.composite
def symbol_streams(draw):
    alphabet = draw(st.one_of(st.integers(1, 300), st.integers(1, 65536),
                              st.sampled_from([1, 2, 256, 257, 65535, 65536])))
    n = draw(st.integers(0, 5000))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["uniform", "skewed", "constant", "extremes"]))
    if kind == "uniform":
        values = rng.integers(0, alphabet, n)
    elif kind == "skewed":
        values = np.minimum(rng.geometric(draw(st.floats(0.05, 0.95)), n) - 1, alphabet - 1)
    elif kind == "constant":
        values = np.full(n, draw(st.integers(0, alphabet - 1)))
    else:
        values = rng.choice(np.array([0, alphabet - 1]), n)
    return values.astype(symbol_dtype(alphabet)), alphabet


@pytest.mark.parametrize("coder", CODERS, ids=CODER_IDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=symbol_streams())
def test_exact_round_trip(coder, data) -> None:
    values, alphabet = data
    blob = coder.encode(values, alphabet)
    assert isinstance(blob, bytes)
    out = coder.decode(blob, values.shape[0], alphabet)
    assert out.shape == values.shape
    assert out.dtype == symbol_dtype(alphabet)
    np.testing.assert_array_equal(out.astype(np.int64), values.astype(np.int64))


@pytest.mark.parametrize("coder", CODERS, ids=CODER_IDS)
def test_accepts_wider_input_dtypes(coder) -> None:
    values = np.array([0, 5, 9, 1, 1, 1], dtype=np.int64)
    out = coder.decode(coder.encode(values, 10), 6, 10)
    assert out.tolist() == values.tolist()


@pytest.mark.parametrize("coder", CODERS, ids=CODER_IDS)
def test_deterministic(coder) -> None:
    values = np.random.default_rng(0).integers(0, 64, 3000).astype(np.uint8)
    assert coder.encode(values, 64) == coder.encode(values.copy(), 64)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 70000), st.integers(0, 3000), st.integers(0, 2**32 - 1))
def test_raw_size_is_bit_packed(alphabet: int, n: int, seed: int) -> None:
    values = np.random.default_rng(seed).integers(0, alphabet, n)
    bits = max(0, (alphabet - 1).bit_length())
    assert bit_width(alphabet) == bits
    assert len(RawCoder().encode(values, alphabet)) == math.ceil(n * bits / 8)


def test_raw_six_bit_codes_take_six_bits() -> None:
    values = np.arange(64, dtype=np.uint8)
    assert len(RawCoder().encode(values, 64)) == 48


def empirical_entropy_bits(values: np.ndarray) -> float:
    counts = np.bincount(values)
    p = counts[counts > 0] / values.size
    return float(-(counts[counts > 0] * np.log2(p)).sum())


@pytest.mark.parametrize("p", [0.3, 0.8])
def test_rans_size_close_to_entropy(p: float) -> None:
    rng = np.random.default_rng(42)
    values = np.minimum(rng.geometric(p, 1_000_000) - 1, 63).astype(np.uint8)
    blob = RansCoder().encode(values, 64)
    entropy_bytes = empirical_entropy_bits(values) / 8
    assert len(blob) <= entropy_bytes * 1.01
    assert len(blob) >= entropy_bytes * 0.99
    np.testing.assert_array_equal(RansCoder().decode(blob, values.size, 64), values)


def test_rans_single_symbol_block_is_header_only() -> None:
    values = np.full(10000, 7, np.uint8)
    blob = RansCoder().encode(values, 16)
    assert len(blob) <= 4  # one run, its symbol and length, one level: no coded body
    assert RansCoder().decode(blob, 10000, 16).tolist() == [7] * 10000


def _version_1_table_bytes(counts: np.ndarray) -> int:
    """What FORMAT.md §7.1.1's table (gap and 16-bit frequency varints) takes for ``counts``."""
    def varint(v: int) -> int:
        return max(1, math.ceil(v.bit_length() / 7))
    present = np.flatnonzero(counts)
    freqs = quantize_frequencies(counts)
    gaps = np.diff(present, prepend=-1) - 1
    return varint(int(present.size)) + sum(varint(int(g)) + varint(int(freqs[s]))
                                           for g, s in zip(gaps, present, strict=True))


@pytest.mark.parametrize("scale", [3.0, 40.0, 400.0])
def test_rans_version_2_table_is_several_times_smaller(scale: float) -> None:
    """Zigzagged Laplacian codes, as the scalar quantizer makes them, at 2**20 per block."""
    rng = np.random.default_rng(1)
    k = np.rint(rng.laplace(0, scale, 1 << 20)).astype(np.int64)
    symbols = np.where(k >= 0, 2 * k, -2 * k - 1)
    counts = np.bincount(symbols)
    assert table_bytes(counts) * 2 < _version_1_table_bytes(counts)
    blob = RansCoder().encode(symbols, int(symbols.max()) + 1)
    # Besides the table, finite-precision probabilities and the flush cost < 0.002 bit each.
    assert len(blob) * 8 <= (empirical_entropy_bits(symbols) + 8 * table_bytes(counts)
                             + 0.002 * symbols.size)
    np.testing.assert_array_equal(RansCoder().decode(blob, symbols.size, int(symbols.max()) + 1),
                                  symbols)


@settings(max_examples=60, deadline=None)
@given(levels=st.lists(st.integers(0, MAX_LEVEL), min_size=1, max_size=3000))
def test_level_frequencies_are_a_valid_model(levels: list[int]) -> None:
    freqs = level_frequencies(np.array(levels, np.int64))
    assert int(freqs.sum()) == 1 << TABLE_BITS
    assert freqs.min() >= 1
    order = np.argsort(levels, kind="stable")  # a lower level never gets less, bar the remainder
    assert np.all(np.diff(freqs[order][1:]) <= 1)


def test_levels_follow_the_counts() -> None:
    assert levels_of(np.array([1000, 1000])).tolist() == [8, 8]    # p = 1/2: one bit
    assert levels_of(np.array([1, (1 << 30)])).tolist() == [MAX_LEVEL, 0]  # clipped at 24 bits


def test_rans_rejects_too_large_alphabet() -> None:
    with pytest.raises(StageError):
        RansCoder().encode(np.zeros(3, np.uint32), MAX_ALPHABET + 1)


@pytest.mark.parametrize("compiled", [True, False], ids=["C histogram", "numpy"])
@pytest.mark.parametrize("symbols", [[0, 1, 9], [0, -1, 2], [4, 0, 0, 0, 0]])
def test_rans_rejects_symbol_outside_alphabet(symbols: list[int], compiled: bool,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from rftpack import native

    if compiled and not native.available():
        pytest.skip("rftpack._native is not built here")
    if not compiled:
        monkeypatch.setattr(native, "available", lambda: False)
    with pytest.raises(StageError, match="outside alphabet 4"):
        RansCoder().encode(np.array(symbols), 4)
    with pytest.raises(StageError, match="outside alphabet 4"):
        RansCoder().encode(np.array(symbols, np.int64).astype(np.uint8), 4)


def test_zstd_level_validation() -> None:
    for bad in (23, -8, 3.0, "3"):
        with pytest.raises(StageError):
            ZstdCoder(level=bad)


# -- quantize_frequencies -------------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=2000).filter(lambda c: sum(c) > 0))
def test_quantize_frequencies_properties(counts: list[int]) -> None:
    counts_arr = np.array(counts, np.int64)
    freqs = quantize_frequencies(counts_arr)
    assert freqs.shape == counts_arr.shape
    assert int(freqs.sum()) == 1 << 16
    assert np.all(freqs[counts_arr > 0] >= 1)
    assert np.all(freqs[counts_arr == 0] == 0)


def test_quantize_frequencies_full_alphabet_of_singletons() -> None:
    freqs = quantize_frequencies(np.ones(65536, np.int64))
    assert int(freqs.sum()) == 65536 and np.all(freqs == 1)


def test_quantize_frequencies_one_dominant_many_rare() -> None:
    counts = np.ones(40000, np.int64)
    counts[123] = 10**7
    freqs = quantize_frequencies(counts)
    assert int(freqs.sum()) == 65536 and int(freqs.min()) == 1
    assert int(freqs.argmax()) == 123


def test_quantize_frequencies_proportional() -> None:
    freqs = quantize_frequencies(np.array([3, 1, 0]))
    assert freqs.tolist() == [49152, 16384, 0]


# -- corruption -----------------------------------------------------------------------------------

def sample_blob(coder, alphabet: int = 64, n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    values = np.minimum(rng.geometric(0.2, n) - 1, alphabet - 1).astype(np.uint8)
    return values, coder.encode(values, alphabet)


@pytest.mark.parametrize("coder", CODERS, ids=CODER_IDS)
def test_truncated_stream_raises_format_error(coder) -> None:
    values, blob = sample_blob(coder)
    for cut in sorted({0, 1, 2, len(blob) // 2, len(blob) - 1}):
        try:
            out = coder.decode(blob[:cut], values.size, 64)
        except FormatError:
            continue
        # rANS may decode garbage from a shorter whole-word body: the length must still hold.
        assert out.shape == values.shape, (cut, out.shape)


@pytest.mark.parametrize("coder", [ZstdCoder(), RawCoder()], ids=["zstd", "raw"])
def test_truncated_stream_always_detected(coder) -> None:
    values, blob = sample_blob(coder)
    for cut in (0, 1, len(blob) - 1):
        with pytest.raises(FormatError):
            coder.decode(blob[:cut], values.size, 64)


def test_rans_truncated_header_raises_format_error() -> None:
    values, blob = sample_blob(RansCoder())
    for cut in (0, 1, 3):
        with pytest.raises(FormatError):
            RansCoder().decode(blob[:cut], values.size, 64)


def test_rans_body_not_whole_words_raises() -> None:
    values, blob = sample_blob(RansCoder())
    with pytest.raises(FormatError):
        RansCoder().decode(blob + b"\x00", values.size, 64)


def test_rans_table_with_symbol_outside_alphabet_raises() -> None:
    header = bytearray()
    write_varint(2, header)
    write_varint(0, header)
    write_varint(32768, header)
    write_varint(10, header)  # symbol 11 ≥ alphabet 4
    write_varint(32768, header)
    with pytest.raises(FormatError):
        RansCoder().decode(bytes(header) + b"\0\0\0\0", 5, 4)


def test_rans_table_not_summing_to_2_16_raises() -> None:
    header = bytearray()
    write_varint(2, header)
    write_varint(0, header)
    write_varint(100, header)
    write_varint(0, header)
    write_varint(100, header)
    with pytest.raises(FormatError):
        RansCoder().decode(bytes(header) + b"\0\0\0\0", 5, 4)


def test_rans_table_with_huge_frequency_raises_format_error() -> None:
    # A corrupt frequency varint of 2**63 must be a FormatError, not an OverflowError.
    header = bytearray()
    write_varint(2, header)
    write_varint(0, header)
    write_varint(2**63, header)
    write_varint(0, header)
    write_varint(5, header)
    with pytest.raises(FormatError):
        RansCoder().decode(bytes(header) + b"\0\0\0\0", 10, 4)


def test_rans_empty_table_for_nonempty_block_raises() -> None:
    with pytest.raises(FormatError):
        RansCoder().decode(b"\x00", 5, 4)


def test_zstd_symbol_outside_alphabet_raises() -> None:
    blob = ZstdCoder().encode(np.array([0, 1, 200], np.uint8), 256)
    with pytest.raises(FormatError):
        ZstdCoder().decode(blob, 3, 100)


def test_raw_symbol_outside_alphabet_raises() -> None:
    blob = RawCoder().encode(np.array([7, 7, 7], np.uint8), 8)  # 3 bits each, all ones
    with pytest.raises(FormatError):
        RawCoder().decode(blob, 3, 5)


@pytest.mark.parametrize("coder", CODERS, ids=CODER_IDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_stream_decodes_or_raises_rftpack_error(coder, data) -> None:
    alphabet = data.draw(st.sampled_from([2, 16, 64, 300]))
    n = data.draw(st.integers(1, 600))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    values = np.minimum(rng.geometric(0.3, n) - 1, alphabet - 1)
    blob = bytearray(coder.encode(values, alphabet))
    op = data.draw(st.sampled_from(["flip", "set", "truncate", "extend", "insert"]))
    if op in ("flip", "set") and blob:
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = (blob[i] ^ (1 << data.draw(st.integers(0, 7)))) if op == "flip" \
            else data.draw(st.integers(0, 255))
    elif op == "truncate":
        del blob[data.draw(st.integers(0, len(blob))):]
    elif op == "extend":
        blob += bytes(data.draw(st.binary(min_size=1, max_size=16)))
    else:
        i = data.draw(st.integers(0, len(blob)))
        blob[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        out = coder.decode(bytes(blob), n, alphabet)
    except RftpackError:
        return
    assert out.shape == (n,)
    assert out.size == 0 or int(out.max()) < alphabet


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 200), st.sampled_from([1, 2, 64, 256, 65536]))
def test_random_bytes_decode_or_raise(blob: bytes, n: int, alphabet: int) -> None:
    for coder in CODERS:
        try:
            out = coder.decode(blob, n, alphabet)
        except RftpackError:
            continue
        assert out.shape == (n,)
        assert out.size == 0 or int(out.max()) < alphabet


# -- varints --------------------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**63 - 1))
def test_varint_round_trip(value: int) -> None:
    buf = bytearray(b"\x07")
    write_varint(value, buf)
    assert read_varint(bytes(buf), 1) == (value, len(buf))


def test_varint_errors() -> None:
    with pytest.raises(ValueError):
        write_varint(-1, bytearray())
    with pytest.raises(FormatError):
        read_varint(b"\x80\x80", 0)
    with pytest.raises(FormatError):
        read_varint(b"\xff" * 11 + b"\x01", 0)


def forged_content_size(blob: bytes, size: int) -> bytes:
    """Rewrite a single-segment zstd frame header so it declares ``size`` decompressed bytes."""
    assert blob[:4] == b"\x28\xb5\x2f\xfd" and blob[4] == 0x20  # single segment, 1-byte FCS
    return blob[:4] + bytes([0xE0]) + size.to_bytes(8, "little") + blob[6:]


def test_zstd_header_claiming_huge_size_raises_format_error() -> None:
    # A corrupt frame header may declare an absurd content size; decoding must not try to
    # allocate it (MemoryError) but report a FormatError, as for any other corrupt stream.
    blob = ZstdCoder().encode(np.arange(100, dtype=np.uint8), 256)
    with pytest.raises(FormatError):
        ZstdCoder().decode(forged_content_size(blob, 2**60), 100, 256)


def test_zstd_header_claiming_other_size_raises_format_error() -> None:
    blob = ZstdCoder().encode(np.arange(100, dtype=np.uint8), 256)
    with pytest.raises(FormatError):
        ZstdCoder().decode(forged_content_size(blob, 1000), 100, 256)
