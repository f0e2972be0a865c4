"""The learned residual predictor in the pipeline: sampling while encoding, training once,
per-tensor decisions, and the correction applied while decoding.

Features (version-2 predictor, "step units", so one model fits tensors of any scale):
    [index / max(1, m − 1),  (logA − lo) / (hi − lo),  phase / π,  one-hot(band)]
Targets / outputs: [ΔlogA / amp_step, wrap(Δphase) / phase_step], clipped to ±1 step on use.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rftpack.errors import FormatError
from rftpack.stages.bands import band_ids
from rftpack.stages.base import PolarView
from rftpack.stages.mlp import MLP, MLPPredictor, predictor_from_json, predictor_to_json
from rftpack.stages.polar import LOG_FLOOR, wrap_phase

FEATURE_SPACE = "step_units"
MIN_GAIN_DB = 0.05


def residual_features(view: PolarView, bands: list[tuple[int, int]], band_count: int,
                      rows: np.ndarray | None = None) -> np.ndarray:
    """Predictor inputs for the kept coefficients of a block (or the subset ``rows``)."""
    index = view.index if rows is None else view.index[rows]
    log_amp = view.log_amp if rows is None else view.log_amp[rows]
    phase = view.phase if rows is None else view.phase[rows]
    lo, hi = view.amp_range
    amp_norm = (log_amp - lo) / (hi - lo) if hi > lo else np.zeros_like(log_amp)
    band = np.minimum(band_ids(view.count, bands)[index], band_count - 1)
    onehot = np.zeros((index.shape[0], band_count), np.float64)
    onehot[np.arange(index.shape[0]), band] = 1.0
    return np.column_stack([index / max(1, view.count - 1), amp_norm, phase / math.pi, onehot])


def residual_targets(view: PolarView, coefficients: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Corrections in step units that would turn coarse values into the true ones."""
    true = coefficients[view.index[rows]]
    d_amp = np.log(np.maximum(np.abs(true), LOG_FLOOR)) - view.log_amp[rows]
    d_phase = wrap_phase(np.angle(true) - view.phase[rows])
    amp_step = view.amp_step if view.amp_step > 0 else 1.0
    return np.column_stack([d_amp / amp_step, d_phase / view.phase_step])


