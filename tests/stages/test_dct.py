"""The ``dct`` transform (FORMAT.md §8.2.1) and its per-tensor choice by rate control."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file
from smooth_tables import position_table

import rftpack
from rftpack.api import CompressOptions, row_dct
from rftpack.errors import FormatError, StageError
from rftpack.stages.dct import MIN_ROWS, RowDCT, dct_rows, idct_rows, rows_pay
from rftpack.verify import verify_archive


def _by_the_sum(x: np.ndarray) -> np.ndarray:
    """§8.2.1's forward formula, term by term."""
    m = x.shape[0]
    k, r = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    basis = np.cos(np.pi * k * (2 * r + 1) / (2 * m))
    basis *= np.where(k == 0, np.sqrt(1.0 / m), np.sqrt(2.0 / m))
    return basis @ x


@pytest.mark.parametrize("m", [1, 2, 3, 4, 7, 16, 97, 256])
def test_dct_rows_is_the_formula_and_inverts(m):
    x = np.random.default_rng(m).normal(size=(m, 5))
    np.testing.assert_allclose(dct_rows(x), _by_the_sum(x), atol=1e-12)
    np.testing.assert_allclose(idct_rows(dct_rows(x)), x, atol=1e-12)
    # orthonormal: energy (and so squared error) is the same in both domains
    assert np.sum(dct_rows(x) ** 2) == pytest.approx(np.sum(x ** 2), rel=1e-12)


def test_stage_round_trip_and_layout():
    t = RowDCT(row_length=3)
    x = np.arange(12, dtype=np.float64)
    c = t.forward(x)
    np.testing.assert_allclose(c.reshape(4, 3), _by_the_sum(x.reshape(4, 3)), atol=1e-12)
    np.testing.assert_allclose(t.inverse(c, 12), x, atol=1e-12)
    assert t.coefficient_count(12) == 12


def test_stage_refuses_partial_rows_and_bad_config():
    with pytest.raises(StageError, match="whole rows"):
        RowDCT(row_length=5).forward(np.zeros(12))
    with pytest.raises(FormatError, match="whole rows"):
        RowDCT(row_length=5).inverse(np.zeros(12), 12)
    with pytest.raises(FormatError, match="coefficients"):
        RowDCT(row_length=3).inverse(np.zeros(9), 12)
    for bad in (0, -1, 2.0, True, "4", 1 << 27):
        with pytest.raises(StageError, match="row_length"):
            RowDCT(row_length=bad)
    config = RowDCT(row_length=7).to_config()
    assert config == {"name": "dct", "configuration": {"row_length": 7}}
    assert RowDCT.from_config(config) == RowDCT(row_length=7)


def test_rows_pay_only_where_rows_are_alike():
    table = position_table().astype(np.float64)
    assert rows_pay(table, 512)
    rng = np.random.default_rng(1)
    assert not rows_pay(rng.normal(size=(512, 64)), 512)            # a linear layer's rows
    assert not rows_pay(table[:MIN_ROWS - 1], 512)                  # too few rows
    assert not rows_pay(table, MIN_ROWS - 1)                        # blocks too short
    assert not rows_pay(np.zeros((64, 8)), 64)                      # nothing to code
    # neighbours that correlate too weakly (AR(1), ρ = 0.3) are not even tried
    weak = np.zeros((256, 32))
    for r in range(1, 256):
        weak[r] = 0.3 * weak[r - 1] + rng.normal(size=32)
    assert not rows_pay(weak, 256)
    # a constant offset per column under white noise: alike rows, and the DC row takes it
    offset = np.ones((256, 32)) * 5 * rng.normal(size=32) + 0.1 * rng.normal(size=(256, 32))
    assert rows_pay(offset, 256)


def test_row_dct_conditions():
    table = position_table()
    options = CompressOptions(profile="dq", row_dct="auto")
    lossy = options.build()[1]
    assert row_dct("pos", table, lossy, options) == RowDCT(row_length=64)
    assert row_dct("pos", table.reshape(512, 8, 8), lossy, options) == RowDCT(row_length=64)
    off = CompressOptions(profile="dq", row_dct="off")
    assert row_dct("pos", table, off.build()[1], off) is None
    default = CompressOptions(profile="dq")  # off by default (model fidelity at low rates)
    assert row_dct("pos", table, default.build()[1], default) is None
    bound = CompressOptions(profile="dq", max_rel_error=0.01, row_dct="auto")
    assert row_dct("pos", table, bound.build()[1], bound) is None
    hybrid = CompressOptions(profile="hybrid", row_dct="auto")
    assert row_dct("pos", table, hybrid.build()[1], hybrid) is None
    broken = table.copy()
    broken[3, 3] = np.nan
    assert row_dct("pos", broken, lossy, options) is None
    with pytest.raises(StageError, match="row_dct"):
        CompressOptions(profile="dq", row_dct="yes").build()


def _compress(tmp_path, state, name, **settings):
    src = tmp_path / "model.safetensors"
    save_file(state, str(src))
    out = tmp_path / name
    rftpack.compress(src, out, overwrite=True, **{"row_dct": "auto", **settings})
    with rftpack.open(out) as archive:
        decoded = {k: archive.get_tensor(k) for k in archive.keys()}
        transforms = {k: archive.container(k)["stages"][0]["name"] for k in archive.keys()
                      if archive.container(k)["codec"]["mode"] == "hybrid"}
    return out, decoded, transforms


def _snr(x, y):
    x, y = x.astype(np.float64), y.astype(np.float64)
    return 10 * np.log10(np.sum(x * x) / np.sum((x - y) ** 2))


@pytest.mark.parametrize("profile", ["scalar", "dq"])
def test_compress_codes_the_position_table_through_the_dct(tmp_path, profile):
    rng = np.random.default_rng(5)
    state = {"pos.weight": position_table(),
             "layer.weight": (0.05 * rng.normal(size=(256, 64))).astype(np.float32)}
    out, decoded, transforms = _compress(tmp_path, state, "auto.rftp", profile=profile,
                                         target_snr_db=30.0)
    assert transforms == {"pos.weight": "dct", "layer.weight": "identity"}
    out_off, decoded_off, transforms_off = _compress(tmp_path, state, "off.rftp",
                                                     profile=profile, target_snr_db=30.0,
                                                     row_dct="off")
    assert set(transforms_off.values()) == {"identity"}
    with rftpack.open(out) as a, rftpack.open(out_off) as b:
        dct_bytes = a.container("pos.weight")["stored_bytes"]
        identity_bytes = b.container("pos.weight")["stored_bytes"]
    # same step (equal error in both domains): far fewer bytes
    assert dct_bytes < 0.8 * identity_bytes, (dct_bytes, identity_bytes)
    for k in state:
        assert _snr(state[k], decoded[k]) == pytest.approx(_snr(state[k], decoded_off[k]),
                                                           abs=1.0)
    assert verify_archive(out).ok


def test_rate_control_counts_the_dct(tmp_path):
    """The plan samples the coefficients the quantizer sees: --bpw lands just under target."""
    rng = np.random.default_rng(6)
    state = {"pos.weight": position_table(1024, 128),
             "layer.weight": (0.05 * rng.normal(size=(256, 128))).astype(np.float32)}
    for target in (3.0, 5.0):
        out, decoded, transforms = _compress(tmp_path, state, f"b{target}.rftp",
                                             profile="dq", target_bpw=target)
        assert transforms["pos.weight"] == "dct"
        numel = sum(v.size for v in state.values())
        bpw = out.stat().st_size * 8 / numel
        assert target * 0.97 <= bpw <= target, (target, bpw)
