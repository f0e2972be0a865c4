"""``scalar``: uniform scalar quantization with centroid reconstruction, for the identity
transform (the ``scalar`` profile).

    code   q = round(x / Δ)                       (zigzag-mapped to symbols for the coder)
    value  x̂ = sign(q) · (|q| − δ_|q|) · Δ        δ₁ for |q| = 1, δ₂ for |q| ≥ 2, 0 for q = 0

Δ is ``step`` (absolute) when set, else ``rel_step`` × the block's RMS; it is raised to
max|x| / 32000 if needed so every code fits a 16-bit alphabet. δ₁, δ₂ (the mean distance of
the weights from their reconstruction levels, toward zero) are measured per block and stored
in the side info: a free gain where weights are peaked around zero.

**Row steps** (``scalar`` and ``dq``): a block may give each row of ``row_length`` weights
its own step Δ · 2^(−ℓ/4), ℓ ∈ [0, 63] the row's level (one symbol per row in the stream
``row_levels``). Rate control uses them where rows matter unequally, e.g. the rows of a
token-embedding table by how often their tokens occur (:class:`RowSteps`).

**Row classes** (``scalar`` and ``dq``, ``row_classes`` > 1): the codes of rows of
``row_length`` weights may be coded in up to ``row_classes`` groups of rows of like scale,
each with its own table (:mod:`rftpack.stages.rowclasses`); the encoder chooses how many per
block, by their cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rftpack.dtypes import cast_float_into
from rftpack.errors import FormatError, StageError
from rftpack.stages import rowclasses
from rftpack.stages.base import Codes, Quantizer

MAX_CODE = 32000
#: row levels per octave of step, and the number of levels
ROW_LEVELS_PER_OCTAVE = 4
ROW_LEVELS = 64


@dataclass(frozen=True)
class RowSteps:
    """Per-row step levels for a block that starts at a row boundary: row r's step is
    Δ · 2^(−levels[r] / 4), rows of ``length`` weights (the last one may be cut short).

    Example:
        >>> RowSteps(np.array([0, 4], np.uint8), 2).multipliers(4).tolist()
        [1.0, 1.0, 0.5, 0.5]
    """

    levels: np.ndarray
    length: int

    def per_row(self) -> np.ndarray:
        """Each row's step multiplier, 2^(−level/4)."""
        return np.exp2(-self.levels.astype(np.float64) / ROW_LEVELS_PER_OCTAVE)

    def multipliers(self, count: int) -> np.ndarray:
        """Each of ``count`` weights' step multiplier."""
        return self.per_row()[np.arange(count) // self.length]

    @staticmethod
    def from_weights(weights: np.ndarray) -> tuple[np.ndarray, float]:
        """(levels, base multiplier) for relative row weights (how much each row's squared
        error counts; normalised to mean 1 here): row r's step is the tensor's step ×
        base × 2^(−levels[r]/4) ≈ the tensor's step / √weight[r] (equal slope). Rows more
        than 63 levels (15.75 octaves of step) below the finest share the coarsest level.

        >>> levels, base = RowSteps.from_weights(np.array([1.0, 1.0, 16.0]))
        >>> levels.tolist(), round(base, 3)
        ([0, 0, 8], 2.378)
        """
        w = np.asarray(weights, np.float64)
        exponents = np.rint(2.0 * np.log2(w / w.mean())).astype(np.int64)
        lowest = max(int(exponents.min()), int(exponents.max()) - (ROW_LEVELS - 1))
        levels = np.maximum(exponents - lowest, 0).astype(np.uint8)
        return levels, float(np.exp2(-lowest / ROW_LEVELS_PER_OCTAVE))


def zigzag(q: np.ndarray) -> np.ndarray:
    """Signed codes → non-negative symbols: 0, −1, 1, −2, 2 … → 0, 1, 2, 3, 4 …

    >>> zigzag(np.array([0, -1, 1, -2, 2])).tolist()
    [0, 1, 2, 3, 4]
    """
    q = q.astype(np.int64)
    sign = q >> 63
    q <<= 1  # (in place: a block's transient memory is part of compress's peak)
    q ^= sign
    return q.astype(np.uint16)


def unzigzag(symbols: np.ndarray) -> np.ndarray:
    """Inverse of :func:`zigzag`."""
    s = symbols.astype(np.int64)
    return (s >> 1) ^ -(s & 1)


@dataclass(frozen=True)
class SteppedQuantizer(Quantizer):
    """What ``scalar`` and ``dq`` share: an absolute or RMS-relative step Δ, one ``codes``
    stream of zig-zag symbols whose alphabet is in the side info, and their checks."""

    step: float = 0.0
    rel_step: float = 0.05
    #: encoder only: code the rows of ``row_length`` weights in up to this many classes of
    #: rows of like scale, one table each (1: one table per block; see row classes above)
    row_classes: int = 1
    #: encoder only: weights per row for row classes (0: the block has no rows)
    row_length: int = 0
    #: spacing of one quantizer's levels, in steps (a code's index counts levels of it)
    index_step: ClassVar[float] = 1.0

    def __post_init__(self) -> None:
        for name in ("step", "rel_step"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and not isinstance(value, bool)
                    and math.isfinite(value) and value >= 0):
                raise StageError(f"{self.id}: {name} must be a finite number ≥ 0, "
                                 f"got {value!r}")
        if self.step == 0 and self.rel_step == 0:
            raise StageError(f"{self.id}: set step or rel_step")
        if type(self.row_classes) is not int \
                or not 1 <= self.row_classes <= rowclasses.MAX_CLASSES:
            raise StageError(f"{self.id}: row_classes must be an integer in "
                             f"[1, {rowclasses.MAX_CLASSES}], got {self.row_classes!r}")
        if type(self.row_length) is not int or self.row_length < 0:
            raise StageError(f"{self.id}: row_length must be an integer ≥ 0, "
                             f"got {self.row_length!r}")

    def min_step(self, peak: float) -> float:
        """The finest step at which a block whose largest |value| is ``peak`` keeps every code
        within the 16-bit alphabet (the range guard).

        >>> ScalarQuantizer().min_step(3.2)
        0.0001
        """
        return peak / MAX_CODE

    def block_step(self, x: np.ndarray) -> float:
        """The step Δ used for a block (before the 16-bit range guard)."""
        if self.step > 0:
            return float(self.step)
        rms = float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0
        return self.rel_step * rms if rms > 0 else 1.0

    def stream_alphabets(self, side: dict[str, Any]) -> dict[str, int]:
        alphabet = side.get("alphabet")
        if not isinstance(alphabet, int) or not 1 <= alphabet <= 2 * MAX_CODE + 1:
            raise FormatError(f"{self.id}: side.alphabet must be in [1, {2 * MAX_CODE + 1}]")
        alphabets = {"codes": alphabet}
        if "row_classes" in side or "class_length" in side:
            classes, length = side.get("row_classes"), side.get("class_length")
            if not _integer_in(classes, 2, rowclasses.MAX_CLASSES) \
                    or not _integer_in(length, 1, 1 << 62):
                raise FormatError(f"{self.id}: side.row_classes must be in [2, "
                                  f"{rowclasses.MAX_CLASSES}] and side.class_length ≥ 1, "
                                  f"both or neither")
            alphabets.update({_class_stream(c): alphabet for c in range(1, classes)})
            alphabets["row_classes"] = classes
        if "row_length" not in side:
            return alphabets
        levels = side.get("row_levels")
        if not _integer_in(levels, 1, ROW_LEVELS):
            raise FormatError(f"{self.id}: side.row_levels must be in [1, {ROW_LEVELS}]")
        return {**alphabets, "row_levels": levels}

    def coded_streams(self, x: np.ndarray, symbols: np.ndarray, alphabet: int
                      ) -> tuple[dict[str, Codes], dict[str, Any]]:
        """(code streams, their side info) of a block's ``symbols`` for values ``x``: one
        ``codes`` stream, or one per row class when ``row_classes`` > 1 and they pay."""
        row_class = None
        if self.row_classes > 1 and self.row_length > 0 and symbols.size:
            row_class = rowclasses.choose(x, symbols, alphabet, self.row_length,
                                          self.row_classes)
        if row_class is None:
            return {"codes": Codes(symbols, alphabet)}, {}
        classes = int(row_class.max()) + 1
        parts = rowclasses.split(symbols, row_class, self.row_length, classes)
        streams = {_class_stream(c): Codes(part, alphabet) for c, part in enumerate(parts)}
        streams["row_classes"] = Codes(row_class, classes)
        return streams, {"row_classes": classes, "class_length": self.row_length}

    def scaled_input(self, x: np.ndarray, rows: RowSteps | None
                     ) -> tuple[np.ndarray, dict[str, Codes], dict[str, Any]]:
        """(x divided by its row multipliers, the row-level stream, its side info) — x itself
        and nothing when the block has no row steps."""
        if rows is None:
            return x, {}, {}
        if not isinstance(rows.length, int) or rows.length < 1 \
                or rows.levels.shape != (-(-x.shape[0] // rows.length),):
            raise StageError(f"{self.id}: {rows.levels.shape} row levels do not cover "
                             f"{x.shape[0]} weights in rows of {rows.length}")
        if rows.levels.size and (rows.levels.dtype.kind not in "ui"
                                 or int(rows.levels.min()) < 0
                                 or int(rows.levels.max()) >= ROW_LEVELS):
            raise StageError(f"{self.id}: row levels must be integers in [0, {ROW_LEVELS})")
        levels = rows.levels.astype(np.uint8)
        multipliers = RowSteps(levels, rows.length).multipliers(x.shape[0])
        alphabet = int(levels.max()) + 1 if levels.size else 1
        return (x / multipliers, {"row_levels": Codes(levels, alphabet)},
                {"row_length": rows.length, "row_levels": alphabet})

    def row_multipliers(self, streams: dict[str, np.ndarray], side: dict[str, Any],
                        count: int) -> np.ndarray | None:
        """The decoded block's per-weight step multipliers (None without row steps)."""
        if "row_length" not in side:
            return None
        length = side["row_length"]
        if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= 1 << 62:
            raise FormatError(f"{self.id}: side.row_length must be a positive integer")
        levels = streams.get("row_levels")
        if levels is None or levels.shape != (-(-count // length),):
            raise FormatError(f"{self.id}: expected {-(-count // length)} row levels")
        if levels.size and int(levels.max()) >= self.stream_alphabets(side)["row_levels"]:
            raise FormatError(f"{self.id}: row level outside its alphabet")
        return RowSteps(levels, length).multipliers(count)

    def checked_codes(self, streams: dict[str, np.ndarray], side: dict[str, Any],
                      count: int) -> tuple[float, np.ndarray]:
        """(Δ, codes) of a block, validated against the side info."""
        step = side.get("step")
        if not (isinstance(step, int | float) and math.isfinite(step) and step > 0):
            raise FormatError(f"{self.id}: side.step must be a positive finite number")
        alphabets = self.stream_alphabets(side)
        if "row_classes" in side:
            parts = [streams.get(_class_stream(c)) for c in range(side["row_classes"])]
            row_class = streams.get("row_classes")
            if row_class is None or any(part is None for part in parts):
                raise FormatError(f"{self.id}: a block with row classes needs the streams "
                                  f"row_classes and codes, codes_1 … codes_{len(parts) - 1}")
            if row_class.size and int(row_class.max()) >= alphabets["row_classes"]:
                raise FormatError(f"{self.id}: row class outside its alphabet")
            codes = rowclasses.merge(parts, row_class, side["class_length"], count)  # type: ignore[arg-type]
        else:
            codes = streams.get("codes")
        if codes is None or codes.shape[0] != count:
            raise FormatError(f"{self.id}: expected {count} codes")
        if codes.size and int(codes.max()) >= alphabets["codes"]:
            raise FormatError(f"{self.id}: code outside its alphabet")
        return float(step), codes


def narrowed(table: np.ndarray, dtype: np.dtype) -> np.ndarray | None:
    """A table of reconstruction values cast to the tensor's float ``dtype`` as the decoder
    casts decoded values (:func:`rftpack.dtypes.cast_float_into`), or None when one of them
    is not finite (the decoder's general path reports it, if a code uses it).

    >>> narrowed(np.array([0.5, 1e300]), np.dtype(np.float32)).tolist()
    [0.5, 3.4028234663852886e+38]
    """
    if not np.isfinite(table).all():
        return None
    narrow = np.empty(table.shape, dtype)
    cast_float_into(table, narrow)
    return narrow


def _class_stream(c: int) -> str:
    """The stream of row class ``c``'s codes: ``codes`` for class 0, else ``codes_<c>``."""
    return "codes" if c == 0 else f"codes_{c}"


def _integer_in(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


@dataclass(frozen=True)
class ScalarQuantizer(SteppedQuantizer):
    """Uniform scalar quantizer (absolute or RMS-relative step) with centroid reconstruction.

    Example:
        >>> q = ScalarQuantizer(step=0.1)
        >>> streams, side = q.quantize(np.array([0.0, 0.26, -0.31]), [])
        >>> np.round(q.dequantize({"codes": streams["codes"].symbols}, side, 3), 2).tolist()
        [0.0, 0.28, -0.28]
    """

    id: ClassVar[str] = "scalar"
    #: 2: row classes
    format_version: ClassVar[int] = 2
    centroid: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.centroid, bool):
            raise StageError("scalar: centroid must be true or false")

    def record_format_version(self) -> int:
        return 2 if self.row_classes > 1 else 1

    def quantize(self, coefficients: np.ndarray, bands: list[tuple[int, int]],
                 rows: RowSteps | None = None) -> tuple[dict[str, Codes], dict[str, Any]]:
        x, row_stream, row_side = self.scaled_input(
            np.real(coefficients).astype(np.float64, copy=False), rows)
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        step = max(self.block_step(x), self.min_step(peak), np.finfo(np.float64).tiny)
        scaled = x / step
        q = np.rint(scaled)
        offsets = [0.0, 0.0]
        if self.centroid and x.size:
            magnitude = np.abs(q)
            distance = np.abs(scaled)  # |q| − |x/Δ|, formed in place
            np.subtract(magnitude, distance, out=distance)
            for i, mask in enumerate((magnitude == 1, magnitude >= 2)):
                count = np.count_nonzero(mask)
                if count:  # (multiplied by the mask: indexing by it copies, ~2x the time)
                    total = float(np.multiply(distance, mask).sum())
                    offsets[i] = float(np.clip(total / count, -0.5, 0.5))
            del magnitude, distance
        del scaled
        symbols = zigzag(q)
        alphabet = int(symbols.max()) + 1 if symbols.size else 1
        code_streams, class_side = self.coded_streams(x, symbols, alphabet)
        side = {"step": step, "offsets": offsets, "alphabet": alphabet, **row_side, **class_side}
        return {**code_streams, **row_stream}, side

    def _table(self, side: dict[str, Any], step: float) -> np.ndarray:
        """Every symbol's one reconstruction value: decoding is a single table lookup."""
        offsets = side.get("offsets")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(v, int | float) and abs(v) <= 0.5 for v in offsets)):
            raise FormatError("scalar: side.offsets must be two numbers in [-0.5, 0.5]")
        q = unzigzag(np.arange(self.stream_alphabets(side)["codes"]))
        magnitude = np.abs(q).astype(np.float64)
        shift = np.where(magnitude == 1, offsets[0], np.where(magnitude >= 2, offsets[1], 0.0))
        return np.sign(q) * (magnitude - shift) * step

    def dequantize(self, streams: dict[str, np.ndarray], side: dict[str, Any], count: int,
                   refine: Any = None) -> np.ndarray:
        step, codes = self.checked_codes(streams, side, count)
        table = self._table(side, step)
        multipliers = self.row_multipliers(streams, side, count)
        return table[codes] if multipliers is None else table[codes] * multipliers

    def dequantize_into(self, streams: dict[str, np.ndarray], side: dict[str, Any], count: int,
                        out: np.ndarray) -> bool:
        if "row_length" in side:  # row steps: the float64 values are scaled first
            return False
        step, codes = self.checked_codes(streams, side, count)
        narrow = narrowed(self._table(side, step), out.dtype)
        if narrow is None:
            return False
        narrow.take(codes, out=out, mode="clip")  # (codes were checked against the alphabet)
        return True
