"""One tensor through the codec: lossy and exact round trips, policies, and container checks."""

from __future__ import annotations

import copy
import json
import math

import ml_dtypes
import numpy as np
import pytest

from rftpack.codec import (
    ExactPipeline,
    LossyPipeline,
    decode_container,
    encode_exact,
    encode_lossy,
    is_lossy_candidate,
    pipeline_of,
)
from rftpack.dtypes import DTYPES, LOSSY_CAPABLE
from rftpack.errors import FormatError, StageError, UnknownStageError
from rftpack.profiles import exact_pipeline, hybrid_pipeline
from rftpack.stages.identity import Identity
from rftpack.stages.polar import PolarQuantizer
from rftpack.stages.rans import RansCoder
from rftpack.stages.raw import RawCoder
from rftpack.stages.rft import RFT
from rftpack.stages.zstd import ZstdCoder

FLOAT_DTYPES = [np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16),
                np.dtype(np.float64)]


def reader(payload: bytes):
    return lambda seg: payload[seg["offset"]:seg["offset"] + seg["length"]]


def decode(enc, refine=None) -> np.ndarray:
    return decode_container(enc.container, reader(enc.payload), refine)


def snr_db(x: np.ndarray, y: np.ndarray) -> float:
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    return 10 * math.log10(float(np.sum(x * x)) / float(np.sum((x - y) ** 2)))


def gaussian(shape, dtype, seed: int = 0, scale: float = 0.05) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(dtype)


# -- lossy ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(64, 64), (3, 5, 70), (5000,), (1, 1025)], ids=str)
def test_lossy_round_trip(dtype: np.dtype, shape: tuple[int, ...]) -> None:
    x = gaussian(shape, dtype, seed=len(shape))
    enc = encode_lossy("w", x, hybrid_pipeline())
    y = decode(enc)
    assert y.dtype == dtype
    assert y.shape == x.shape
    assert np.all(np.isfinite(y.astype(np.float64)))
    assert snr_db(x, y) >= 20.0
    # The container is plain JSON (no NaN, no numpy scalars).
    json.dumps(enc.container, allow_nan=False)
    assert enc.container["codec"]["mode"] == "hybrid"
    assert enc.container["dtype"] == {"bfloat16": "bfloat16"}.get(str(dtype), str(dtype))
    assert enc.container["original_shape"] == list(shape)
    assert enc.container["numel"] == x.size


def test_reported_snr_matches_decoded_float64() -> None:
    x = gaussian((128, 96), np.float64, seed=3)
    enc = encode_lossy("w", x, hybrid_pipeline())
    assert enc.snr_db >= 20.0
    assert enc.snr_db == pytest.approx(snr_db(x, decode(enc)), abs=1e-6)
    assert enc.container["snr_db"] == pytest.approx(enc.snr_db, abs=1e-3)


def test_decode_uses_only_the_container() -> None:
    x = gaussian((40, 50), np.float32, seed=4)
    pipeline = LossyPipeline(Identity(), PolarQuantizer(amp_bits=8, phase_bits=1,
                                                         prune_threshold=0.0),
                             ZstdCoder(level=1), block_size=777)
    enc = encode_lossy("w", x, pipeline)
    rebuilt = pipeline_of(json.loads(json.dumps(enc.container)))
    assert rebuilt == pipeline
    y = decode(enc)
    # Identity + 1 phase bit = sign; 8-bit log amplitude: small relative error.
    assert snr_db(x, y) > 25


@pytest.mark.parametrize("coder", [RansCoder(), ZstdCoder(), RawCoder()], ids=lambda c: c.id)
def test_multi_block(coder) -> None:
    x = gaussian((2500,), np.float32, seed=5)
    pipeline = LossyPipeline(RFT(), PolarQuantizer(), coder, block_size=1000)
    enc = encode_lossy("w", x, pipeline)
    blocks = enc.container["payload"]["blocks"]
    assert [b["count"] for b in blocks] == [1000, 1000, 500]
    assert [b["coefficients"] for b in blocks] == [501, 501, 251]
    y = decode(enc)
    assert y.shape == x.shape
    assert snr_db(x, y) >= 20.0
    # Each block is reconstructed from its own data: zeroing one block's input changes only it.
    x2 = x.copy()
    x2[1000:2000] = 0
    y2 = decode(encode_lossy("w", x2, pipeline))
    np.testing.assert_array_equal(y2[:1000], y[:1000])
    np.testing.assert_array_equal(y2[2000:], y[2000:])
    assert float(np.abs(y2[1000:2000]).max()) < 1e-9  # ln|c| is floored at ln(1e-12)