def apply_correction(view: PolarView, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coarse values + clipped step-unit corrections."""
    delta = np.clip(np.asarray(delta, np.float64), -1.0, 1.0)
    log_amp = view.log_amp + delta[:, 0] * view.amp_step
    phase = wrap_phase(view.phase + delta[:, 1] * view.phase_step)
    return log_amp, phase


@dataclass
class _Holdout:
    features: list[np.ndarray] = field(default_factory=list)
    coarse: list[np.ndarray] = field(default_factory=list)      # complex coarse values
    true: list[np.ndarray] = field(default_factory=list)        # complex true values
    steps: list[np.ndarray] = field(default_factory=list)       # (amp_step, phase_step) rows
    log_amp: list[np.ndarray] = field(default_factory=list)
    phase: list[np.ndarray] = field(default_factory=list)
    taken: int = 0


class ResidualSampler:
    """Collects training samples across all tensors during the stream, in bounded memory.

    A reservoir (Algorithm R, seeded) of ``capacity`` samples for training, plus up to
    ``holdout`` samples per tensor, never trained on, to decide per tensor whether the predictor
    helps.
    """

    def __init__(self, band_count: int, capacity: int = 65536, holdout: int = 1024,
                 seed: int = 0) -> None:
        self.band_count = band_count
        self.capacity = capacity
        self.holdout_size = holdout
        self.rng = np.random.default_rng(seed)
        self.X = np.zeros((capacity, 3 + band_count), np.float32)
        self.Y = np.zeros((capacity, 2), np.float32)
        self.filled = 0
        self.seen = 0
        self.holdouts: dict[str, _Holdout] = {}

    def __call__(self, name: str, view: PolarView, coefficients: np.ndarray,
                 bands: list[tuple[int, int]]) -> None:
        kept = view.index.shape[0]
        if kept == 0:
            return
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()
        local = np.random.default_rng(int.from_bytes(digest[:8], "little") + view.count)
        order = local.permutation(kept)
        hold = self.holdouts.setdefault(name, _Holdout())
        n_hold = min(self.holdout_size - hold.taken, max(1, kept // 5))
        hold_rows, train_rows = order[:n_hold], order[n_hold:]
        if n_hold > 0:
            self._add_holdout(hold, view, coefficients, bands, hold_rows)
        self._add_reservoir(view, coefficients, bands, np.sort(train_rows))

    def _add_holdout(self, hold: _Holdout, view: PolarView, coefficients: np.ndarray,
                     bands: list[tuple[int, int]], rows: np.ndarray) -> None:
        hold.features.append(residual_features(view, bands, self.band_count, rows))
        hold.log_amp.append(view.log_amp[rows])
        hold.phase.append(view.phase[rows])
        hold.coarse.append(np.exp(view.log_amp[rows] + 1j * view.phase[rows]))
        hold.true.append(coefficients[view.index[rows]])
        hold.steps.append(np.tile([view.amp_step, view.phase_step], (rows.shape[0], 1)))
        hold.taken += rows.shape[0]

    def _add_reservoir(self, view: PolarView, coefficients: np.ndarray,
                       bands: list[tuple[int, int]], rows: np.ndarray) -> None:
        k = rows.shape[0]
        if k == 0:
            return
        slots = np.full(k, -1, np.int64)
        free = max(0, min(self.capacity - self.filled, k))
        slots[:free] = np.arange(self.filled, self.filled + free)
        if free < k:
            positions = self.seen + np.arange(free, k)
            draws = np.floor(self.rng.random(k - free) * (positions + 1)).astype(np.int64)
            slots[free:] = np.where(draws < self.capacity, draws, -1)
        self.filled += free
        self.seen += k
        chosen = slots >= 0
        if not chosen.any():
            return
        picked = rows[chosen]
        self.X[slots[chosen]] = residual_features(view, bands, self.band_count, picked)
        self.Y[slots[chosen]] = residual_targets(view, coefficients, picked)

    def fit(self, stage: MLPPredictor) -> TrainedResidual | None:
        """Train on the reservoir and measure the gain per tensor on the held-out samples."""
        if self.filled < 64:
            return None
        mlp, stats = stage.fit(self.X[: self.filled], self.Y[: self.filled])
        gains = {}
        err0_total = err1_total = 0.0
        for name, hold in self.holdouts.items():
            if not hold.taken:
                continue
            features = np.concatenate(hold.features)
            delta = np.clip(mlp.forward(features).astype(np.float64), -1.0, 1.0)
            steps = np.concatenate(hold.steps)
            log_amp = np.concatenate(hold.log_amp) + delta[:, 0] * steps[:, 0]
            phase = np.concatenate(hold.phase) + delta[:, 1] * steps[:, 1]
            true = np.concatenate(hold.true)
            err0 = float(np.sum(np.abs(true - np.concatenate(hold.coarse)) ** 2))
            err1 = float(np.sum(np.abs(true - np.exp(log_amp + 1j * phase)) ** 2))
            err0_total += err0
            err1_total += err1
            gains[name] = _db(err0, err1)
        return TrainedResidual(mlp, stage, self.band_count, stats, gains,
                               holdout_gain_db=_db(err0_total, err1_total))


def _db(before: float, after: float) -> float:
    if after <= 0 or before <= 0:
        return 0.0
    return 10.0 * math.log10(before / after)


@dataclass
class TrainedResidual:
    """A trained predictor, what it was measured to gain, and how to apply it."""

    mlp: MLP
    stage: MLPPredictor | None
    band_count: int
    stats: dict[str, Any]
    gains_db: dict[str, float]
    holdout_gain_db: float = 0.0

    def helps(self, tensor_name: str) -> bool:
        return self.gains_db.get(tensor_name, 0.0) >= MIN_GAIN_DB

    def refine_factory(self):
        """For ``decode_container``: bands of a block → correction of its PolarView."""
        def for_bands(bands: list[tuple[int, int]]):
            def refine(view: PolarView) -> tuple[np.ndarray, np.ndarray]:
                if view.index.shape[0] == 0:
                    return view.log_amp, view.phase
                features = residual_features(view, bands, self.band_count)
                return apply_correction(view, self.mlp.forward(features))
            return refine
        return for_bands

    def to_json(self) -> dict[str, Any]:
        training = {k: v for k, v in self.stats.items() if isinstance(v, int | float)}
        training["holdout_gain_db"] = self.holdout_gain_db
        extra = {"feature_space": FEATURE_SPACE}
        if self.stage is not None:
            extra["stage"] = self.stage.to_config()
        return predictor_to_json(self.mlp, bands=self.band_count, training=training, extra=extra)

    @classmethod
    def from_json(cls, obj: dict[str, Any], source: str) -> TrainedResidual:
        mlp, architecture = predictor_from_json(obj, source=source)
        if obj.get("feature_space") != FEATURE_SPACE or architecture.get("output_dim") != 2:
            raise FormatError(f"{source}: a version-2 archive needs a predictor in the "
                              f"{FEATURE_SPACE!r} feature space with 2 outputs")
        return cls(mlp, None, int(architecture["bands"]), dict(obj.get("training") or {}), {})
