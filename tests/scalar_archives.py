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
