"""Golden version-2 archives, written once by tests/fixtures/make_golden.py, must decode to the
same bits forever (numcodecs' check_backwards_compatibility, for rftpack)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rftpack
from rftpack.io import open_source

GOLDEN = Path(__file__).resolve().parent / "fixtures" / "golden_v2"
ARCHIVES = ["hybrid.rftp", "hybrid_base64", "raw_identity.rftp", "lossless.rftp"]


def load_file(path: str) -> dict[str, np.ndarray]:
    with open_source(path) as source:
        return {info.name: np.array(source.read(info.name)) for info in source.infos()}


@pytest.mark.parametrize("archive", ARCHIVES)
def test_golden_archive_decodes_bit_identically(archive: str) -> None:
    expected = np.load(GOLDEN / "expected.npz")
    original = load_file(str(GOLDEN / "model.safetensors"))
    with rftpack.open(GOLDEN / archive) as reader:
        assert reader.keys() == list(original)
        for name in reader.keys():
            got = reader.get_tensor(name)
            assert got.dtype == original[name].dtype and got.shape == original[name].shape
            want = expected[f"{archive}/{name}"]
            bits = got.view(np.uint16) if got.dtype.name == "bfloat16" else got
            assert bits.tobytes() == want.tobytes(), f"{archive}/{name} changed"


def test_golden_lossless_equals_the_original() -> None:
    original = load_file(str(GOLDEN / "model.safetensors"))
    with rftpack.open(GOLDEN / "lossless.rftp") as reader:
        for name, array in original.items():
            assert reader.get_tensor(name).tobytes() == array.tobytes()


def test_golden_nonfinite_values_survive_lossy_path() -> None:
    with rftpack.open(GOLDEN / "hybrid.rftp") as reader:
        weight = reader.get_tensor("layer.0/attn.q.weight")
    assert np.isnan(weight[3, 7]) and weight[5, 1] == -np.inf
    assert np.isfinite(np.delete(weight.ravel(), [3 * 64 + 7, 5 * 64 + 1])).all()
