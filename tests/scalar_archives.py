"""What the tests of rate-controlled ``scalar`` archives share: compress at a bits-per-weight
target, and read an archive back as extracted safetensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

import rftpack

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
