"""Rate control for the ``scalar`` profile: one step Δ for every lossy tensor (equal slope:
for uniform quantizers at equal Δ, each tensor's distortion falls at the same rate per bit),
chosen from a first pass over the model so that the archive meets a bits-per-weight or SNR
target; or per-tensor steps that bound the maximum relative error.

The first pass keeps a strided sample (≤ 65,536 weights) of each lossy tensor and its energy;
rate is estimated from the sample's code histogram (Miller–Madow corrected) plus the coder's
table and container overheads, distortion from the sample's actual quantization error. With a
bits-per-weight target, compress then corrects the steps while it writes, from the sizes of
the tensors already written (:class:`RateFeedback`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from rftpack.errors import StageError
from rftpack.stages import rowclasses
from rftpack.stages.base import Quantizer
from rftpack.stages.dq import DependentQuantizer
from rftpack.stages.rans import table_bytes
from rftpack.stages.scalar import MAX_CODE, ScalarQuantizer, SteppedQuantizer, zigzag

SAMPLE_SIZE = 1 << 15
MAX_SAMPLE = 1 << 19
#: a trellis quantizer searches a block's sample in chains of at most this length: 32k
#: sampled values in chains of 1024 fill its compiled search's 32 lanes (in chains of 4096,
#: a quarter of them)
#: (MiniLM's planned step at 4.944 bpw moves by 3 parts in a million)
SAMPLE_CHAIN = 1024
#: a bits-per-weight target is planned this fraction under, the accuracy of the estimate
#: (measured on MiniLM: within ±0.05 % of the archive's size), so archives stay within it
RATE_MARGIN = 1e-3
#: with a bits-per-weight target, compress compares what each tensor took with the plan and
#: moves the steps of the tensors still to come (:class:`RateFeedback`), spending the margin
#: of the tensors already written: the archive lands this fraction under its target
FINAL_MARGIN = 1e-4
#: a tensor's estimate may miss by this fraction (on MiniLM single tensors miss by up to
#: ±0.5 %): the feedback keeps that much back where the tensors after it cannot make up for it
TENSOR_MARGIN = 1e-2
#: the feedback moves a tensor's step by at most this many octaves either way, and by no more
#: than would change its planned payload by this fraction: a tensor at a low rate (MiniLM's
#: pooler, weighted down by calibration, 3.6 KB) grows much faster than the plan's bits per
#: octave say (it was asked to spend 3.6 KB more and took 5.8 KB)
FEEDBACK_OCTAVES = 0.25
FEEDBACK_SHARE = 0.1
#: a tensor with nothing after it to make up for its misses spends this much less of what is
#: free (1/(1 + MOVE_MISS)): what its move takes is known only once it is written
MOVE_MISS = 0.5
#: an SNR target's error budget is planned this fraction tighter (0.02 dB): the estimated
#: squared error is within ±0.2 % of the archive's on MiniLM
ERROR_MARGIN = 5e-3
#: the rows with finer steps of a tensor with row steps are sampled up to this many weights
#: (their wide code range sets the coder's table sizes, which a sparse sample misses)
DENSE_SAMPLE_SIZE = 1 << 18


@dataclass(frozen=True)
class Overhead:
    """Bytes besides payloads, measured on rftpack's own archives: per lossy tensor (container
    JSON with one block, ZIP headers of two members) and per further block of it (its block
    record), per exact tensor, per tensor in the manifest (its entry and, under rate control,
    its importance), once per archive; and the payload expansion (base64 inside the JSON:
    4/3 in a directory, 1.01 deflated in a ZIP)."""

    lossy: int = 1175
    block: int = 40
    exact: int = 775
    manifest_entry: int = 75
    archive: int = 1000
    payload_factor: float = 1.0

    @classmethod
    def for_layout(cls, layout: str, payload: str) -> Overhead:
        """The overheads of an archive written with this layout and payload encoding.

        >>> Overhead.for_layout("zip", "auto").exact
        600
        """
        if layout == "zip":
            # JSON members are deflated, base64 with them (to 1.01× its bytes); inline payloads
            # save a member's headers (with ``auto``, only where that pays)
            if payload == "binary":
                return cls()
            return cls(lossy=1175 if payload == "auto" else 1000, exact=600,
                       payload_factor=1.01 if payload == "base64" else 1.0)
        return cls(lossy=1850, block=400, exact=650, manifest_entry=450, archive=1500,
                   payload_factor=4 / 3 if payload == "base64" else 1.0)


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
    #: squared error of a tensor stored off the lossy path (near-lossless rounding; 0: exact)
    fixed_error: float = 0.0
    #: half an ulp of the tensor's dtype, relative: decoded values are cast to it, which can
    #: move each by up to this × its magnitude (float32: 2^-24)
    precision: float = 0.0
    #: How much this tensor's squared error counts (equal slope of *weighted* distortion:
    #: its step is Δ / sqrt(weight)).
    weight: float = 1.0
    #: Row steps: each sampled weight's step multiplier (None: one step for the tensor),
    #: and how many of the tensor's weights each sampled one stands for (None: all alike).
    scale: np.ndarray | None = None
    represents: np.ndarray | None = None
    #: where each sampled weight is in the flattened tensor (None: every stride-th)
    positions: np.ndarray | None = None
    #: the weights of largest magnitude (÷ their step multipliers with row steps) and their
    #: positions: the sparse tails of the code histogram, which set the coder's table sizes
    extremes: np.ndarray = field(default_factory=lambda: np.zeros(0))
    extreme_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: bits per weight the encoder's rounding adds to plain rounding's (calibrated rounding
    #: trades rate for output error), measured once at a planned step
    rate_bias: float = 0.0
    #: row classes: weights per row, and the level (log2 RMS, as the quantizer sees it) of
    #: each row (None: the tensor's codes are not coded in row classes)
    row_length: int = 0
    row_levels: np.ndarray | None = None
    #: the coder block size this tensor is encoded with, when not the plan's (blocks of whole
    #: rows with row steps or row classes)
    block_size: int | None = None
    #: the sample's row classes per coder block, once computed (they do not depend on the
    #: step): (first sampled weight, sampled weights, most classes) → sample_classes(…)
    _classes: dict = field(default_factory=dict, repr=False, compare=False)

    def sampled_row_levels(self, chosen: np.ndarray) -> np.ndarray | None:
        """The row level of each of the sampled weights ``chosen`` (None: no row classes)."""
        if self.row_levels is None:
            return None
        positions = self.positions if self.positions is not None \
            else sample_positions(self.numel)
        return self.row_levels[positions[chosen] // self.row_length]


@dataclass
class RatePlan:
    """The chosen step(s) and what the first pass predicts for them."""

    step: float | None
    steps: dict[str, float]
    estimated_bpw: float
    estimated_snr_db: float | None
    #: small float tensors are rounded to this many mantissa bits (None: stored exactly)
    mantissa_bits: int | None = None
    #: bits-per-weight targets only (else empty / None): the bytes each tensor is planned to
    #: take in the archive (container and payload), the lossy tensors' share of that that is
    #: estimated payload, the bytes of the manifest and the rest, the archive's limit, and
    #: how many bits per lossy weight halving every step adds (for :class:`RateFeedback`)
    planned: dict[str, float] = field(default_factory=dict)
    payload: dict[str, float] = field(default_factory=dict)
    rest_bytes: float = 0.0
    limit_bytes: float | None = None
    bits_per_octave: float = 1.0

    def step_for(self, name: str) -> float | None:
        return self.steps.get(name, self.step)


class RateFeedback:
    """Closes the loop of a bits-per-weight plan while the tensors are written.

    The plan aims RATE_MARGIN under the target because its estimate can miss by about that
    much. Once a tensor is written its size is known: whatever it took less than planned is
    free (or owed, if more). Before each lossy tensor the steps of all the lossy tensors still
    to come move by the octaves that would spend what is free (at the plan's bits per octave),
    and that tensor takes its move (within FEEDBACK_OCTAVES and FEEDBACK_SHARE of its payload).
    What is kept back for the estimates still to be proven is RATE_MARGIN of their sum (a
    common bias); TENSOR_MARGIN of a tensor's payload (its own miss) where the tensors written
    after it could not make up for that (the last tensor, a small one after a large one), the
    largest such; and FINAL_MARGIN of the limit. Such a tensor also spends less of what is
    free (MOVE_MISS), as nothing after it can make up for its move's miss either.

    Example:
        >>> plan = RatePlan(1.0, {}, 4.0, None, planned={"a": 500.0, "b": 500.0},
        ...                 payload={"a": 400.0, "b": 400.0}, limit_bytes=1010.0)
        >>> feedback = RateFeedback(plan, {"a": 2000, "b": 2000})
        >>> round(feedback.multiplier("a"), 3)    # nothing proven yet: about the plan's step
        0.993
        >>> feedback.wrote("a", 480)              # 20 bytes less than planned
        >>> round(feedback.multiplier("b"), 3)    # b may spend them: a finer step, by at
        0.954
        >>> # most what adds FEEDBACK_SHARE (10 %) to its payload
    """

    def __init__(self, plan: RatePlan, lossy_numel: dict[str, int]) -> None:
        self.plan = plan
        self.numel = {name: n for name, n in lossy_numel.items() if name in plan.payload}
        self.weights_left = sum(self.numel.values())
        # each lossy tensor's miss that the ones after it (in writing order) cannot absorb
        self.exposed: dict[str, float] = {}
        absorbs = 0.0
        for name in reversed(self.numel):
            self.exposed[name] = max(0.0, TENSOR_MARGIN * plan.payload[name] - absorbs)
            absorbs += min(self.numel[name] * FEEDBACK_OCTAVES * plan.bits_per_octave / 8,
                           FEEDBACK_SHARE * plan.payload[name])
        self.payload_left = sum(plan.payload.values())
        self.planned_left = sum(plan.planned.values()) + plan.rest_bytes
        self.written = 0.0

    def multiplier(self, name: str) -> float:
        """The factor on the planned step of tensor ``name``, about to be written (1 for
        tensors off the lossy path)."""
        if name not in self.numel or self.plan.limit_bytes is None or not self.weights_left:
            return 1.0
        free = (self.plan.limit_bytes * (1 - FINAL_MARGIN) - self.written - self.planned_left
                - RATE_MARGIN * self.payload_left
                - max(self.exposed[n] for n in self.numel))
        per_octave = self.plan.bits_per_octave / 8  # bytes per weight and octave
        octaves = free / (self.weights_left * per_octave)
        if self.exposed[name] > 0:
            octaves /= 1 + MOVE_MISS
        bound = min(FEEDBACK_OCTAVES,
                    FEEDBACK_SHARE * self.plan.payload[name] / (self.numel[name] * per_octave))
        return 2.0 ** -min(max(octaves, -bound), bound)

    def wrote(self, name: str, stored_bytes: int) -> None:
        """Tensor ``name`` took ``stored_bytes`` in the archive."""
        self.written += stored_bytes
        self.planned_left -= self.plan.planned.get(name, 0.0)
        if name in self.numel:
            self.weights_left -= self.numel.pop(name)
            self.payload_left -= self.plan.payload[name]


#: values converted to float64 at a time by the first pass (32 MB): its memory is a chunk's
#: on top of the tensor, not four float64 copies of it (a 268 MB float32 table took 1.9 GB)
SUMMARY_CHUNK = 1 << 22


def float_summary(x: np.ndarray) -> tuple[float, float, bool]:
    """(Σx², max |x| over the finite values, whether every value is finite) of a float array
    of any float dtype, in float64, SUMMARY_CHUNK values at a time.

    >>> float_summary(np.array([3.0, -4.0, np.inf], np.float32))
    (25.0, 4.0, False)
    """
    flat = np.asarray(x).reshape(-1)
    signal, peak, finite = 0.0, 0.0, True
    for start in range(0, flat.shape[0], SUMMARY_CHUNK):
        chunk = flat[start:start + SUMMARY_CHUNK]
        with np.errstate(invalid="ignore"):  # signalling NaNs
            # min and max in the tensor's own dtype (NaN and ±inf show in them): about half
            # the time of a finiteness mask and an |x| over a float64 copy
            low, high = float(chunk.min()), float(chunk.max())
            if not (math.isfinite(low) and math.isfinite(high)):
                finite = False
                chunk = chunk[np.isfinite(chunk)]
                if not chunk.size:
                    continue
                low, high = float(chunk.min()), float(chunk.max())
            wide = chunk.astype(np.float64)
        signal += float(np.dot(wide, wide))
        peak = max(peak, -low, high)
    return signal, peak, finite


def sample_of(x: np.ndarray) -> np.ndarray:
    """Every stride-th value of ``x``, flattened: float32 for floats of 4 bytes or fewer
    (exactly their values, in half the memory of float64; the estimate computes in float64),
    else float64."""
    flat = np.asarray(x).reshape(-1)
    exact32 = flat.dtype.kind == "f" and flat.dtype.itemsize <= 4 \
        or flat.dtype.name == "bfloat16"
    return flat[::_stride(flat.shape[0])].astype(np.float32 if exact32 else np.float64)


def sample_positions(numel: int) -> np.ndarray:
    """Where :func:`sample_of` samples a tensor of ``numel`` weights."""
    return np.arange(0, numel, _stride(numel))


def row_sample(x: np.ndarray, multipliers: np.ndarray, row_length: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(sample, step multipliers, weights each sampled one represents, positions) of a tensor
    with row steps, stratified: the rows at the most common step strided like
    :func:`sample_of`, the others (few, finer-stepped and costlier, e.g. frequent tokens)
    sampled densely, so that their long-tailed codes are in the rate estimate. Memory is the
    sample's, not the tensor's.

    >>> s, m, r, _ = row_sample(np.arange(8.0), np.array([1.0, 1.0, 1.0, 0.5]), 2)
    >>> s.tolist(), m.tolist(), float(r.sum())
    ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5], 8.0)
    """
    flat = np.asarray(x).reshape(-1)
    n = flat.shape[0]
    values, counts = np.unique(multipliers, return_counts=True)
    common = values[np.argmax(counts)]
    stride = _stride(n)
    grid = np.arange(0, n, stride)
    bulk = grid[multipliers[grid // row_length] == common]
    dense_rows = np.flatnonzero(multipliers != common)
    dense_count = dense_rows.shape[0] * row_length
    dense_stride = max(1, math.ceil(dense_count / DENSE_SAMPLE_SIZE))
    k = np.arange(0, dense_count, dense_stride)
    dense = dense_rows[k // row_length] * row_length + k % row_length
    dense = dense[dense < n]  # the last row may be short
    index = np.concatenate([bulk, dense])
    represents = np.concatenate([np.full(bulk.shape[0], float(stride)),
                                 np.full(dense.shape[0], float(dense_stride))])
    return (flat[index].astype(np.float64), multipliers[index // row_length], represents,
            index)


def _stride(numel: int) -> int:
    """Sampling stride: SAMPLE_SIZE weights per coder block of 2**20 (the rate of each block
    is estimated from its own), at most MAX_SAMPLE in all."""
    blocks = max(1, math.ceil(numel / (1 << 20)))
    return max(1, math.ceil(numel / min(SAMPLE_SIZE * blocks, MAX_SAMPLE)))


def estimate(stats: TensorStats, quantizer: Quantizer, block_size: int
              ) -> tuple[float, float]:
    """(bits, squared error) of quantizing the whole tensor, measured on its sample with the
    quantizer itself (so centroid shifts, trellis search etc. are all accounted for). The
    coder keeps one frequency table per block, so rate is estimated block by block from the
    sampled weights in each (tensors whose statistics drift, like token tables ordered by
    vocabulary, cost less than one histogram of the whole would say); blocks with few sampled
    weights share their neighbour's histogram."""
    block_size = stats.block_size or block_size
    sample = stats.sample if stats.scale is None else stats.sample / stats.scale
    share = np.ones(sample.shape[0]) if stats.represents is None else stats.represents
    if getattr(quantizer, "row_length", 0):  # a sample has no rows: classes are added below
        quantizer = dataclasses.replace(quantizer, row_length=0)  # type: ignore[type-var]
    if getattr(quantizer, "chain", 0) > SAMPLE_CHAIN:
        quantizer = dataclasses.replace(quantizer, chain=SAMPLE_CHAIN)  # type: ignore[type-var]
    bits = error = 0.0
    for chosen, size, tail in _block_groups(stats, sample.shape[0], block_size):
        weights = share[chosen]
        streams, side = _quantize_sample(_at_true_peak(quantizer, sample[chosen],
                                                       stats.extremes[tail]),
                                         sample[chosen], weights)
        symbols = streams["codes"].symbols
        p = np.bincount(symbols, weights=weights)
        seen = np.flatnonzero(p)
        p = p[seen] / p.sum()
        entropy = float(-(p * np.log2(p)).sum()) \
            + (p.shape[0] - 1) / (2 * symbols.shape[0] * math.log(2))
        # The largest weights' codes that the sample missed: each distinct one takes a table
        # entry and each occurrence costs its own information, not the average rate.
        rare, rare_counts = _missed_tail(quantizer, stats.extremes[tail], side, seen)
        extra = float(np.sum(rare_counts * np.maximum(
            0.0, np.log2(size / np.maximum(rare_counts, 1)) - entropy)))
        loss = -math.log2(1.0 - min(0.5, float(rare_counts.sum()) / size))
        # A group may be several small blocks, each with its own table (and its own row
        # classes).
        blocks = max(1, round(size / block_size))
        if blocks > 1:  # a block's table: the symbols it likely holds, at their rates
            each = size / blocks
            likely = p * each >= 0.5
            table = 8.0 * blocks * _table_bytes(seen[likely], p[likely] * each,
                                                 np.zeros(0, np.int64), np.zeros(0))
        else:
            table = 8.0 * _table_bytes(seen, p * size, rare, rare_counts)
        bits += (entropy + loss + stats.rate_bias) * size + extra + table
        most = getattr(quantizer, "row_classes", 1)
        if stats.row_levels is not None and most > 1 and chosen.size:
            key = (int(chosen[0]), chosen.shape[0], most)
            if key not in stats._classes:
                stats._classes[key] = rowclasses.sample_classes(
                    stats.sampled_row_levels(chosen), size / blocks / stats.row_length, most)
            bits -= rowclasses.estimated_gain(symbols, stats._classes[key], weights, size,
                                              size / stats.row_length, blocks)
        rebuilt = quantizer.dequantize({"codes": symbols}, side, symbols.shape[0])
        residual = sample[chosen] - rebuilt
        if stats.scale is not None:
            residual = residual * stats.scale[chosen]
        error += float(np.dot(weights, residual ** 2)) / float(weights.sum()) * size
    return bits, error


def _quantize_sample(quantizer: Quantizer, sample: np.ndarray, shares: np.ndarray
                     ) -> tuple[dict, dict]:
    """The quantizer's codes for a sample whose values stand for ``shares`` weights each: a
    quantizer that fits itself to the values (``dq``'s rate table) fits to the block they
    stand for, not to the sample's own mix (a stratified sample over-represents rows)."""
    if isinstance(quantizer, DependentQuantizer):
        return quantizer.quantize(sample, [], shares=shares)
    return quantizer.quantize(sample, [])


def _at_true_peak(quantizer: Quantizer, sample: np.ndarray, extremes: np.ndarray
                  ) -> Quantizer:
    """The quantizer with the step the block will really get: the range guard raises the
    step of a block with a large outlier, which the sample alone may not hold."""
    if not isinstance(quantizer, SteppedQuantizer) or not quantizer.step > 0:
        return quantizer
    peak = max(float(np.max(np.abs(sample), initial=0.0)),
               float(np.max(np.abs(extremes), initial=0.0)))
    floor = quantizer.min_step(peak)
    return dataclasses.replace(quantizer, step=floor) if floor > quantizer.step else quantizer


def _missed_tail(quantizer: Quantizer, extremes: np.ndarray, side: dict, seen: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(symbols, occurrences) of the largest weights' codes that the sample did not see: by
    rounding at the spacing of one quantizer's levels for ``scalar``/``dq`` (a trellis search
    per call would cost more than the rest of the estimate), else from the quantizer itself."""
    if not extremes.size:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if isinstance(quantizer, SteppedQuantizer) and isinstance(side.get("step"), float):
        codes = zigzag(np.rint(extremes / (side["step"] * quantizer.index_step)))
    else:
        codes = quantizer.quantize(extremes, [])[0]["codes"].symbols
    return np.unique(codes[~np.isin(codes, seen)], return_counts=True)


def _table_bytes(seen: np.ndarray, expected: np.ndarray, rare: np.ndarray,
                 rare_counts: np.ndarray) -> float:
    """Bytes of the coder's table for a block with ``expected`` counts of the ``seen`` symbols
    and ``rare_counts`` of the ``rare`` ones."""
    symbols = np.concatenate([seen, rare]).astype(np.int64)
    counts = np.zeros(int(symbols.max()) + 1 if symbols.size else 1)
    counts[seen] = np.maximum(expected, 1e-300)
    counts[rare] = rare_counts
    return float(table_bytes(counts, approximate=True))


def _block_groups(stats: TensorStats, m: int, block_size: int
                  ) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """(sampled weights, weights represented, extremes) per coder block; a block with fewer
    than 256 sampled weights joins its neighbour (one group of the whole tensor when it has
    one block)."""
    everything = np.arange(m)
    tails = np.arange(stats.extremes.shape[0])
    if stats.numel <= block_size:
        return [(everything, float(stats.numel), tails)]
    positions = stats.positions if stats.positions is not None \
        else everything * _stride(stats.numel)
    block_of = positions // block_size
    tail_block = stats.extreme_positions // block_size
    groups: list[tuple[np.ndarray, float, np.ndarray]] = []
    for block in range(math.ceil(stats.numel / block_size)):
        chosen = np.flatnonzero(block_of == block)
        size = float(min(block_size, stats.numel - block * block_size))
        tail = np.flatnonzero(tail_block == block)
        if groups and (chosen.shape[0] < 256 or groups[-1][0].shape[0] < 256):
            last = groups.pop()
            chosen = np.concatenate([last[0], chosen])
            size += last[1]
            tail = np.concatenate([last[2], tail])
        groups.append((chosen, size, tail))
    return groups


#: how many of a tensor's largest weights the first pass keeps, per coder block of 2**20
EXTREMES = 4096


def extremes_of(x: np.ndarray, row_multipliers: np.ndarray | None = None,
                row_length: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(values, positions) of the about EXTREMES weights of largest magnitude in each coder
    block of 2**20 of flattened ``x`` (divided by their row's multiplier, with row steps); one block
    at a time, so memory stays a block's.

    >>> extremes_of(np.array([0.1, -3.0, 2.0]))[1].tolist()
    [0, 1, 2]
    """
    flat = np.asarray(x).reshape(-1)
    values, positions = [], []
    for start in range(0, flat.shape[0], 1 << 20):
        chunk = flat[start:start + (1 << 20)].astype(np.float64)
        if row_multipliers is not None:
            chunk /= row_multipliers[(np.arange(chunk.shape[0]) + start) // row_length]
        magnitude = np.abs(chunk)
        if chunk.shape[0] <= 8 * EXTREMES:
            keep = min(chunk.shape[0], EXTREMES)
            where = np.sort(np.argpartition(magnitude, chunk.shape[0] - keep)[-keep:])
        else:  # about EXTREMES: above the matching quantile of every 8th weight (4× faster)
            every = magnitude[::8]
            threshold = np.partition(every, every.shape[0] - EXTREMES // 8)[-(EXTREMES // 8)]
            where = np.flatnonzero(magnitude >= threshold)
        values.append(chunk[where])
        positions.append(where + start)
    if not values:
        return np.zeros(0), np.zeros(0, np.int64)
    return np.concatenate(values), np.concatenate(positions)


def entropy_bits(codes: np.ndarray) -> float:
    """Plug-in entropy of integer codes, in bits per code.

    >>> entropy_bits(np.array([0, 0, 1, 1]))
    1.0
    """
    _, counts = np.unique(codes, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


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
                      + overhead.archive + overhead.manifest_entry * len(stats)
                      + overhead.block * sum(math.ceil(s.numel / (s.block_size or block_size))
                                             - 1 for s in stats if s.lossy)
                      + sum(overhead.lossy if s.lossy else overhead.exact for s in stats))
    signal = sum(s.signal for s in stats)
    fixed_error = sum(s.fixed_error for s in stats)
    if not lossy:
        raise StageError("rate control found no tensor that takes the lossy path")

    def at(step: float, **changes: object) -> Quantizer:
        return dataclasses.replace(quantizer, step=step, **changes)  # type: ignore[type-var]

    parts: dict[float, list[float]] = {}  # each lossy tensor's payload bits, by step

    def totals(step: float) -> tuple[float, float]:
        bits, error = 0.0, fixed_error
        parts[step] = []
        for s in lossy:
            b, e = estimate(s, at(step / math.sqrt(s.weight)), block_size)
            bits += b * overhead.payload_factor
            error += e
            parts[step].append(b * overhead.payload_factor)
        return bits + fixed_bits, error

    if max_rel_error is not None:
        if not 0 < max_rel_error < 1:
            raise StageError(f"max_rel_error must be in (0, 1), got {max_rel_error}")
        if quantizer.id != "scalar":
            raise StageError("max_rel_error needs the scalar quantizer (a trellis quantizer "
                             "does not bound each weight's error by half a step)")
        # Each error is at most half a step plus the cast to the tensor's dtype.
        steps = {s.name: max(2 * (max_rel_error - s.precision) * s.peak, 1e-30) for s in lossy}
        tight = [s for s in lossy if s.peak > 0 and (
            max_rel_error <= s.precision or steps[s.name] < quantizer.min_step(s.peak))]
        if tight:
            least = max(s.precision + quantizer.min_step(s.peak) / (2 * s.peak) for s in tight)
            raise StageError(
                f"max_rel_error {max_rel_error:g} is finer than the scalar quantizer can "
                f"guarantee for {len(tight)} tensor(s), e.g. {tight[0].name!r}: it needs at "
                f"least {least:.3g} (codes span ±{MAX_CODE} steps, and decoded values round to "
                f"their dtype); use --lossless for exact tensors")
        bits, error = 0.0, fixed_error
        for s in lossy:
            b, e = estimate(s, at(steps[s.name], centroid=False), block_size)
            bits, error = bits + b * overhead.payload_factor, error + e
        return RatePlan(None, steps, (bits + fixed_bits) / weights, _snr(signal, error))

    rms = math.sqrt(sum(s.signal for s in lossy) / sum(s.numel for s in lossy)) or 1.0
    wide = lo, hi = math.log(rms * 1e-5), math.log(rms * 20.0)
    proxy = None
    if quantizer.id != "scalar":
        # Slow quantizers (trellis search): start from the scalar quantizer's answer.
        proxy = plan(stats, ScalarQuantizer(), target_bpw=target_bpw,
                     target_snr_db=target_snr_db, block_size=block_size, overhead=overhead)
        assert proxy.step is not None
        lo, hi = math.log(proxy.step * 0.25), math.log(proxy.step * 1.5)
    if target_bpw is not None:
        if target_bpw * weights <= fixed_bits:
            raise StageError(f"{target_bpw} bits per weight cannot even hold the exact tensors "
                             f"and containers ({fixed_bits / weights:.3f} bits per weight)")
        goal, which = target_bpw * weights * (1 - RATE_MARGIN), 0
    else:
        # (an all-zero model has no error to bound: every step meets the target)
        budget = signal / 10 ** (target_snr_db / 10)  # type: ignore[operator]
        goal, which = max(budget * (1 - ERROR_MARGIN), 1e-300), 1
    measured: dict[float, tuple[float, float]] = {}

    def excess(log_step: float) -> float:
        """log(measure / goal): ≤ 0 when the target is met (bits within budget, or error)."""
        if log_step not in measured:
            measured[log_step] = totals(math.exp(log_step))
        return math.log(max(measured[log_step][which], 1e-300) / goal)

    # Secant steps from a good start, the first with the high-rate slope (each halving of the
    # step costs a bit per lossy weight, or divides the error by 4): 1–4 evaluations, where
    # bracketing takes 6–10. A slow quantizer starts from the scalar proxy's step on its own
    # index grid; the scalar quantizer from the high-rate step of Gaussian weights of the
    # same RMS (Δ = σ·2^(h − R), h = 2.05 bits), the wide bracket its fallback.
    lossy_weights = sum(s.numel for s in lossy)
    slope = -lossy_weights / (math.log(2) * goal) if which == 0 else 2.0
    if proxy is not None:
        start = math.log(proxy.step / getattr(quantizer, "index_step", 1.0))
    elif which == 0:
        rate = max(0.5, (goal - fixed_bits) / overhead.payload_factor / lossy_weights)
        start = math.log(rms) + (2.05 - rate) * math.log(2)
    else:
        start = 0.5 * math.log(12 * max(goal - fixed_error, goal * 1e-3) / lossy_weights)
    start = min(max(start, wide[0]), wide[1])
    near = _near_root(excess, start, slope)
    if near is None:
        near = _root(excess, lo, hi, 60 if proxy is None else 8)
    log_step = near
    if measured[log_step][which] > goal and (lo, hi) != wide:
        # the scalar proxy's bracket missed (e.g. a constant tensor that lies on the scalar
        # grid but not on dq's): search the wide one with the real quantizer
        log_step = _root(excess, *wide, 16)
    bits, error = measured[log_step]
    step = math.exp(log_step)
    steps = {s.name: step / math.sqrt(s.weight) for s in lossy if s.weight != 1.0}
    chosen = RatePlan(step, steps, bits / weights, _snr(signal, error))
    if target_bpw is None:
        return chosen
    payload = {s.name: b / 8 for s, b in zip(lossy, parts[step], strict=True)}
    planned = {s.name: payload[s.name] + overhead.lossy + overhead.block * (
        math.ceil(s.numel / (s.block_size or block_size)) - 1) for s in lossy}
    planned.update({s.name: overhead.payload_factor * s.exact_bytes + overhead.exact
                    for s in stats if s.name not in planned})
    return dataclasses.replace(
        chosen, planned=planned, payload=payload,
        rest_bytes=overhead.archive + overhead.manifest_entry * len(stats),
        limit_bytes=target_bpw * weights / 8,
        bits_per_octave=_bits_per_octave(measured, log_step, lossy_weights))


def _bits_per_octave(measured: dict[float, tuple[float, float]], log_step: float,
                     lossy_weights: int) -> float:
    """Bits per lossy weight that halving every step adds, between the chosen step and the
    nearest evaluated one at least 1/32 octave from it (closer ones measure the sample's noise);
    1, the high-rate figure, when there is none; within [0.5, 1.5]."""
    apart = [x for x in measured if abs(x - log_step) >= math.log(2) / 32]
    if not apart:
        return 1.0
    other = min(apart, key=lambda x: abs(x - log_step))
    slope = (measured[other][0] - measured[log_step][0]) / ((log_step - other) / math.log(2))
    return min(max(slope / lossy_weights, 0.5), 1.5)


def _near_root(f, x: float, slope: float, evaluations: int = 6, tolerance: float = 5e-4,
               reach: float = 1.0) -> float | None:
    """A root of the decreasing f near ``x``, as :func:`_root` finds it: secant steps (the
    first with ``slope``, each at most ``reach``) aimed at −tolerance/5, inside the met band,
    until one lands in it or two points bracket the root (then :func:`_root` between them);
    None when neither happens within ``evaluations``."""
    fx = f(x)
    if -tolerance < fx <= 0:
        return x
    for _ in range(evaluations):
        step = max(-reach, min(reach, -(fx + tolerance / 5) / slope))
        nxt = x + step
        f_next = f(nxt)
        if -tolerance < f_next <= 0:
            return nxt
        if (f_next > 0) != (fx > 0):
            return _root(f, min(x, nxt), max(x, nxt), evaluations, tolerance)
        secant = (f_next - fx) / step
        slope = secant if secant < 0 else slope
        x, fx = nxt, f_next
    return None


def _root(f, lo: float, hi: float, evaluations: int = 12, tolerance: float = 5e-4) -> float:
    """The x in [lo, hi] with f(x) ≤ 0 closest to a root of the monotone f (Illinois method:
    a handful of evaluations where bisection needs dozens, and evaluations are the costly
    part), stopping within ``tolerance`` (0.05 % in rate or error) below the root: the
    estimate never overshoots a target it can meet."""
    f_lo, f_hi = f(lo), f(hi)
    met = [(x, fx) for x, fx in ((lo, f_lo), (hi, f_hi)) if fx <= 0]
    if f_lo == 0 or f_hi == 0:  # an end is the root
        return lo if f_lo == 0 else hi
    if f_lo * f_hi > 0:  # not bracketed: the target lies outside the searched range
        return min(met, key=lambda p: abs(p[1]))[0] if met else min(
            (lo, f_lo), (hi, f_hi), key=lambda p: p[1])[0]
    side = 0
    for _ in range(evaluations):
        x = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        fx = f(x)
        if fx <= 0:
            met.append((x, fx))
            if fx > -tolerance:
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
