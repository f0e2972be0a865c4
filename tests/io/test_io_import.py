"""``import rftpack.io`` must stay light: torch is imported only when a torch file is used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_import_does_not_import_torch() -> None:
    result = _run("import rftpack.io, sys; assert 'torch' not in sys.modules")
    assert result.returncode == 0, result.stderr


def test_safetensors_and_npz_round_trip_without_torch(tmp_path: Path) -> None:
    code = f"""
import sys
import numpy as np
from rftpack.io import TensorInfo, open_sink, open_source
for name in ("m.safetensors", "m.npz"):
    path = {str(tmp_path)!r} + "/" + name
    with open_sink(path, [TensorInfo("w", np.dtype("float32"), (2,))]) as sink:
        sink.write("w", np.ones(2, np.float32))
    with open_source(path) as src:
        assert src.read("w").sum() == 2
assert "torch" not in sys.modules
"""
    result = _run(code)
    assert result.returncode == 0, result.stderr
