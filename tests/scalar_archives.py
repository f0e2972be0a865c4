"""What the tests of rate-controlled ``scalar`` archives share: compress at a bits-per-weight
target, and read an archive back as extracted safetensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

import rftpack
from rftpack.rounding import round_mantissa

TARGET = 4.0


def compress(source: Path, out: Path, **settings) -> rftpack.api.CompressResult:
    settings.setdefault("profile", "scalar")
    settings.setdefault("target_bpw", TARGET)
    return rftpack.compress(source, out, **settings)


def restored(archive: Path) -> dict[str, np.ndarray]:
    out = archive.with_suffix(".safetensors")
    rftpack.extract(archive, out, overwrite=True)
    return load_file(str(out))


def extract_matches_open(archive: Path, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check that ``rftpack.extract`` and ``rftpack.open`` decode ``archive`` to the same
    float32 arrays of the original names and shapes; return the extracted ones."""
    extracted = restored(archive)
    with rftpack.open(archive) as opened_archive:
        assert sorted(opened_archive.keys()) == sorted(tensors)
        opened = {name: opened_archive.get_tensor(name) for name in opened_archive.keys()}
    for name, original in tensors.items():
        assert extracted[name].shape == original.shape and extracted[name].dtype == np.float32
        assert np.array_equal(extracted[name], opened[name]), name
    return extracted


def assert_near_lossless(archive: Path, name: str, decoded: np.ndarray,
                         original: np.ndarray) -> None:
    """A small tensor under rate control: the original rounded to the archive's mantissa
    bits (≥ 10, so each value within 2^-11 of itself), and recorded as such."""
    with rftpack.open(archive) as opened:
        bits = opened.entry(name)["mantissa_bits"]
        assert opened.container(name)["codec"]["mantissa_bits"] == bits
    assert bits >= 10
    assert np.array_equal(decoded, round_mantissa(original, bits))
    assert np.all(np.abs(decoded - original) <= np.abs(original) * 2.0 ** -11)
    assert not np.array_equal(decoded, original)  # rounded, really
