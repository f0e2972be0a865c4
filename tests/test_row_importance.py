"""Row weights through rftpack.compress (CompressOptions.row_importance): the rows of a table
that count more decode with much smaller error at the same rate-controlled size, in archives
that plain extract / open decode; refusals where row steps cannot act; no calibrated rounding
on top; and the sparse "rows" section of importance files (save / load_rows)."""

from __future__ import annotations

import json
import math
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
from rftpack import importance
from rftpack.errors import InputError, StageError
from rftpack.stages.dq import DependentQuantizer
from rftpack.stages.scalar import RowSteps

EMB, OTHER, BIAS = "model.emb.weight", "model.other.weight", "model.other.bias"
ROWS, WIDTH, HEAVY = 512, 64, 32


def row_weights() -> np.ndarray:
    """The first HEAVY rows count 64 times as much as the others."""
    weights = np.ones(ROWS)
    weights[:HEAVY] = 64.0
    return weights


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(11)
    tensors = {EMB: (rng.standard_normal((ROWS, WIDTH)) * 0.05).astype(np.float32),
               OTHER: (rng.standard_normal((64, 64)) * 0.05).astype(np.float32),
               BIAS: (rng.standard_normal(64) * 0.01).astype(np.float32)}
    source = tmp_path_factory.mktemp("rows") / "m.safetensors"
    save_file(tensors, str(source))
    return source, tensors


def bpw(result) -> float:
    return 8 * result.archive_bytes / result.metrics["weights"]


