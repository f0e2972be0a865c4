"""Named presets of stage configs. A profile is data: stage ids and parameters.

Example:
    >>> from rftpack.profiles import PROFILES
    >>> sorted(PROFILES)
    ['dq', 'hybrid', 'lossless', 'scalar']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rftpack.codec import ExactPipeline, LossyPipeline
from rftpack.errors import StageError
from rftpack.plugins import get_stage
from rftpack.stages.base import Coder, Quantizer, Transform


@dataclass(frozen=True)
class Profile:
    """Stage configs for the lossy path, the exact path, and the residual predictor."""

    name: str
    description: str
    transform: dict[str, Any] | None
    quantizer: dict[str, Any] | None
    coder: dict[str, Any] | None
    exact_coder: dict[str, Any] = field(default_factory=lambda: {"name": "zstd",
                                                                 "configuration": {"level": 3}})
    predictor: dict[str, Any] | None = None
    block_size: int = 1 << 20
    lossy: bool = True


# The exact path's coder of the rate–distortion profiles: bit-exact floats as Huffman-coded
# byte planes (MiniLM's biases and norms: 27.4 bits per value, 14.9 rounded to 10 mantissa
# bits; byte-shuffled zstd: 29.2 and 18.0).
def _floatplanes() -> dict[str, Any]:
    return {"name": "floatplanes", "configuration": {}}

PROFILES: dict[str, Profile] = {
    "hybrid": Profile(
        name="hybrid",
        description="the spec's hybrid RFT codec: Φ-phase FFT, polar 6/5-bit codes, rANS, "
                    "learned residual predictor (kept only where it helps)",
        transform={"name": "rft", "configuration": {}},
        quantizer={"name": "polar", "configuration": {"amp_bits": 6, "phase_bits": 5,
                                                       "prune_threshold": 0.05,
                                                       "prune_mode": "relative"}},
        coder={"name": "rans", "configuration": {}},
        predictor={"name": "mlp", "configuration": {}},
    ),
    "scalar": Profile(
        name="scalar",
        description="uniform scalar quantization of the weights themselves (no transform), "
                    "centroid reconstruction, rANS with a table per class of rows of like "
                    "scale; one step for the whole model, set by --bpw / --snr-db / "
                    "--max-rel-error, else rel_step 0.1",
        transform={"name": "identity", "configuration": {}},
        quantizer={"name": "scalar", "configuration": {"rel_step": 0.1, "row_classes": 4}},
        coder={"name": "rans", "configuration": {}},
        exact_coder=_floatplanes(),
    ),
    "dq": Profile(
        name="dq",
        description="dependent (trellis-coded) scalar quantization as in NNCodec, with a "
                    "256-state trellis (NNCodec: 8): 1.2–1.3 dB over 'scalar' at equal rate "
                    "on MiniLM; encodes ~1.7× slower than it (searching in rftpack's C "
                    "extension or numba; ~25× slower again in numpy, with neither); --set "
                    "states=64 encodes ~1.2× faster, 0.1 dB worse",
        transform={"name": "identity", "configuration": {}},
        quantizer={"name": "dq", "configuration": {"rel_step": 0.06, "states": 256,
                                                   "chain": 8192, "row_classes": 4}},
        coder={"name": "rans", "configuration": {}},
        exact_coder=_floatplanes(),
    ),
    "lossless": Profile(
        name="lossless",
        description="every tensor bit-exact: floats as exponent-aligned Huffman-coded byte "
                    "planes (floatplanes), other dtypes as byte-shuffled zstd",
        transform=None, quantizer=None, coder=None, lossy=False,
        exact_coder=_floatplanes(),
    ),
}


def get_profile(name: str) -> Profile:
    """A profile by name; unknown names list the available ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise StageError(f"unknown profile {name!r}; available: {', '.join(sorted(PROFILES))}") \
            from None


def build_stage(kind: str, config: dict[str, Any]):
    """Instantiate a stage from ``{"name", "configuration"}`` through the plugin registry."""
    cls = get_stage(kind, config["name"])
    return cls.from_config({"name": config["name"],
                            "configuration": dict(config.get("configuration") or {})})


def hybrid_pipeline(**quantizer_overrides: Any) -> LossyPipeline:
    """The default lossy pipeline of the ``hybrid`` profile (overrides go to the quantizer).

    >>> hybrid_pipeline(amp_bits=5).quantizer.amp_bits
    5
    """
    profile = PROFILES["hybrid"]
    qconf = {**profile.quantizer["configuration"], **quantizer_overrides}  # type: ignore[index]
    transform = build_stage("transform", profile.transform)  # type: ignore[arg-type]
    quantizer = build_stage("quantizer", {"name": "polar", "configuration": qconf})
    coder = build_stage("coder", profile.coder)  # type: ignore[arg-type]
    assert isinstance(transform, Transform) and isinstance(quantizer, Quantizer)
    assert isinstance(coder, Coder)
    return LossyPipeline(transform, quantizer, coder, block_size=profile.block_size)


def exact_pipeline(coder: dict[str, Any] | None = None) -> ExactPipeline:
    """Bit-exact pipeline (zstd level 3, byte shuffle) unless another coder is given.

    >>> exact_pipeline().coder.id
    'zstd'
    """
    config = coder or PROFILES["hybrid"].exact_coder
    stage = build_stage("coder", config)
    assert isinstance(stage, Coder)
    return ExactPipeline(stage)
