"""Small float tensors under rate control: rounded near-losslessly (rftpack.rounding), by a
rule that follows the target, recorded in the archive, and kept bit-exact when asked or
when there is no rate target."""

from __future__ import annotations

import math
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

import rftpack
from rftpack.errors import StageError
from rftpack.fidelity import compare_checkpoints
from rftpack.rounding import BUDGET_SHARE, round_mantissa

BIAS, NORM, HALF, IDS = "layer.bias", "norm.weight", "half.bias", "ids"
SMALL = (BIAS, NORM)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(21)
    tensors = {
        "layer.weight": (rng.standard_normal((256, 256)) * 0.05).astype(np.float32),
        "other.weight": (rng.laplace(size=(128, 256)) * 0.03).astype(np.float32),
        BIAS: (rng.standard_normal(256) * 0.02).astype(np.float32),
        NORM: (1 + rng.standard_normal(256) * 0.1).astype(np.float32),
        HALF: (rng.standard_normal(64) * 0.1).astype(np.float16),
        IDS: np.arange(32, dtype=np.int64),
    }
    path = tmp_path_factory.mktemp("near") / "m.safetensors"
    save_file(tensors, str(path))
    return path, tensors


def compressed(model, tmp_path: Path, name: str = "a.rftp", **settings):
    source, _ = model
    settings.setdefault("profile", "scalar")
    result = rftpack.compress(source, tmp_path / name, **settings)
    with rftpack.open(result.path) as archive:
        decoded = {n: archive.get_tensor(n) for n in archive.keys()}
        entries = {n: archive.entry(n) for n in archive.keys()}
    return result, decoded, entries


def test_a_rate_target_rounds_small_float32_tensors(model, tmp_path: Path) -> None:
    _, tensors = model
    result, decoded, entries = compressed(model, tmp_path, target_bpw=4.0)
    bits = result.manifest["codec"]["rate_control"]["mantissa_bits"]
    assert bits == 10
    for name in SMALL:
        assert entries[name]["mode"] == "exact" and entries[name]["mantissa_bits"] == bits
        assert np.array_equal(decoded[name], round_mantissa(tensors[name], bits))
        assert not np.array_equal(decoded[name], tensors[name])
    for name in (HALF, IDS):  # float16 has no more bits to drop; integers are exact
        assert "mantissa_bits" not in entries[name]
        assert np.array_equal(decoded[name], tensors[name])
    metrics = result.metrics
    assert metrics["rounded_tensors"] == 2 and metrics["exact_tensors"] == 2
    assert metrics["rounded_snr_db"] > 60


def test_rounding_buys_the_lossy_tensors_bits(model, tmp_path: Path) -> None:
    rounded, _, _ = compressed(model, tmp_path, "r.rftp", target_bpw=3.0)
    exact, decoded, entries = compressed(model, tmp_path, "e.rftp", target_bpw=3.0,
                                         exact_small=True)
    _, tensors = model
    for name in SMALL:
        assert "mantissa_bits" not in entries[name]
        assert np.array_equal(decoded[name], tensors[name])
    assert exact.metrics["rounded_tensors"] == 0
    assert exact.manifest["codec"]["rate_control"]["mantissa_bits"] is None
    for result in (rounded, exact):
        assert 8 * result.archive_bytes / result.metrics["weights"] <= 3.0
    # the same size, spent more on the weights
    assert rounded.metrics["weight_snr_db"] > exact.metrics["weight_snr_db"]
    assert rounded.metrics["lossy_bits_per_weight"] > exact.metrics["lossy_bits_per_weight"]


def test_without_a_rate_target_small_tensors_stay_exact(model, tmp_path: Path) -> None:
    _, tensors = model
    for settings in ({"profile": "scalar"}, {"profile": "lossless"}, {"profile": "hybrid"}):
        result, decoded, entries = compressed(model, tmp_path, f"{settings['profile']}.rftp",
                                              **settings)
        for name in SMALL:
            assert "mantissa_bits" not in entries[name]
            assert np.array_equal(decoded[name], tensors[name])
        assert result.metrics["rounded_tensors"] == 0