def row_mse(original: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    """(mean squared error of the heavy rows, of the others)."""
    error = (original.astype(np.float64) - decoded.astype(np.float64)) ** 2
    return float(error[:HEAVY].mean()), float(error[HEAVY:].mean())


def scalar_on_rows(x: np.ndarray, side: dict, levels: np.ndarray) -> np.ndarray:
    """What the scalar quantizer decodes for ``x`` rounded to the nearest level of each row's
    own step (centroid shifts and all)."""
    rows = RowSteps(levels, x.shape[1])
    multipliers = rows.multipliers(x.size)
    codes = np.rint(x.reshape(-1).astype(np.float64) / multipliers / side["step"])
    magnitude = np.abs(codes)
    offsets = side["offsets"]
    shift = np.where(magnitude == 1, offsets[0], np.where(magnitude >= 2, offsets[1], 0.0))
    values = np.sign(codes) * (magnitude - shift) * side["step"] * multipliers
    return values.astype(np.float32).reshape(x.shape)


def quantizer_config(archive, name: str) -> dict:
    return next(s for s in archive.container(name)["stages"]
                if s["kind"] == "quantizer")["configuration"]


@pytest.fixture(scope="module")
def archives(setup, tmp_path_factory: pytest.TempPathFactory):
    source, _ = setup
    out = tmp_path_factory.mktemp("rows-out")
    rows = {EMB: row_weights()}
    return {"plain": compress(source, out / "plain.rftp"),
            "scalar": compress(source, out / "scalar.rftp", row_importance=rows),
            "dq": compress(source, out / "dq.rftp", profile="dq", row_importance=rows)}


# -- what it is for --------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["scalar", "dq"])
def test_heavy_rows_decode_with_much_smaller_error(setup, archives, profile: str) -> None:
    _, tensors = setup
    heavy, light = row_mse(tensors[EMB], restored(archives[profile].path)[EMB])
    # steps 1/8 of the others' (2 octaves of rounding to quarter octaves): error ≈ 1/64
    assert heavy < light / 30, (heavy, light)
    plain_heavy, plain_light = row_mse(tensors[EMB], restored(archives["plain"].path)[EMB])
    assert plain_heavy == pytest.approx(plain_light, rel=0.2)  # without: all rows alike
    assert heavy < plain_heavy / 10
    # paid for by the light rows, at the same size
    assert light > plain_light


@pytest.mark.parametrize("profile", ["scalar", "dq"])
def test_the_rate_target_still_holds(archives, profile: str) -> None:
    assert TARGET * 0.9 <= bpw(archives[profile]) <= TARGET, bpw(archives[profile])


def test_scalar_rows_are_plainly_rounded_on_their_own_steps(setup, archives) -> None:
    _, tensors = setup
    result = archives["scalar"]
    levels, base = RowSteps.from_weights(row_weights())
    with rftpack.open(result.path) as archive:
        container = archive.container(EMB)
        decoded = archive.get_tensor(EMB)
        assert quantizer_config(archive, EMB)["centroid"] is True
    (block,) = container["payload"]["blocks"]
    side = block["side"]
    # the coarsest rows' step: the planned step × base; the heavy rows 8 levels finer
    rc = result.manifest["codec"]["rate_control"]
    moved = rc.get("step_feedback", {}).get(EMB, 1.0)  # the writer's correction, ≤ ¼ octave
    assert 2 ** -0.25 <= moved <= 2 ** 0.25
    assert side["step"] == pytest.approx(rc["step"] * moved * base)
    assert levels[:HEAVY].tolist() == [12] * HEAVY and levels[HEAVY:].max() == 0
    assert np.array_equal(decoded, scalar_on_rows(tensors[EMB], side, levels))


def test_dq_rows_are_what_the_quantizer_makes_of_them(setup, archives) -> None:
    _, tensors = setup
    levels, _ = RowSteps.from_weights(row_weights())
    with rftpack.open(archives["dq"].path) as archive:
        (block,) = archive.container(EMB)["payload"]["blocks"]
        quantizer = DependentQuantizer(**quantizer_config(archive, EMB))
        decoded = archive.get_tensor(EMB)
    x = tensors[EMB].reshape(-1).astype(np.float64)
    streams, side = quantizer.quantize(x, [], rows=RowSteps(levels, WIDTH))
    assert side == block["side"]
    expected = quantizer.dequantize({k: c.symbols for k, c in streams.items()}, side, x.size)
    assert np.array_equal(decoded, expected.astype(np.float32).reshape(ROWS, WIDTH))


@pytest.mark.parametrize("profile", ["scalar", "dq"])
def test_decodes_with_plain_extract_and_open(setup, archives, profile: str) -> None:
    _, tensors = setup
    result = archives[profile]
    extracted = extract_matches_open(result.path, tensors)
    assert_near_lossless(result.path, BIAS, extracted[BIAS], tensors[BIAS])  # small
    assert not np.array_equal(extracted[EMB], tensors[EMB])  # lossy, really


def test_manifest_lists_the_row_weighted_tensors(archives) -> None:
    for key, expected in (("plain", []), ("scalar", [EMB]), ("dq", [EMB])):
        result = archives[key]
        assert result.manifest["codec"]["rate_control"]["row_weighted"] == expected
        with rftpack.open(result.path) as archive:  # the stored manifest, too
            assert archive.manifest["codec"]["rate_control"]["row_weighted"] == expected


@pytest.mark.parametrize("profile", ["scalar", "dq"])
def test_only_the_row_weighted_container_has_row_steps(archives, profile: str) -> None:
    with rftpack.open(archives[profile].path) as archive:
        blocks = archive.container(EMB)["payload"]["blocks"]
        others = archive.container(OTHER)["payload"]["blocks"]
    for block in blocks:
        assert block["side"]["row_length"] == WIDTH
        assert block["side"]["row_levels"] == 13  # levels 0 and 12
        assert block["streams"]["row_levels"]["count"] == block["count"] // WIDTH
    assert sum(b["count"] for b in blocks) == ROWS * WIDTH
    for block in others:
        assert "row_length" not in block["side"] and set(block["streams"]) == {"codes"}
    with rftpack.open(archives["plain"].path) as archive:
        for block in archive.container(EMB)["payload"]["blocks"]:
            assert "row_length" not in block["side"] and set(block["streams"]) == {"codes"}


def test_row_steps_combine_with_tensor_importance(setup, archives, tmp_path: Path) -> None:
    source, _ = setup
    _, base = RowSteps.from_weights(row_weights())
    result = compress(source, tmp_path / "both.rftp", importance={"emb.weight": 4.0},
                      row_importance={EMB: row_weights()})
    rc = result.manifest["codec"]["rate_control"]
    assert rc["importance_weighted"] is True and rc["row_weighted"] == [EMB]
    with rftpack.open(result.path) as archive:
        step = archive.container(EMB)["payload"]["blocks"][0]["side"]["step"]
    moved = rc.get("step_feedback", {}).get(EMB, 1.0)
    assert step == pytest.approx(rc["step"] * moved / math.sqrt(4.0) * base)


# -- names -----------------------------------------------------------------------------------


def test_names_match_exactly_or_by_dotted_suffix(setup, archives, tmp_path: Path) -> None:
    source, _ = setup
    expected = restored(archives["scalar"].path)
    for key in ("emb.weight", EMB):
        result = compress(source, tmp_path / f"{key}.rftp", row_importance={key: row_weights()})
        assert result.manifest["codec"]["rate_control"]["row_weighted"] == [EMB]
        assert np.array_equal(restored(result.path)[EMB], expected[EMB]), key
    # "weight" names every 2-D tensor here: the other table's 64 rows do not fit 512 weights.
    with pytest.raises(InputError, match=f"{OTHER!r} has 64 rows but {ROWS} row weights"):
        compress(source, tmp_path / "any.rftp", row_importance={"weight": row_weights()})


@pytest.mark.parametrize("key", ["mb.weight", "decoder.emb.weight", BIAS, "bias"])
def test_row_weights_matching_no_lossy_table_are_refused(setup, tmp_path: Path,
                                                         key: str) -> None:
    source, _ = setup
    out = tmp_path / "a.rftp"
    # A suffix not at a dot, another model's name, or a 1-D tensor stored exactly.
    with pytest.raises(InputError, match="none of the row weights") as info:
        compress(source, out, row_importance={key: np.ones(64)})
    assert key in str(info.value)
    assert not out.exists()


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [ROWS - 1, ROWS + 1, WIDTH, 1])
def test_a_weight_count_other_than_the_rows_names_the_tensor(setup, tmp_path: Path,
                                                             count: int) -> None:
    source, _ = setup
    out = tmp_path / "a.rftp"
    with pytest.raises(InputError, match=f"{ROWS} rows but {count} row weights") as info:
        compress(source, out, row_importance={"emb.weight": np.ones(count)})
    assert EMB in str(info.value)
    assert not out.exists()


