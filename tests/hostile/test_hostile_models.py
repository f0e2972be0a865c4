"""Broken input models: one clear line from the CLI, exit code 1, no traceback, no output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rftpack", *args], capture_output=True,
                          text=True, timeout=120)


def empty_model(tmp: Path) -> Path:
    path = tmp / "empty.safetensors"
    save_file({}, str(path))
    return path


def truncated_model(tmp: Path) -> Path:
    path = tmp / "cut.safetensors"
    save_file({"w": np.ones((64, 64), np.float32)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    return path


def garbage_model(tmp: Path) -> Path:
    path = tmp / "noise.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def model_dir_without_weights(tmp: Path) -> Path:
    path = tmp / "hf-dir"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


@pytest.mark.parametrize("make, text", [
    (empty_model, "no tensors"),
    (truncated_model, "cut.safetensors"),
    (garbage_model, "noise.safetensors"),
    (model_dir_without_weights, "hf-dir"),
    (lambda tmp: tmp / "missing.safetensors", "missing.safetensors"),
    (lambda tmp: Path("no-such-org/no-such-model"), "cache"),
])
def test_broken_model_is_one_line(tmp_path: Path, make, text: str) -> None:
    source = make(tmp_path)
    out = tmp_path / "out.rftp"
    done = run("compress", str(source), "-o", str(out))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert text in done.stderr
    assert not out.exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    done = run("compress", str(garbage_model(tmp_path)), "-o", str(tmp_path / "o.rftp"),
               "--debug")
    assert done.returncode == 1 and "Traceback" in done.stderr
