"""``floatplanes``: bit-exact floats of every width, the Huffman zstd frames under it, the exact
path through the codec, and robustness to corrupt segments."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rftpack.codec import ExactPipeline, decode_container, encode_exact
from rftpack.errors import FormatError, RftpackError, StageError
from rftpack.profiles import PROFILES, build_stage
from rftpack.stages import _zhuff
from rftpack.stages.base import symbol_dtype
from rftpack.stages.floatplanes import CHUNK, FloatPlanesCoder, choose_rotation
from rftpack.stages.zstd import ZstdCoder

CODER = FloatPlanesCoder()
FLOATS = [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16), np.dtype(np.float32),
          np.dtype(np.float64)]
UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def specials(dtype: np.dtype) -> np.ndarray:
    """±0, ±inf, quiet and signalling NaNs with payloads, subnormals, extremes, as raw bits."""
    bits = 8 * dtype.itemsize
    info = ml_dtypes.finfo(dtype)
    mant = int(info.nmant)
    expo = bits - 1 - mant
    sign = 1 << (bits - 1)
    inf = ((1 << expo) - 1) << mant
    values = [0, sign, inf, sign | inf, inf | 1, inf | (1 << (mant - 1)), inf | ((1 << mant) - 1),
              sign | inf | 3, 1, (1 << mant) - 1, sign | 1, sign | ((1 << mant) - 1),
              inf - 1, sign | (inf - 1), 1 << mant]
    return np.array(values, dtype=np.uint64).astype(UINT[dtype.itemsize]).view(dtype)


@st.composite
def float_arrays(draw):
    dtype = draw(st.sampled_from(FLOATS))
    n = draw(st.one_of(st.integers(0, 3), st.integers(0, 3000)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["bits", "normal", "special", "mixed", "constant", "rounded"]))
    uint = UINT[dtype.itemsize]
    if kind == "bits":
        x = rng.integers(0, np.iinfo(uint).max, n, dtype=uint, endpoint=True).view(dtype)
    elif kind == "special":
        x = rng.choice(specials(dtype), n) if n else np.zeros(0, dtype)
    elif kind == "constant":
        x = np.full(n, rng.choice(specials(dtype)), dtype)
    else:
        x = rng.normal(0, draw(st.sampled_from([1e-3, 0.05, 1.0, 300.0])), n).astype(dtype)
        if kind == "mixed" and n:
            where = rng.integers(0, n, max(1, n // 10))
            x[where] = rng.choice(specials(dtype), where.size)
        if kind == "rounded" and dtype.itemsize >= 4:
            x = x.astype(np.float16).astype(dtype)  # low mantissa bits all zero
    return np.ascontiguousarray(x, dtype=dtype)


def round_trip(x: np.ndarray) -> np.ndarray:
    blob = CODER.encode_elements(x)
    assert isinstance(blob, bytes)
    out = CODER.decode_elements(blob, x.shape[0], x.dtype)
    assert out.dtype == x.dtype and out.shape == x.shape
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=float_arrays())
def test_floats_round_trip_bit_exactly(x: np.ndarray) -> None:
    assert round_trip(x).tobytes() == x.tobytes()


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_specials_empty_and_single_elements(dtype: np.dtype) -> None:
    for x in [np.zeros(0, dtype), specials(dtype), *[v[None] for v in specials(dtype)]]:
        assert round_trip(x).tobytes() == x.tobytes()


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("n", [CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7])
def test_chunk_and_block_boundaries(dtype: np.dtype, n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(0, 0.05, n).astype(dtype)
    x[: n // 3] = x[: n // 3].astype(np.float16).astype(dtype)  # a reduced-precision run
    x[n // 2: n // 2 + 5000] = 0
    assert round_trip(x).tobytes() == x.tobytes()


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint16, np.int8, np.uint8, np.bool_,
                                   ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2])
def test_other_dtypes_round_trip(dtype) -> None:
    rng = np.random.default_rng(1)
    for n in (0, 1, 5000):
        x = rng.integers(0, 2, n).astype(dtype) if dtype is np.bool_ else \
            rng.integers(0, 100, n).astype(np.uint8).view(np.uint8).astype(dtype)
        assert round_trip(x).tobytes() == x.tobytes()


def test_deterministic() -> None:
    x = np.random.default_rng(5).normal(0, 0.05, 200_000).astype(np.float32)
    assert CODER.encode_elements(x) == CODER.encode_elements(x.copy())
    assert FloatPlanesCoder().encode(np.arange(1000) % 7, 7) == CODER.encode(np.arange(1000) % 7, 7)


def test_compresses_weights_better_than_shuffled_zstd() -> None:
    x = np.random.default_rng(2).normal(0, 0.04, 400_000).astype(np.float32)
    shuffled = np.ascontiguousarray(x.view(np.uint8).reshape(-1, 4).T).reshape(-1)
    zstd = len(ZstdCoder(level=3).encode(shuffled, 256))
    assert len(CODER.encode_elements(x)) < 0.98 * zstd
    bf = x.astype(ml_dtypes.bfloat16)
    assert len(CODER.encode_elements(bf)) < 0.78 * bf.nbytes


def test_rotation_puts_the_exponent_in_one_plane() -> None:
    x = np.random.default_rng(3).normal(0, 0.05, 100_000).astype(ml_dtypes.bfloat16)
    assert choose_rotation(x.view("<u2")) == 1  # fast: exponent alone, sign+mantissa raw
    assert 2 <= choose_rotation(x.view("<u2"), fast_decode=False) <= 5  # + top mantissa bits


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_smallest_layout_round_trips_and_is_not_larger(dtype: np.dtype) -> None:
    x = np.random.default_rng(6).normal(0, 0.05, 300_000).astype(dtype)
    small = FloatPlanesCoder(fast_decode=False)
    blob = small.encode_elements(x)
    assert small.decode_elements(blob, x.size, dtype).tobytes() == x.tobytes()
    assert len(blob) <= 1.002 * len(CODER.encode_elements(x))


def test_fast_decode_must_be_a_bool() -> None:
    with pytest.raises(StageError):
        FloatPlanesCoder(fast_decode="yes")  # type: ignore[arg-type]
    config = FloatPlanesCoder(fast_decode=False).to_config()
    assert config == {"name": "floatplanes", "configuration": {"fast_decode": False}}
    assert FloatPlanesCoder.from_config(config) == FloatPlanesCoder(fast_decode=False)


@pytest.mark.parametrize("dtype", [*FLOATS, np.dtype(np.int16)], ids=str)
def test_decode_into_a_given_output(dtype: np.dtype) -> None:
    x = np.random.default_rng(7).normal(0, 3, 5000).astype(dtype)
    blob = CODER.encode_elements(x)
    out = np.empty(x.size, dtype)
    assert CODER.decode_elements(blob, x.size, dtype, out=out) is out
    assert out.tobytes() == x.tobytes()
    strided = np.empty(2 * x.size, dtype)[::2]  # not contiguous: filled by a copy
    assert CODER.decode_elements(blob, x.size, dtype, out=strided) is strided
    assert strided.tobytes() == x.tobytes()


# -- the symbol (Coder) interface ---------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.sampled_from([1, 2, 7, 256, 257, 65536, 1 << 20]), st.integers(0, 3000),
       st.integers(0, 2**32 - 1))
def test_symbols_round_trip(alphabet: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = np.minimum(rng.geometric(0.1, n) - 1, alphabet - 1).astype(symbol_dtype(alphabet))
    out = CODER.decode(CODER.encode(values, alphabet), n, alphabet)
    assert out.dtype == symbol_dtype(alphabet)
    np.testing.assert_array_equal(out, values)


def test_symbol_outside_alphabet_raises() -> None:
    blob = CODER.encode(np.array([0, 1, 200], np.uint8), 256)
    with pytest.raises(FormatError):
        CODER.decode(blob, 3, 100)


# -- the exact path -----------------------------------------------------------------------------

def decode(enc) -> np.ndarray:
    payload = enc.payload
    return decode_container(enc.container,
                            lambda seg: payload[seg["offset"]:seg["offset"] + seg["length"]])


@pytest.mark.parametrize("dtype", [*FLOATS, np.dtype(np.int64), np.dtype(np.bool_)], ids=str)
def test_exact_path_uses_whole_elements(dtype: np.dtype) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(0, 0.1, (70, 33)).astype(dtype)
    enc = encode_exact("t", x, ExactPipeline(FloatPlanesCoder(), block_size=1000))
    assert enc.container["codec"] == {"mode": "exact", "byte_shuffle": False}
    assert enc.container["stages"][0]["name"] == "floatplanes"
    assert len(enc.container["payload"]["blocks"]) == 3
    y = decode(enc)
    assert y.dtype == x.dtype and y.shape == x.shape and y.tobytes() == x.tobytes()


def test_lossless_profile_uses_floatplanes() -> None:
    coder = build_stage("coder", PROFILES["lossless"].exact_coder)
    assert isinstance(coder, FloatPlanesCoder)
    assert PROFILES["hybrid"].exact_coder["name"] == "zstd"


# -- the zstd frames ----------------------------------------------------------------------------

@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 300_000), st.integers(1, 256), st.floats(0.02, 3.0),
       st.integers(0, 2**32 - 1))
def test_frames_are_standard_zstd(n: int, distinct: int, concentration: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    alphabet = rng.choice(256, distinct, replace=False)
    x = rng.choice(alphabet, n, p=rng.dirichlet(np.full(distinct, concentration)))
    x = x.astype(np.uint8)
    frame = _zhuff.encode_frame(x)
    assert zstandard.ZstdDecompressor().decompress(frame) == x.tobytes()
    streamed = zstandard.ZstdDecompressor().stream_reader(frame).read(n + 1)
    assert streamed == x.tobytes()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=256), st.integers(8, 12))
def test_length_limited_huffman_is_complete_and_bounded(counts: list[int], max_bits: int) -> None:
    counts_arr = np.array(counts)
    lengths = _zhuff.huffman_lengths(counts_arr, max_bits)
    present = counts_arr > 0
    assert ((lengths > 0) == present).all()
    if present.sum() >= 2:
        assert lengths.max() <= max_bits
        assert sum(2.0 ** -int(b) for b in lengths[present]) == 1.0
        unlimited = _zhuff.huffman_lengths(counts_arr, 64)
        assert (lengths * counts_arr).sum() >= (unlimited * counts_arr).sum()


def test_huffman_beats_zstd_on_exponents() -> None:
    rng = np.random.default_rng(0)
    exps = (np.frexp(rng.normal(0, 0.05, 500_000).astype(np.float32))[1] + 140).astype(np.uint8)
    ours = len(_zhuff.encode_frame(exps))
    theirs = len(zstandard.ZstdCompressor(level=3).compress(exps.tobytes()))
    assert ours < 0.9 * theirs


# -- corruption ---------------------------------------------------------------------------------

def sample(dtype=np.float32, n: int = 20_000) -> tuple[np.ndarray, bytes]:
    x = np.random.default_rng(9).normal(0, 0.05, n).astype(dtype)
    blob = CODER.encode_elements(x)
    assert blob[0] == 1  # float planes (small tensors may take zstd instead)
    return x, blob


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_truncated_segment_raises_format_error(dtype: np.dtype) -> None:
    x, blob = sample(dtype)
    for cut in sorted({0, 1, 2, 3, len(blob) // 2, len(blob) - 1}):
        with pytest.raises(FormatError):
            CODER.decode_elements(blob[:cut], x.size, dtype)


def test_wrong_count_dtype_or_layout_raises_format_error() -> None:
    x, blob = sample()
    for count in (0, x.size - 1, x.size + 1):
        with pytest.raises(FormatError):
            CODER.decode_elements(blob, count, x.dtype)
    with pytest.raises(FormatError):
        CODER.decode_elements(blob, x.size, np.dtype(np.int32))
    for first in (3, 255):
        with pytest.raises(FormatError):
            CODER.decode_elements(bytes([first]) + blob[1:], x.size, x.dtype)
    with pytest.raises(FormatError):
        CODER.decode_elements(blob[:1] + b"\x10" + blob[2:], x.size, x.dtype)
    with pytest.raises(FormatError):
        CODER.decode_elements(blob + b"\x00", x.size, x.dtype)


def test_plane_claiming_huge_size_raises_format_error() -> None:
    x, blob = sample(np.float16)
    # the first plane's frame header: magic, descriptor (FCS flag 1), window, 2-byte size
    start = blob.index(_zhuff.MAGIC)
    assert blob[start + 4] == 0x40
    forged = (blob[:start + 4] + bytes([0xC0, blob[start + 5]]) + (2**60).to_bytes(8, "little")
              + blob[start + 8:])
    with pytest.raises(FormatError):
        CODER.decode_elements(forged, x.size, x.dtype)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_segment_decodes_or_raises_rftpack_error(data) -> None:
    dtype = data.draw(st.sampled_from([*FLOATS, np.dtype(np.int32)]))
    n = data.draw(st.one_of(st.integers(1, 2000), st.integers(9000, 12000)))
    x = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).normal(0, 1, n).astype(dtype)
    blob = bytearray(CODER.encode_elements(x))
    op = data.draw(st.sampled_from(["flip", "set", "truncate", "extend", "insert"]))
    if op in ("flip", "set"):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = (blob[i] ^ (1 << data.draw(st.integers(0, 7)))) if op == "flip" \
            else data.draw(st.integers(0, 255))
    elif op == "truncate":
        del blob[data.draw(st.integers(0, len(blob) - 1)):]
    elif op == "extend":
        blob += data.draw(st.binary(min_size=1, max_size=16))
    else:
        i = data.draw(st.integers(0, len(blob)))
        blob[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        out = CODER.decode_elements(bytes(blob), n, dtype)
    except RftpackError:
        return
    assert out.shape == (n,) and out.dtype == dtype


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=80), st.integers(0, 300), st.sampled_from([*FLOATS, np.dtype(np.int8)]))
def test_random_bytes_decode_or_raise(blob: bytes, n: int, dtype: np.dtype) -> None:
    try:
        out = CODER.decode_elements(blob, n, dtype)
    except RftpackError:
        return
    assert out.shape == (n,) and out.dtype == dtype


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=80), st.integers(0, 300), st.sampled_from([2, 256, 65536]))
def test_random_symbol_bytes_decode_or_raise(blob: bytes, n: int, alphabet: int) -> None:
    try:
        out = CODER.decode(blob, n, alphabet)
    except RftpackError:
        return
    assert out.shape == (n,) and (out.size == 0 or int(out.max()) < alphabet)


# -- planes stored in Raw/RLE blocks are read without zstd ---------------------------------------

def mixed_plane(n: int, seed: int) -> np.ndarray:
    """Random bytes (Raw blocks) with zero runs (RLE blocks) in between."""
    plane = np.random.default_rng(seed).integers(0, 256, n).astype(np.uint8)
    plane[n // 5: n // 5 + 40_000] = 0
    plane[n // 2: n // 2 + 20_480] = 0
    return plane


def test_stored_blocks_are_found_only_in_frames_of_raw_and_rle_blocks() -> None:
    plane = mixed_plane(400_000, 1)
    frame = _zhuff.encode_frame(plane, max_ratio=0.97)
    blocks = _zhuff.stored_blocks(frame)
    assert blocks is not None and {kind for kind, _, _ in blocks} == {0, 1}
    assert sum(size for _, _, size in blocks) == plane.size
    skewed = (plane % 4).astype(np.uint8)  # Huffman pays: zstd must decode it
    assert _zhuff.stored_blocks(_zhuff.encode_frame(skewed)) is None
    for level in (1, 3):
        made = zstandard.ZstdCompressor(level=level, write_checksum=True).compress(
            plane.tobytes())
        assert _zhuff.stored_blocks(made) is None  # checksum (and maybe compressed blocks)
    lying = bytearray(frame)
    assert lying[4] >> 6 == 2  # a 4-byte content size follows the window descriptor
    lying[6:10] = (plane.size + 1).to_bytes(4, "little")
    for irregular in (bytes(lying), frame[:-1], frame + b"\x00", frame[:3], b""):
        assert _zhuff.stored_blocks(irregular) is None


@pytest.mark.parametrize("read", [1, 999, CHUNK, 100_001])
def test_stored_planes_read_as_zstd_decodes_them(read: int) -> None:
    from rftpack.stages.floatplanes import _plane_reader, _StoredPlaneReader

    plane = mixed_plane(350_000, read)
    frame = memoryview(_zhuff.encode_frame(plane, max_ratio=0.97))
    reader = _plane_reader(frame, plane.size, read)
    assert isinstance(reader, _StoredPlaneReader)
    pieces = [reader.read(min(read, plane.size - i)).copy()
              for i in range(0, plane.size, read)]
    assert np.array_equal(np.concatenate(pieces), _zhuff.decode_frame(frame, plane.size))


def test_a_stored_plane_with_a_lying_content_size_raises_format_error() -> None:
    x = np.random.default_rng(3).normal(0, 0.05, 100_000).astype(np.float32)
    blob = bytearray(CODER.encode_elements(x))
    # the planes after the exponent's are raw mantissa bytes: forge the last one's size
    start = bytes(blob).rindex(_zhuff.MAGIC)
    frame = bytes(blob[start:])
    assert _zhuff.stored_blocks(frame) is not None and blob[start + 4] >> 6 == 2
    blob[start + 6:start + 10] = (x.size - 1).to_bytes(4, "little")
    with pytest.raises(FormatError):
        CODER.decode_elements(bytes(blob), x.size, x.dtype)
