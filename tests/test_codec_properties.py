"""Property-based round trips through the codec over shapes and every dtype: the same dtype
and shape come back, integers and bools exactly, floats closely, non-finite values exactly."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rftpack.codec import decode_container, encode_exact, encode_lossy, is_lossy_candidate
from rftpack.dtypes import DTYPES
from rftpack.fidelity import snr_db
from rftpack.profiles import exact_pipeline, hybrid_pipeline

shapes = st.lists(st.integers(0, 24), min_size=0, max_size=3).map(tuple)


def make(dtype: np.dtype, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        return rng.random(shape) > 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    limit = float(ml_dtypes.finfo(dtype).max)
    return np.clip(rng.normal(size=shape) * 0.1, -limit, limit).astype(dtype)


def round_trip(encoded) -> np.ndarray:
    payload = encoded.payload
    return decode_container(encoded.container,
                            lambda seg: payload[seg["offset"]:seg["offset"] + seg["length"]])


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(sorted(DTYPES)), shapes, st.integers(0, 2**32 - 1))
def test_every_dtype_and_shape_survives(dtype_name: str, shape: tuple[int, ...],
                                        seed: int) -> None:
    dtype = DTYPES[dtype_name]
    array = make(dtype, shape, seed)
    if is_lossy_candidate(array, min_numel=16, lossy_1d=True):
        encoded = encode_lossy("t", array, hybrid_pipeline())
        back = round_trip(encoded)
        assert back.dtype == array.dtype and back.shape == array.shape
        if math.prod(shape) >= 64:
            assert snr_db(array, back) > 15
    else:
        back = round_trip(encode_exact("t", array, exact_pipeline()))
        assert back.dtype == array.dtype and back.shape == array.shape
        assert back.tobytes() == array.tobytes()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["float32", "float16", "bfloat16", "float64"]),
       st.integers(1, 4000), st.integers(0, 2**32 - 1),
       st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), max_size=5))
def test_non_finite_values_are_kept_exactly(dtype_name: str, n: int, seed: int,
                                            specials: list[float]) -> None:
    dtype = DTYPES[dtype_name]
    array = make(dtype, (n,), seed)
    positions = np.random.default_rng(seed).choice(n, size=min(n, len(specials)), replace=False)
    array[positions] = np.array(specials[: len(positions)], dtype=np.float64).astype(dtype)
    back = round_trip(encode_lossy("t", array, hybrid_pipeline()))
    bad = ~np.isfinite(array.astype(np.float64))
    np.testing.assert_array_equal(back.astype(np.float64)[bad], array.astype(np.float64)[bad])
    assert np.isfinite(back.astype(np.float64)[~bad]).all()
