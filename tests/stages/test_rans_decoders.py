"""The compiled rANS decoders (numba's, and the C extension's in :mod:`rftpack.native`) give
exactly what constriction gives: the same quantized model (read off constriction's own
encoder), the same symbols from the ``rans`` coder's real streams (format versions 2 and 1), and
the same outcome, symbols or an error, on corrupt streams."""

from __future__ import annotations

import numpy as np
import pytest

constriction = pytest.importorskip("constriction")

from rftpack import native  # noqa: E402
from rftpack.errors import FormatError  # noqa: E402
from rftpack.stages._varint import write_varint  # noqa: E402
from rftpack.stages.rans import (  # noqa: E402
    PROBABILITY_BITS,
    TABLE_BITS,
    RansCoder,
    _model,
    level_frequencies,
    levels_of,
    quantize_frequencies,
    read_table,
)

V2 = RansCoder().for_format_version(2)
V1 = RansCoder().for_format_version(1)


@pytest.fixture
def jit():
    """numba's decoder module (its internals: the model, the slot tables)."""
    pytest.importorskip("numba")
    from rftpack.stages import _rans_jit

    return _rans_jit


@pytest.fixture(params=["numba", "native"])
def decode(request):
    """Each compiled decoder: ``decode(words, freqs, bits, count, strict=False)``."""
    if request.param == "native":
        if not native.available():
            pytest.skip("rftpack._native is not built here (tests/test_native.py says why)")
        return native.rans_decode
    return request.getfixturevalue("jit").decode


