"""How close a restored checkpoint is to the original: per-tensor and aggregate SNR."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rftpack.io import open_source


@dataclass
class Fidelity:
    """Aggregate and per-tensor agreement between two checkpoints."""

    weight_snr_db: float
    float_weights: int
    exact_tensors_equal: bool
    mismatched: list[str] = field(default_factory=list)
    per_tensor_snr_db: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"weight_snr_db": _finite(self.weight_snr_db), "float_weights": self.float_weights,
                "exact_tensors_equal": self.exact_tensors_equal, "mismatched": self.mismatched}


def _finite(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def snr_db(original: np.ndarray, restored: np.ndarray) -> float:
    """10·log10(‖x‖² / ‖x − y‖²) over the finite entries (inf when identical).

    >>> snr_db(np.ones(4), np.ones(4))
    inf
    """
    x = np.asarray(original, np.float64).ravel()
    y = np.asarray(restored, np.float64).ravel()
    finite = np.isfinite(x)
    diff = x[finite] - y[finite]
    error = float(np.dot(diff, diff))
    signal = float(np.dot(x[finite], x[finite]))
    if error == 0:
        return math.inf
    return 10.0 * math.log10(signal / error) if signal > 0 else -math.inf


def compare_checkpoints(original: str | os.PathLike, restored: str | os.PathLike) -> Fidelity:
    """Compare two checkpoints tensor by tensor (names, dtypes, shapes, values).

    Example:
        >>> compare_checkpoints("model.safetensors", "restored.safetensors")  # doctest: +SKIP
        Fidelity(weight_snr_db=24.4, ...)
    """
    signal = error = 0.0
    weights = 0
    mismatched: list[str] = []
    per_tensor: dict[str, float] = {}
    exact_equal = True
    with open_source(original) as a, open_source(restored) as b:
        b_infos = {info.name: info for info in b.infos()}
        for info in a.infos():
            other = b_infos.get(info.name)
            if other is None or other.dtype != info.dtype or other.shape != info.shape:
                mismatched.append(info.name)
                continue
            x, y = a.read(info.name), b.read(info.name)
            if info.dtype.kind in "biu" or info.dtype == np.bool_:
                if not np.array_equal(x, y):
                    exact_equal = False
                    mismatched.append(info.name)
                continue
            x64, y64 = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
            nonfinite = ~np.isfinite(x64)
            if nonfinite.any() and not np.array_equal(x64[nonfinite], y64[nonfinite],
                                                      equal_nan=True):
                mismatched.append(info.name)
            finite = ~nonfinite
            diff = x64[finite] - y64[finite]
            signal += float(np.dot(x64[finite], x64[finite]))
            error += float(np.dot(diff, diff))
            weights += int(finite.sum())
            per_tensor[info.name] = snr_db(x, y)
        mismatched.extend(sorted(set(b_infos) - {i.name for i in a.infos()}))
    total = math.inf if error == 0 else 10.0 * math.log10(signal / error)
    return Fidelity(total, weights, exact_equal, mismatched, per_tensor)
