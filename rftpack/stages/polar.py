"""``polar``: the spec's quantizer — log-amplitude and phase, each uniform, plus pruning.

Streams per block:
    keep_mask    0/1 per coefficient (absent when nothing was pruned)
    amp_codes    code of ln|c| on ``2**amp_bits`` levels spanning [lo, hi] (both ends on the grid)
    phase_codes  code of arg c on ``2**phase_bits`` levels over [−π, π): step 2π/L, no code
                 is wasted on both −π and π
Side info: ``amp_scale`` = [lo, hi] over the kept coefficients, ``kept``.

Pruning drops coefficients with |c| below the threshold; ``relative`` (default) scales the
threshold by the block's RMS coefficient magnitude, ``absolute`` is the reference's rule.

Bit allocation across the geometric bands: ``uniform`` (the spec's) gives every band
``amp_bits``/``phase_bits``; ``rd`` (the spec's "future work") shifts both by
``round(½·log2(E_b / E_gm))`` for band energy ``E_b`` against the coefficient-weighted
geometric mean — the equal-slope allocation for errors proportional to |c|² · 2^(−2·bits) —
recorded per block as ``side.band_shift``. The mean bit count stays about the same; bits move
to where the energy is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rftpack.errors import FormatError, StageError
from rftpack.stages.base import Codes, PolarView, Quantizer

LOG_FLOOR = 1e-12
#: decoding looks (amplitude, phase) code pairs up in one table of their products up to this
#: many bits per pair (the hybrid's 6 + 5: 2048 entries, in cache): one gather instead of two
#: and a complex product per coefficient (MiniLM hybrid extract 2.5 → 2.0–2.3 s)
JOINT_TABLE_BITS = 12


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
    band_allocation: str = "uniform"

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
        if self.band_allocation not in ("uniform", "rd"):
            raise StageError(f"polar: band_allocation must be 'uniform' or 'rd', "
                             f"got {self.band_allocation!r}")

    @property
    def refinable(self) -> bool:
        # The residual predictor works in units of one step per block: uniform bits only.
        return self.band_allocation == "uniform"

    @property
    def amp_levels(self) -> int:
        return (1 << self.amp_bits) - 1

    @property
    def phase_step(self) -> float:
        return 2.0 * math.pi / (1 << self.phase_bits)

    def stream_alphabets(self, side: dict[str, Any]) -> dict[str, int]:
        top = max(_band_shift(side, self) or [0])
        return {"keep_mask": 2, "amp_codes": 1 << (self.amp_bits + top),
                "phase_codes": 1 << (self.phase_bits + top)}

    def band_shifts(self, magnitude: np.ndarray, bands: list[tuple[int, int]]) -> list[int]:
        """Per-band bit shifts of the ``rd`` allocation (all 0 for ``uniform``)."""
        if self.band_allocation == "uniform" or not bands:
            return [0] * len(bands)
        sizes = np.array([e - s for s, e in bands], np.float64)
        energy = np.array([np.mean(np.square(magnitude[s:e])) if e > s else 0.0
                           for s, e in bands])
        floor = max(float(energy.max()) * 1e-12, np.finfo(np.float64).tiny)
        log_energy = np.log2(np.maximum(energy, floor))
        geometric = float(np.sum(sizes * log_energy) / sizes.sum())
        shifts = np.rint(0.5 * (log_energy - geometric)).astype(int)
        low = 1 - min(self.amp_bits, self.phase_bits)
        high = 16 - max(self.amp_bits, self.phase_bits)
        return np.clip(shifts, low, high).tolist()

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
        shifts = self.band_shifts(magnitude, bands)
        shift = _per_coefficient(shifts, bands, magnitude.shape[0])[keep]
        amp_levels = (1 << (self.amp_bits + shift)) - 1
        phase_count = 1 << (self.phase_bits + shift)
        log_amp = np.log(np.maximum(np.abs(kept), LOG_FLOOR))
        lo = float(log_amp.min()) if log_amp.size else 0.0
        hi = float(log_amp.max()) if log_amp.size else 0.0
        if hi > lo:
            amp = np.rint((log_amp - lo) / (hi - lo) * amp_levels)
            amp_codes = np.clip(amp, 0, amp_levels).astype(np.uint16)
        else:
            amp_codes = np.zeros(kept.shape, np.uint16)
        phase = np.rint((np.angle(kept) + math.pi) / (2.0 * math.pi) * phase_count)
        phase_codes = np.mod(phase.astype(np.int64), phase_count).astype(np.uint16)
        top = max(shifts or [0])
        streams = {
            "amp_codes": Codes(amp_codes, 1 << (self.amp_bits + top)),
            "phase_codes": Codes(phase_codes, 1 << (self.phase_bits + top)),
        }
        if not keep.all():
            streams["keep_mask"] = Codes(keep.astype(np.uint8), 2)
        side: dict[str, Any] = {"amp_scale": [lo, hi], "phase_scale": [-math.pi, math.pi],
                                "kept": int(kept.shape[0])}
        if self.band_allocation == "rd":
            side["band_shift"] = shifts
            side["band_ends"] = [end for _, end in bands]
        return streams, side

    def view(self, streams: dict[str, np.ndarray], side: dict[str, Any], count: int) -> PolarView:
        """Coarse polar values of a block (uniform allocation), before any predictor."""
        index = _kept_index(streams, side, count)
        if index is None:
            index = np.arange(count)
        lo, hi, amp_step = self._amp_grid(side)
        log_amp = lo + streams["amp_codes"].astype(np.float64) * amp_step
        phase = -math.pi + streams["phase_codes"].astype(np.float64) * self.phase_step
        return PolarView(index=index, log_amp=log_amp, phase=phase, amp_range=(lo, hi),
                         amp_step=amp_step, phase_step=self.phase_step, count=count)

    def _amp_grid(self, side: dict[str, Any]) -> tuple[float, float, float]:
        """(lo, hi, step) of a block's log-amplitude grid (uniform allocation)."""
        lo, hi = _side_pair(side, "amp_scale")
        return lo, hi, (hi - lo) / self.amp_levels if hi > lo else 0.0

    def dequantize(self, streams: dict[str, np.ndarray], side: dict[str, Any], count: int,
                   refine: Any = None) -> np.ndarray:
        if self.band_allocation == "rd":
            return self._dequantize_rd(streams, side, count)
        if refine is not None:
            view = self.view(streams, side, count)
            out = np.zeros(count, np.complex128)
            log_amp, phase = refine(view)
            out[view.index] = np.exp(log_amp) * np.exp(1j * phase)
            return out
        index = _kept_index(streams, side, count)
        # Codes take few values: one lookup in the table of every (amplitude, phase) product.
        lo, _, amp_step = self._amp_grid(side)
        amp_table = np.exp(lo + np.arange(1 << self.amp_bits) * amp_step)
        phasor_table = np.exp(1j * (-math.pi + np.arange(1 << self.phase_bits) * self.phase_step))
        amp, phase = streams["amp_codes"], streams["phase_codes"]
        if amp.size and (int(amp.max()) >> self.amp_bits or int(phase.max()) >> self.phase_bits):
            raise FormatError("polar: a code exceeds its bit width")
        if self.amp_bits + self.phase_bits <= JOINT_TABLE_BITS:
            products = (amp_table[:, None] * phasor_table[None, :]).reshape(-1)
            codes = np.left_shift(amp, self.phase_bits, dtype=np.intp)
            codes |= phase
            values = products.take(codes)
        else:
            values = amp_table.take(amp) * phasor_table.take(phase)
        if index is None:
            return values
        out = np.zeros(count, np.complex128)
        out[index] = values
        return out


    def _dequantize_rd(self, streams: dict[str, np.ndarray], side: dict[str, Any],
                       count: int) -> np.ndarray:
        shifts = _band_shift(side, self)
        ends = side.get("band_ends")
        if (not isinstance(ends, list) or len(ends) != len(shifts)
                or not all(isinstance(e, int) for e in ends)
                or (ends and ends[-1] != count)
                or any(b <= a for a, b in zip(ends, ends[1:], strict=False))
                or (ends and ends[0] <= 0)):
            raise FormatError("polar: side.band_ends must be increasing band ends up to the "
                              "coefficient count, one per band_shift")
        bands = list(zip([0, *ends[:-1]], ends, strict=True))
        # Kept indices and the [lo, hi] range come from the shared view; levels are per band.
        top = max(shifts or [0])
        wide = PolarQuantizer(self.amp_bits + top, self.phase_bits + top)
        plain = {k: v for k, v in side.items() if k not in ("band_shift", "band_ends")}
        view = wide.view(streams, plain, count)
        shift = _per_coefficient(shifts, bands, count)[view.index]
        amp_levels = (1 << (self.amp_bits + shift)) - 1
        phase_count = 1 << (self.phase_bits + shift)
        amp_codes = streams["amp_codes"].astype(np.int64)
        phase_codes = streams["phase_codes"].astype(np.int64)
        if amp_codes.size and (np.any(amp_codes > amp_levels)
                               or np.any(phase_codes >= phase_count)):
            raise FormatError("polar: a code exceeds its band's bit width")
        lo, hi = view.amp_range
        log_amp = (lo + amp_codes / amp_levels * (hi - lo)) if hi > lo else \
            np.full(amp_codes.shape, lo)
        phase = -math.pi + phase_codes * (2.0 * math.pi / phase_count)
        out = np.zeros(count, np.complex128)
        out[view.index] = np.exp(log_amp) * np.exp(1j * phase)
        return out