def test_an_snr_target_spends_at_most_a_percent_of_its_error_on_rounding(
        model, tmp_path: Path) -> None:
    source, tensors = model
    target = 70.0
    result, decoded, _ = compressed(model, tmp_path, target_snr_db=target)
    bits = result.manifest["codec"]["rate_control"]["mantissa_bits"]
    assert bits is not None and bits > 10  # 10 bits would spend too much of this budget
    signal = sum(float(np.sum(np.asarray(t, np.float64) ** 2)) for t in tensors.values()
                 if t.dtype.kind == "f")
    budget = signal / 10 ** (target / 10)
    spent = sum(float(np.sum((decoded[n].astype(np.float64) - tensors[n]) ** 2)) for n in SMALL)
    assert 0 < spent <= BUDGET_SHARE * budget
    restored = tmp_path / "r.safetensors"
    rftpack.extract(result.path, restored)
    assert compare_checkpoints(source, restored).weight_snr_db >= target - 0.1


def test_a_very_high_rate_asks_for_more_bits(model, tmp_path: Path) -> None:
    low, _, _ = compressed(model, tmp_path, "low.rftp", target_bpw=4.0)
    high, _, _ = compressed(model, tmp_path, "high.rftp", target_bpw=20.0)
    assert low.manifest["codec"]["rate_control"]["mantissa_bits"] == 10
    assert high.manifest["codec"]["rate_control"]["mantissa_bits"] > 10


@pytest.mark.parametrize("bound", [1e-3, 1e-4, 2e-5])
def test_a_relative_error_bound_holds_for_rounded_tensors(model, tmp_path: Path,
                                                          bound: float) -> None:
    _, tensors = model
    result, decoded, entries = compressed(model, tmp_path, max_rel_error=bound)
    bits = result.manifest["codec"]["rate_control"]["mantissa_bits"]
    assert bits == max(10, math.ceil(-math.log2(bound)) - 1)
    for name in (*SMALL, "layer.weight", "other.weight"):
        error = np.max(np.abs(decoded[name].astype(np.float64) - tensors[name]))
        assert error <= bound * np.max(np.abs(tensors[name]))
    for name in SMALL:
        assert entries[name]["mantissa_bits"] == bits


def test_a_bound_finer_than_the_codes_can_keep_is_refused(model, tmp_path: Path) -> None:
    """The scalar codes span ±32000 steps: below ~1/64000 of a tensor's peak the bound could
    not hold on the lossy path, so compress says so instead of breaking it."""
    with pytest.raises(StageError, match="needs at least 1.57e-05"):
        compressed(model, tmp_path, max_rel_error=1e-9)
    assert not (tmp_path / "a.rftp").exists()


def test_float64_and_subnormal_tensors(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    tensors = {"w": (rng.standard_normal((128, 128)) * 0.05).astype(np.float32),
               "b64": rng.standard_normal(100),
               "tiny": (rng.standard_normal(50) * 1e-40).astype(np.float32),  # subnormal
               "bf": rng.standard_normal(50).astype(ml_dtypes.bfloat16)}
    source = tmp_path / "m.safetensors"
    save_file(tensors, str(source))
    result = rftpack.compress(source, tmp_path / "a.rftp", profile="scalar",
                              max_rel_error=1e-3)
    with rftpack.open(result.path) as archive:
        b64 = archive.get_tensor("b64")
        assert archive.entry("b64")["mantissa_bits"] == 10 and b64.dtype == np.float64
        assert np.array_equal(b64, round_mantissa(tensors["b64"], 10))
        # subnormals lose relative precision when rounded: the bound would break, so the
        # tensor stays exact
        assert "mantissa_bits" not in archive.entry("tiny")
        assert np.array_equal(archive.get_tensor("tiny"), tensors["tiny"])
        assert np.array_equal(archive.get_tensor("bf"), tensors["bf"])


@pytest.mark.parametrize("bpw", [3.0, 20.0])  # the first pass's width (reused), a wider one
def test_reusing_the_first_pass_encodings_changes_no_byte(model, tmp_path: Path, monkeypatch,
                                                          bpw: float) -> None:
    from rftpack import api

    kept, _, entries = compressed(model, tmp_path, "kept.rftp", target_bpw=bpw)
    width = kept.manifest["codec"]["rate_control"]["mantissa_bits"]
    assert (width == 10) == (bpw < 10)
    assert all(entries[n]["mantissa_bits"] == width for n in SMALL)
    monkeypatch.setattr(api, "SIZED_KEPT_BYTES", -1)  # the second pass encodes them again
    again, _, _ = compressed(model, tmp_path, "again.rftp", target_bpw=bpw)
    assert Path(kept.path).read_bytes() == Path(again.path).read_bytes()
