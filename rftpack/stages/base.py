"""The four stage kinds of the pipeline and what they promise each other.

A stage is a small frozen dataclass. Its fields are its parameters and must hold JSON values
only; ``id`` (a ``ClassVar``) is the single source of truth for its name. Data-dependent
values (scales, histograms, weights) travel in the payload, never in the config.

    transform   float64 vector (n,)        -> coefficients (m,) real or complex, and back
    quantizer   coefficients + bands        -> integer code streams + JSON side info, and back
    coder       integer symbols (alphabet)  -> bytes, and back
    predictor   coarse polar values         -> corrections (trained once per archive)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rftpack.errors import StageError

KINDS = ("transform", "quantizer", "coder", "predictor")


@dataclass(frozen=True)
class Stage:
    """Base of every stage: config round trip and identity.

    Example:
        >>> from rftpack.stages.zstd import ZstdCoder
        >>> ZstdCoder(level=3).to_config()
        {'name': 'zstd', 'configuration': {'level': 3}}
    """

    kind: ClassVar[str] = ""
    id: ClassVar[str] = ""
    #: Bump when the bytes a stage writes change meaning; decoders refuse newer versions.
    format_version: ClassVar[int] = 1

    def to_config(self) -> dict[str, Any]:
        return {"name": self.id, "configuration": dataclasses.asdict(self)}

    def record_format_version(self) -> int:
        """The format version a container records for this stage: the oldest that reads what
        it writes with these parameters (so older readers still open what they can)."""
        return self.format_version

    def for_format_version(self, version: int) -> Stage:
        """The stage that reads what this one wrote at ``version`` (≤ ``format_version``):
        a stage whose bytes changed returns a reader of the older layout."""
        return self

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Stage:
        """Rebuild a stage from ``{"name": id, "configuration": {...}}`` (unknown keys: error)."""
        if config.get("name") != cls.id:
            raise StageError(f"config names stage {config.get('name')!r}, expected {cls.id!r}")
        params = dict(config.get("configuration") or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise StageError(f"stage {cls.id!r}: unknown parameter(s) {unknown}; "
                             f"known: {sorted(known)}")
        try:
            return cls(**params)
        except (TypeError, ValueError) as exc:
            raise StageError(f"stage {cls.id!r}: bad configuration {params}: {exc}") from exc

    @classmethod
    def describe(cls) -> str:
        """First line of the docstring: shown by ``rftpack plugins``."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


@dataclass(frozen=True)
class Transform(Stage):
    """array -> array. ``inverse(forward(x), len(x))`` must give ``x`` back (up to float error)."""

    kind: ClassVar[str] = "transform"

    def coefficient_count(self, n: int) -> int:
        """How many coefficients ``forward`` returns for an input of length ``n``."""
        raise NotImplementedError

    def forward(self, x: np.ndarray) -> np.ndarray:
        """float64 vector of length n -> coefficients (float64 or complex128)."""
        raise NotImplementedError

    def inverse(self, coefficients: np.ndarray, n: int) -> np.ndarray:
        """Coefficients -> float64 vector of length n."""
        raise NotImplementedError


@dataclass(frozen=True)
class Codes:
    """One integer code stream from a quantizer: symbols in ``[0, alphabet)``."""

    symbols: np.ndarray
    alphabet: int


@dataclass(frozen=True)
class PolarView:
    """Coarse polar coefficients exposed to a residual predictor.

    ``index``: positions of the kept coefficients (0..count-1); ``log_amp`` and ``phase`` their
    dequantized values; ``amp_step``/``phase_step`` the quantizer's step sizes (the predictor
    works in step units, so one model serves tensors of any scale).
    """

    index: np.ndarray
    log_amp: np.ndarray
    phase: np.ndarray
    amp_range: tuple[float, float]
    amp_step: float
    phase_step: float
    count: int


@dataclass(frozen=True)
class Quantizer(Stage):
    """coefficients -> named integer code streams + JSON side info, and back."""

    kind: ClassVar[str] = "quantizer"
    #: Quantizers that expose polar values can be refined by a residual predictor.
    polar: ClassVar[bool] = False

    @property
    def refinable(self) -> bool:
        """True when a residual predictor can correct this quantizer's coarse values."""
        return self.polar

    def quantize(self, coefficients: np.ndarray, bands: list[tuple[int, int]]
                 ) -> tuple[dict[str, Codes], dict[str, Any]]:
        raise NotImplementedError

    def dequantize(self, streams: dict[str, np.ndarray], side: dict[str, Any], count: int,
                   refine: Any = None) -> np.ndarray:
        """Rebuild ``count`` coefficients. ``refine(view: PolarView) -> (log_amp, phase)`` may
        correct the coarse values before they are combined (polar quantizers only)."""
        raise NotImplementedError

    def stream_alphabets(self, side: dict[str, Any]) -> dict[str, int]:
        """Alphabet size of each stream, from the config and side info (needed to decode)."""
        raise NotImplementedError

    def dequantize_into(self, streams: dict[str, np.ndarray], side: dict[str, Any], count: int,
                        out: np.ndarray) -> bool:
        """Optional fast path of the decoder, offered where the transform is the identity and
        nothing refines the values: write the ``count`` values that :meth:`dequantize` returns
        straight into ``out`` (the decoded tensor's slice, of its float dtype), cast as the
        decoder casts them (clipped to the dtype's finite range), and return True; or write
        nothing and return False (the default), and the decoder calls :meth:`dequantize`.
        Return True only when every value is finite (the decoder checks the others)."""
        return False


@dataclass(frozen=True)
class Coder(Stage):
    """integer symbols -> bytes, and back. Must be exact."""

    kind: ClassVar[str] = "coder"

    def encode(self, symbols: np.ndarray, alphabet: int) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes | memoryview, count: int, alphabet: int) -> np.ndarray:
        """``count`` symbols from ``data``: bytes, or a read-only memoryview into the payload
        (``bytes(data)`` copies it where a coder needs ``bytes`` itself)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Predictor(Stage):
    """Learns corrections of coarse polar values from samples; one model per archive."""

    kind: ClassVar[str] = "predictor"


def symbol_dtype(alphabet: int) -> np.dtype:
    """Smallest unsigned dtype holding symbols of ``alphabet``.

    >>> symbol_dtype(64)
    dtype('uint8')
    """
    for dt in (np.uint8, np.uint16, np.uint32):
        if alphabet <= np.iinfo(dt).max + 1:
            return np.dtype(dt)
    return np.dtype(np.uint64)
