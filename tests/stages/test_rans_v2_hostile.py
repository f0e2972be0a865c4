"""``rans`` format version 2 (FORMAT.md §7.1) and the version 1 reader (§7.1.1) against hostile
segments: every corrupt segment is an RftpackError, never another exception, a hang, a huge
allocation or output of the wrong length; valid segments round-trip exactly."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rftpack.errors import FormatError, RftpackError, StageError
from rftpack.stages._varint import write_varint
from rftpack.stages.base import symbol_dtype
from rftpack.stages.rans import (
    MAX_ALPHABET,
    MAX_LEVEL,
    PROBABILITY_BITS,
    TABLE_BITS,
    RansCoder,
    level_frequencies,
    levels_of,
    quantize_frequencies,
    read_table,
    table_bytes,
    write_table,
)

V2 = RansCoder().for_format_version(2)
V1 = RansCoder().for_format_version(1)
HOSTILE_ALPHABETS = [2, 64, 65536]


def varints(*values: int) -> bytes:
    out = bytearray()
    for value in values:
        write_varint(value, out)
    return bytes(out)


def table(present: list[int], levels: list[int]) -> bytes:
    """A version 2 table as write_table lays it out, for any levels (even invalid ones)."""
    return write_table(np.array(present, np.int64), np.array(levels, np.int64))


def encode_v1(values: np.ndarray, alphabet: int) -> bytes:
    """A version 1 segment, written from FORMAT.md §7.1.1 (rftpack no longer writes them)."""
    return b"".join(encode_v1_parts(values, alphabet))


def encode_v1_parts(values: np.ndarray, alphabet: int) -> tuple[bytes, bytes]:
    """(table, words) of a version 1 segment."""
    import constriction

    if values.size == 0:
        return b"\x00", b""
    counts = np.bincount(values.astype(np.int64), minlength=alphabet)
    present = np.flatnonzero(counts)
    freqs = quantize_frequencies(counts[present])
    out = bytearray()
    write_varint(int(present.size), out)
    previous = -1
    for symbol, freq in zip(present.tolist(), freqs.tolist(), strict=True):
        write_varint(symbol - previous - 1, out)
        write_varint(freq, out)
        previous = symbol
    if present.size == 1:
        return bytes(out), b""
    full = np.zeros(alphabet, np.float64)
    full[present] = freqs / float(1 << PROBABILITY_BITS)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(values.astype(np.int32),
                         constriction.stream.model.Categorical(full, perfect=False))
    return bytes(out), coder.get_compressed().astype("<u4").tobytes()


def skewed(alphabet: int, n: int, seed: int, p: float = 0.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.minimum(rng.geometric(p, n) - 1, alphabet - 1).astype(symbol_dtype(alphabet))


def assert_decodes_or_raises(coder: RansCoder, blob: bytes, count: int, alphabet: int) -> None:
    """The hostile-input contract: an RftpackError, or exactly ``count`` symbols < alphabet."""
    try:
        out = coder.decode(blob, count, alphabet)
    except RftpackError:
        return
    assert isinstance(out, np.ndarray)
    assert out.shape == (count,), (blob.hex(), count, alphabet, out.shape)
    assert out.dtype == symbol_dtype(alphabet)
    assert out.size == 0 or int(out.max()) < alphabet, (blob.hex(), count, alphabet)


def mutate(data, blob: bytes) -> bytes:
    """One hypothesis-chosen corruption of ``blob``."""
    blob = bytearray(blob)
    op = data.draw(st.sampled_from(["flip", "set", "truncate", "extend", "insert", "delete",
                                    "overwrite"]))
    if op in ("flip", "set") and blob:
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = (blob[i] ^ (1 << data.draw(st.integers(0, 7)))) if op == "flip" \
            else data.draw(st.integers(0, 255))
    elif op == "truncate":
        del blob[data.draw(st.integers(0, len(blob))):]
    elif op == "extend":
        blob += data.draw(st.binary(min_size=1, max_size=16))
    elif op == "insert":
        i = data.draw(st.integers(0, len(blob)))
        blob[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    elif op == "delete" and blob:
        i = data.draw(st.integers(0, len(blob) - 1))
        del blob[i:i + data.draw(st.integers(1, 8))]
    elif blob:  # overwrite a stretch with garbage, the table's region most of the time
        i = data.draw(st.integers(0, min(len(blob) - 1, 12)))
        garbage = data.draw(st.binary(min_size=1, max_size=8))
        blob[i:i + len(garbage)] = garbage
    return bytes(blob)


# -- 1. hand-built corrupt version 2 tables --------------------------------------------------------

WORDS = b"\x01\x00\x00\x00" * 2  # a plausible body, so only the table can be at fault


@pytest.mark.parametrize(("header", "alphabet"), [
    (varints(1, 3, 2), 4),                 # symbols 3, 4: one past the end
    (varints(1, 4, 1), 4),                 # starts at the alphabet's end
    (varints(1, 0, 5), 4),                 # longer than the alphabet
    (varints(2, 0, 1, 1, 3), 4),           # second run 2 … 4
    (varints(1, 2**63 - 1, 1), 64),        # huge gap: no overflow
    (varints(1, 0, 2**64 - 1), 64),        # huge length: no allocation
    (varints(2, 0, 1, 2**64 - 1, 1), 65536),
    (varints(1, 65535, 2), 65536),
    (varints(1, 0, 65537), 65536),
])
def test_run_leaving_the_alphabet_raises(header: bytes, alphabet: int) -> None:
    with pytest.raises(FormatError, match="leave the alphabet"):
        V2.decode(header + b"\x00" * 8 + WORDS, 5, alphabet)


@pytest.mark.parametrize("header", [
    varints(2, 0, 1, 0, 1),                # second run touches the first
    varints(2, 3, 4, 0, 2),
    varints(3, 0, 1, 1, 1, 0, 1),          # third run touches the second
])
def test_later_run_with_gap_zero_raises(header: bytes) -> None:
    with pytest.raises(FormatError, match="overlap"):
        V2.decode(header + b"\x00" * 8 + WORDS, 5, 64)


def test_first_run_with_gap_zero_is_valid() -> None:
    values = np.array([0, 2, 2, 0, 2, 0], np.uint8)
    blob = V2.encode(values, 4)
    assert blob.startswith(varints(2, 0, 1, 1, 1))
    assert V2.decode(blob, 6, 4).tolist() == values.tolist()


@pytest.mark.parametrize("header", [
    varints(1, 0, 0),
    varints(1, 5, 0),
    varints(2, 0, 1, 1, 0),
    varints(2, 0, 0, 1, 1),
])
def test_run_of_length_zero_raises(header: bytes) -> None:
    with pytest.raises(FormatError, match="empty"):
        V2.decode(header + b"\x00" * 8 + WORDS, 5, 64)


@pytest.mark.parametrize(("runs", "alphabet"), [
    (2, 1), (2, 2), (3, 4), (4, 5), (33, 64), (32769, 65536),
    (2**62, 65536), (2**64 - 1, 2),
])
def test_more_runs_than_the_alphabet_allows_raises(runs: int, alphabet: int) -> None:
    # A run and the gap after it take two symbols: at most ⌈A/2⌉ runs (and A ≤ 2**16).
    body = b"".join(varints(1, 1) for _ in range(min(runs, 4)))
    with pytest.raises(FormatError, match="runs for alphabet"):
        V2.decode(varints(runs) + body + b"\x00" * 8 + WORDS, 5, alphabet)


def test_as_many_runs_as_the_alphabet_allows_is_valid() -> None:
    values = np.arange(0, 65, 2).repeat(3).astype(np.uint8)  # 0, 2, …, 64: 33 runs of 1
    blob = V2.encode(values, 65)
    assert blob.startswith(varints(33))
    assert V2.decode(blob, values.size, 65).tolist() == values.tolist()


def assert_prefixes_behave(coder: RansCoder, blob: bytes, end: int, count: int,
                           alphabet: int) -> None:
    """Every proper prefix of a valid segment whose table ends at ``end``: inside the table, the
    table with no words at all (d ≥ 2 needs W ≥ 1; for d = 1 every proper prefix is inside the
    table) or a partial word is a FormatError; whole words missing from the front of the stack
    may decode to garbage, but of the right length."""
    accepted = []
    for cut in range(len(blob)):
        prefix = blob[:cut]
        if cut <= end or (cut - end) % 4:
            try:
                coder.decode(prefix, count, alphabet)
            except FormatError:
                continue
            accepted.append(cut)
        else:
            assert_decodes_or_raises(coder, prefix, count, alphabet)
    assert not accepted, f"prefixes of length {accepted} decoded (table ends at {end})"


def prefix_segments() -> list[tuple[np.ndarray, int]]:
    escapes = np.array([0] * 150 + [1] + [2] * 150, np.uint16)  # levels 8, 66, 8: escape bytes
    sparse = np.random.default_rng(3).choice(np.arange(0, 65536, 97), 300).astype(np.uint16)
    return [(skewed(64, 400, 0), 64), (np.array([0, 1, 1, 0, 1, 1, 1, 1], np.uint8), 2),
            (escapes, 3), (sparse, 65536), (np.full(50, 9, np.uint8), 16)]


@pytest.mark.parametrize("case", range(5))
def test_every_prefix_of_a_valid_segment(case: int) -> None:
    values, alphabet = prefix_segments()[case]
    blob = V2.encode(values, alphabet)
    np.testing.assert_array_equal(V2.decode(blob, values.size, alphabet), values)
    end = read_table(memoryview(blob), alphabet)[2]
    assert_prefixes_behave(V2, blob, end, values.size, alphabet)


def escape_table() -> tuple[bytes, list[int], int, int, int]:
    """A table using all three code widths: (table, levels, end of nibbles, of bytes, of wide)."""
    present, levels = [0, 1, 2, 5, 6], [0, 192, 0, 100, 40]
    # z = 0, 384, 383, 200, 119: nibbles 0, 15, 15, 15, 15; bytes 255, 255, 185, 104;
    # wide 114, 113
    blob = table(present, levels)
    header = len(varints(2, 0, 3, 2, 2))
    nibbles, escapes, wide = header + 3, header + 3 + 4, header + 3 + 4 + 4
    assert blob[header:] == bytes([0xF0, 0xFF, 0x0F, 255, 255, 185, 104, 114, 0, 113, 0])
    return blob, levels, nibbles, escapes, wide


def test_escape_table_reads_back() -> None:
    blob, levels, _, _, end = escape_table()
    present, freqs, pos = read_table(memoryview(blob + WORDS), 8)
    assert present.tolist() == [0, 1, 2, 5, 6]
    assert freqs.tolist() == level_frequencies(np.array(levels)).tolist()
    assert int(freqs.sum()) == 1 << TABLE_BITS
    assert pos == end == len(blob)


@pytest.mark.parametrize(("section", "message"), [
    (0, "level codes"), (1, "escape bytes"), (2, "wide escapes"),
])
def test_truncated_table_sections_raise(section: int, message: str) -> None:
    blob, _, nibbles, escapes, wide = escape_table()
    start, stop = [(nibbles - 3, nibbles), (nibbles, escapes), (escapes, wide)][section]
    for cut in range(start, stop):
        with pytest.raises(FormatError, match=message):
            V2.decode(blob[:cut], 5, 8)
        with pytest.raises(FormatError, match=message):
            read_table(memoryview(blob[:cut]), 8)


def test_truncated_single_nibble_byte_raises() -> None:
    # d = 1 and d = 2 both need one nibble byte
    for header in (varints(1, 3, 1), varints(1, 3, 2), varints(2, 0, 1, 1, 1)):
        with pytest.raises(FormatError, match="level codes"):
            V2.decode(header, 5, 8)


@pytest.mark.parametrize("levels", [
    [-1], [0, -1], [193], [0, 193], [192, 193], [100, 300], [5, -3, 10], [192, 200, 0],
    [0, 192, -1], [0, -32903], [0, 32902], [192, 192 - 32903],
])
def test_levels_outside_0_to_192_raise(levels: list[int]) -> None:
    present = list(range(len(levels)))
    with pytest.raises(FormatError, match="level outside"):
        V2.decode(table(present, levels) + WORDS, 5, 64)


@pytest.mark.parametrize(("raw", "levels"), [
    (varints(1, 0, 1) + b"\x01", None),                        # z = 1: L_1 = −1
    (varints(1, 0, 1) + b"\x02", [1]),                         # z = 2: L_1 = 1
    (varints(1, 0, 2) + b"\x1e", [7, 6]),                      # +7, then −1
    (varints(1, 0, 1) + b"\x0f\xff\xff\xff", None),            # z = 270 + 65535: L = −32903
    (varints(1, 0, 1) + b"\x0f\xff\xfe\xff", None),            # z = 270 + 65534: L = +32902
    (varints(1, 0, 2) + b"\xff\xff\xff\xfe\xff\xff\xff", None),  # +32902, then −32903
    (varints(1, 0, 1) + b"\x0f\xb3", [97]),                      # z = 15 + 179 = 194: L = 97
    (varints(1, 0, 1) + b"\x0f\xfe", None),                    # z = 15 + 254: L = −135
    (varints(1, 0, 1) + b"\x0f\xff\x72\x00", [192]),           # z = 270 + 114 = 384
    (varints(1, 0, 1) + b"\x0f\xff\x74\x00", None),            # z = 386: L = 193
    (varints(1, 0, 2) + b"\xf0\xff\x72\x00", [0, 192]),
    (varints(1, 0, 2) + b"\xf0\xff\x74\x00", None),
])
def test_hand_coded_levels_are_checked(raw: bytes, levels: list[int] | None) -> None:
    if levels is None:
        with pytest.raises(FormatError, match="level outside"):
            V2.decode(raw, 5, 4)
        return
    present, freqs, end = read_table(memoryview(raw), 4)
    assert end == len(raw)
    assert present.tolist() == list(range(len(levels)))
    assert freqs.tolist() == level_frequencies(np.array(levels)).tolist()
    assert int(freqs.sum()) == 1 << TABLE_BITS and int(freqs.min()) >= 1
    if len(levels) == 1:
        assert V2.decode(raw, 3, 4).tolist() == [0] * 3


def test_levels_at_the_limits_are_valid() -> None:
    present, freqs, _ = read_table(memoryview(table([0, 1, 2], [0, MAX_LEVEL, 0])), 3)
    assert present.tolist() == [0, 1, 2] and int(freqs.sum()) == 1 << TABLE_BITS
    assert int(freqs.min()) >= 1
    present, freqs, _ = read_table(memoryview(table([7], [MAX_LEVEL])), 8)
    assert freqs.tolist() == [1 << TABLE_BITS]
    assert V2.decode(table([7], [MAX_LEVEL]), 4, 8).tolist() == [7] * 4


OVERLONG = b"\xff" * 10 + b"\x01"  # 11 bytes, more than 64 bits


@pytest.mark.parametrize("blob", [
    OVERLONG,                                   # r
    b"\x01" + OVERLONG + b"\x01",               # gap
    b"\x01\x00" + OVERLONG,                     # length
    b"\x02\x00\x01" + OVERLONG + b"\x01",       # second gap
    b"\x80" * 40 + b"\x00",
])
def test_overlong_varints_raise(blob: bytes) -> None:
    for coder in (V2, V1):
        with pytest.raises(FormatError, match="over-long"):
            coder.decode(blob + b"\x00" * 8 + WORDS, 5, 64)


@pytest.mark.parametrize("blob", [b"\x80", b"\x01\x80", b"\x01\x00\x81", b"\x02\x00\x01\xff"])
def test_varint_cut_at_the_end_raises(blob: bytes) -> None:
    for coder in (V2, V1):
        with pytest.raises(FormatError):
            coder.decode(blob, 5, 64)


@pytest.mark.parametrize("extra", [1, 2, 3, 5, 7])
def test_body_not_whole_words_raises(extra: int) -> None:
    values = skewed(64, 400, 1)
    blob = V2.encode(values, 64)
    end = read_table(memoryview(blob), 64)[2]
    with pytest.raises(FormatError, match="32-bit words"):
        V2.decode(blob + b"\x5a" * extra, values.size, 64)
    with pytest.raises(FormatError, match="32-bit words"):
        V2.decode(blob[:len(blob) - (extra % 4)], values.size, 64)
    with pytest.raises(FormatError, match="32-bit words"):
        V2.decode(blob[:end] + b"\x01" * extra, values.size, 64)


@pytest.mark.parametrize("alphabet", [2, 4, 64, 65536])
def test_table_with_two_or_more_symbols_and_no_words_raises(alphabet: int) -> None:
    # §7.1: d ≥ 2 needs W ≥ 1 words; no words at all is a truncated segment.
    for blob in (table([0, 1], [8, 8]), table([0, alphabet - 1], [2, 14])):
        with pytest.raises(FormatError):
            V2.decode(blob, 5, alphabet)
    values = skewed(alphabet, 100, 2, 0.5)
    blob = V2.encode(values, alphabet)
    with pytest.raises(FormatError):
        V2.decode(blob[:read_table(memoryview(blob), alphabet)[2]], values.size, alphabet)


def test_v1_table_with_two_or_more_symbols_and_no_words_raises() -> None:
    with pytest.raises(FormatError):
        V1.decode(varints(2, 0, 32768, 0, 32768), 5, 4)


def test_zero_last_word_raises() -> None:
    with pytest.raises(FormatError, match="corrupt stream"):
        V2.decode(table([0, 1], [8, 8]) + b"\x01\x00\x00\x00" + b"\x00" * 4, 5, 4)


@pytest.mark.parametrize("coder", [V2, V1], ids=["v2", "v1"])
@pytest.mark.parametrize("count", [1, 5, 10**12])
def test_empty_table_with_symbols_raises(coder: RansCoder, count: int) -> None:
    for tail in (b"", WORDS):
        with pytest.raises(FormatError, match="empty frequency table"):
            coder.decode(b"\x00" + tail, count, 64)


@pytest.mark.parametrize("coder", [V2, V1], ids=["v2", "v1"])
def test_empty_table_and_empty_segment(coder: RansCoder) -> None:
    for alphabet in (1, 64, 65536):
        out = coder.decode(b"\x00", 0, alphabet)
        assert out.shape == (0,) and out.dtype == symbol_dtype(alphabet)
    for count in (0, 3):
        with pytest.raises(FormatError):
            coder.decode(b"", count, 64)
    assert V2.encode(np.zeros(0, np.uint8), 64) == b"\x00"


def test_alphabet_zero_admits_no_table() -> None:
    assert V2.decode(b"\x00", 0, 0).shape == (0,)
    for blob in (varints(1, 0, 1) + b"\x00", varints(1, 0, 1)):
        for coder in (V2, V1):
            with pytest.raises(FormatError):
                coder.decode(blob, 3, 0)


@pytest.mark.parametrize("alphabet", [MAX_ALPHABET + 1, 2 * MAX_ALPHABET])
def test_alphabet_beyond_2_16_is_refused_by_the_decoder(alphabet: int) -> None:
    # §7.1: A ≤ 2**16; the encoder refuses more, so no valid segment has a larger alphabet and
    # a decoder asked for one is reading a hostile or corrupt record (and must not allocate a
    # table over it: np.zeros(alphabet) escapes as MemoryError for alphabet 2**40).
    values = np.array([0, 1, 1, 0, 1], np.uint8)
    for coder, blob in ((V2, V2.encode(values, 2)), (V1, encode_v1(values, 2))):
        with pytest.raises(RftpackError):
            coder.decode(blob, 5, alphabet)


# -- 2. and 3. random mutations and garbage ----------------------------------------------------

@st.composite
def blocks(draw, alphabets=None, min_size: int = 1, max_size: int = 400):
    """(symbols, alphabet) of one coder block, of one of several shapes of histogram."""
    alphabet = draw(alphabets if alphabets is not None else st.sampled_from(HOSTILE_ALPHABETS))
    n = draw(st.integers(min_size, max_size))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["skewed", "uniform", "two", "sparse", "constant"]))
    if kind == "skewed":
        values = np.minimum(rng.geometric(draw(st.floats(0.01, 0.95)), n) - 1, alphabet - 1)
    elif kind == "uniform":
        values = rng.integers(0, alphabet, n)
    elif kind == "two":
        values = rng.choice(np.array([0, alphabet - 1]), n, p=[0.97, 0.03])
    elif kind == "sparse":
        values = rng.choice(rng.integers(0, alphabet, 20), n)
    else:
        values = np.full(n, rng.integers(0, alphabet))
    return values.astype(symbol_dtype(alphabet)), alphabet


def other_count(data, n: int) -> int:
    return data.draw(st.one_of(st.just(n), st.integers(0, n + 64)), label="count")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block=blocks(), data=st.data())
def test_v2_mutated_segment_decodes_or_raises(block, data) -> None:
    values, alphabet = block
    blob = V2.encode(values, alphabet)
    np.testing.assert_array_equal(V2.decode(blob, values.size, alphabet), values)
    assert_decodes_or_raises(V2, mutate(data, blob), other_count(data, values.size), alphabet)


@st.composite
def v2_garbage(draw):
    """Bytes that often get past the run checks: a few small runs, then random bytes."""
    runs = draw(st.integers(0, 4))
    head = [runs]
    for index in range(runs):
        head += [draw(st.integers(0 if index == 0 else 1, 40)), draw(st.integers(1, 20))]
    structured = varints(*head) + draw(st.binary(max_size=48))
    return draw(st.one_of(st.just(structured), st.binary(max_size=64)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blob=v2_garbage(), count=st.integers(0, 300), alphabet=st.sampled_from(HOSTILE_ALPHABETS))
def test_v2_random_garbage_decodes_or_raises(blob: bytes, count: int, alphabet: int) -> None:
    assert_decodes_or_raises(V2, blob, count, alphabet)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blob=v2_garbage(), count=st.integers(0, 300), alphabet=st.sampled_from(HOSTILE_ALPHABETS))
def test_v2_garbage_allocates_only_about_alphabet_data_and_count(blob, count, alphabet) -> None:
    tracemalloc.start()
    try:
        assert_decodes_or_raises(V2, blob, count, alphabet)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 64 * (alphabet + len(blob) + count) + (1 << 20), peak


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block=blocks(), data=st.data())
def test_v1_mutated_segment_decodes_or_raises(block, data) -> None:
    values, alphabet = block
    blob = encode_v1(values, alphabet)
    np.testing.assert_array_equal(V1.decode(blob, values.size, alphabet), values)
    assert_decodes_or_raises(V1, mutate(data, blob), other_count(data, values.size), alphabet)


@st.composite
def v1_garbage(draw):
    """A few symbols whose frequencies often sum to 2**16, then random bytes; or pure noise."""
    distinct = draw(st.integers(0, 4))
    cuts = sorted(draw(st.lists(st.integers(1, (1 << 16) - 1), min_size=max(distinct - 1, 0),
                                max_size=max(distinct - 1, 0))))
    freqs = np.diff([0, *cuts, 1 << 16]).tolist() if distinct else []
    if draw(st.booleans()):
        freqs = [draw(st.integers(0, 1 << 17)) for _ in freqs]
    head = [distinct]
    for freq in freqs:
        head += [draw(st.integers(0, 30)), freq]
    structured = varints(*head) + draw(st.binary(max_size=48))
    return draw(st.one_of(st.just(structured), st.binary(max_size=64)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blob=v1_garbage(), count=st.integers(0, 300), alphabet=st.sampled_from(HOSTILE_ALPHABETS))
def test_v1_random_garbage_decodes_or_raises(blob: bytes, count: int, alphabet: int) -> None:
    assert_decodes_or_raises(V1, blob, count, alphabet)


@pytest.mark.parametrize("case", range(5))
def test_v1_every_prefix_of_a_valid_segment(case: int) -> None:
    values, alphabet = prefix_segments()[case]
    header, words = encode_v1_parts(values, alphabet)
    blob, end = header + words, len(header)
    np.testing.assert_array_equal(V1.decode(blob, values.size, alphabet), values)
    assert_prefixes_behave(V1, blob, end, values.size, alphabet)


def test_v1_hand_built_corrupt_tables_raise() -> None:
    bad = [
        (varints(3, 0, 30000, 0, 30000, 0, 5536), 2),            # more symbols than A
        (varints(2, 0, 32768, 3, 32768), 4),                     # symbol 4 ≥ A
        (varints(2, 0, 32768, 2**63, 32768), 4),                 # huge gap
        (varints(2, 0, 0, 0, 65536), 4),                         # frequency 0
        (varints(2, 0, 2**64 - 1, 0, 1), 4),                     # huge frequency
        (varints(2, 0, 32768, 0, 32767), 4),                     # sums to 2**16 − 1
        (varints(1, 0, 65535), 4),                               # d = 1 must be 2**16 too
        (varints(2**62), 65536),
    ]
    for blob, alphabet in bad:
        with pytest.raises(FormatError):
            V1.decode(blob + WORDS, 5, alphabet)


# -- 4. version 1 is read-only; configuration ------------------------------------------------------

def test_version_1_reader_does_not_encode() -> None:
    with pytest.raises(StageError, match="read-only"):
        V1.encode(np.array([0, 1, 1], np.uint8), 4)
    with pytest.raises(StageError):
        V1.encode(np.zeros(0, np.uint8), 4)


def test_for_format_version_switches_both_ways() -> None:
    values = skewed(64, 300, 5)
    assert V1.for_format_version(2) == V2
    assert V2.for_format_version(2) == V2
    assert V1.for_format_version(2).encode(values, 64) == V2.encode(values, 64)
    np.testing.assert_array_equal(V1.decode(encode_v1(values, 64), 300, 64), values)
    assert V1.to_config() == V2.to_config()


def test_config_round_trip_and_no_parameters() -> None:
    assert RansCoder().to_config() == {"name": "rans", "configuration": {}}
    assert RansCoder.from_config(RansCoder().to_config()) == RansCoder()
    assert RansCoder.from_config({"name": "rans"}) == RansCoder()
    for configuration in ({"x": 1}, {"version_1": True}, {"format_version": 1}):
        with pytest.raises(StageError):
            RansCoder.from_config({"name": "rans", "configuration": configuration})
    with pytest.raises(StageError):
        RansCoder.from_config({"name": "zstd", "configuration": {}})


# -- 5. the table's size is what rate control charges ----------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block=blocks(st.one_of(st.integers(1, 300), st.sampled_from([2, 64, 65536])),
                    min_size=0, max_size=3000))
def test_table_end_is_table_bytes_and_rest_is_whole_words(block) -> None:
    values, alphabet = block
    blob = V2.encode(values, alphabet)
    counts = np.bincount(values.astype(np.int64))
    assert table_bytes(counts) == table_bytes(np.bincount(values.astype(np.int64),
                                                          minlength=alphabet))
    present, freqs, end = read_table(memoryview(blob), alphabet)
    assert end == table_bytes(counts)
    distinct = int(np.count_nonzero(counts))
    assert present.tolist() == np.flatnonzero(counts).tolist()
    if distinct:
        assert freqs.tolist() == level_frequencies(levels_of(counts[present])).tolist()
        assert int(freqs.sum()) == 1 << TABLE_BITS and int(freqs.min()) >= 1
    if distinct == 0:
        assert blob == b"\x00" and end == 1
    elif distinct == 1:
        assert len(blob) == end
    else:
        assert len(blob) > end and (len(blob) - end) % 4 == 0
    np.testing.assert_array_equal(V2.decode(blob, values.size, alphabet), values)


def test_table_bytes_examples() -> None:
    assert table_bytes(np.array([5, 3, 0, 1])) == 7
    assert table_bytes(np.zeros(4, np.int64)) == 1
    assert table_bytes(np.array([0, 0, 9])) == len(varints(1, 2, 1)) + 1


def test_wide_escapes_round_trip() -> None:
    # levels 8, 146, 8: δ = +138 and −138 need the uint16 escape
    values = np.array([0] * 150000 + [1] + [2] * 150000, np.uint8)
    np.random.default_rng(0).shuffle(values)
    counts = np.bincount(values)
    assert levels_of(counts).tolist() == [8, 146, 8]
    blob = V2.encode(values, 3)
    end = read_table(memoryview(blob), 3)[2]
    # nibbles 15, 15, 15; escape bytes 1, 255, 255; wide 6, 5
    assert end == table_bytes(counts) == len(varints(1, 0, 3)) + 2 + 3 + 4
    assert blob[end - 6:end] == bytes([255, 255]) + (276 - 270).to_bytes(2, "little") + \
        (275 - 270).to_bytes(2, "little")
    np.testing.assert_array_equal(V2.decode(blob, values.size, 3), values)
