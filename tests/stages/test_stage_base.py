"""Stage configs: to_config/from_config round trip for every built-in stage, and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rftpack.errors import StageError
from rftpack.plugins import Registry, new_manager
from rftpack.stages.base import KINDS, Stage, symbol_dtype
from rftpack.stages.dct import RowDCT
from rftpack.stages.dq import DependentQuantizer
from rftpack.stages.floatplanes import FloatPlanesCoder
from rftpack.stages.identity import Identity
from rftpack.stages.mlp import MLPPredictor
from rftpack.stages.polar import PolarQuantizer
from rftpack.stages.rans import RansCoder
from rftpack.stages.raw import RawCoder
from rftpack.stages.rft import RFT
from rftpack.stages.scalar import ScalarQuantizer
from rftpack.stages.zstd import ZstdCoder

INSTANCES = [
    RFT(), RFT(beta=0.25, sigma=3.0), Identity(), RowDCT(), RowDCT(row_length=384),
    PolarQuantizer(), PolarQuantizer(amp_bits=8, phase_bits=7, prune_threshold=0.01,
                                     prune_mode="absolute"),
    ScalarQuantizer(), ScalarQuantizer(step=0.01, centroid=False),
    DependentQuantizer(), DependentQuantizer(step=0.02, chain=16, lam=0.5),
    RansCoder(), ZstdCoder(), ZstdCoder(level=19), RawCoder(), FloatPlanesCoder(),
    MLPPredictor(), MLPPredictor(hidden_dim=8, steps=10, learning_rate=0.01, seed=3),
]


def builtin_classes() -> list[type[Stage]]:
    registry = Registry(new_manager(entry_points=False))
    return [entry.cls for entry in registry.entries.values()]


def test_every_builtin_stage_is_covered() -> None:
    covered = {type(s) for s in INSTANCES}
    assert set(builtin_classes()) <= covered


@pytest.mark.parametrize("stage", INSTANCES, ids=lambda s: f"{s.id}:{s}")
def test_config_round_trip(stage: Stage) -> None:
    config = stage.to_config()
    assert config["name"] == stage.id
    assert set(config) == {"name", "configuration"}
    # JSON values only: the config survives a JSON round trip unchanged.
    assert json.loads(json.dumps(config)) == config
    rebuilt = type(stage).from_config(json.loads(json.dumps(config)))
    assert rebuilt == stage
    assert type(rebuilt) is type(stage)


@pytest.mark.parametrize("cls", sorted({type(s) for s in INSTANCES}, key=lambda c: c.id))
def test_defaults_from_empty_configuration(cls: type[Stage]) -> None:
    assert cls.from_config({"name": cls.id, "configuration": {}}) == cls()
    assert cls.from_config({"name": cls.id}) == cls()


@pytest.mark.parametrize("cls", sorted({type(s) for s in INSTANCES}, key=lambda c: c.id))
def test_unknown_parameter_named(cls: type[Stage]) -> None:
    with pytest.raises(StageError) as info:
        cls.from_config({"name": cls.id, "configuration": {"no_such_knob": 1}})
    assert "no_such_knob" in str(info.value)


@pytest.mark.parametrize("cls", sorted({type(s) for s in INSTANCES}, key=lambda c: c.id))
def test_wrong_name_rejected(cls: type[Stage]) -> None:
    with pytest.raises(StageError) as info:
        cls.from_config({"name": "something-else", "configuration": {}})
    assert "something-else" in str(info.value)


def test_bad_value_is_stage_error() -> None:
    with pytest.raises(StageError):
        PolarQuantizer.from_config({"name": "polar", "configuration": {"amp_bits": 40}})
    with pytest.raises(StageError):
        ZstdCoder.from_config({"name": "zstd", "configuration": {"level": 99}})


def test_stages_are_frozen_and_have_kinds() -> None:
    for stage in INSTANCES:
        assert stage.kind in KINDS
        assert stage.describe()
        with pytest.raises(AttributeError):
            stage.some_field = 1  # type: ignore[attr-defined]


def test_symbol_dtype() -> None:
    assert symbol_dtype(1) == np.uint8
    assert symbol_dtype(256) == np.uint8
    assert symbol_dtype(257) == np.uint16
    assert symbol_dtype(65536) == np.uint16
    assert symbol_dtype(65537) == np.uint32
    assert symbol_dtype(2**32 + 1) == np.uint64
