"""Archives written by rftpack.compress in every form the format allows, built once per session.

Shared by the schema tests and the independent reader that checks formats/FORMAT.md.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

import rftpack


def sample_state(seed: int = 0) -> dict[str, np.ndarray]:
    """Tensors that reach every container feature: lossy and exact, all dtype families,
    non-finite values, all-zero and empty tensors, names that need a hashed file stem."""
    rng = np.random.default_rng(seed)
    nan_w = rng.normal(size=(40, 40)).astype(np.float32)
    nan_w[0, 3], nan_w[5, 7], nan_w[39, 39] = np.nan, np.inf, -np.inf
    return {
        "enc.layer.0.weight": rng.normal(size=(64, 48)).astype(np.float32),
        # rows of unequal scale: scalar and dq code them in row classes (§8.5)
        "enc.layer.1.weight": (rng.normal(size=(256, 48)) * np.geomspace(0.05, 5.0, 256)[:, None]
                               ).astype(np.float32),
        "enc/layer.0.bias": rng.normal(size=48).astype(np.float32),
        "emb.weight": rng.normal(size=(40, 40)).astype(ml_dtypes.bfloat16),
        "half": rng.normal(size=(33, 40)).astype(np.float16),
        "f64": rng.normal(size=(32, 40)),
        "nan_w": nan_w,
        "zeros": np.zeros((32, 32), np.float32),
        "ids": np.arange(7, dtype=np.int64),
        "mask": rng.random((3, 5)) > 0.5,
        "u8": np.arange(10, dtype=np.uint8),
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((0, 4), np.float32),
        "a.b": np.array([1, 2, 3], np.int32),
        "a_b": np.array([4, 5, 6], np.int32),
        "weird name/\u00e4": np.array([7, 8], np.int16),
        # neighbouring rows alike (a position table): the scalar and dq variants ask for the
        # dct (§8.2.1)
        "pos.weight": (np.sin(np.linspace(0, 3, 96)[:, None] * np.linspace(1, 4, 40)[None, :])
                       + 0.01 * rng.normal(size=(96, 40))).astype(np.float32),
    }


def predictor_state(seed: int = 1) -> dict[str, np.ndarray]:
    """Tensors on which a 2-bit amplitude grid leaves a predictable residual: the predictor
    is kept and stored."""
    rng = np.random.default_rng(seed)
    return {
        "cum": np.cumsum(rng.normal(size=(128, 256)), axis=1).astype(np.float32),
        "lap": rng.laplace(size=(128, 256)).astype(np.float32),
        "small": rng.normal(size=(8,)).astype(np.float32),
    }


#: name -> (model, compress settings). Together: zip & directory, binary & base64, lossy &
#: exact, every built-in transform and coder, pruning on/off/all, several blocks, predictor.
SMALL_MLP = {"name": "mlp", "configuration": {"hidden_dim": 8, "steps": 300}}
VARIANTS: dict[str, tuple[str, dict]] = {
    "zip-binary": ("sample", {"layout": "zip", "predictor": SMALL_MLP}),
    "dir-binary": ("sample", {"layout": "directory", "predictor": False}),
    "zip-base64": ("sample", {"layout": "zip", "payload": "base64", "predictor": False}),
    "dir-base64": ("sample", {"layout": "directory", "payload": "base64", "predictor": False}),
    "lossless": ("sample", {"layout": "directory", "profile": "lossless"}),
    "raw-blocks": ("sample", {
        "layout": "zip", "payload": "base64", "block_size": 1000, "lossy_1d": True,
        "min_lossy_numel": 16, "predictor": False,
        "coder": {"name": "raw", "configuration": {}},
        "exact_coder": {"name": "rans", "configuration": {}},
        "quantizer_overrides": {"prune_mode": "absolute", "prune_threshold": 0.0},
    }),
    "identity-zstd": ("sample", {
        "layout": "directory",
        "transform": {"name": "identity", "configuration": {}},
        "coder": {"name": "zstd", "configuration": {"level": 1}},
        "exact_coder": {"name": "raw", "configuration": {}},
        "quantizer_overrides": {"prune_mode": "absolute", "prune_threshold": 1e9},
    }),
    "scalar": ("sample", {"layout": "zip", "profile": "scalar", "target_snr_db": 30.0,
                          "row_dct": "auto"}),
    "scalar-rows": ("sample", {
        "layout": "directory", "profile": "scalar", "target_snr_db": 30.0,
        "row_importance": {"enc.layer.0.weight": np.geomspace(0.1, 30.0, 64)},
    }),
    "dq": ("sample", {"layout": "zip", "profile": "dq", "target_snr_db": 30.0,
                      "row_dct": "auto"}),
    "dq-rows-8": ("sample", {
        "layout": "directory", "profile": "dq", "target_snr_db": 30.0,
        "quantizer_overrides": {"states": 8, "chain": 7},
        "row_importance": {"enc.layer.0.weight": np.geomspace(30.0, 0.1, 64)},
    }),
    "dq-256": ("sample", {"layout": "zip", "profile": "dq", "block_size": 1000,
                          "quantizer_overrides": {"states": 256, "chain": 50}}),
    "predictor": ("predictor", {
        "layout": "directory", "predictor": SMALL_MLP,
        "quantizer_overrides": {"amp_bits": 2, "phase_bits": 5},
    }),
    "predictor-zip-base64": ("predictor", {
        "layout": "zip", "payload": "base64", "predictor": SMALL_MLP,
        "quantizer_overrides": {"amp_bits": 2, "phase_bits": 5},
    }),
}


def archive_members(path: Path) -> dict[str, bytes]:
    """Every member of an archive (ZIP file or directory), by member path."""
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes()
                for p in sorted(path.rglob("*")) if p.is_file()}
    with zipfile.ZipFile(path) as z:
        return {info.filename: z.read(info) for info in z.infolist()}


def archive_documents(path: Path) -> dict[str, dict]:
    """The JSON members of an archive, parsed."""
    return {name: json.loads(data) for name, data in archive_members(path).items()
            if name.endswith(".json")}


@pytest.fixture(scope="session")
def format_archives(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("format-archives")
    models = {"sample": root / "sample.safetensors", "predictor": root / "predictor.safetensors"}
    save_file(sample_state(), str(models["sample"]))
    save_file(predictor_state(), str(models["predictor"]))
    out = {}
    for name, (model, settings) in VARIANTS.items():
        target = root / (name if settings["layout"] == "directory" else f"{name}.rftp")
        rftpack.compress(models[model], target, **settings)
        out[name] = target
    return out


@pytest.fixture(scope="session")
def reference_v1() -> Path:
    path = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "reference_small"
    if not path.is_dir():
        path = Path("/work/shared/fixtures/reference_small")
    if not path.is_dir():
        pytest.skip("the reference fixture (fixtures/reference_small) is not available")
    return path


@pytest.fixture(scope="session")
def golden_v2() -> dict[str, Path]:
    """The committed version-2 golden archives (tests/fixtures/golden_v2), by name."""
    root = Path(__file__).resolve().parents[1] / "fixtures" / "golden_v2"
    archives = {p.name: p for p in sorted(root.glob("*"))
                if p.suffix == ".rftp" or (p.is_dir() and (p / "manifest_hybrid.json").exists())}
    if not archives:
        pytest.skip("no golden version-2 archives in tests/fixtures/golden_v2")
    return archives
