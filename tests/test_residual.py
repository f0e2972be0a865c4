"""The residual predictor in the pipeline: bounded sampling, honest gains, stored only where it
helps, applied on decode only where the manifest says so, checksum verified."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import rftpack
from rftpack.errors import ChecksumError
from rftpack.profiles import hybrid_pipeline
from rftpack.residual import ResidualSampler, TrainedResidual
from rftpack.stages.mlp import MLP, MLPPredictor


def make_model(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    save_file({f"layer{i}.weight": (rng.normal(size=(128, 96)) * 0.05).astype(np.float32)
               for i in range(3)} | {"ids": np.arange(3)}, str(path))
    return path


def test_sampler_memory_is_bounded_and_holdout_separate() -> None:
    pipeline = hybrid_pipeline()
    sampler = ResidualSampler(band_count=pipeline.max_bands(), capacity=500, holdout=50)
    rng = np.random.default_rng(1)
    for i in range(4):
        x = rng.normal(size=(64, 64)).astype(np.float32)
        rftpack.codec.encode_lossy(f"t{i}", x, pipeline, sampler)
    assert sampler.filled == 500 and sampler.X.shape[0] == 500
    assert sampler.seen > 500  # more samples were offered than kept
    assert set(sampler.holdouts) == {"t0", "t1", "t2", "t3"}
    assert all(h.taken == 50 for h in sampler.holdouts.values())
    assert np.isfinite(sampler.X).all() and np.isfinite(sampler.Y).all()
    # targets are in quantizer step units: the coarse error is at most half a step
    assert np.abs(sampler.Y).max() <= 0.5 + 1e-6


def test_predictor_gain_is_measured_and_useless_predictor_not_stored(tmp_path: Path) -> None:
    source = make_model(tmp_path / "m.safetensors")
    result = rftpack.compress(source, tmp_path / "a.rftp")
    record = result.metrics["predictor"]
    assert record["trained"] is True
    assert isinstance(record["holdout_gain_db"], float)
    if record["tensors_applied"] == 0:
        assert result.manifest["predictor"] is None
        assert not any(e["predictor"] for e in result.manifest["tensors"])
    gains = [e.get("predictor_gain_db") for e in result.manifest["tensors"]
             if e["mode"] == "hybrid"]
    assert all(isinstance(g, float) for g in gains)


@pytest.fixture
def forced_predictor(monkeypatch: pytest.MonkeyPatch):
    """A predictor that always 'helps' and predicts something non-zero."""

    def fit(self, X, Y):
        mlp = MLP.init(X.shape[1], 8, 2, 2, seed=5)
        return mlp, {"gain_db": 0.5, "samples": int(X.shape[0]), "steps": 1}

    monkeypatch.setattr(MLPPredictor, "fit", fit)
    monkeypatch.setattr(TrainedResidual, "helps", lambda self, name: name != "layer2.weight")


def test_stored_predictor_is_applied_where_the_manifest_says(tmp_path: Path,
                                                             forced_predictor) -> None:
    source = make_model(tmp_path / "m.safetensors")
    archive = tmp_path / "a"
    result = rftpack.compress(source, archive, layout="directory")
    manifest = result.manifest
    assert manifest["predictor"] == "predictors/global_residual_predictor.json"
    flags = {e["tensor_name"]: e["predictor"] for e in manifest["tensors"]}
    assert flags == {"layer0.weight": True, "layer1.weight": True, "layer2.weight": False,
                     "ids": False}
    with rftpack.open(archive) as reader:
        with_p = reader.get_tensor("layer0.weight")
        without = reader.get_tensor("layer0.weight", use_predictor=False)
        assert not np.array_equal(with_p, without)
        np.testing.assert_array_equal(reader.get_tensor("layer2.weight"),
                                      reader.get_tensor("layer2.weight", use_predictor=False))
    # corrections are clipped to one quantizer step: the result stays close
    assert np.max(np.abs(with_p - without)) < 0.5 * np.max(np.abs(without))

    predictor = archive / manifest["predictor"]
    obj = json.loads(predictor.read_text())
    assert obj["feature_space"] == "step_units"
    obj["state"]["b0"]["data"] = obj["state"]["b0"]["data"][::-1]
    predictor.write_text(json.dumps(obj))
    with rftpack.open(archive) as reader, pytest.raises(ChecksumError):
        reader.get_tensor("layer0.weight")