@pytest.mark.parametrize("settings", [{}, {"max_rel_error": 0.01}])
def test_row_weights_need_a_target(setup, tmp_path: Path, settings: dict) -> None:
    source, _ = setup
    out = tmp_path / "a.rftp"
    with pytest.raises(StageError, match="target"):
        rftpack.compress(source, out, profile="scalar", row_importance={EMB: row_weights()},
                         **settings)
    assert not out.exists()


def test_an_snr_target_works_too(setup, tmp_path: Path) -> None:
    source, tensors = setup
    result = compress(source, tmp_path / "snr.rftp", target_bpw=None, target_snr_db=30.0,
                      row_importance={EMB: row_weights()})
    assert result.manifest["codec"]["rate_control"]["row_weighted"] == [EMB]
    heavy, light = row_mse(tensors[EMB], restored(result.path)[EMB])
    assert heavy < light / 30


@pytest.mark.parametrize("settings", [
    {"profile": "hybrid"},
    {"profile": "lossless"},
    {"profile": "scalar", "lossless": True},
    {"profile": "scalar", "transform": {"name": "rft", "configuration": {}}},
    {"profile": "scalar", "quantizer": {"name": "polar", "configuration": {}}},
])
def test_row_weights_need_scalar_or_dq_on_identity(setup, tmp_path: Path,
                                                   settings: dict) -> None:
    source, _ = setup
    out = tmp_path / "a.rftp"
    with pytest.raises(StageError, match="--profile scalar or --profile dq"):
        rftpack.compress(source, out, target_bpw=TARGET, row_importance={EMB: row_weights()},
                         **settings)
    assert not out.exists()


def test_dq_quantizer_on_the_scalar_profile_is_accepted(setup, tmp_path: Path) -> None:
    source, _ = setup
    result = compress(source, tmp_path / "a.rftp", row_importance={EMB: row_weights()},
                      quantizer={"name": "dq", "configuration": {"rel_step": 0.06}})
    assert result.manifest["codec"]["rate_control"]["row_weighted"] == [EMB]


