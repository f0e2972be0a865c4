"""Calibrated rounding through rftpack.compress: CompressOptions.input_covariance makes the
scalar profile round a linear layer's weights for small output error (on held-out inputs too),
at the rate-controlled size, in archives that plain extract / open decode; refused where it
cannot act, and tensors it cannot or need not touch are encoded exactly as without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from scalar_archives import (
    TARGET,
    assert_near_lossless,
    compress,
    extract_matches_open,
    restored,
)

import rftpack
from rftpack.calibrated import calibrated_levels
from rftpack.errors import InputError, StageError

LIN, OTHER, BIAS = "model.lin.weight", "model.other.weight", "model.lin.bias"
OUT, IN = 128, 192


class Inputs:
    """Strongly correlated layer inputs: a rank-8 signal plus a little noise, with columns of
    very different energy. Calibration and held-out rows come from the same distribution."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.mixing = rng.normal(size=(8, IN))
        self.scales = np.exp(0.5 * rng.normal(size=IN))

    def draw(self, rows: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return (rng.normal(size=(rows, 8)) @ self.mixing
                + 0.1 * rng.normal(size=(rows, IN))) * self.scales


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    inputs = Inputs(0)
    calibration = inputs.draw(2000, seed=1)
    held_out = inputs.draw(4000, seed=2)
    rng = np.random.default_rng(3)
    tensors = {LIN: (rng.standard_normal((OUT, IN)) * 0.05).astype(np.float32),
               OTHER: (rng.standard_normal((64, 64)) * 0.05).astype(np.float32),
               BIAS: (rng.standard_normal(OUT) * 0.01).astype(np.float32)}
    directory = tmp_path_factory.mktemp("calibrated")
    source = directory / "m.safetensors"
    save_file(tensors, str(source))
    covariance = calibration.T @ calibration / len(calibration)
    return source, tensors, covariance, held_out


def planned_step(result, name: str) -> float:
    """The rate plan's step for ``name`` as the writer's feedback moved it."""
    rc = result.manifest["codec"]["rate_control"]
    return rc["step"] * rc.get("step_feedback", {}).get(name, 1.0)


def output_error(w: np.ndarray, q: np.ndarray, x: np.ndarray) -> float:
    """‖(W − Ŵ) X‖² per output value, X = inputs as columns."""
    return float(np.mean(((w.astype(np.float64) - q.astype(np.float64)) @ x.T) ** 2))


def bpw(result) -> float:
    return 8 * result.archive_bytes / result.metrics["weights"]


@pytest.fixture(scope="module")
def plain_and_calibrated(setup, tmp_path_factory: pytest.TempPathFactory):
    source, _, covariance, _ = setup
    out = tmp_path_factory.mktemp("calibrated-out")
    plain = compress(source, out / "plain.rftp")
    calibrated = compress(source, out / "calibrated.rftp", input_covariance={LIN: covariance})
    return plain, calibrated


# -- what it is for --------------------------------------------------------------------------


def test_output_error_on_held_out_inputs_is_much_lower(setup, plain_and_calibrated) -> None:
    _, tensors, _, held_out = setup
    plain, calibrated = plain_and_calibrated
    w = tensors[LIN]
    with_plain = output_error(w, restored(plain.path)[LIN], held_out)
    with_calibration = output_error(w, restored(calibrated.path)[LIN], held_out)
    assert with_calibration < 0.3 * with_plain, (with_calibration, with_plain)
    # The weights themselves are further off (that is the trade), but still a rounding.
    weight_error = [float(np.mean((w - restored(r.path)[LIN]) ** 2)) for r in (plain, calibrated)]
    assert weight_error[0] < weight_error[1] < 4 * weight_error[0]


def test_archive_holds_exactly_the_calibrated_grid_values(setup, plain_and_calibrated) -> None:
    _, tensors, covariance, _ = setup
    _, calibrated = plain_and_calibrated
    with rftpack.open(calibrated.path) as archive:
        container = archive.container(LIN)
        decoded = archive.get_tensor(LIN)
    step = container["payload"]["blocks"][0]["side"]["step"]
    assert step == planned_step(calibrated, LIN)
    quantizer = next(s for s in container["stages"] if s["kind"] == "quantizer")
    assert quantizer["configuration"]["centroid"] is False  # no centroid shift on top
    assert container["payload"]["blocks"][0]["side"]["offsets"] == [0.0, 0.0]
    expected = calibrated_levels(tensors[LIN].astype(np.float64), covariance, step, damp=0.1)
    assert decoded.dtype == np.float32
    assert np.array_equal(decoded, expected.astype(np.float32))


def test_the_rate_target_still_holds(plain_and_calibrated) -> None:
    plain, calibrated = plain_and_calibrated
    # Rate control meets --bpw within 5 % (tests/test_ratecontrol.py); calibrated rounding
    # re-plans with its measured extra rate, so the step and size only move a little.
    for result in (plain, calibrated):
        assert TARGET * 0.9 <= bpw(result) <= TARGET * 1.05, bpw(result)
    assert bpw(calibrated) == pytest.approx(bpw(plain), rel=0.03)
    step = [r.manifest["codec"]["rate_control"]["step"] for r in (plain, calibrated)]
    assert step[1] == pytest.approx(step[0], rel=0.02)


def test_manifest_flag(plain_and_calibrated) -> None:
    plain, calibrated = plain_and_calibrated
    for result, expected in ((plain, False), (calibrated, True)):
        assert result.manifest["codec"]["rate_control"]["calibrated_rounding"] is expected
        with rftpack.open(result.path) as archive:  # the stored manifest, too
            stored = archive.manifest["codec"]["rate_control"]
        assert stored["calibrated_rounding"] is expected
        assert stored["importance_weighted"] is False


def test_decodes_with_plain_extract_and_open(setup, plain_and_calibrated) -> None:
    _, tensors, _, _ = setup
    _, calibrated = plain_and_calibrated
    extracted = extract_matches_open(calibrated.path, tensors)
    assert_near_lossless(calibrated.path, BIAS, extracted[BIAS], tensors[BIAS])  # small


def test_tensors_without_a_covariance_are_encoded_as_without_calibration(
        setup, plain_and_calibrated) -> None:
    _, tensors, _, _ = setup
    plain, calibrated = plain_and_calibrated
    a, b = restored(plain.path), restored(calibrated.path)
    assert np.array_equal(a[BIAS], b[BIAS])
    assert not np.array_equal(a[LIN], b[LIN])
    with rftpack.open(calibrated.path) as archive:
        container = archive.container(OTHER)
        quantizer = next(s for s in container["stages"] if s["kind"] == "quantizer")
    assert quantizer["configuration"]["centroid"] is True
    # Rounded to the nearest level of its own step (which the re-plan may have moved a
    # little), as plain rounding does: the same codes as in the plain archive.
    side = container["payload"]["blocks"][0]["side"]
    offsets, step = side["offsets"], side["step"]
    original = tensors[OTHER].astype(np.float64)
    codes = np.rint(original / step)
    magnitude = np.abs(codes)
    shift = np.where(magnitude == 1, offsets[0], np.where(magnitude >= 2, offsets[1], 0.0))
    assert np.array_equal(b[OTHER], (np.sign(codes) * (magnitude - shift) * step)
                          .astype(np.float32))


# -- ways to give the covariances ------------------------------------------------------------


def test_an_npz_file_works_like_a_dict(setup, plain_and_calibrated, tmp_path: Path) -> None:
    source, _, covariance, _ = setup
    _, calibrated = plain_and_calibrated
    npz = tmp_path / "covariances.npz"
    np.savez(npz, **{LIN: covariance})
    for given in (npz, str(npz)):
        result = compress(source, tmp_path / "npz.rftp", input_covariance=given,
                          overwrite=True)
        assert result.manifest["codec"]["rate_control"]["calibrated_rounding"] is True
        assert np.array_equal(restored(result.path)[LIN], restored(calibrated.path)[LIN])


@pytest.mark.parametrize("key", ["lin.weight", LIN])
def test_names_match_exactly_or_by_dotted_suffix(setup, plain_and_calibrated, tmp_path: Path,
                                                 key: str) -> None:
    source, _, covariance, _ = setup
    _, calibrated = plain_and_calibrated
    result = compress(source, tmp_path / "a.rftp", input_covariance={key: covariance})
    assert np.array_equal(restored(result.path)[LIN], restored(calibrated.path)[LIN])


def test_the_exact_name_and_then_the_longest_suffix_win(setup, plain_and_calibrated,
                                                        tmp_path: Path) -> None:
    source, _, covariance, _ = setup
    _, calibrated = plain_and_calibrated
    wrong = np.eye(64)  # fits model.other.weight (64 inputs) but not model.lin.weight
    for table in ({LIN: covariance, "lin.weight": wrong},
                  {"lin.weight": covariance, "weight": wrong},
                  {"weight": wrong, "lin.weight": covariance}):
        result = compress(source, tmp_path / "a.rftp", input_covariance=table, overwrite=True)
        assert np.array_equal(restored(result.path)[LIN], restored(calibrated.path)[LIN])
    with pytest.raises(InputError, match=LIN):  # "weight" is used when it is the best match
        compress(source, tmp_path / "b.rftp", input_covariance={"weight": wrong})


def test_a_suffix_that_is_not_a_whole_name_part_does_not_match(setup, tmp_path: Path) -> None:
    source, _, _, _ = setup
    # "in.weight" ends "model.lin.weight" but not at a dot: not this tensor's covariance
    # (its wrong size would otherwise be refused), so nothing matches: refused as such.
    out = tmp_path / "a.rftp"
    with pytest.raises(InputError, match="none of the input covariances .*in.weight"):
        compress(source, out, input_covariance={"in.weight": np.eye(3)})
    assert not out.exists()


def test_covariances_only_for_tensors_stored_exactly_are_refused(setup, tmp_path: Path) -> None:
    source, _, _, _ = setup
    # The bias is 1-D and small (stored exactly): nothing to round, so nothing is calibrated.
    out = tmp_path / "a.rftp"
    with pytest.raises(InputError, match="none of the input covariances"):
        compress(source, out, input_covariance={BIAS: np.eye(5)})
    assert not out.exists()


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(IN + 1, IN + 1), (OUT, OUT), (IN, OUT)])
def test_a_covariance_of_the_wrong_size_names_the_tensor(setup, tmp_path: Path,
                                                          shape: tuple[int, int]) -> None:
    source, _, _, _ = setup
    out = tmp_path / "a.rftp"
    with pytest.raises(InputError, match="input covariance") as info:
        compress(source, out, input_covariance={"lin.weight": np.ones(shape)})
    assert LIN in str(info.value) and str(IN) in str(info.value)
    assert not out.exists()


