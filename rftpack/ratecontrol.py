"""Rate control for the ``scalar`` profile: one step Δ for every lossy tensor (equal slope:
for uniform quantizers at equal Δ, each tensor's distortion falls at the same rate per bit),
chosen from a first pass over the model so that the archive meets a bits-per-weight or SNR
target; or per-tensor steps that bound the maximum relative error.

The first pass keeps a strided sample (≤ 65,536 weights) of each lossy tensor and its energy;
rate is estimated from the sample's code histogram (Miller–Madow corrected) plus the coder's
table and container overheads, distortion from the sample's actual quantization error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from rftpack.errors import StageError

SAMPLE_SIZE = 1 << 16
# Bytes besides payloads, measured on rftpack's own archives: per lossy tensor (container JSON,
# manifest entry, ZIP headers of two members), per exact tensor, and once per archive.
LOSSY_OVERHEAD_BYTES = 3000
EXACT_OVERHEAD_BYTES = 1400
ARCHIVE_OVERHEAD_BYTES = 1500


@dataclass
class TensorStats:
    """What the first pass keeps of one tensor."""

    name: str
    numel: int
    lossy: bool
    signal: float
    peak: float
    sample: np.ndarray = field(default_factory=lambda: np.zeros(0))
    exact_bytes: int = 0


@dataclass
class RatePlan:
    """The chosen step(s) and what the first pass predicts for them."""

    step: float | None
    steps: dict[str, float]
    estimated_bpw: float
    estimated_snr_db: float | None

    def step_for(self, name: str) -> float | None:
        return self.steps.get(name, self.step)


def sample_of(x: np.ndarray) -> np.ndarray:
    flat = np.asarray(x).reshape(-1)
    stride = max(1, math.ceil(flat.shape[0] / SAMPLE_SIZE))
    return flat[::stride].astype(np.float64)


def _estimate(stats: TensorStats, step: float, block_size: int) -> tuple[float, float]:
    """(bits, squared error) of quantizing the whole tensor with ``step``."""
    scaled = stats.sample / step
    q = np.rint(scaled)
    m = q.shape[0]
    _, counts = np.unique(q, return_counts=True)
    p = counts / m
    entropy = float(-(p * np.log2(p)).sum()) + (counts.shape[0] - 1) / (2 * m * math.log(2))
    blocks = max(1, math.ceil(stats.numel / block_size))
    table_bits = 8 * 3 * counts.shape[0] * blocks
    error = float(np.mean((scaled - q) ** 2)) * step * step * stats.numel
    return entropy * stats.numel + table_bits, error


def plan(stats: list[TensorStats], *, target_bpw: float | None = None,
         target_snr_db: float | None = None, max_rel_error: float | None = None,
         block_size: int = 1 << 20) -> RatePlan:
    """Choose steps for a target; exactly one target must be given.

    >>> s = [TensorStats("w", 4096, True, 4096.0, 3.0, np.random.default_rng(0).normal(size=4096))]
    >>> round(plan(s, target_snr_db=30.0).estimated_snr_db)
    30
    """
    given = [t is not None for t in (target_bpw, target_snr_db, max_rel_error)]
    if sum(given) != 1:
        raise StageError("give exactly one of target_bpw, target_snr_db, max_rel_error")
    lossy = [s for s in stats if s.lossy and s.numel]
    weights = sum(s.numel for s in stats)
    fixed_bits = 8 * (sum(s.exact_bytes for s in stats) + ARCHIVE_OVERHEAD_BYTES
                      + sum(LOSSY_OVERHEAD_BYTES if s.lossy else EXACT_OVERHEAD_BYTES
                            for s in stats))
    signal = sum(s.signal for s in stats)
    if not lossy:
        raise StageError("rate control found no tensor that takes the lossy path")

    def totals(step: float) -> tuple[float, float]:
        bits = error = 0.0
        for s in lossy:
            b, e = _estimate(s, step, block_size)
            bits += b
            error += e
        return bits + fixed_bits, error

    if max_rel_error is not None:
        if not 0 < max_rel_error < 1:
            raise StageError(f"max_rel_error must be in (0, 1), got {max_rel_error}")
        steps = {s.name: max(2 * max_rel_error * s.peak, 1e-30) for s in lossy}
        bits = error = 0.0
        for s in lossy:
            b, e = _estimate(s, steps[s.name], block_size)
            bits, error = bits + b, error + e
        return RatePlan(None, steps, (bits + fixed_bits) / weights, _snr(signal, error))

    rms = math.sqrt(sum(s.signal for s in lossy) / sum(s.numel for s in lossy)) or 1.0
    lo, hi = math.log(rms * 1e-5), math.log(rms * 20.0)
    if target_bpw is not None:
        if target_bpw * weights <= fixed_bits:
            raise StageError(f"{target_bpw} bits per weight cannot even hold the exact tensors "
                             f"and containers ({fixed_bits / weights:.3f} bits per weight)")

        def too_big(step: float) -> bool:
            return totals(step)[0] > target_bpw * weights
    else:
        allowed = signal / 10 ** (target_snr_db / 10)  # type: ignore[operator]

        def too_big(step: float) -> bool:
            return totals(step)[1] <= allowed  # still within the error budget: step can grow

    for _ in range(50):  # bisection on log Δ: rate falls and error grows as Δ grows
        mid = 0.5 * (lo + hi)
        if too_big(math.exp(mid)):
            lo = mid
        else:
            hi = mid
    step = math.exp(hi if target_bpw is not None else lo)
    bits, error = totals(step)
    return RatePlan(step, {}, bits / weights, _snr(signal, error))


def _snr(signal: float, error: float) -> float | None:
    if error <= 0 or signal <= 0:
        return None
    return 10 * math.log10(signal / error)
