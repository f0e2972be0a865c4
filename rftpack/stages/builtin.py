"""rftpack's own stages, registered through the ``rftpack`` entry-point group like any plugin."""

from __future__ import annotations

from rftpack.hookspecs import hookimpl


@hookimpl
def rftpack_transforms() -> list[type]:
    from rftpack.stages.dct import RowDCT
    from rftpack.stages.identity import Identity
    from rftpack.stages.rft import RFT

    return [RFT, Identity, RowDCT]


@hookimpl
def rftpack_quantizers() -> list[type]:
    from rftpack.stages.dq import DependentQuantizer
    from rftpack.stages.polar import PolarQuantizer
    from rftpack.stages.scalar import ScalarQuantizer

    return [PolarQuantizer, ScalarQuantizer, DependentQuantizer]


@hookimpl
def rftpack_coders() -> list[type]:
    from rftpack.stages.floatplanes import FloatPlanesCoder
    from rftpack.stages.rans import RansCoder
    from rftpack.stages.raw import RawCoder
    from rftpack.stages.zstd import ZstdCoder

    return [RansCoder, ZstdCoder, RawCoder, FloatPlanesCoder]


@hookimpl
def rftpack_predictors() -> list[type]:
    from rftpack.stages.mlp import MLPPredictor

    return [MLPPredictor]
