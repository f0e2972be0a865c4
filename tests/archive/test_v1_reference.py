"""Reading the reference implementation's version-1 archive (golden fixture)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import rftpack
from rftpack.errors import ChecksumError, FormatError
from rftpack.format.v1 import decode_v1, v1_coarse

FIXTURE = Path("/work/shared/fixtures/reference_small")
EXPECTED = Path("/work/shared/fixtures/reference_small_expected.npz")
PREDICTOR = "predictors/global_residual_predictor.json"

pytestmark = pytest.mark.skipif(not FIXTURE.is_dir() or not EXPECTED.is_file(),
                                reason="reference fixture not available")


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(EXPECTED) as data:
        return {key: data[key] for key in data.files}


def names(expected: dict[str, np.ndarray]) -> list[str]:
    return sorted(key.split("/", 1)[1] for key in expected if key.startswith("coarse/"))


def assert_close(actual: np.ndarray, reference: np.ndarray, rel: float = 1e-5) -> None:
    assert actual.shape == reference.shape
    err = float(np.linalg.norm(actual.astype(np.float64) - reference.astype(np.float64)))
    assert err <= rel * float(np.linalg.norm(reference.astype(np.float64)))


def test_fixture_lists_three_tensors(expected) -> None:
    assert names(expected) == ["head/proj.weight", "layer0.bias", "layer0.weight"]
    with rftpack.open(FIXTURE) as archive:
        assert archive.version == 1
        assert sorted(archive.keys()) == names(expected)


def test_coarse_decode_matches_reference(expected) -> None:
    with rftpack.open(FIXTURE) as archive:
        for name in names(expected):
            decoded = archive.get_tensor(name, use_predictor=False)
            assert decoded.dtype == np.float32
            assert_close(decoded, expected[f"coarse/{name}"])


def test_predicted_decode_matches_reference(expected) -> None:
    with rftpack.open(FIXTURE) as archive:
        assert archive.predictor() is not None
        for name in names(expected):
            decoded = archive.get_tensor(name)
            assert_close(decoded, expected[f"predicted/{name}"])
            # The predictor actually changes the result (otherwise this test proves nothing).
            assert not np.allclose(expected[f"predicted/{name}"], expected[f"coarse/{name}"])


def test_coarse_decode_is_near_the_original(expected) -> None:
    with rftpack.open(FIXTURE) as archive:
        for name in names(expected):
            original = expected[f"original/{name}"]
            decoded = archive.get_tensor(name, use_predictor=False)
            rel = np.linalg.norm(decoded - original) / np.linalg.norm(original)
            assert rel < 0.2


def test_extract_v1(tmp_path, expected) -> None:
    out = tmp_path / "restored.npz"
    rftpack.extract(FIXTURE, out, use_predictor=False)
    with np.load(out) as restored:
        for name in names(expected):
            assert_close(restored[name], expected[f"coarse/{name}"])


def copy_fixture(tmp_path: Path) -> Path:
    target = tmp_path / "reference_small"
    shutil.copytree(FIXTURE, target)
    return target


def test_tampered_predictor_weights_raise_checksum_error(tmp_path, expected) -> None:
    root = copy_fixture(tmp_path)
    path = root / PREDICTOR
    obj = json.loads(path.read_text())
    weights = np.frombuffer(base64.b64decode(obj["state"]["W0"]["data"]), "<f4").copy()
    weights[0] += 0.5
    obj["state"]["W0"]["data"] = base64.b64encode(weights.tobytes()).decode("ascii")
    path.write_text(json.dumps(obj, indent=2))
    name = names(expected)[0]
    with rftpack.open(root) as archive:
        # Without the predictor the tensor still decodes; with it, the tampering is caught.
        assert_close(archive.get_tensor(name, use_predictor=False), expected[f"coarse/{name}"])
        with pytest.raises(ChecksumError):
            archive.get_tensor(name)


def test_predictor_without_checksum_refused(tmp_path, expected) -> None:
    root = copy_fixture(tmp_path)
    path = root / PREDICTOR
    obj = json.loads(path.read_text())
    del obj["checksum_sha256"]
    path.write_text(json.dumps(obj))
    with rftpack.open(root) as archive, pytest.raises(ChecksumError):
        archive.get_tensor(names(expected)[0])


def test_v1_container_validation() -> None:
    container = json.loads((FIXTURE / "tensors" / "layer0_weight.json").read_text())
    parsed = v1_coarse(container, "x")
    assert parsed["n"] == 256
    assert parsed["index"].shape == parsed["log_amp"].shape == parsed["phase"].shape

    def broken(edit):
        c = json.loads(json.dumps(container))
        edit(c)
        return c

    bad = [
        lambda c: c["payload"].update(indices="!!notbase64"),
        lambda c: c["payload"].update(amp_codes=base64.b64encode(b"\0\0\0").decode()),
        lambda c: c["payload"].update(indices=base64.b64encode(
            np.array([0, 0], "<u4").tobytes()).decode()),
        lambda c: c["payload"].update(amp_scale=[0, float("nan")]),
        lambda c: c["payload"].update(phase_scale="x"),
        lambda c: c.update(original_shape=[-1]),
        lambda c: c["codec"].update(quant_amp_bits=0),
        lambda c: c.update(payload=None),
        lambda c: c["payload"].update(indices=base64.b64encode(
            np.full(len(parsed["index"]), 10_000, "<u4").tobytes()).decode()),
    ]
    for edit in bad:
        with pytest.raises(FormatError):
            decode_v1(broken(edit), "x")
