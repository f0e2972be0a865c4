"""``Quantizer.dequantize_into``, the decoder's fast path: where ``scalar`` or ``dq`` takes it,
the tensor holds bit for bit what ``dequantize`` and the decoder's cast would have written
(clipping to a narrow float's range included); where it declines, it writes nothing."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from rftpack import native
from rftpack.dtypes import cast_float_into
from rftpack.stages.dq import DependentQuantizer
from rftpack.stages.scalar import RowSteps, ScalarQuantizer

DTYPES = [np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16),
          np.dtype(np.float64)]
QUANTIZERS = {
    "scalar": ScalarQuantizer(step=0.02),
    "scalar, row classes": ScalarQuantizer(step=0.02, row_classes=4, row_length=100),
    "dq": DependentQuantizer(step=0.02, states=256, chain=4096),
    "dq, row classes": DependentQuantizer(step=0.02, states=8, chain=256, row_classes=4,
                                          row_length=100),
}


def weights(scale: float) -> np.ndarray:
    rng = np.random.default_rng(int(scale))
    x = rng.laplace(0, 0.05, 20_000) * np.repeat(rng.uniform(0.2, 3, 200), 100)
    return x * scale


def streams_of(quantizer, x: np.ndarray, rows: RowSteps | None = None):
    streams, side = quantizer.quantize(x, [], rows) if rows else quantizer.quantize(x, [])
    return {key: codes.symbols for key, codes in streams.items()}, side


def expected_fast(name: str, dtype: np.dtype) -> bool:
    if name.startswith("scalar"):
        return True
    return dtype == np.float32 and native.available()


@pytest.mark.parametrize("name", QUANTIZERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("scale", [1.0, 1e7])  # 1e7: values past float16's range
def test_the_fast_path_writes_what_the_general_path_writes(name: str, dtype: np.dtype,
                                                           scale: float) -> None:
    quantizer = QUANTIZERS[name]
    x = weights(scale)
    streams, side = streams_of(quantizer, x)
    general = np.empty(x.shape, dtype)
    cast_float_into(quantizer.dequantize(streams, side, x.shape[0]), general)
    fast = np.full(x.shape, 7, dtype)
    taken = quantizer.dequantize_into(streams, side, x.shape[0], fast)
    assert taken == expected_fast(name, dtype)
    if taken:
        assert fast.tobytes() == general.tobytes()
    else:
        assert (fast == 7).all()  # nothing written
    if scale > 1 and dtype == np.float16 and taken:
        assert np.abs(fast.astype(np.float64)).max() == 65504.0  # clipped, not ±inf


@pytest.mark.parametrize("name", ["scalar", "dq"])
def test_row_steps_take_the_general_path(name: str) -> None:
    quantizer = QUANTIZERS[name]
    x = weights(1.0)
    rows = RowSteps(np.arange(200) % 3, 100)
    streams, side = streams_of(quantizer, x, rows)
    assert "row_length" in side
    out = np.zeros(x.shape, np.float32)
    assert not quantizer.dequantize_into(streams, side, x.shape[0], out)
    assert not out.any()