def test_segments_tile_the_payload() -> None:
    x = gaussian((2500,), np.float32, seed=6)
    x[10] = np.nan
    enc = encode_lossy("w", x, LossyPipeline(RFT(), PolarQuantizer(), RansCoder(),
                                             block_size=1000))
    segs = [s for b in enc.container["payload"]["blocks"] for s in b["streams"].values()]
    nonfinite = enc.container["payload"]["nonfinite"]
    segs += [nonfinite["index"], nonfinite["values"]]
    segs.sort(key=lambda s: s["offset"])
    position = 0
    for seg in segs:
        assert seg["offset"] == position
        position += seg["length"]
    assert position == len(enc.payload) == enc.container["payload"]["size"]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_nonfinite_values_kept_exactly(dtype: np.dtype) -> None:
    x = gaussian((30, 70), dtype, seed=7)
    flat = x.reshape(-1)
    positions = {0: np.nan, 5: np.inf, 1234: -np.inf, 2099: np.nan, 700: np.inf}
    for i, v in positions.items():
        flat[i] = v
    pipeline = LossyPipeline(RFT(), PolarQuantizer(), RansCoder(), block_size=1000)
    enc = encode_lossy("w", x, pipeline)
    assert enc.container["payload"]["nonfinite"]["count"] == len(positions)
    y = decode(enc).reshape(-1).astype(np.float64)
    for i, v in positions.items():
        if np.isnan(v):
            assert np.isnan(y[i])
        else:
            assert y[i] == v
    mask = np.ones(y.size, bool)
    mask[list(positions)] = False
    assert np.all(np.isfinite(y[mask]))
    assert snr_db(flat[mask], y[mask].astype(dtype)) >= 20.0


def test_all_nonfinite_tensor() -> None:
    x = np.full((4, 300), np.nan, np.float32)
    x[1] = np.inf
    y = decode(encode_lossy("w", x, hybrid_pipeline()))
    assert np.isnan(y[0]).all() and (y[1] == np.inf).all() and np.isnan(y[2:]).all()


def test_float16_near_max_does_not_overflow() -> None:
    finfo_max = float(np.finfo(np.float16).max)
    rng = np.random.default_rng(8)
    x = (finfo_max * rng.choice([-1.0, 1.0], size=(32, 64)) *
         rng.uniform(0.97, 1.0, size=(32, 64))).astype(np.float16)
    x[0, 0] = np.float16(finfo_max)
    enc = encode_lossy("w", x, hybrid_pipeline())
    y = decode(enc)
    assert np.all(np.isfinite(y))
    assert float(np.abs(y.astype(np.float64)).max()) <= finfo_max
    assert snr_db(x, y) >= 20.0


def test_bfloat16_large_values_do_not_overflow() -> None:
    limit = float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)
    x = np.full((16, 64), limit, np.float64)
    x[:, ::2] = -limit
    x = x.astype(ml_dtypes.bfloat16)
    y = decode(encode_lossy("w", x, hybrid_pipeline()))
    assert np.all(np.isfinite(y.astype(np.float64)))


def test_zero_tensor() -> None:
    # An all-zero weight (e.g. a freshly initialised LoRA B matrix) must encode; it decodes to
    # zeros up to the 1e-12 log-amplitude floor.
    zeros = np.zeros((32, 40), np.float32)
    enc = encode_lossy("z", zeros, hybrid_pipeline())
    assert float(np.abs(decode(enc)).max()) < 1e-9


def test_constant_tensor() -> None:
    const = np.full((32, 40), 0.25, np.float32)
    y = decode(encode_lossy("c", const, hybrid_pipeline()))
    np.testing.assert_allclose(y, const, rtol=1e-3)


