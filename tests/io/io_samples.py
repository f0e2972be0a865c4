"""Helpers shared by the rftpack.io tests: sample tensors of every dtype and comparisons.

Imported as a plain module (pytest puts this directory on ``sys.path``).
"""

from __future__ import annotations

import numpy as np

from rftpack.io.dtypes import SAFETENSORS_DTYPES

EXTENSION = {"BF16", "F8_E4M3", "F8_E5M2"}


def sample_array(code: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Deterministic test data of safetensors dtype ``code`` (always an ndarray, even 0-d)."""
    return np.asarray(_values(code, shape, seed), dtype=SAFETENSORS_DTYPES[code])


def _values(code: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    dtype = SAFETENSORS_DTYPES[code]
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    scale = 4.0 if code.startswith("F8") else 100.0
    return (rng.standard_normal(shape) * scale).astype(dtype)


def sample_state(codes: list[str] | None = None) -> dict[str, np.ndarray]:
    """For each dtype: a matrix, a scalar and a zero-size tensor."""
    state: dict[str, np.ndarray] = {}
    for i, code in enumerate(codes or list(SAFETENSORS_DTYPES)):
        state[f"{code.lower()}.matrix"] = sample_array(code, (3, 5), seed=i)
        state[f"{code.lower()}.scalar"] = sample_array(code, (), seed=100 + i)
        state[f"{code.lower()}.empty"] = sample_array(code, (0, 4), seed=200 + i)
    return state


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    """Same dtype, shape and bytes (bitwise: NaNs and -0.0 count)."""
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype.byteorder in "=|<"
    assert np.ascontiguousarray(actual).tobytes() == np.ascontiguousarray(expected).tobytes()


def to_torch(state: dict[str, np.ndarray]) -> dict:
    """numpy state -> torch state (torch imported here only)."""
    from rftpack.io.torch_convert import from_numpy

    return {k: from_numpy(v) for k, v in state.items()}


def plain_state() -> dict[str, np.ndarray]:
    """Only dtypes numpy describes natively (what safetensors.numpy and np.savez accept)."""
    return sample_state([c for c in SAFETENSORS_DTYPES if c not in EXTENSION])
