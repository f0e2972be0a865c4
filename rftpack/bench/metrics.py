"""Rate and distortion figures of one benchmark row.

- bits per weight: 8 × stored bytes (the whole archive or file) ÷ number of weights of every
  tensor (integers and all);
- aggregate weight SNR: 10·log10(Σx² / Σ(x − y)²) over every finite float weight (inf when the
  restored floats are bit-identical);
- mean per-tensor SNR: the mean of the per-tensor SNRs over the float tensors with ≥ 2
  dimensions that the codec changed (inf when it changed none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from rftpack.fidelity import compare_checkpoints
from rftpack.io import TensorInfo, open_source


@dataclass
class ModelStats:
    """What the benchmark needs to know about the original checkpoint."""

    path: Path
    infos: list[TensorInfo]
    weights: int = 0
    original_bytes: int = 0
    float_weights: int = 0
    ndim: dict[str, int] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> ModelStats:
        with open_source(path) as src:
            infos = src.infos()
        stats = cls(path, infos)
        for info in infos:
            stats.weights += info.numel
            stats.original_bytes += info.nbytes
            stats.ndim[info.name] = len(info.shape)
            if info.dtype.kind == "f" or info.dtype.name in ("bfloat16",) or \
                    info.dtype.name.startswith("float8"):
                stats.float_weights += info.numel
        return stats


@dataclass
class Distortion:
    weight_snr_db: float
    mean_tensor_snr_db: float
    lossy_tensors: int
    exact: bool
    problems: list[str]


def distortion(stats: ModelStats, restored: Path) -> Distortion:
    """Compare the restored checkpoint with the original, tensor by tensor."""
    fidelity = compare_checkpoints(stats.path, restored)
    problems = []
    if fidelity.mismatched:
        problems.append(f"{len(fidelity.mismatched)} tensor(s) differ in name/dtype/shape or "
                        f"in exact values: {fidelity.mismatched[:3]}")
    changed = [snr for name, snr in fidelity.per_tensor_snr_db.items()
               if stats.ndim.get(name, 0) >= 2 and math.isfinite(snr)]
    mean = sum(changed) / len(changed) if changed else math.inf
    exact = (not fidelity.mismatched and fidelity.exact_tensors_equal
             and math.isinf(fidelity.weight_snr_db) and fidelity.weight_snr_db > 0)
    return Distortion(fidelity.weight_snr_db, mean, len(changed), exact, problems)