def draw_symbols(rng: np.random.Generator, alphabet: int, count: int, kind: str) -> np.ndarray:
    """``count`` symbols of ``alphabet``, at least two distinct (so the coder writes words)."""
    if kind == "flat":
        weights = np.ones(alphabet)
    elif kind == "skewed":  # a few common symbols, a long tail of rare ones
        weights = rng.random(alphabet) ** 8 + 1e-7
    elif kind == "geometric":
        weights = 0.7 ** np.minimum(np.arange(alphabet), 700.0)
    elif kind == "subset":  # most of the alphabet absent from the table
        weights = np.zeros(alphabet)
        weights[rng.choice(alphabet, max(2, alphabet // 7), replace=False)] = 1.0
    elif kind == "dominant":  # one symbol with nearly all of 2**24
        weights = np.full(alphabet, 1e-6)
        weights[rng.integers(alphabet)] = 1.0
    else:
        raise AssertionError(kind)
    symbols = rng.choice(alphabet, count, p=weights / weights.sum())
    if np.unique(symbols).size < 2:
        symbols[0] = (symbols[-1] + 1 + rng.integers(alphabet - 1)) % alphabet
    return symbols


def parse_v2(data: bytes, alphabet: int) -> tuple[np.ndarray, np.ndarray]:
    """(words, frequencies over the alphabet) of a version 2 segment, as ``RansCoder.decode``
    reads them."""
    view = memoryview(data)
    present, table, pos = read_table(view, alphabet)
    freqs = np.zeros(alphabet, np.int64)
    freqs[present] = table
    return np.frombuffer(view[pos:], dtype="<u4").astype(np.uint32), freqs


def constriction_decode(words: np.ndarray, freqs: np.ndarray, bits: int, count: int):
    """constriction's symbols, or the exception it raised."""
    try:
        coder = constriction.stream.stack.AnsCoder(np.asarray(words, np.uint32))
        return coder.decode(_model(freqs, bits), count)
    except Exception as exc:  # noqa: BLE001 - any error is an outcome to match
        return exc


def assert_same_outcome(decode, words: np.ndarray, freqs: np.ndarray, bits: int,
                        count: int) -> None:
    expected = constriction_decode(words, freqs, bits, count)
    if isinstance(expected, Exception):
        with pytest.raises(ValueError):
            decode(words, freqs, bits, count)
    else:
        got = decode(words, freqs, bits, count)
        assert got.dtype == np.int32 and got.shape == (count,)
        np.testing.assert_array_equal(got, expected)


def constriction_left_cumulatives(freqs: np.ndarray, bits: int) -> np.ndarray:
    """The CDF of constriction's own model: one symbol pushed on an empty AnsCoder leaves its
    left cumulative as the state (``state = (0 // p) << 24 | left``), written as one word (or
    none for 0)."""
    model = _model(freqs, bits)
    lefts = []
    for symbol in range(freqs.shape[0]):
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(symbol, model)
        words = coder.get_compressed()
        assert words.shape[0] <= 1
        lefts.append(int(words[0]) if words.shape[0] else 0)
    return np.array(lefts, np.int64)


def v2_table(rng: np.random.Generator, alphabet: int, kind: str) -> np.ndarray:
    counts = np.bincount(draw_symbols(rng, alphabet, 5000, kind), minlength=alphabet)
    present = np.flatnonzero(counts)
    freqs = np.zeros(alphabet, np.int64)
    freqs[present] = level_frequencies(levels_of(counts[present]))
    return freqs


def v1_table(rng: np.random.Generator, alphabet: int, kind: str) -> np.ndarray:
    counts = np.bincount(draw_symbols(rng, alphabet, 5000, kind), minlength=alphabet)
    return quantize_frequencies(counts)


# -- the model ---------------------------------------------------------------------------------

@pytest.mark.parametrize("alphabet", [2, 3, 7, 64, 300, 4096])
@pytest.mark.parametrize("kind", ["flat", "skewed", "subset", "dominant"])
@pytest.mark.parametrize("bits", [TABLE_BITS, PROBABILITY_BITS])
def test_quantization_is_constrictions(alphabet: int, kind: str, bits: int, jit) -> None:
    rng = np.random.default_rng([alphabet, len(kind), bits])
    freqs = (v2_table if bits == TABLE_BITS else v1_table)(rng, alphabet, kind)
    assert freqs.sum() == 1 << bits
    quantized = jit.quantized_frequencies(freqs, bits)
    assert quantized.sum() == 1 << jit.PRECISION and quantized.min() >= 1
    lefts = np.concatenate(([0], np.cumsum(quantized)[:-1]))
    np.testing.assert_array_equal(lefts, constriction_left_cumulatives(freqs, bits))
    np.testing.assert_array_equal(np.cumsum(quantized), jit._quantized_cdf(freqs, bits)[1:])
    if (freqs == 0).any():  # absent symbols are not left out: constriction's model is leaky
        assert (quantized[freqs == 0] >= 1).all()
        assert not np.array_equal(quantized, freqs << (jit.PRECISION - bits))


def test_quantization_of_a_small_table(jit) -> None:
    # free weight 2**24 − 4; cdf = ⌊C·(2**24 − 4)⌋ + i for C = 0, .5, .5, .75
    freqs = np.array([8, 0, 4, 4])
    assert jit.quantized_frequencies(freqs, 4).tolist() == [8388607, 1, 4194304, 4194304]
    np.testing.assert_array_equal(constriction_left_cumulatives(freqs, 4),
                                  [0, 8388607, 8388608, 12582912])


@pytest.mark.parametrize("freqs", [np.array([5]), np.array([0, 0, 0]), np.zeros(0, np.int64)])
def test_models_constriction_refuses_are_refused(freqs: np.ndarray, decode, jit) -> None:
    with pytest.raises(ValueError):
        _model(freqs, TABLE_BITS)
    with pytest.raises(ValueError):
        jit.quantized_frequencies(freqs, TABLE_BITS)
    with pytest.raises(ValueError):
        decode(np.array([7], np.uint32), freqs, TABLE_BITS, 3)


def test_negative_frequencies_are_refused(decode, jit) -> None:
    with pytest.raises(ValueError):
        jit.quantized_frequencies(np.array([5, -1, 3]), 3)
    with pytest.raises(ValueError):
        decode(np.array([7], np.uint32), np.array([5, -1, 3]), 3, 2)


# -- real streams --------------------------------------------------------------------------------

CASES = [(alphabet, kind, count)
         for alphabet in (2, 3, 5, 17, 128, 256, 1000, 4096)
         for kind in ("flat", "skewed", "geometric", "subset", "dominant")
         for count in (2, 3, 1000)] + \
    [(alphabet, kind, 100_000) for alphabet in (2, 128, 4096)
     for kind in ("skewed", "dominant")] + \
    [(128, "flat", 100_000), (65536, "flat", 20_000), (65536, "subset", 3000)]


@pytest.mark.parametrize(("alphabet", "kind", "count"), CASES)
def test_version_2_streams_decode_as_constriction_decodes_them(alphabet: int, kind: str,
                                                               count: int, decode) -> None:
    rng = np.random.default_rng([alphabet, count, len(kind)])
    symbols = draw_symbols(rng, alphabet, count, kind)
    data = V2.encode(symbols, alphabet)
    words, freqs = parse_v2(data, alphabet)
    expected = V2.decode(data, count, alphabet)
    np.testing.assert_array_equal(expected, symbols)  # (the coder is right to begin with)
    got = decode(words, freqs, TABLE_BITS, count, strict=True)
    np.testing.assert_array_equal(got, expected)
    # the read-only words RansCoder.decode sees before its copy decode the same
    np.testing.assert_array_equal(
        decode(np.frombuffer(words.tobytes(), "<u4"), freqs, TABLE_BITS, count), expected)


def encode_v1(symbols: np.ndarray, alphabet: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A version 1 segment (FORMAT.md §7.1.1) as the version 1 writer made it: a table of
    (gap, 16-bit frequency) varints, then constriction's words for the 2**16 model."""
    freqs = quantize_frequencies(np.bincount(symbols, minlength=alphabet))
    present = np.flatnonzero(freqs)
    header = bytearray()
    write_varint(present.shape[0], header)
    previous = -1
    for symbol in present.tolist():
        write_varint(symbol - previous - 1, header)
        write_varint(int(freqs[symbol]), header)
        previous = symbol
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols.astype(np.int32), _model(freqs, PROBABILITY_BITS))
    words = coder.get_compressed().astype("<u4")
    return bytes(header) + words.tobytes(), words.astype(np.uint32), freqs


@pytest.mark.parametrize("alphabet", [2, 17, 256, 4096])
@pytest.mark.parametrize("kind", ["flat", "skewed", "subset", "dominant"])
@pytest.mark.parametrize("count", [2, 3, 1000, 20_000])
def test_version_1_streams_decode_as_constriction_decodes_them(alphabet: int, kind: str,
                                                               count: int, decode) -> None:
    rng = np.random.default_rng([alphabet, count, len(kind), 1])
    symbols = draw_symbols(rng, alphabet, count, kind)
    data, words, freqs = encode_v1(symbols, alphabet)
    expected = V1.decode(data, count, alphabet)
    np.testing.assert_array_equal(expected, symbols)
    got = decode(words, freqs, PROBABILITY_BITS, count, strict=True)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("alphabet", [2, 40, 3000])
def test_a_single_symbol_decodes_as_constriction_decodes_it(alphabet: int, decode) -> None:
    # count 1 never reaches the coder through RansCoder (one distinct symbol: no words)
    rng = np.random.default_rng(alphabet)
    freqs = v2_table(rng, alphabet, "skewed")
    for symbol in rng.integers(0, alphabet, 20).tolist() + [0, alphabet - 1]:
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(np.array([symbol], np.int32), _model(freqs, TABLE_BITS))
        words = coder.get_compressed()
        assert decode(words, freqs, TABLE_BITS, 1, strict=True).tolist() == [symbol]
        assert_same_outcome(decode, words, freqs, TABLE_BITS, 1)


def test_alphabets_past_the_packed_table_decode_as_constriction_decodes_them(decode) -> None:
    # over 2**16 symbols the decoder binary-searches (rans.py never gets there)
    rng = np.random.default_rng(5)
    alphabet = 70_000
    freqs = np.zeros(alphabet, np.int64)
    present = np.unique(np.r_[rng.integers(0, alphabet, 3000), alphabet - 1])
    freqs[present] = quantize_frequencies(rng.integers(1, 50, present.shape[0]), 1 << 24)
    symbols = rng.choice(present, 5000)
    symbols[:10] = [0, 1, alphabet - 1, 65535, 65536, 65537, 3, 69_999, 12, 0]  # absent too
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols.astype(np.int32), _model(freqs, TABLE_BITS))
    words = coder.get_compressed()
    got = decode(words, freqs, TABLE_BITS, symbols.shape[0], strict=True)
    np.testing.assert_array_equal(got, symbols)
    assert_same_outcome(decode, words[3:], freqs, TABLE_BITS, 6000)


# -- corrupt streams ------------------------------------------------------------------------------

def corruptions(rng: np.random.Generator, words: np.ndarray) -> list[np.ndarray]:
    n = words.shape[0]
    garbage = rng.integers(0, 2**32, max(n, 3), dtype=np.uint64).astype(np.uint32)
    flipped = words.copy()
    flipped[rng.integers(n)] ^= np.uint32(1 << int(rng.integers(32)))
    ending_in_zero = garbage.copy()
    ending_in_zero[-1] = 0
    return [
        words[:-1], words[:-2], words[1:], words[n // 2:], words[: n // 2],  # truncated
        words[-1:], words[:1], words[:0],  # one word (the top, the bottom), no words
        np.r_[words, np.uint32(0)].astype(np.uint32),  # a trailing zero word
        np.r_[words, np.uint32(1)].astype(np.uint32),
        np.r_[np.uint32(9), words].astype(np.uint32),
        flipped, garbage, garbage[:1], ending_in_zero, np.zeros(4, np.uint32),
        np.array([0, 0, 5], np.uint32), np.array([0xFFFFFFFF] * 3, np.uint32),
    ]


@pytest.mark.parametrize("alphabet", [2, 9, 128, 4096])
@pytest.mark.parametrize("bits", [TABLE_BITS, PROBABILITY_BITS])
def test_corrupt_streams_give_what_constriction_gives(alphabet: int, bits: int, decode) -> None:
    rng = np.random.default_rng([alphabet, bits, 7])
    count = 600
    symbols = draw_symbols(rng, alphabet, count, "skewed")
    if bits == TABLE_BITS:
        words, freqs = parse_v2(V2.encode(symbols, alphabet), alphabet)
    else:
        _, words, freqs = encode_v1(symbols, alphabet)
    raised = 0
    for corrupt in corruptions(rng, words):
        for n in (count, count - 1, count + 1, 3 * count, 1, 0):  # right and wrong counts
            assert_same_outcome(decode, corrupt, freqs, bits, n)
        raised += isinstance(constriction_decode(corrupt, freqs, bits, count), Exception)
    assert raised >= 3  # (the cases include streams constriction refuses)


def test_constriction_raises_only_on_a_last_zero_word(decode) -> None:
    freqs = np.array([3, 0, 5, 8])
    assert isinstance(constriction_decode(np.array([4, 0], np.uint32), freqs, 4, 5), ValueError)
    with pytest.raises(ValueError, match="zero word"):
        decode(np.array([4, 0], np.uint32), freqs, 4, 5)
    with pytest.raises(ValueError, match="zero word"):
        decode(np.array([0], np.uint32), freqs, 4, 0)
    # no words: state 0, which decodes symbol 0 for ever; garbage decodes to something
    assert decode(np.zeros(0, np.uint32), freqs, 4, 4).tolist() == [0, 0, 0, 0]
    assert_same_outcome(decode, np.zeros(0, np.uint32), freqs, 4, 4)
    assert_same_outcome(decode, np.array([0, 5], np.uint32), freqs, 4, 9)
    assert_same_outcome(decode, np.array([123456789], np.uint32), freqs, 4, 40)
    # and RansCoder turns constriction's error into a FormatError
    data = V2.encode(np.array([0, 1, 1, 0, 2], np.uint8), 3)
    with pytest.raises(FormatError):
        V2.decode(data[:-4] + bytes(4), 5, 3)


def test_strict_decoding_checks_that_the_stream_ends_where_the_encoder_began(decode) -> None:
    rng = np.random.default_rng(11)
    symbols = draw_symbols(rng, 64, 2000, "skewed")
    symbols[-1] = 5  # (state 0 decodes symbol 0: a missing final 0 could not be seen)
    words, freqs = parse_v2(V2.encode(symbols, 64), 64)
    np.testing.assert_array_equal(decode(words, freqs, TABLE_BITS, 2000, strict=True),
                                  symbols)
    for corrupt, count in [(words, 1999), (words, 1000), (words[1:], 2000), (words[:-1], 2000),
                           (np.r_[np.uint32(7), words].astype(np.uint32), 2000)]:
        with pytest.raises(ValueError, match="does not end"):
            decode(corrupt, freqs, TABLE_BITS, count, strict=True)
        decode(corrupt, freqs, TABLE_BITS, count)  # (constriction does not check this)


def test_bad_arguments_are_value_errors(decode) -> None:
    freqs = np.array([1, 1])
    with pytest.raises(ValueError):
        decode(np.array([5], np.uint32), freqs, TABLE_BITS, -1)
    with pytest.raises(ValueError):
        decode(np.array([5], np.uint32), freqs.astype(np.float64), TABLE_BITS, 1)
    with pytest.raises(ValueError):
        decode(np.array([[5]], np.uint32), freqs, TABLE_BITS, 1)
    with pytest.raises(ValueError):
        decode(np.array([5], np.uint32), freqs, 63, 1)


@pytest.mark.parametrize(("alphabet", "count"), [(2, 1), (128, 100), (128, 10**6), (4096, 300),
                                                 (4096, 10**6), (65536, 5)])
def test_slot_tables_are_small_for_small_blocks_and_right(alphabet: int, count: int, jit) -> None:
    bits = jit.slot_bits(alphabet, count)
    assert 1 <= bits <= 14 and (1 << bits) <= max(2, 2 * count)
    rng = np.random.default_rng(alphabet)
    cdf = jit._quantized_cdf(v2_table(rng, alphabet, "skewed"), TABLE_BITS)
    table = jit._slot_table(cdf, bits)
    # entry j: the symbol holding the slot's first quantile, its left cumulative, frequency
    starts = np.arange(1 << bits, dtype=np.uint64) << np.uint64(jit.PRECISION - bits)
    owner = np.searchsorted(cdf, starts, side="right") - 1
    entries = table[:-1]
    np.testing.assert_array_equal(entries & np.uint64(0xFFFF), owner % 65536)
    np.testing.assert_array_equal((entries >> np.uint64(16)) & np.uint64(0xFFFFFF), cdf[owner])
    np.testing.assert_array_equal(entries >> np.uint64(40), cdf[owner + 1] - cdf[owner])
    assert table[-1] & np.uint64(0xFFFF) == (alphabet - 1) % 65536


def compiled_calls(monkeypatch) -> list[int]:
    """The symbol counts of every call to numba's decoder (a spy around the real one), with
    numba unloaded as far as the ``rans`` coder can tell and the C extension switched off."""
    import sys

    from rftpack.stages import rans

    pytest.importorskip("numba")
    calls: list[int] = []
    real = rans._compiled_decoder()
    assert real is not None
    monkeypatch.setattr(native, "available", lambda: False)

    def spy(*args, **kwargs):
        calls.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(rans, "_compiled_decoder", lambda: spy)
    monkeypatch.setitem(sys.modules, "numba", None)  # as if numba were not loaded
    monkeypatch.delitem(sys.modules, "numba")
    return calls


def test_the_rans_coder_switches_to_the_compiled_decoder_once_it_pays(monkeypatch) -> None:
    """Without numba loaded, constriction decodes the first COMPILED_AFTER_SYMBOLS symbols of
    a process; then (or at once, numba loaded) the compiled decoder: the same symbols, and a
    corrupt stream is a FormatError either way."""
    import sys

    from rftpack.stages import rans

    rng = np.random.default_rng(9)
    symbols = draw_symbols(rng, 300, 20_000, "skewed")
    data = V2.encode(symbols, 300)
    calls = compiled_calls(monkeypatch)
    monkeypatch.setattr(rans, "_decoded_by_constriction", rans.COMPILED_AFTER_SYMBOLS - 10_000)
    assert np.array_equal(V2.decode(data, 20_000, 300), symbols)   # constriction
    assert calls == []
    assert np.array_equal(V2.decode(data, 20_000, 300), symbols)   # paid for: compiled
    assert calls == [20_000]
    corrupt = data[:-4] + bytes(4)  # a last word of 0: constriction's one refusal
    with pytest.raises(FormatError, match="corrupt"):
        V2.decode(corrupt, 20_000, 300)
    assert calls == [20_000, 20_000]
    # numba's error path may have re-imported its package (it did when this test ran alone)
    monkeypatch.delitem(sys.modules, "numba", raising=False)
    monkeypatch.setattr(rans, "_decoded_by_constriction", 0)
    assert np.array_equal(V2.decode(data, 20_000, 300), symbols)   # constriction again
    assert calls == [20_000, 20_000]
    monkeypatch.setitem(sys.modules, "numba", object())            # numba loaded: at once
    assert np.array_equal(V2.decode(data, 20_000, 300), symbols)
    assert calls == [20_000, 20_000, 20_000]


def test_a_planned_job_chooses_its_decoder_once(monkeypatch) -> None:
    """Inside a plan (a whole-archive decode) the decoder is chosen for the whole job: the
    compiled one from the first symbol when it saves numba's start-up on the plan, else
    constriction throughout, even past the running count that switches lazy loads."""
    from rftpack.stages import rans
    from rftpack.stages.workload import Plan, planned

    pays = 1 + int(rans.COMPILED_STARTUP_SECONDS / Plan(1).compiled_saving())
    assert Plan(pays).compiled_saving() >= rans.COMPILED_STARTUP_SECONDS
    assert Plan(pays - 2).compiled_saving() < rans.COMPILED_STARTUP_SECONDS

    rng = np.random.default_rng(10)
    symbols = draw_symbols(rng, 200, 5_000, "skewed")
    data = V2.encode(symbols, 200)
    calls = compiled_calls(monkeypatch)
    monkeypatch.setattr(rans, "_decoded_by_constriction", rans.COMPILED_AFTER_SYMBOLS)
    with planned(pays - 2):
        assert np.array_equal(V2.decode(data, 5_000, 200), symbols)   # constriction
    assert calls == []
    assert rans._decoded_by_constriction == rans.COMPILED_AFTER_SYMBOLS  # a plan counts none
    assert np.array_equal(V2.decode(data, 5_000, 200), symbols)       # unplanned: paid for
    assert calls == [5_000]
    monkeypatch.setattr(rans, "_decoded_by_constriction", 0)
    with planned(pays):
        assert np.array_equal(V2.decode(data, 5_000, 200), symbols)   # compiled at once
    assert calls == [5_000, 5_000]
    assert np.array_equal(V2.decode(data, 5_000, 200), symbols)       # plan over: constriction
    assert calls == [5_000, 5_000]


# -- lanes (format version 3) ---------------------------------------------------------------------

V3 = RansCoder()


def fallback_decode(monkeypatch, data: bytes, count: int, alphabet: int, jit: bool):
    """``V3.decode`` without the C extension: lane by lane with numba's decoder (``jit``) or
    constriction's."""
    import sys

    from rftpack.stages import rans

    with monkeypatch.context() as patch:
        patch.setattr(native, "available", lambda: False)
        if jit:
            pytest.importorskip("numba")
            patch.setitem(sys.modules, "numba", sys.modules.get("numba") or object())
        else:
            patch.setattr(rans, "_decoder_for", lambda count: None)
        return V3.decode(data, count, alphabet)


@pytest.mark.parametrize(("alphabet", "kind", "count"),
                         [(256, "flat", 40_001), (256, "flat", 40_003), (4096, "skewed", 90_000),
                          (65536, "flat", 20_001), (3, "dominant", 400_000)])
def test_large_segments_are_written_in_lanes_and_every_decoder_reads_them(
        monkeypatch, alphabet: int, kind: str, count: int) -> None:
    from rftpack.stages.rans import LANES, LANES_FROM_BYTES, read_lanes

    rng = np.random.default_rng([alphabet, count])
    symbols = draw_symbols(rng, alphabet, count, kind)
    data = V3.encode(symbols, alphabet)
    end = read_table(memoryview(data), alphabet)[2]
    bounds, start = read_lanes(memoryview(data), end)
    words = (len(data) - start) // 4
    assert bounds.shape[0] - 1 == (LANES if 4 * words >= LANES_FROM_BYTES * 0.98 else 1)
    for decoded in (V3.decode(data, count, alphabet),
                    fallback_decode(monkeypatch, data, count, alphabet, jit=True),
                    fallback_decode(monkeypatch, data, count, alphabet, jit=False)):
        np.testing.assert_array_equal(decoded, symbols)
    # the lanes cost next to nothing against one stream
    assert len(data) - len(V2.encode(symbols, alphabet)) <= 12 * (LANES - 1) + 1


def test_small_segments_have_one_lane() -> None:
    from rftpack.stages.rans import read_lanes

    symbols = draw_symbols(np.random.default_rng(2), 64, 3000, "skewed")
    data = V3.encode(symbols, 64)
    end = read_table(memoryview(data), 64)[2]
    assert read_lanes(memoryview(data), end)[0].tolist() == [0, (len(data) - end - 1) // 4]
    assert data[:end] + data[end + 1:] == V2.encode(symbols, 64)  # v2 plus a lane count


@pytest.mark.parametrize("jit", [None, True, False], ids=["native", "numba", "constriction"])
def test_corrupt_lane_headers_are_format_errors(monkeypatch, jit) -> None:
    from rftpack.stages.rans import LANES, read_lanes

    symbols = draw_symbols(np.random.default_rng(3), 256, 50_000, "flat")
    data = V3.encode(symbols, 256)
    end = read_table(memoryview(data), 256)[2]
    assert data[end] == LANES
    words = data[read_lanes(memoryview(data), end)[1]:]
    too_long, too_short = bytearray(), bytearray()
    write_varint(2 * 10**6, too_long)  # lane 0: ⌊W / 2⌋ + 10**6 words, more than there are
    write_varint(2 * 10**6 - 1, too_short)  # and −10**6
    corrupt = [data[:end],  # no lane count
               data[:end] + bytes([0]) + words,  # no lanes
               data[:end] + bytes([2]) + bytes(too_long) + words,
               data[:end] + bytes([2]) + bytes(too_short) + words,
               data[:end + 1] + bytes([0x80]),  # the length cut short
               data[:-1]]  # not whole words
    if jit is None and not native.available():
        pytest.skip("rftpack._native is not built here")
    for blob in corrupt:
        with pytest.raises(FormatError):
            if jit is None:
                V3.decode(blob, 50_000, 256)
            else:
                fallback_decode(monkeypatch, blob, 50_000, 256, jit)


@pytest.mark.parametrize("version", [0, 4, "3", True])
def test_layouts_other_than_versions_1_to_3_are_refused(version) -> None:
    from rftpack.errors import StageError

    with pytest.raises(StageError, match="format version"):
        RansCoder(version=version)
    assert V2.record_format_version() == 2 and V3.record_format_version() == 3