@pytest.mark.parametrize("rows, message", [
    ({}, "non-empty mapping"),
    ([(EMB, [1.0])], "non-empty mapping"),
    ({"": [1.0]}, "non-empty strings"),
    ({3: [1.0]}, "non-empty strings"),
    ({EMB: []}, "finite numbers > 0"),
    ({EMB: [1.0, 0.0]}, "finite numbers > 0"),
    ({EMB: [1.0, -2.0]}, "finite numbers > 0"),
    ({EMB: [1.0, math.nan]}, "finite numbers > 0"),
    ({EMB: [1.0, math.inf]}, "finite numbers > 0"),
    ({EMB: [[1.0, 2.0]]}, "finite numbers > 0"),
    ({EMB: 2.0}, "finite numbers > 0"),
    ({EMB: ["a", "b"]}, "not numbers"),
])
def test_bad_row_weights_are_input_errors(setup, tmp_path: Path, rows, message: str) -> None:
    source, _ = setup
    out = tmp_path / "a.rftp"
    with pytest.raises(InputError, match=message):
        compress(source, out, row_importance=rows)
    assert not out.exists()


def test_validate_rows_returns_float_copies() -> None:
    given = [1, 3]
    checked = importance.validate_rows({"emb.weight": given})
    assert checked["emb.weight"].dtype == np.float64
    assert checked["emb.weight"].tolist() == [1.0, 3.0]
    checked["emb.weight"][0] = 9.0
    assert given == [1, 3]


# -- no calibrated rounding on top -----------------------------------------------------------


def test_row_weighted_tables_skip_calibrated_rounding(setup, tmp_path: Path) -> None:
    source, tensors = setup
    rng = np.random.default_rng(4)
    mixing = rng.normal(size=(WIDTH, WIDTH))
    covariance = mixing @ mixing.T / WIDTH + 0.1 * np.eye(WIDTH)
    result = compress(source, tmp_path / "both.rftp", row_importance={EMB: row_weights()},
                      input_covariance={EMB: covariance, OTHER: covariance})
    rc = result.manifest["codec"]["rate_control"]
    assert rc["calibrated_rounding"] is True and rc["row_weighted"] == [EMB]
    levels, _ = RowSteps.from_weights(row_weights())
    with rftpack.open(result.path) as archive:
        # the other table is rounded for its outputs (on the grid: no centroid shift) ...
        assert quantizer_config(archive, OTHER)["centroid"] is False
        # ... the row-weighted one plainly, on its row steps
        assert quantizer_config(archive, EMB)["centroid"] is True
        side = archive.container(EMB)["payload"]["blocks"][0]["side"]
        decoded = archive.get_tensor(EMB)
    assert side["row_length"] == WIDTH
    assert np.array_equal(decoded, scalar_on_rows(tensors[EMB], side, levels))


# -- importance files with rows --------------------------------------------------------------


def test_save_writes_rows_sparsely_and_load_rows_reads_them(tmp_path: Path) -> None:
    table = np.full(1000, 2.0)
    table[[0, 7, 999]] = [40.5, 0.25, 12.0]
    small = np.array([1.0, 3.0])  # a tie: the default is one of them, the other listed
    path = importance.save({"emb.weight": 1.5}, tmp_path / "imp.json",
                           rows={"emb.weight": table, "t": small}, distortion="cosine")
    document = json.loads(path.read_text())
    assert document["rows"]["emb.weight"] == {
        "count": 1000, "default": 2.0, "weights": {"0": 40.5, "7": 0.25, "999": 12.0}}
    assert document["rows"]["t"]["count"] == 2 and len(document["rows"]["t"]["weights"]) == 1
    assert document["weights"] == {"emb.weight": 1.5} and document["distortion"] == "cosine"
    loaded = importance.load_rows(path)
    assert sorted(loaded) == ["emb.weight", "t"]
    assert np.array_equal(loaded["emb.weight"], table) and loaded["emb.weight"].dtype == float
    assert np.array_equal(loaded["t"], small)
    assert importance.load(path) == {"emb.weight": 1.5}  # the tensor weights as before


def test_files_without_rows(tmp_path: Path) -> None:
    for rows in (None, {}):
        path = importance.save({"w": 1.0}, tmp_path / "imp.json", rows=rows)
        assert "rows" not in json.loads(path.read_text())
        assert importance.load_rows(path) == {}
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"a.weight": 3}))
    assert importance.load_rows(plain) == {}


def test_save_refuses_bad_rows_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'t'"):
        importance.save({"w": 1.0}, tmp_path / "imp.json", rows={"t": [1.0, -1.0]})
    assert not (tmp_path / "imp.json").exists()