@pytest.mark.parametrize("settings", [{}, {"max_rel_error": 0.01}])
def test_calibrated_rounding_needs_a_target(setup, tmp_path: Path, settings: dict) -> None:
    source, _, covariance, _ = setup
    out = tmp_path / "a.rftp"
    with pytest.raises(StageError, match="rate target"):
        rftpack.compress(source, out, profile="scalar", input_covariance={LIN: covariance},
                         **settings)
    assert not out.exists()


@pytest.mark.parametrize("settings", [
    {"profile": "dq"},
    {"profile": "hybrid"},
    {"profile": "lossless"},
    {"profile": "scalar", "lossless": True},
    {"profile": "scalar", "quantizer": {"name": "dq", "configuration": {}}},
])
def test_calibrated_rounding_needs_scalar_on_identity(setup, tmp_path: Path,
                                                      settings: dict) -> None:
    source, _, covariance, _ = setup
    out = tmp_path / "a.rftp"
    with pytest.raises(StageError, match="--profile scalar"):
        rftpack.compress(source, out, target_bpw=TARGET, input_covariance={LIN: covariance},
                         **settings)
    assert not out.exists()


@pytest.mark.parametrize("damp", [0, -0.1, 1e7, float("nan"), "0.1", None])
def test_bad_calibration_damp_is_refused(setup, tmp_path: Path, damp) -> None:
    source, _, covariance, _ = setup
    with pytest.raises(StageError, match="calibration_damp"):
        compress(source, tmp_path / "a.rftp", input_covariance={LIN: covariance},
                 calibration_damp=damp)


