"""Near-lossless storage of small float tensors: round each value to fewer mantissa bits.

Biases, norm weights and other small or 1-D tensors stay off the lossy path (they are a
sliver of a model's weights but sensitive). Stored bit-exactly they cost ~27–29 bits each,
which on all-MiniLM-L6-v2 is 0.04 bit per weight of the whole model, a tenth of a decibel
at every rate. Under rate control they are instead rounded to ``m`` explicit mantissa bits
(round to nearest, ties to even; full float32 range kept; relative error ≤ 2^-(m+1) per
value), then stored with the exact coder: at m = 10 (float16's precision) MiniLM's cost
halves. Rate control picks ``m`` so that the rounding spends at most 1 % of the error budget
(:func:`bits_for_budget`), or bounds each error by ``--max-rel-error``
(:func:`bits_for_relative_error`); ``--exact-small`` keeps them bit-exact.

Example:
    >>> x = np.array([1.0 + 2**-12, -3.14159265, np.inf], dtype=np.float32)
    >>> round_mantissa(x, 10).tolist()
    [1.0, -3.140625, inf]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rftpack.ratecontrol import RatePlan, TensorStats

#: the coarsest rounding rate control uses (float16's mantissa, float32's range)
MIN_BITS = 10
#: the share of the error budget that rounding may spend
BUDGET_SHARE = 0.01

_LAYOUT = {np.dtype(np.float32): (np.uint32, 23, 8), np.dtype(np.float64): (np.uint64, 52, 11)}


def mantissa_bits(dtype: np.dtype) -> int | None:
    """Explicit mantissa bits of a dtype that can be rounded (float32, float64), else None.

    >>> mantissa_bits(np.dtype(np.float32)), mantissa_bits(np.dtype(np.int8))
    (23, None)
    """
    layout = _LAYOUT.get(_native(np.dtype(dtype)))
    return layout[1] if layout else None


def _native(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("=") if dtype.kind == "f" else dtype


def round_mantissa(array: np.ndarray, bits: int) -> np.ndarray:
    """``array`` with every finite value rounded to ``bits`` mantissa bits (a new array).

    Infinities and NaNs (payloads too) are kept; a value that would round past the largest
    finite one is rounded down instead. ``bits`` ≥ the dtype's mantissa returns a copy.

    >>> round_mantissa(np.array([1.5, 1.25, 1.75], np.float32), 1).tolist()
    [1.5, 1.0, 2.0]
    """
    array = np.asarray(array)
    array = array.astype(_native(array.dtype), copy=False)
    layout = _LAYOUT.get(array.dtype)
    if layout is None:
        raise TypeError(f"round_mantissa needs float32 or float64, not {array.dtype}")
    unsigned, width, exponent_bits = layout
    if bits < 0:
        raise ValueError(f"bits must be ≥ 0, got {bits}")
    if bits >= width:
        return array.copy()
    word = array.view(unsigned)
    drop = unsigned(width - bits)
    one = unsigned(1)
    half = (one << (drop - one)) - one
    odd = (word >> drop) & one
    rounded = ((word + half + odd) >> drop) << drop
    exponent_mask = unsigned(((1 << exponent_bits) - 1) << width)
    special = (word & exponent_mask) == exponent_mask           # inf / NaN: keep
    overflow = ((rounded & exponent_mask) == exponent_mask) & ~special
    truncated = (word >> drop) << drop
    out = np.where(special, word, np.where(overflow, truncated, rounded))
    return out.astype(unsigned, copy=False).view(array.dtype).reshape(array.shape)


def squared_errors(array: np.ndarray, bits_range: range) -> dict[int, float]:
    """Sum of squared rounding errors of the finite values, for each ``bits`` in the range.

    >>> squared_errors(np.array([1.0, 1.25], np.float32), range(1, 3))
    {1: 0.0625, 2: 0.0}
    """
    with np.errstate(invalid="ignore"):  # signalling NaNs: only finite values count
        values = np.asarray(array, dtype=np.float64)
        finite = np.isfinite(values)
        errors = {}
        for bits in bits_range:
            diff = round_mantissa(array, bits).astype(np.float64)[finite] - values[finite]
            errors[bits] = float(np.dot(diff, diff))
    return errors


def bits_for_budget(errors: dict[int, float], budget: float) -> int | None:
    """The fewest bits whose total rounding error is within ``BUDGET_SHARE`` of ``budget``,
    or None (store exactly) if no candidate is.

    >>> bits_for_budget({10: 5.0, 11: 1.0, 12: 0.2}, budget=100.0)
    11
    """
    for bits in sorted(errors):
        if errors[bits] <= BUDGET_SHARE * budget:
            return bits
    return None


def bits_for_relative_error(max_rel_error: float) -> int:
    """The fewest bits (≥ :data:`MIN_BITS`) whose rounding error, ≤ 2^-(bits+1) × |value|,
    stays within ``max_rel_error`` × |value|.

    >>> bits_for_relative_error(1e-3), bits_for_relative_error(1e-5)
    (10, 16)
    """
    return max(MIN_BITS, math.ceil(-math.log2(max_rel_error)) - 1)


@dataclass
class Candidate:
    """A tensor rate control may round: its rate-control record, its rounding error at each
    number of bits (from :data:`MIN_BITS` to one under the dtype's mantissa), and its stored
    sizes rounded to :data:`MIN_BITS` and exact."""

    stats: TensorStats
    errors: dict[int, float]
    rounded_bytes: int
    exact_bytes: int

    def choose(self, bits: int | None) -> None:
        """Size and error of the tensor rounded to ``bits`` (None or ≥ its mantissa: exact);
        each bit above :data:`MIN_BITS` adds a raw bit per value."""
        if bits is None or bits not in self.errors:
            self.stats.exact_bytes, self.stats.fixed_error = self.exact_bytes, 0.0
            return
        grown = self.rounded_bytes + (bits - MIN_BITS) * self.stats.numel / 8
        self.stats.exact_bytes = math.ceil(min(grown, self.exact_bytes))
        self.stats.fixed_error = self.errors[bits]


def total_errors(candidates: list[Candidate]) -> dict[int, float]:
    """Rounding error of all candidates together, per number of bits.

    >>> from rftpack.ratecontrol import TensorStats
    >>> c = Candidate(TensorStats("b", 4, False, 1.0, 0.0), {10: 2.0, 11: 1.0}, 8, 16)
    >>> total_errors([c, c])
    {10: 4.0, 11: 2.0}
    """
    every = sorted({bits for c in candidates for bits in c.errors})
    return {bits: sum(c.errors.get(bits, 0.0) for c in candidates) for bits in every}


def plan_rounding(candidates: list[Candidate], planner: Callable[[], RatePlan], *,
                  signal: float, target_snr_db: float | None = None,
                  max_rel_error: float | None = None) -> RatePlan:
    """Run the rate ``planner`` with the candidates rounded as the target allows:

    - ``max_rel_error``: the bits that keep each value within it;
    - ``target_snr_db``: the fewest bits spending ≤ 1 % of the error that target allows;
    - a rate target: :data:`MIN_BITS`, then, if that spends over 1 % of the planned error
      (very high rates), the fewest bits that do not, planned again.
    """
    if not candidates:
        return planner()
    errors = total_errors(candidates)
    if max_rel_error is not None:
        bits: int | None = bits_for_relative_error(max_rel_error)
    elif target_snr_db is not None:
        bits = bits_for_budget(errors, signal / 10 ** (target_snr_db / 10))
    else:
        bits = MIN_BITS
    for c in candidates:
        c.choose(bits)
    planned = planner()
    if max_rel_error is None and target_snr_db is None \
            and planned.estimated_snr_db is not None:
        refined = bits_for_budget(errors, signal / 10 ** (planned.estimated_snr_db / 10))
        if refined != bits:
            bits = refined
            for c in candidates:
                c.choose(bits)
            planned = planner()
    return dataclasses.replace(planned, mantissa_bits=bits)