def test_empty_tensor_lossy() -> None:
    x = np.zeros((0, 5), np.float32)
    enc = encode_lossy("e", x, hybrid_pipeline())
    y = decode(enc)
    assert y.shape == (0, 5) and y.dtype == np.float32


def test_lossy_rejects_non_float() -> None:
    with pytest.raises(StageError):
        encode_lossy("i", np.arange(2000).reshape(40, 50), hybrid_pipeline())


def test_lossy_big_endian_input() -> None:
    x = gaussian((50, 50), np.float32, seed=9)
    big = x.astype(">f4")
    assert decode(encode_lossy("w", big, hybrid_pipeline())).tobytes() == \
        decode(encode_lossy("w", x, hybrid_pipeline())).tobytes()


def test_lossy_deterministic() -> None:
    x = gaussian((64, 64), np.float32, seed=10)
    a = encode_lossy("w", x, hybrid_pipeline())
    b = encode_lossy("w", x.copy(), hybrid_pipeline())
    assert a.payload == b.payload
    assert json.dumps(a.container) == json.dumps(b.container)


def test_compresses_well_below_float32() -> None:
    x = gaussian((256, 256), np.float32, seed=11)
    enc = encode_lossy("w", x, hybrid_pipeline())
    assert enc.container["bits_per_weight"] < 16
    assert enc.container["stored_bytes"] == len(enc.payload)


def test_sampler_sees_every_block() -> None:
    seen = []
    x = gaussian((2500,), np.float32, seed=12)
    pipeline = LossyPipeline(RFT(), PolarQuantizer(), RansCoder(), block_size=1000)
    encode_lossy("w", x, pipeline, sampler=lambda name, view, c, bands: seen.append(
        (name, view.count, c.shape[0], bands[-1][1])))
    assert seen == [("w", 501, 501, 501), ("w", 501, 501, 501), ("w", 251, 251, 251)]


def test_refine_identity_changes_nothing_and_shift_does() -> None:
    x = gaussian((64, 64), np.float32, seed=13)
    enc = encode_lossy("w", x, hybrid_pipeline())
    calls = []

    def factory(bands):
        calls.append(bands)
        return lambda view: (view.log_amp, view.phase)

    np.testing.assert_array_equal(decode(enc, factory), decode(enc))
    assert calls and calls[0][-1][1] == 64 * 64 // 2 + 1

    def doubling(bands):
        return lambda view: (view.log_amp + math.log(2.0), view.phase)

    np.testing.assert_allclose(decode(enc, doubling), 2 * decode(enc), rtol=1e-5, atol=1e-7)


# -- exact ----------------------------------------------------------------------------------------

def sample_values(dtype: np.dtype, shape) -> np.ndarray:
    rng = np.random.default_rng(abs(hash(dtype.name)) % 2**32)
    n = int(np.prod(shape))
    if dtype == np.bool_:
        return (rng.integers(0, 2, n) == 1).reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True).reshape(shape)
    raw = rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)  # every bit pattern, NaN payloads included


@pytest.mark.parametrize("name", list(DTYPES))
@pytest.mark.parametrize("shape", [(), (0, 3), (7,), (3, 4, 5), (5000,)], ids=str)
def test_exact_round_trip_bit_exact(name: str, shape) -> None:
    dtype = DTYPES[name]
    x = sample_values(dtype, shape)
    enc = encode_exact("t", x, exact_pipeline())
    y = decode(enc)
    assert y.dtype == dtype
    assert y.shape == x.shape
    assert y.tobytes() == x.tobytes()
    assert enc.container["dtype"] == name
    assert enc.container["codec"]["mode"] == "exact"
    json.dumps(enc.container, allow_nan=False)


@pytest.mark.parametrize("name", ["float64", "float32", "float16", "int64", "int32", "int16",
                                  "uint64", "uint32", "uint16"])