def test_load_rows_checks_the_file_itself(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such importance file"):
        importance.load_rows(tmp_path / "missing.json")
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"format": importance.FORMAT, "version": importance.VERSION + 1,
                                 "weights": {"a": 1.0},
                                 "rows": {"a": {"count": 1, "default": 1.0, "weights": {}}}}))
    with pytest.raises(InputError, match="newer"):
        importance.load_rows(newer)


GOOD = {"count": 4, "default": 1.0, "weights": {"2": 5.0}}


@pytest.mark.parametrize("rows, message", [
    ([GOOD], "'rows' must map"),
    ("t", "'rows' must map"),
    ({"t": [1.0, 2.0]}, "expected"),
    ({"t": {"count": 4, "default": 1.0}}, "expected"),
    ({"t": {**GOOD, "extra": 1}}, "expected"),
    ({"t": {**GOOD, "count": "4"}}, "'count' must be a positive integer"),
    ({"t": {**GOOD, "count": 4.0}}, "'count' must be a positive integer"),
    ({"t": {**GOOD, "count": True}}, "'count' must be a positive integer"),
    ({"t": {**GOOD, "count": 0}}, "'count' must be a positive integer"),
    ({"t": {**GOOD, "count": -3}}, "'count' must be a positive integer"),
    ({"t": {**GOOD, "default": "1"}}, "'default' must be a number"),
    ({"t": {**GOOD, "default": True}}, "'default' must be a number"),
    ({"t": {**GOOD, "default": None}}, "'default' must be a number"),
    ({"t": {**GOOD, "weights": [5.0]}}, "'weights' must map row numbers"),
    ({"t": {**GOOD, "weights": {"x": 5.0}}}, "not a row number below 4"),
    ({"t": {**GOOD, "weights": {"-1": 5.0}}}, "not a row number below 4"),
    ({"t": {**GOOD, "weights": {"1.0": 5.0}}}, "not a row number below 4"),
    ({"t": {**GOOD, "weights": {"4": 5.0}}}, "not a row number below 4"),
    ({"t": {**GOOD, "weights": {"2": "5"}}}, "weight of row 2 must be a number"),
    ({"t": {**GOOD, "weights": {"2": True}}}, "weight of row 2 must be a number"),
    ({"t": {**GOOD, "weights": {"2": None}}}, "weight of row 2 must be a number"),
    ({"t": {**GOOD, "weights": {"2": 0}}}, "finite numbers > 0"),
    ({"t": {**GOOD, "weights": {"2": -5.0}}}, "finite numbers > 0"),
    ({"t": {**GOOD, "weights": {"2": math.nan}}}, "finite numbers > 0"),
    ({"t": {**GOOD, "default": 0.0}}, "finite numbers > 0"),
    ({"t": {**GOOD, "default": -1}}, "finite numbers > 0"),
    ({"": GOOD}, "non-empty strings"),
])
def test_malformed_rows_are_input_errors(tmp_path: Path, rows, message: str) -> None:
    path = tmp_path / "imp.json"
    path.write_text(json.dumps({"format": importance.FORMAT, "version": importance.VERSION,
                                "weights": {"t": 1.0}, "rows": rows}))
    assert importance.load(path) == {"t": 1.0}  # the tensor weights alone are fine
    with pytest.raises(InputError, match=message) as info:
        importance.load_rows(path)
    assert str(path) in str(info.value)


def test_a_default_covering_every_row_is_enough(tmp_path: Path) -> None:
    path = tmp_path / "imp.json"
    path.write_text(json.dumps({"weights": {"t": 1.0},
                                "rows": {"t": {"count": 3, "default": 0.5, "weights": {}}}}))
    assert importance.load_rows(path)["t"].tolist() == [0.5, 0.5, 0.5]


def test_rows_from_a_file_drive_compress(setup, archives, tmp_path: Path) -> None:
    source, _ = setup
    path = importance.save({"other.weight": 1.0}, tmp_path / "imp.json",
                           rows={"emb.weight": row_weights()})
    result = compress(source, tmp_path / "file.rftp", row_importance=importance.load_rows(path))
    assert result.manifest["codec"]["rate_control"]["row_weighted"] == [EMB]
    assert np.array_equal(restored(result.path)[EMB], restored(archives["scalar"].path)[EMB])
