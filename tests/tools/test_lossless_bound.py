"""tools/lossless_bound.py: its entropy estimates are right on floats with known structure,
and rftpack's lossless profile does not beat its most optimistic one on random weights."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

import rftpack

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("lossless_bound",
                                              ROOT / "tools" / "lossless_bound.py")
lossless_bound = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lossless_bound)


def test_order0_counts_sign_exponent_entropy_and_raw_mantissa() -> None:
    # ±1.0 and ±2.0 equally often: 1 sign bit + 1 exponent bit + 23 mantissa bits
    x = np.array([1.0, -1.0, 2.0, -2.0] * 256, np.float32).reshape(4, 256)
    bits = lossless_bound.tensor_bits(x.view("<u4"), 8, 23)
    assert bits["order-0"] == 25 * x.size
    assert bits["+ short mantissas"] == 2 * x.size  # every mantissa is zero: 23 bits fewer


def test_rows_copied_from_float16_store_13_bits_fewer() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.05, (8, 512)).astype(np.float32)
    x[3] = x[3].astype(np.float16).astype(np.float32)
    bits = lossless_bound.tensor_bits(x.view("<u4"), 8, 23)
    saved = bits["order-0"] - bits["+ short mantissas"]
    assert 13 * 512 <= saved <= 14 * 512  # a row may happen to end in one more zero bit


def test_per_row_exponent_tables_pay_where_rows_differ_in_scale() -> None:
    rng = np.random.default_rng(1)
    scales = np.array([1e-3, 1.0])[:, None]
    x = (rng.normal(size=(2, 4096)) * scales).astype(np.float32)
    bits = lossless_bound.tensor_bits(x.view("<u4"), 8, 23)
    # one table for both rows pays about one bit per weight to tell the scales apart
    assert bits["order-0"] - bits["+ per-row exponents"] > 0.9 * x.size
    same = rng.normal(size=(2, 4096)).astype(np.float32)
    bits = lossless_bound.tensor_bits(same.view("<u4"), 8, 23)
    assert abs(bits["order-0"] - bits["+ per-row exponents"]) < 0.02 * same.size


def test_lossless_profile_lands_between_order0_and_the_optimistic_estimate(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    model = tmp_path / "m.safetensors"
    save_file({"w": rng.laplace(0, 0.02, (512, 1024)).astype(np.float32)}, str(model))
    totals, weights = lossless_bound.estimate(model, "float32")
    archive = tmp_path / "m.rftp"
    rftpack.compress(model, archive, lossless=True, layout="directory")
    payload_bits = 8 * sum(p.stat().st_size for p in (archive / "tensors").glob("*.bin"))
    assert min(totals.values()) < payload_bits
    assert abs(payload_bits / totals["order-0"] - 1) < 0.02


def test_cli_prints_every_model_and_the_target(tmp_path: Path) -> None:
    model = tmp_path / "m.safetensors"
    save_file({"w": np.random.default_rng(3).normal(size=(64, 64)).astype(np.float32)},
              str(model))
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "lossless_bound.py"), str(model),
                           "--dtypes", "float32,bfloat16", "--target-ratio", "1.3"],
                          capture_output=True, text=True, check=True)
    for name in ("order-0", "mantissa | exponent", "per-row exponents", "short mantissas",
                 "all three", "ratio 1.3000 needs"):
        assert done.stdout.count(name) == 2, name