def test_exact_big_endian_input(name: str) -> None:
    x = sample_values(DTYPES[name], (33, 3))
    big = x.astype(x.dtype.newbyteorder(">"))
    assert big.dtype.byteorder == ">"
    y = decode(encode_exact("t", big, exact_pipeline()))
    assert y.dtype == DTYPES[name]
    assert y.tobytes() == x.tobytes()


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("coder", [ZstdCoder(), RansCoder(), RawCoder()], ids=lambda c: c.id)
def test_exact_pipelines_and_blocks(shuffle: bool, coder) -> None:
    x = sample_values(np.dtype(np.float32), (2501,))
    pipeline = ExactPipeline(coder, byte_shuffle=shuffle, block_size=1000)
    enc = encode_exact("t", x, pipeline)
    assert [b["count"] for b in enc.container["payload"]["blocks"]] == [1000, 1000, 501]
    assert pipeline_of(enc.container) == pipeline
    assert decode(enc).tobytes() == x.tobytes()


def test_exact_non_contiguous_input() -> None:
    base = sample_values(np.dtype(np.int32), (20, 30))
    view = base[::2, ::3]
    assert decode(encode_exact("t", view, exact_pipeline())).tobytes() == \
        np.ascontiguousarray(view).tobytes()


def test_exact_rejects_unsupported_dtype() -> None:
    with pytest.raises(FormatError):
        encode_exact("c", np.zeros(3, np.complex64), exact_pipeline())


# -- policy ---------------------------------------------------------------------------------------

def test_is_lossy_candidate_policy() -> None:
    assert is_lossy_candidate(np.zeros((32, 32), np.float32))
    assert is_lossy_candidate(np.zeros((32, 32), np.float16))
    assert is_lossy_candidate(np.zeros((32, 32), ml_dtypes.bfloat16))
    assert is_lossy_candidate(np.zeros((32, 32), np.float64))
    assert not is_lossy_candidate(np.zeros((31, 33), np.float32))        # 1023 < 1024
    assert not is_lossy_candidate(np.zeros(4096, np.float32))            # 1-D
    assert is_lossy_candidate(np.zeros(4096, np.float32), lossy_1d=True)
    assert not is_lossy_candidate(np.zeros((64, 64), np.int32))
    assert not is_lossy_candidate(np.zeros((64, 64), np.bool_))
    assert not is_lossy_candidate(np.zeros((64, 64), ml_dtypes.float8_e4m3fn))
    assert not is_lossy_candidate(np.zeros((64, 64), np.uint8))
    assert is_lossy_candidate(np.zeros((2, 5), np.float32), min_numel=10)
    assert not is_lossy_candidate(np.zeros((2, 4), np.float32), min_numel=10)
    assert not is_lossy_candidate(np.zeros((0, 4), np.float32), min_numel=0)
    assert is_lossy_candidate(np.zeros((1, 1), np.float32), min_numel=0)
    for name in DTYPES:
        assert is_lossy_candidate(np.zeros((64, 64), DTYPES[name])) == (name in LOSSY_CAPABLE)


def test_is_lossy_candidate_big_endian_float() -> None:
    # encode_lossy accepts big-endian floats; the policy must classify them like native ones.
    assert is_lossy_candidate(np.zeros((64, 64), ">f4"))
    assert not is_lossy_candidate(np.zeros((64, 64), ">i4"))


# -- container validation -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lossy_encoded():
    x = gaussian((2500,), np.float32, seed=14)
    return encode_lossy("w", x, LossyPipeline(RFT(), PolarQuantizer(), RansCoder(),
                                              block_size=1000))


@pytest.fixture(scope="module")
def exact_encoded():
    return encode_exact("t", np.arange(2500, dtype=np.int32),
                        ExactPipeline(ZstdCoder(), block_size=1000))


def tampered(enc, edit):
    container = copy.deepcopy(enc.container)
    edit(container)
    return container


@pytest.mark.parametrize("which", ["lossy", "exact"])
def test_blocks_not_summing_to_numel(which, lossy_encoded, exact_encoded) -> None:
    enc = lossy_encoded if which == "lossy" else exact_encoded

    def drop_last(c):
        c["payload"]["blocks"].pop()

    def zero_count(c):
        c["payload"]["blocks"][0]["count"] = 0

    def oversize(c):
        c["payload"]["blocks"][0]["count"] = 1001

    def not_int(c):
        c["payload"]["blocks"][0]["count"] = 1000.0

    for edit in (drop_last, zero_count, oversize, not_int):
        with pytest.raises(FormatError):
            decode_container(tampered(enc, edit), reader(enc.payload))