def _kept_index(streams: dict[str, np.ndarray], side: dict[str, Any],
                count: int) -> np.ndarray | None:
    """Positions of a block's kept coefficients, ``None`` when all are kept (checked against
    its streams and side info)."""
    kept = _side_int(side, "kept", count)
    if "keep_mask" in streams:
        mask = streams["keep_mask"].astype(bool)
        if mask.shape[0] != count or int(mask.sum()) != kept:
            raise FormatError("polar: keep_mask disagrees with the kept count")
        index = np.flatnonzero(mask)
    else:
        if kept != count:
            raise FormatError("polar: some coefficients were pruned but keep_mask is missing")
        index = None
    for name in ("amp_codes", "phase_codes"):
        if streams[name].shape[0] != kept:
            raise FormatError(f"polar: {name} holds {streams[name].shape[0]} codes, "
                              f"expected {kept}")
    return index


def _per_coefficient(shifts: list[int], bands: list[tuple[int, int]], count: int) -> np.ndarray:
    out = np.zeros(count, np.int64)
    for shift, (start, end) in zip(shifts, bands, strict=False):
        out[start:end] = shift
    return out


def _band_shift(side: dict[str, Any], quantizer: PolarQuantizer) -> list[int]:
    if quantizer.band_allocation != "rd":
        return []
    shifts = side.get("band_shift")
    low = 1 - min(quantizer.amp_bits, quantizer.phase_bits)
    high = 16 - max(quantizer.amp_bits, quantizer.phase_bits)
    if (not isinstance(shifts, list)
            or not all(isinstance(s, int) and low <= s <= high for s in shifts)):
        raise FormatError(f"polar: side.band_shift must be a list of integers in "
                          f"[{low}, {high}]")
    return shifts


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
