"""tools/rft_hybrid_compress.py and tools/rft_hybrid_decode.py: the spec's flags, the spec's
layout (base64 inside the JSON), files that validate against formats/, and the reference's
version-1 fixture through `rftpack extract`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rftpack.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT.parent / "shared" / "fixtures"
SCHEMAS = ROOT / "formats"


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "tools" / name), *args],
                          capture_output=True, text=True, timeout=300)


def schema(kind: str) -> dict:
    return json.loads((SCHEMAS / f"{kind}.schema.json").read_text())


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("m") / "model.safetensors"
    save_file({"layer0.weight": (rng.normal(size=(256, 128)) * 0.05).astype(np.float32),
               "head/proj.weight": (rng.normal(size=(64, 64)) * 0.05).astype(np.float32),
               "layer0.bias": np.zeros(256, np.float32),
               "ids": np.arange(10, dtype=np.int64)}, str(path))
    return path


def test_spec_flags_and_layout(small_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "encoded" / "my_model_hybrid"
    done = run_tool("rft_hybrid_compress.py", "--model-id", str(small_model), "--out", str(out),
                    "--prune-threshold", "1e-4", "--quant-amp-bits", "6",
                    "--quant-phase-bits", "5", "--train-residual", "--residual-hidden", "16",
                    "--residual-epochs", "2")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest_hybrid.json").read_text())
    jsonschema.validate(manifest, schema("manifest"))
    assert manifest["codec"]["quant_amp_bits"] == 6
    assert manifest["codec"]["prune_mode"] == "absolute"
    files = {e["tensor_name"]: e["file"] for e in manifest["tensors"]}
    assert files["head/proj.weight"] == "tensors/head__proj_weight.json"  # the spec's naming
    assert not list(out.rglob("*.bin"))  # base64 inside the JSON, nothing beside it
    for member in files.values():
        container = json.loads((out / member).read_text())
        jsonschema.validate(container, schema("tensor"))
        assert container["payload"]["encoding"] == "base64"
    predictor = out / "predictors" / "global_residual_predictor.json"
    if manifest["predictor"]:
        jsonschema.validate(json.loads(predictor.read_text()), schema("predictor"))
    else:  # not stored because it did not help: the measured gain is still recorded
        assert not predictor.exists()
        assert manifest["metrics"]["predictor"]["trained"] is True

    restored = tmp_path / "restored_model.bin"
    done = run_tool("rft_hybrid_decode.py", "--input-dir", str(out), "--output-file",
                    str(restored))
    assert done.returncode == 0, done.stderr
    torch = pytest.importorskip("torch")
    state = torch.load(restored, weights_only=True)
    assert set(state) == set(files)
    assert torch.equal(state["ids"], torch.arange(10))


def test_decode_tool_no_predictor_flag(tmp_path: Path) -> None:
    out = tmp_path / "restored.safetensors"
    done = run_tool("rft_hybrid_decode.py", "--input-dir", str(FIXTURES / "reference_small"),
                    "--output-file", str(out), "--no-predictor")
    assert done.returncode == 0, done.stderr
    expected = np.load(FIXTURES / "reference_small_expected.npz")
    for name, array in load_file(str(out)).items():
        np.testing.assert_allclose(array, expected[f"coarse/{name}"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("use_predictor", [False, True])
def test_extract_reference_fixture(tmp_path: Path, use_predictor: bool) -> None:
    out = tmp_path / "ref.safetensors"
    args = ["extract", str(FIXTURES / "reference_small"), "-o", str(out), "-q"]
    assert main(args + ([] if use_predictor else ["--no-predictor"])) == 0
    expected = np.load(FIXTURES / "reference_small_expected.npz")
    key = "predicted" if use_predictor else "coarse"
    restored = load_file(str(out))
    assert set(restored) == {"layer0.weight", "layer0.bias", "head/proj.weight"}
    for name, array in restored.items():
        want = expected[f"{key}/{name}"]
        assert array.shape == want.shape
        rel = np.max(np.abs(array - want)) / np.max(np.abs(want))
        assert rel <= 1e-5, (name, rel)


def test_reference_predictor_tampering_is_detected(tmp_path: Path) -> None:
    copy = tmp_path / "reference_small"
    shutil.copytree(FIXTURES / "reference_small", copy)
    path = copy / "predictors" / "global_residual_predictor.json"
    obj = json.loads(path.read_text())
    obj["training"]["loss"] = obj["training"]["loss"] + 1e-6
    path.write_text(json.dumps(obj))
    out = tmp_path / "x.safetensors"
    assert main(["extract", str(copy), "-o", str(out), "-q"]) == 1
    assert not out.exists()
    # without the predictor the tensors themselves still decode
    assert main(["extract", str(copy), "-o", str(out), "-q", "--no-predictor"]) == 0