def test_calibration_damp_is_used(setup, tmp_path: Path) -> None:
    source, tensors, covariance, held_out = setup
    errors = []
    for damp in (0.01, 1e4):  # hardly damped vs all but plain rounding
        result = compress(source, tmp_path / f"d{damp}.rftp",
                          input_covariance={LIN: covariance}, calibration_damp=damp)
        errors.append(output_error(tensors[LIN], restored(result.path)[LIN], held_out))
    assert errors[0] < 0.5 * errors[1]


@pytest.mark.parametrize("given, message", [
    (["lin.weight"], "must map weight names"),
    (np.eye(3), "must map weight names"),
    ("missing.npz", "not an .npz file"),
])
def test_bad_input_covariance_is_an_input_error(setup, tmp_path: Path, given,
                                                message: str) -> None:
    source, _, _, _ = setup
    if isinstance(given, str):
        given = str(tmp_path / "missing.npz")
    with pytest.raises(InputError, match=message):
        compress(source, tmp_path / "a.rftp", input_covariance=given)


def test_a_file_that_is_not_npz_is_an_input_error(setup, tmp_path: Path) -> None:
    source, _, _, _ = setup
    bad = tmp_path / "cov.npz"
    bad.write_text("not a zip")
    with pytest.raises(InputError, match="cov.npz"):
        compress(source, tmp_path / "a.rftp", input_covariance=bad)


