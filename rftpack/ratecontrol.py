"""Rate control for the ``scalar`` profile: one step Δ for every lossy tensor (equal slope:
for uniform quantizers at equal Δ, each tensor's distortion falls at the same rate per bit),
chosen from a first pass over the model so that the archive meets a bits-per-weight or SNR
target; or per-tensor steps that bound the maximum relative error.

The first pass keeps a strided sample (≤ 65,536 weights) of each lossy tensor and its energy;
rate is estimated from the sample's code histogram (Miller–Madow corrected) plus the coder's
table and container overheads, distortion from the sample's actual quantization error.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from rftpack.errors import StageError
from rftpack.stages.base import Quantizer

SAMPLE_SIZE = 1 << 15


@dataclass(frozen=True)
class Overhead:
    """Bytes besides payloads, measured on rftpack's own archives: per lossy tensor (container
    JSON, manifest entry, ZIP headers of two members), per exact tensor, once per archive; and
    the payload expansion (4/3 for base64 inside the JSON)."""

    lossy: int = 1200
    exact: int = 820
    archive: int = 500
    payload_factor: float = 1.0

    @classmethod
    def for_layout(cls, layout: str, payload: str) -> Overhead:
        factor = 4 / 3 if payload == "base64" else 1.0
        if layout == "zip":  # JSON members are deflated
            return cls(payload_factor=factor)
        return cls(lossy=2700, exact=1300, archive=1500, payload_factor=factor)


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
    #: How much this tensor's squared error counts (equal slope of *weighted* distortion:
    #: its step is Δ / sqrt(weight)).
    weight: float = 1.0


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


def _estimate(stats: TensorStats, quantizer: Quantizer, block_size: int
              ) -> tuple[float, float]:
    """(bits, squared error) of quantizing the whole tensor, measured on its sample with the
    quantizer itself (so centroid shifts, trellis search etc. are all accounted for)."""
    streams, side = quantizer.quantize(stats.sample, [])
    symbols = streams["codes"].symbols
    m = symbols.shape[0]
    counts = np.bincount(symbols)
    counts = counts[counts > 0]
    p = counts / m
    entropy = float(-(p * np.log2(p)).sum()) + (counts.shape[0] - 1) / (2 * m * math.log(2))
    blocks = max(1, math.ceil(stats.numel / block_size))
    table_bits = 8 * 3 * counts.shape[0] * blocks
    rebuilt = quantizer.dequantize({"codes": symbols}, side, m)
    error = float(np.mean((stats.sample - rebuilt) ** 2)) * stats.numel
    return entropy * stats.numel + table_bits, error


def plan(stats: list[TensorStats], quantizer: Quantizer, *, target_bpw: float | None = None,
         target_snr_db: float | None = None, max_rel_error: float | None = None,
         block_size: int = 1 << 20, overhead: Overhead | None = None) -> RatePlan:
    """Choose steps for ``quantizer`` (a stage with a ``step`` field) to meet one target.

    >>> from rftpack.stages.scalar import ScalarQuantizer
    >>> x = np.random.default_rng(0).normal(size=4096)
    >>> s = [TensorStats("w", 4096, True, float(x @ x), 3.0, x)]
    >>> round(plan(s, ScalarQuantizer(), target_snr_db=30.0).estimated_snr_db)
    30
    """
    if not hasattr(quantizer, "step"):
        raise StageError(f"rate control needs a quantizer with a 'step' parameter; "
                         f"{quantizer.id!r} has none: use --profile scalar or dq")
    given = [t is not None for t in (target_bpw, target_snr_db, max_rel_error)]
    if sum(given) != 1:
        raise StageError("give exactly one of target_bpw, target_snr_db, max_rel_error")
    lossy = [s for s in stats if s.lossy and s.numel]
    weights = sum(s.numel for s in stats)
    overhead = overhead or Overhead()
    fixed_bits = 8 * (overhead.payload_factor * sum(s.exact_bytes for s in stats)
                      + overhead.archive
                      + sum(overhead.lossy if s.lossy else overhead.exact for s in stats))
    signal = sum(s.signal for s in stats)
    if not lossy:
        raise StageError("rate control found no tensor that takes the lossy path")

    def at(step: float, **changes: object) -> Quantizer:
        return dataclasses.replace(quantizer, step=step, **changes)  # type: ignore[type-var]

    def totals(step: float) -> tuple[float, float]:
        bits = error = 0.0
        for s in lossy:
            b, e = _estimate(s, at(step / math.sqrt(s.weight)), block_size)
            bits += b * overhead.payload_factor
            error += e
        return bits + fixed_bits, error

    if max_rel_error is not None:
        if not 0 < max_rel_error < 1:
            raise StageError(f"max_rel_error must be in (0, 1), got {max_rel_error}")
        if quantizer.id != "scalar":
            raise StageError("max_rel_error needs the scalar quantizer (a trellis quantizer "
                             "does not bound each weight's error by half a step)")
        steps = {s.name: max(2 * max_rel_error * s.peak, 1e-30) for s in lossy}
        bits = error = 0.0
        for s in lossy:
            b, e = _estimate(s, at(steps[s.name], centroid=False), block_size)
            bits, error = bits + b * overhead.payload_factor, error + e
        return RatePlan(None, steps, (bits + fixed_bits) / weights, _snr(signal, error))

    rms = math.sqrt(sum(s.signal for s in lossy) / sum(s.numel for s in lossy)) or 1.0
    lo, hi = math.log(rms * 1e-5), math.log(rms * 20.0)
    evaluations = 60  # cheap for the scalar quantizer over its wide bracket
    if quantizer.id != "scalar":
        # Slow quantizers (trellis search): bracket with the scalar quantizer's answer first,
        # then refine in a narrow range with few evaluations of the real one.
        from rftpack.stages.scalar import ScalarQuantizer

        proxy = plan(stats, ScalarQuantizer(), target_bpw=target_bpw,
                     target_snr_db=target_snr_db, block_size=block_size, overhead=overhead)
        assert proxy.step is not None
        lo, hi = math.log(proxy.step * 0.25), math.log(proxy.step * 1.5)
        evaluations = 8
    if target_bpw is not None:
        if target_bpw * weights <= fixed_bits:
            raise StageError(f"{target_bpw} bits per weight cannot even hold the exact tensors "
                             f"and containers ({fixed_bits / weights:.3f} bits per weight)")
        goal, which = target_bpw * weights, 0
    else:
        goal, which = signal / 10 ** (target_snr_db / 10), 1  # type: ignore[operator]
    measured: dict[float, tuple[float, float]] = {}

    def excess(log_step: float) -> float:
        """log(measure / goal): ≤ 0 when the target is met (bits within budget, or error)."""
        measured[log_step] = totals(math.exp(log_step))
        return math.log(max(measured[log_step][which], 1e-300) / goal)

    log_step = _root(excess, lo, hi, evaluations)
    bits, error = measured[log_step]
    step = math.exp(log_step)
    steps = {s.name: step / math.sqrt(s.weight) for s in lossy if s.weight != 1.0}
    return RatePlan(step, steps, bits / weights, _snr(signal, error))


def _root(f, lo: float, hi: float, evaluations: int = 12, tolerance: float = 5e-4) -> float:
    """The x in [lo, hi] with f(x) ≤ tolerance closest to a root of the monotone f (Illinois
    method: a handful of evaluations where bisection needs dozens, and evaluations are the
    costly part). A target may thus be overshot by ``tolerance`` (0.05 % in rate or error)."""
    f_lo, f_hi = f(lo), f(hi)
    met = [(x, fx) for x, fx in ((lo, f_lo), (hi, f_hi)) if fx <= tolerance]
    if f_lo * f_hi > 0:  # not bracketed: the target lies outside the searched range
        return min(met, key=lambda p: abs(p[1]))[0] if met else min(
            (lo, f_lo), (hi, f_hi), key=lambda p: p[1])[0]
    side = 0
    for _ in range(evaluations):
        x = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        fx = f(x)
        if fx <= tolerance:
            met.append((x, fx))
        if abs(fx) < tolerance:
            break
        if fx * f_hi > 0:
            hi, f_hi = x, fx
            if side == 1:
                f_lo /= 2
            side = 1
        else:
            lo, f_lo = x, fx
            if side == -1:
                f_hi /= 2
            side = -1
    return min(met, key=lambda p: abs(p[1]))[0]


def _snr(signal: float, error: float) -> float | None:
    if error <= 0 or signal <= 0:
        return None
    return 10 * math.log10(signal / error)
