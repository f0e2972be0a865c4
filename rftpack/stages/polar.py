"""``polar``: the spec's quantizer — log-amplitude and phase, each uniform, plus pruning.

Streams per block:
    keep_mask    0/1 per coefficient (absent when nothing was pruned)
    amp_codes    code of ln|c| on ``2**amp_bits`` levels spanning [lo, hi] (both ends on the grid)
    phase_codes  code of arg c on ``2**phase_bits`` levels over [−π, π): step 2π/L, no code
                 is wasted on both −π and π
Side info: ``amp_scale`` = [lo, hi] over the kept coefficients, ``kept``.

Pruning drops coefficients with |c| below the threshold; ``relative`` (default) scales the
threshold by the block's RMS coefficient magnitude, ``absolute`` is the reference's rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rftpack.errors import FormatError, StageError
from rftpack.stages.base import Codes, PolarView, Quantizer

LOG_FLOOR = 1e-12


def wrap_phase(phase: np.ndarray) -> np.ndarray:
    """Wrap angles into [−π, π).

    >>> float(wrap_phase(np.array([np.pi]))[0]) == -np.pi
    True
    """
    return np.mod(phase + np.pi, 2.0 * np.pi) - np.pi


@dataclass(frozen=True)
class PolarQuantizer(Quantizer):
    """Uniform log-amplitude / phase quantizer with magnitude pruning (the spec's hybrid codes).

    Example:
        >>> q = PolarQuantizer(amp_bits=6, phase_bits=5, prune_threshold=0.0)
        >>> c = np.array([1 + 1j, -2.0, 0.5j])
        >>> streams, side = q.quantize(c, [(0, 3)])
        >>> sorted(streams)
        ['amp_codes', 'phase_codes']
    """

    id: ClassVar[str] = "polar"
    polar: ClassVar[bool] = True
    amp_bits: int = 6
    phase_bits: int = 5
    prune_threshold: float = 0.05
    prune_mode: str = "relative"

    def __post_init__(self) -> None:
        for name in ("amp_bits", "phase_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= 16:
                raise StageError(f"polar: {name} must be an integer in [1, 16], got {value!r}")
        if not (isinstance(self.prune_threshold, int | float) and self.prune_threshold >= 0
                and math.isfinite(self.prune_threshold)):
            raise StageError(f"polar: prune_threshold must be ≥ 0, got {self.prune_threshold!r}")
        if self.prune_mode not in ("relative", "absolute"):
            raise StageError(f"polar: prune_mode must be 'relative' or 'absolute', "
                             f"got {self.prune_mode!r}")

    @property
    def amp_levels(self) -> int:
        return (1 << self.amp_bits) - 1

    @property
    def phase_step(self) -> float:
        return 2.0 * math.pi / (1 << self.phase_bits)

    def stream_alphabets(self, side: dict[str, Any]) -> dict[str, int]:
        return {"keep_mask": 2, "amp_codes": 1 << self.amp_bits,
                "phase_codes": 1 << self.phase_bits}

    def threshold_for(self, magnitude: np.ndarray) -> float:
        if self.prune_threshold <= 0 or magnitude.size == 0:
            return 0.0
        if self.prune_mode == "absolute":
            return float(self.prune_threshold)
        rms = float(np.sqrt(np.mean(np.square(magnitude))))
        return float(self.prune_threshold) * rms

    def quantize(self, coefficients: np.ndarray, bands: list[tuple[int, int]]
                 ) -> tuple[dict[str, Codes], dict[str, Any]]:
        magnitude = np.abs(coefficients)
        threshold = self.threshold_for(magnitude)
        # Exact zeros are always dropped: an all-zero block then decodes to exact zeros.
        keep = (magnitude >= threshold) & (magnitude > 0)
        kept = coefficients[keep]
        log_amp = np.log(np.maximum(np.abs(kept), LOG_FLOOR))
        lo = float(log_amp.min()) if log_amp.size else 0.0
        hi = float(log_amp.max()) if log_amp.size else 0.0
        if hi > lo:
            amp = np.rint((log_amp - lo) / (hi - lo) * self.amp_levels)
            amp_codes = np.clip(amp, 0, self.amp_levels).astype(np.uint16)
        else:
            amp_codes = np.zeros(kept.shape, np.uint16)
        phase_count = 1 << self.phase_bits
        phase = np.rint((np.angle(kept) + math.pi) / self.phase_step).astype(np.int64)
        phase_codes = np.mod(phase, phase_count).astype(np.uint16)
        streams = {
            "amp_codes": Codes(amp_codes, 1 << self.amp_bits),
            "phase_codes": Codes(phase_codes, phase_count),
        }
        if not keep.all():
            streams["keep_mask"] = Codes(keep.astype(np.uint8), 2)
        side = {"amp_scale": [lo, hi], "phase_scale": [-math.pi, math.pi],
                "kept": int(kept.shape[0])}
        return streams, side

    def view(self, streams: dict[str, np.ndarray], side: dict[str, Any], count: int) -> PolarView:
        """Coarse polar values of a block, before any predictor correction."""
        kept = _side_int(side, "kept", count)
        if "keep_mask" in streams:
            mask = streams["keep_mask"].astype(bool)
            if mask.shape[0] != count or int(mask.sum()) != kept:
                raise FormatError("polar: keep_mask disagrees with the kept count")
            index = np.flatnonzero(mask)
        else:
            if kept != count:
                raise FormatError("polar: some coefficients were pruned but keep_mask is missing")
            index = np.arange(count)
        for name in ("amp_codes", "phase_codes"):
            if streams[name].shape[0] != kept:
                raise FormatError(f"polar: {name} holds {streams[name].shape[0]} codes, "
                                  f"expected {kept}")
        lo, hi = _side_pair(side, "amp_scale")
        amp_step = (hi - lo) / self.amp_levels if hi > lo else 0.0
        log_amp = lo + streams["amp_codes"].astype(np.float64) * amp_step
        phase = -math.pi + streams["phase_codes"].astype(np.float64) * self.phase_step
        return PolarView(index=index, log_amp=log_amp, phase=phase, amp_range=(lo, hi),
                         amp_step=amp_step, phase_step=self.phase_step, count=count)

    def dequantize(self, streams: dict[str, np.ndarray], side: dict[str, Any], count: int,
                   refine: Any = None) -> np.ndarray:
        view = self.view(streams, side, count)
        out = np.zeros(count, np.complex128)
        if refine is not None:
            log_amp, phase = refine(view)
            out[view.index] = np.exp(log_amp) * np.exp(1j * phase)
            return out
        # Codes take few values: look amplitudes and unit phasors up in small tables.
        lo, _ = view.amp_range
        amp_table = np.exp(lo + np.arange(1 << self.amp_bits) * view.amp_step)
        phasor_table = np.exp(1j * (-math.pi + np.arange(1 << self.phase_bits) * self.phase_step))
        out[view.index] = amp_table[streams["amp_codes"]] * phasor_table[streams["phase_codes"]]
        return out


def _side_int(side: dict[str, Any], key: str, upper: int) -> int:
    value = side.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= upper:
        raise FormatError(f"side info {key!r} must be an integer in [0, {upper}], got {value!r}")
    return value


def _side_pair(side: dict[str, Any], key: str) -> tuple[float, float]:
    value = side.get(key)
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int | float) and math.isfinite(v) for v in value)):
        raise FormatError(f"side info {key!r} must be two finite numbers, got {value!r}")
    return float(value[0]), float(value[1])