def test_unknown_stage_name(lossy_encoded) -> None:
    def edit(c):
        c["stages"][2]["name"] = "acme.magic"
        c["stages"][2]["provider"] = "acme-rftpack"

    with pytest.raises(UnknownStageError) as info:
        decode_container(tampered(lossy_encoded, edit), reader(lossy_encoded.payload))
    assert "acme.magic" in str(info.value) and "acme-rftpack" in str(info.value)


def test_newer_stage_format_version(lossy_encoded) -> None:
    def edit(c):
        c["stages"][1]["format_version"] = 2

    with pytest.raises(StageError) as info:
        decode_container(tampered(lossy_encoded, edit), reader(lossy_encoded.payload))
    assert "polar" in str(info.value)


@pytest.mark.parametrize("edit", [
    lambda c: c.update(numel=2499),
    lambda c: c.update(original_shape=[2, 1250], numel=2499),
    lambda c: c.update(original_shape=[2501]),
    lambda c: c.update(original_shape=[-1, -2500]),
    lambda c: c.update(original_shape="2500"),
    lambda c: c.update(dtype="complex64"),
    lambda c: c.update(stages=[]),
    lambda c: c.update(block_size=0),
    lambda c: c["stages"].reverse(),
    lambda c: c["payload"].update(blocks=None),
    lambda c: c["payload"]["blocks"][0].update(side=None),
    lambda c: c["payload"]["blocks"][0].update(coefficients=500),
    lambda c: c["payload"]["blocks"][0]["streams"].update(extra={"offset": 0, "length": 0,
                                                                 "count": 0}),
    lambda c: c["payload"]["blocks"][0]["streams"]["amp_codes"].update(count=10**6),
    lambda c: c["payload"]["blocks"][0]["side"].update(kept=10**6),
], ids=["numel", "shape-numel", "shape", "negative-shape", "shape-type", "dtype", "no-stages",
        "block-size", "stage-order", "blocks", "side", "coefficients", "extra-stream",
        "stream-count", "kept"])
def test_inconsistent_lossy_container(lossy_encoded, edit) -> None:
    with pytest.raises(FormatError):
        decode_container(tampered(lossy_encoded, edit), reader(lossy_encoded.payload))


@pytest.mark.parametrize("edit", [
    lambda c: c.update(numel=1),
    lambda c: c.update(original_shape=[50, 51]),
    lambda c: c["payload"]["blocks"][0]["streams"]["bytes"].update(count=3999),
    lambda c: c["payload"]["blocks"][0].update(streams={}),
    lambda c: c["stages"].append(c["stages"][0]),
], ids=["numel", "shape", "byte-count", "no-stream", "two-coders"])
def test_inconsistent_exact_container(exact_encoded, edit) -> None:
    with pytest.raises(FormatError):
        decode_container(tampered(exact_encoded, edit), reader(exact_encoded.payload))


def test_container_reshaped_consistently_decodes(exact_encoded) -> None:
    def edit(c):
        c["original_shape"] = [50, 50]
        c["numel"] = 2500

    y = decode_container(tampered(exact_encoded, edit), reader(exact_encoded.payload))
    assert y.shape == (50, 50)
    np.testing.assert_array_equal(y.reshape(-1), np.arange(2500, dtype=np.int32))


def test_corrupt_payload_bytes_raise_rftpack_errors(lossy_encoded) -> None:
    from rftpack.errors import RftpackError

    payload = bytearray(lossy_encoded.payload)
    for i in range(0, len(payload), max(1, len(payload) // 40)):
        damaged = bytearray(payload)
        damaged[i] ^= 0xFF
        try:
            y = decode_container(lossy_encoded.container, reader(bytes(damaged)))
        except RftpackError:
            continue
        assert y.shape == (2500,)
