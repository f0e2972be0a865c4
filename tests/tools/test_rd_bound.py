"""tools/rd_bound.py: the memoryless Shannon lower bound it prints is a real bound — no
quantizer of ours gets above it, and it matches the closed form for Gaussian weights."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

import rftpack

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("rd_bound", ROOT / "tools" / "rd_bound.py")
rd_bound = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rd_bound)


def test_entropy_estimate_matches_closed_forms() -> None:
    rng = np.random.default_rng(0)
    gauss = rng.normal(0, 0.02, 400_000)
    assert abs(rd_bound.differential_entropy_bits(gauss)
               - 0.5 * math.log2(2 * math.pi * math.e * 0.02 ** 2)) < 0.01
    laplace = rng.laplace(0, 0.01, 400_000)  # h = log2(2eb)
    assert abs(rd_bound.differential_entropy_bits(laplace) - math.log2(2 * math.e * 0.01)) < 0.01


def test_no_rftpack_profile_beats_the_bound(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    model = tmp_path / "m.safetensors"
    save_file({"w": (rng.laplace(0, 0.02, (512, 1024))).astype(np.float32),
               "b": rng.normal(0, 0.02, 256).astype(np.float32)}, str(model))
    h, signal, lossy, total = rd_bound.bound(model)
    assert (lossy, total) == (512 * 1024, 512 * 1024 + 256)
    below = {}
    for profile in ("scalar", "dq"):
        result = rftpack.compress(model, tmp_path / f"{profile}.rftp", profile=profile,
                                  target_bpw=4.0)
        bpw = 8 * result.archive_bytes / total
        best = 10 * math.log10(signal / (2 ** (2 * (h - bpw * total / lossy))
                                         / (2 * math.pi * math.e) * lossy))
        with rftpack.open(tmp_path / f"{profile}.rftp") as archive:
            w = archive.get_tensor("w").astype(np.float64)
        x = load_file(str(model))["w"].astype(np.float64)
        snr = 10 * math.log10(signal / float(((x - w) ** 2).sum()))
        assert snr < best, (profile, snr, best)
        below[profile] = best - snr
    # Not vacuous either: uniform scalar quantization is about 1.5 dB from it at high rate
    # (the 1.53 dB of entropy-coded scalar quantization), trellis quantization closer.
    assert 1.0 < below["scalar"] < 2.5
    assert 0.3 < below["dq"] < below["scalar"] - 0.5


def test_the_script_prints_the_bound(tmp_path: Path) -> None:
    model = tmp_path / "m.safetensors"
    save_file({"w": np.random.default_rng(2).normal(0, 0.05, (64, 64)).astype(np.float32)},
              str(model))
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "rd_bound.py"), str(model), "4"],
                         capture_output=True, text=True, check=True, timeout=120)
    assert "4.000 bits/weight: memoryless bound" in out.stdout