# -- non-finite weights ----------------------------------------------------------------------


def test_a_tensor_with_nan_is_left_to_normal_rounding(setup, tmp_path: Path) -> None:
    _, tensors, covariance, _ = setup
    with_nan = dict(tensors)
    w = tensors[LIN].copy()
    w[3, 17] = np.nan
    w[100, 0] = -np.inf
    with_nan[LIN] = w
    source = tmp_path / "nan.safetensors"
    save_file(with_nan, str(source))
    plain = compress(source, tmp_path / "plain.rftp")
    calibrated = compress(source, tmp_path / "calibrated.rftp",
                          input_covariance={LIN: covariance})
    a, b = restored(plain.path)[LIN], restored(calibrated.path)[LIN]
    assert np.isnan(b[3, 17]) and b[100, 0] == -np.inf  # restored exactly, in place
    assert np.array_equal(np.isfinite(b), np.isfinite(w))
    assert np.array_equal(a, b, equal_nan=True)  # plain rounding, centroid and all
    with rftpack.open(calibrated.path) as archive:
        assert np.array_equal(archive.get_tensor(LIN), b, equal_nan=True)


# -- importance weights alone ----------------------------------------------------------------


def test_importance_alone_is_unaffected(setup, plain_and_calibrated, tmp_path: Path) -> None:
    source, tensors, covariance, _ = setup
    plain, _ = plain_and_calibrated
    importance = {"lin.weight": 4.0}
    weighted = compress(source, tmp_path / "w.rftp", importance=importance)
    rc = weighted.manifest["codec"]["rate_control"]
    assert rc["importance_weighted"] is True and rc["calibrated_rounding"] is False
    with rftpack.open(weighted.path) as archive:
        container = archive.container(LIN)
        decoded = archive.get_tensor(LIN)
    quantizer = next(s for s in container["stages"] if s["kind"] == "quantizer")
    assert quantizer["configuration"]["centroid"] is True
    step = container["payload"]["blocks"][0]["side"]["step"]
    assert step < rc["step"]  # the finer step of an important tensor ...
    codes = np.rint(tensors[LIN].astype(np.float64) / step)
    # ... plainly rounded: every weight lands on its nearest level's (shrunk) value.
    offsets = container["payload"]["blocks"][0]["side"]["offsets"]
    magnitude = np.abs(codes)
    shift = np.where(magnitude == 1, offsets[0], np.where(magnitude >= 2, offsets[1], 0.0))
    assert np.array_equal(decoded, (np.sign(codes) * (magnitude - shift) * step)
                          .astype(np.float32))
    # dq with importance: not a calibrated profile, and nothing refused.
    dq = compress(source, tmp_path / "dq.rftp", profile="dq", importance=importance)
    assert dq.manifest["codec"]["rate_control"]["calibrated_rounding"] is False
    # Both together: importance sets the step, calibration rounds on it.
    both = compress(source, tmp_path / "both.rftp", importance=importance,
                    input_covariance={LIN: covariance})
    rc = both.manifest["codec"]["rate_control"]
    assert rc["importance_weighted"] is True and rc["calibrated_rounding"] is True
    with rftpack.open(both.path) as archive:
        both_step = archive.container(LIN)["payload"]["blocks"][0]["side"]["step"]
        decoded_both = archive.get_tensor(LIN)
    # The same importance-scaled step, up to the re-plan for calibrated rounding's rate.
    assert both_step == pytest.approx(step, rel=0.02)
    assert both_step / planned_step(both, LIN) == pytest.approx(0.5)
    expected = calibrated_levels(tensors[LIN].astype(np.float64), covariance, both_step)
    assert np.array_equal(decoded_both, expected.astype(np.float32))
    assert plain.manifest["codec"]["rate_control"]["importance_weighted"] is False


def test_covariances_matching_no_tensor_are_not_claimed(setup, tmp_path: Path) -> None:
    source, _, covariance, _ = setup
    out = tmp_path / "a.rftp"
    try:
        result = compress(source, out, input_covariance={"decoder.lin.weight": covariance})
    except InputError as exc:  # refused, naming what did not match: fine
        assert "decoder.lin.weight" in str(exc)
        assert not out.exists()
        return
    assert result.manifest["codec"]["rate_control"]["calibrated_rounding"] is False
