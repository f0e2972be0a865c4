"""Importance-weighted rate control: CompressOptions.importance gives tensor i the step
Δ / √wᵢ at the same total size, and is refused where it cannot act."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import rftpack
from rftpack.api import CompressOptions
from rftpack.errors import InputError, StageError
from rftpack.fidelity import compare_checkpoints

HEAVY = "model.layer1.weight"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(11)
    tensors = {f"model.layer{i}.weight": (rng.standard_normal((128, 64)) * 0.05)
               .astype(np.float32) for i in range(4)}
    tensors["model.layer0.bias"] = (rng.standard_normal(128) * 0.01).astype(np.float32)
    path = tmp_path_factory.mktemp("imp-rc") / "m.safetensors"
    save_file(tensors, str(path))
    return path


def relative_errors(source: Path, archive: Path) -> dict[str, float]:
    restored = archive.with_suffix(".safetensors")
    rftpack.extract(archive, restored, overwrite=True)
    a, b = load_file(str(source)), load_file(str(restored))
    return {n: float(np.sum((a[n] - b[n]) ** 2) / np.sum(a[n].astype(np.float64) ** 2))
            for n in a if n.endswith(".weight")}


@pytest.fixture(scope="module")
def plain_and_weighted(model: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("imp-rc-out")
    results = {}
    for label, importance in (("plain", None), ("weighted", {"layer1.weight": 100.0})):
        archive = out / f"{label}.rftp"
        result = rftpack.compress(model, archive, profile="scalar", target_bpw=6.0,
                                  importance=importance)
        results[label] = result, relative_errors(model, archive)
    return results


def test_the_important_tensor_gets_a_ten_times_finer_step(plain_and_weighted) -> None:
    (_, plain), (_, weighted) = plain_and_weighted["plain"], plain_and_weighted["weighted"]
    # Much smaller error than without importance weights ...
    assert weighted[HEAVY] < 0.2 * plain[HEAVY]
    # ... paid for by the others, whose error grows ...
    for name in plain:
        if name != HEAVY:
            assert weighted[name] > 1.5 * plain[name], name
    # ... and against the others in the same archive: step / √100 is 20 dB less error.
    others = np.mean([weighted[n] for n in weighted if n != HEAVY])
    gap_db = 10 * math.log10(others / weighted[HEAVY])
    assert gap_db == pytest.approx(20.0, abs=2.0)


@pytest.mark.parametrize("label", ["plain", "weighted"])
def test_the_bpw_target_still_holds(plain_and_weighted, label: str) -> None:
    result, _ = plain_and_weighted[label]
    achieved = 8 * result.archive_bytes / result.metrics["weights"]
    assert achieved <= 6.0 * 1.02, achieved
    assert achieved >= 6.0 * 0.9, achieved  # and the budget is used, not wasted


def test_manifest_says_importance_weighted(plain_and_weighted) -> None:
    for label, expected in (("plain", False), ("weighted", True)):
        result, _ = plain_and_weighted[label]
        assert result.manifest["codec"]["rate_control"]["importance_weighted"] is expected
        with rftpack.open(result.path) as archive:  # the stored manifest, too
            stored = archive.manifest["codec"]["rate_control"]
        assert stored["importance_weighted"] is expected, label


def test_snr_target_is_still_met_with_importance(model: Path, tmp_path: Path) -> None:
    archive = tmp_path / "snr.rftp"
    rftpack.compress(model, archive, profile="scalar", target_snr_db=30.0,
                     importance={"layer1.weight": 100.0, "layer2.weight": 0.01})
    restored = tmp_path / "snr.safetensors"
    rftpack.extract(archive, restored)
    assert compare_checkpoints(model, restored).weight_snr_db == pytest.approx(30.0, abs=0.5)
    errors = relative_errors(model, archive)
    assert errors["model.layer1.weight"] < errors["model.layer0.weight"] \
        < errors["model.layer2.weight"]


def test_weight_of_prefers_importance_over_the_embedding_default() -> None:
    options = CompressOptions(importance={"encoder.x.weight": 4.0,
                                          "embeddings.word_embeddings.weight": 2.0})
    assert options.weight_of("bert.encoder.x.weight") == 4.0
    assert options.weight_of("bert.embeddings.word_embeddings.weight") == 2.0
    assert options.weight_of("encoder.y.weight") == 1.0  # not named: plain weight
    plain = CompressOptions()
    assert plain.weight_of("bert.embeddings.word_embeddings.weight") == plain.embedding_weight
    assert CompressOptions(importance={"encoder.x.weight": 4.0}).weight_of(
        "embeddings.word_embeddings.weight") == plain.embedding_weight


def test_importance_needs_a_target(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.rftp"
    with pytest.raises(StageError, match="give a target"):
        rftpack.compress(model, out, profile="scalar", importance={"layer1.weight": 100.0})
    assert not out.exists()


def test_importance_with_max_rel_error_is_refused(model: Path, tmp_path: Path) -> None:
    # max_rel_error bounds every weight's error by the tensor's own peak: importance weights
    # cannot act there, and must not be silently ignored.
    out = tmp_path / "a.rftp"
    with pytest.raises(StageError):
        rftpack.compress(model, out, profile="scalar", max_rel_error=0.01,
                         importance={"layer1.weight": 100.0})
    assert not out.exists()


@pytest.mark.parametrize("importance", [{"decoder.layer1.weight": 100.0},
                                        {"layer1": 100.0},
                                        {"model.layer0.bias": 5.0}])  # exact, not lossy
def test_importance_naming_no_lossy_tensor_is_an_input_error(model: Path, tmp_path: Path,
                                                              importance) -> None:
    out = tmp_path / "a.rftp"
    with pytest.raises(InputError, match="another model") as info:
        rftpack.compress(model, out, profile="scalar", target_bpw=6.0, importance=importance)
    assert next(iter(importance)) in str(info.value)
    assert not out.exists()


@pytest.mark.parametrize("importance", [{}, {"layer1.weight": 0.0},
                                        {"layer1.weight": float("nan")}, ["layer1.weight"]])
def test_invalid_importance_is_an_input_error(model: Path, tmp_path: Path, importance) -> None:
    with pytest.raises(InputError):
        rftpack.compress(model, tmp_path / "a.rftp", profile="scalar", target_bpw=6.0,
                         importance=importance)
