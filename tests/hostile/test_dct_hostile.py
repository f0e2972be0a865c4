"""Hostile tests for the ``dct`` transform (FORMAT.md §8.2.1) and its per-tensor choice.

- hand-edited containers (directory layout, hashes in the manifest brought up to date so that
  only the semantic checks can refuse): a ``row_length`` that is not a positive integer, too
  large, or that does not divide a block (the first or only the last), an extra parameter, a
  newer ``format_version`` — all refused with rftpack's own error, and ``verify`` fails;
  another ``row_length`` that divides every block (or the default 1, or the transform renamed
  ``identity``) is structurally valid and decodes to garbage nothing can catch (documented);
- edge shapes through ``rftpack.compress``: 16 and 15 rows, a column, 3-D/4-D, float16 /
  bfloat16 / float64, non-finite values, all-zero and constant tables, blocks too short for
  the transform and blocks of many rows, a table of several blocks (each its own DCT);
- rate control (``target_bpw``) with dct tensors, determinism, the CLI's ``--row-dct``, and
  a property of :class:`rftpack.stages.dct.RowDCT`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from archive_helpers import containers, decode_all, same_values
from archive_helpers import edited_copy as edited_archive
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file
from smooth_tables import position_table

import rftpack
from rftpack.cli.main import main
from rftpack.errors import FormatError, RftpackError, StageError
from rftpack.stages.dct import MIN_ROWS, RowDCT
from rftpack.verify import verify_archive

MANIFEST = "manifest_hybrid.json"
PROFILES = ["scalar", "dq"]
STEP = 0.002


# -- helpers --------------------------------------------------------------------------------------

def sine_table(rows: int, width: int = 64) -> np.ndarray:
    """A noiseless smooth table: pays for the dct with as few as MIN_ROWS rows."""
    return (0.05 * np.sin(np.linspace(0, 1, rows)[:, None]
                          * np.linspace(1, 3, width)[None, :])).astype(np.float32)





def transform_of(container: dict[str, Any]) -> str | None:
    if container["codec"]["mode"] != "hybrid":
        return None
    return container["stages"][0]["name"]


def snr_db(original: np.ndarray, decoded: np.ndarray) -> float:
    a = original.astype(np.float64).reshape(-1)
    b = decoded.astype(np.float64).reshape(-1)
    finite = np.isfinite(a)
    noise = float(np.sum((a[finite] - b[finite]) ** 2))
    signal = float(np.dot(a[finite], a[finite]))
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


Edit = Callable[[dict[str, Any]], None]


def edited_copy(source: Path, tmp: Path, edit: Edit, name: str = "pos") -> Path:
    """A copy of directory archive ``source`` whose container of ``name`` went through
    ``edit(container)``, its hashes brought up to date (only the semantic checks can refuse
    it)."""
    return edited_archive(source, tmp, lambda container, _payload: edit(container), name)


def dct_record(container: dict[str, Any]) -> dict[str, Any]:
    record = container["stages"][0]
    assert record["kind"] == "transform" and record["name"] == "dct", record
    return record


def set_row_length(value: Any) -> Edit:
    def edit(container: dict[str, Any]) -> None:
        dct_record(container)["configuration"]["row_length"] = value
    return edit


def set_record(**changes: Any) -> Edit:
    def edit(container: dict[str, Any]) -> None:
        dct_record(container).update(changes)
    return edit


def set_configuration(configuration: Any) -> Edit:
    def edit(container: dict[str, Any]) -> None:
        dct_record(container)["configuration"] = configuration
    return edit


def drop_configuration(container: dict[str, Any]) -> None:
    del dct_record(container)["configuration"]


def add_parameter(container: dict[str, Any]) -> None:
    dct_record(container)["configuration"]["rows"] = 512


def compress_one(tmp: Path, state: dict[str, np.ndarray], name: str, **settings_: Any) -> Path:
    source = tmp / f"{name}.safetensors"
    save_file(state, str(source))
    out = tmp / f"{name}.rftp"
    rftpack.compress(source, out, overwrite=True, **{"row_dct": "auto", **settings_})
    return out


# -- 1. hand-edited containers --------------------------------------------------------------------

POS_ROWS, POS_WIDTH = 512, 64  # one block of 32 768 values


@pytest.fixture(scope="module")
def dct_archive(tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[Path, np.ndarray, np.ndarray]:
    """A directory archive of one position table coded through ``dct`` (dq, fixed step)."""
    tmp = tmp_path_factory.mktemp("dct-edit")
    table = position_table(POS_ROWS, POS_WIDTH)
    source = tmp / "m.safetensors"
    save_file({"pos": table}, str(source))
    out = tmp / "archive"
    rftpack.compress(source, out, profile="dq", layout="directory", row_dct="auto",
                     quantizer_overrides={"step": STEP})
    container = containers(out)["pos"]
    assert dct_record(container)["configuration"] == {"row_length": POS_WIDTH}
    assert [b["count"] for b in container["payload"]["blocks"]] == [table.size]
    decoded = decode_all(out)["pos"]
    assert snr_db(table, decoded) > 25
    return out, table, decoded


REFUSED: list[tuple[str, Edit, str]] = [
    ("row_length=0", set_row_length(0), "row_length"),
    ("row_length=-1", set_row_length(-1), "row_length"),
    ("row_length=-64", set_row_length(-64), "row_length"),
    ("row_length=2.0", set_row_length(2.0), "row_length"),
    ("row_length=64.0", set_row_length(64.0), "row_length"),   # a float, though whole
    ("row_length=64.5", set_row_length(64.5), "row_length"),
    ("row_length=true", set_row_length(True), "row_length"),
    ("row_length='64'", set_row_length("64"), "row_length"),
    ("row_length=null", set_row_length(None), "row_length"),
    ("row_length=[64]", set_row_length([64]), "row_length"),
    ("row_length=2**27", set_row_length(1 << 27), "row_length"),
    ("row_length=2**64", set_row_length(1 << 64), "row_length"),
    # in range, but no whole number of rows in the block of 32 768
    ("row_length=2**26", set_row_length(1 << 26), "whole rows"),
    ("row_length=48", set_row_length(48), "whole rows"),
    ("row_length=100", set_row_length(100), "whole rows"),
    ("row_length=32767", set_row_length(32767), "whole rows"),
    ("row_length=65536", set_row_length(65536), "whole rows"),
    ("extra-parameter", add_parameter, "rows"),
    ("configuration=null", set_configuration(None), "configuration"),
    ("configuration=[]", set_configuration([]), "configuration"),
    ("no-configuration", drop_configuration, "configuration"),
    ("format_version=2", set_record(format_version=2), "format version"),
    ("format_version=99", set_record(format_version=99), "format version"),
    ("format_version=0", set_record(format_version=0), "format_version"),
    ("format_version=1.5", set_record(format_version=1.5), "format_version"),
    # (JSON Schema counts 1.0 as an integer; the reader's own check does not)
    ("format_version=1.0", set_record(format_version=1.0), "format_version must be an integer"),
    ("format_version=true", set_record(format_version=True), "format_version"),
    ("format_version='1'", set_record(format_version="1"), "format_version"),
    # (generic, not the dct's: the messages once read "blocks cover [32768] weights, but the
    # tensor has 32768")
    ("block_size=1000", lambda c: c.update(block_size=1000), "more than the container's"),
    ("count=-1", lambda c: c["payload"]["blocks"][0].update(count=-1), "count"),
    ("kind=quantizer", set_record(kind="quantizer"), "kind"),
    ("name=DCT", set_record(name="DCT"), "DCT"),
    ("name=dct2", set_record(name="dct2"), "dct2"),
]


@pytest.mark.parametrize(("edit", "says"), [(e, s) for _, e, s in REFUSED],
                         ids=[n for n, _, _ in REFUSED])
def test_edited_dct_container_is_refused(dct_archive, tmp_path: Path, edit: Edit,
                                         says: str) -> None:
    out, _, _ = dct_archive
    edited = edited_copy(out, tmp_path, edit)
    with pytest.raises((FormatError, StageError)) as caught:
        decode_all(edited)
    assert says in str(caught.value), caught.value
    assert "Traceback" not in str(caught.value)
    report = verify_archive(edited)
    assert not report.ok and any("'pos'" in p for p in report.problems), report.problems


@pytest.mark.parametrize("value", [1, 2, 32, 128, 512, 4096, 32768])
def test_another_dividing_row_length_decodes_garbage_undetected(dct_archive, tmp_path: Path,
                                                                value: int) -> None:
    """Any ``row_length`` dividing the block (32 768 = 2¹⁵ values) is structurally valid:
    the schema, the stage and the block checks all accept it, and ``verify`` passes once the
    container hash in the manifest is updated (asserted here to document it — only that hash
    protects the parameter; §8.2.1 does not require it to equal the quantizer's row_length).
    The values decoded are far from the true ones: never a silent near-miss."""
    out, table, good = dct_archive
    edited = edited_copy(out, tmp_path, set_row_length(value))
    assert verify_archive(edited).ok  # undetectable once the container hash is updated
    wrong = decode_all(edited)["pos"]
    assert wrong.shape == table.shape and wrong.dtype == table.dtype
    assert np.all(np.isfinite(wrong))
    assert snr_db(table, wrong) < snr_db(table, good) - 20, (snr_db(table, good),
                                                            snr_db(table, wrong))
    # energy is kept (orthonormal both ways): the values are permuted in frequency, not lost
    assert np.sum(wrong.astype(np.float64) ** 2) == pytest.approx(
        np.sum(good.astype(np.float64) ** 2), rel=1e-4)


@pytest.mark.parametrize("edit", [set_configuration({}),
                                  set_record(name="identity", configuration={})],
                         ids=["default-row_length-1", "renamed-identity"])
def test_dropping_the_row_length_or_the_transform_decodes_garbage_undetected(
        dct_archive, tmp_path: Path, edit: Edit) -> None:
    """``configuration: {}`` means row_length 1 (§5.3's default): one DCT over the whole block;
    renaming the stage ``identity`` reads the coefficients as weights. Both are valid
    containers (documented), and both decode far from the table."""
    out, table, good = dct_archive
    edited = edited_copy(out, tmp_path, edit)
    assert verify_archive(edited).ok
    wrong = decode_all(edited)["pos"]
    assert snr_db(table, wrong) < snr_db(table, good) - 20


@pytest.mark.parametrize("edit", [set_record(provider="someone-else"),
                                  set_record(format_version=1)],
                         ids=["provider", "format_version=1"])
def test_harmless_edits_decode_the_same(dct_archive, tmp_path: Path, edit: Edit) -> None:
    out, _, good = dct_archive
    edited = edited_copy(out, tmp_path, edit)
    assert same_values(decode_all(edited)["pos"], good)
    assert verify_archive(edited).ok


def test_quantizer_row_length_disagreeing_with_the_dct_is_not_checked(
        dct_archive, tmp_path: Path) -> None:
    """§8.2.1: rftpack writes the quantizer's row_length equal to the stage's. The quantizer's
    is an encoder parameter (classes decode from the block's ``class_length``), so a reader
    does not check the two agree: the edited container decodes the same values."""
    out, _, good = dct_archive

    def edit(container: dict[str, Any]) -> None:
        container["stages"][1]["configuration"]["row_length"] = 32

    edited = edited_copy(out, tmp_path, edit)
    assert same_values(decode_all(edited)["pos"], good)


# a table of several blocks: 2048 rows of 300, blocks of 436 rows (130 800 values) and a last
# block of 304 rows (91 200 values)
BIG_ROWS, BIG_WIDTH, BIG_BLOCK = 2048, 300, 1 << 17
BIG_BLOCK_ROWS = BIG_BLOCK // BIG_WIDTH


@pytest.fixture(scope="module")
def big_archive(tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[Path, np.ndarray, np.ndarray]:
    tmp = tmp_path_factory.mktemp("dct-big")
    table = position_table(BIG_ROWS, BIG_WIDTH, seed=4)
    source = tmp / "big.safetensors"
    save_file({"pos": table}, str(source))
    out = tmp / "archive"
    rftpack.compress(source, out, profile="scalar", layout="directory", row_dct="auto",
                     block_size=BIG_BLOCK,
                     quantizer_overrides={"step": STEP})
    return out, table, decode_all(out)["pos"]


def test_several_blocks_each_have_their_own_dct(big_archive, tmp_path: Path) -> None:
    """Every block is whole rows; the first block decodes exactly as the first 436 rows
    compressed on their own (a DCT over more rows than a block would change them)."""
    out, table, decoded = big_archive
    container = containers(out)["pos"]
    assert dct_record(container)["configuration"] == {"row_length": BIG_WIDTH}
    assert container["block_size"] == BIG_BLOCK_ROWS * BIG_WIDTH == 130800
    counts = [b["count"] for b in container["payload"]["blocks"]]
    assert counts == [130800] * 4 + [91200]
    assert snr_db(table, decoded) > 25
    head = table[:BIG_BLOCK_ROWS]
    alone = compress_one(tmp_path, {"pos": head}, "head", profile="scalar",
                         block_size=BIG_BLOCK, quantizer_overrides={"step": STEP})
    assert transform_of(containers(alone)["pos"]) == "dct"
    assert same_values(decode_all(alone)["pos"], decoded[:BIG_BLOCK_ROWS])
    assert verify_archive(out).ok


def test_row_length_dividing_all_blocks_but_the_last_is_refused(big_archive,
                                                                 tmp_path: Path) -> None:
    """109 divides 130 800 (the four full blocks) but not 91 200 (the last): refused at the
    last block, never a partial decode."""
    out, _, _ = big_archive
    assert 130800 % 109 == 0 and 91200 % 109
    edited = edited_copy(out, tmp_path, set_row_length(109))
    with pytest.raises(FormatError, match="whole rows of 109"):
        decode_all(edited)
    assert not verify_archive(edited).ok


def test_row_length_dividing_every_block_decodes_garbage(big_archive, tmp_path: Path) -> None:
    out, table, decoded = big_archive
    edited = edited_copy(out, tmp_path, set_row_length(150))
    assert verify_archive(edited).ok  # documented: valid, undetectable
    assert snr_db(table, decode_all(edited)["pos"]) < snr_db(table, decoded) - 20


# -- 2. edge shapes through compress --------------------------------------------------------------

def edge_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    nonfinite = position_table(512, 64, seed=5)
    nonfinite[3, 3] = np.nan
    nonfinite[7] = np.inf
    nonfinite[100, 5] = -np.inf
    return {
        "rows16": sine_table(MIN_ROWS),
        "rows15": sine_table(MIN_ROWS - 1),
        "column": position_table(4096, 1, seed=1),
        "cube": position_table(512, 64, seed=2).reshape(512, 8, 8),
        "conv": position_table(256, 72, seed=3).reshape(256, 2, 6, 6),
        "half": position_table(512, 64, seed=6).astype(np.float16),
        "brain": position_table(512, 64, seed=7).astype(ml_dtypes.bfloat16),
        "double": position_table(512, 64, seed=8).astype(np.float64),
        "nonfinite": nonfinite,
        "zeros": np.zeros((512, 64), np.float32),
        "constant": np.full((512, 64), 0.03, np.float32),
        "same_rows": np.tile((0.05 * rng.normal(size=64)).astype(np.float32), (512, 1)),
        "random": (0.05 * rng.normal(size=(512, 64))).astype(np.float32),
    }


EXPECTED_DCT = {"rows16": 64, "column": 1, "cube": 64, "conv": 72, "half": 64, "brain": 64,
                "double": 64, "same_rows": 64}
EXPECTED_IDENTITY = {"rows15", "nonfinite", "zeros", "constant", "random"}


@pytest.fixture(scope="module")
def edge_archives(tmp_path_factory: pytest.TempPathFactory
                  ) -> tuple[dict[str, np.ndarray], dict[tuple[str, str], Path]]:
    """(profile, row_dct) → archive of the edge model at one fixed step."""
    tmp = tmp_path_factory.mktemp("dct-edge")
    tensors = edge_tensors()
    source = tmp / "edge.safetensors"
    save_file(tensors, str(source))
    done = {}
    for profile in PROFILES:
        for mode in ("auto", "off"):
            out = tmp / f"{profile}-{mode}.rftp"
            rftpack.compress(source, out, profile=profile, min_lossy_numel=2, row_dct=mode,
                             quantizer_overrides={"step": STEP})
            done[profile, mode] = out
    return tensors, done


def test_edge_model_covers_every_tensor() -> None:
    assert set(EXPECTED_DCT) | EXPECTED_IDENTITY == set(edge_tensors())
    assert not set(EXPECTED_DCT) & EXPECTED_IDENTITY


@pytest.mark.parametrize("profile", PROFILES)
def test_edge_shapes_pick_the_dct_exactly_where_expected(edge_archives, profile: str) -> None:
    tensors, archives = edge_archives
    auto, off = containers(archives[profile, "auto"]), containers(archives[profile, "off"])
    for name in tensors:
        assert transform_of(off[name]) == "identity", name
        if name in EXPECTED_DCT:
            assert transform_of(auto[name]) == "dct", name
            assert dct_record(auto[name])["configuration"]["row_length"] == EXPECTED_DCT[name]
            quantizer = auto[name]["stages"][1]["configuration"]
            assert quantizer["row_length"] == EXPECTED_DCT[name], name  # §8.2.1
            assert auto[name]["block_size"] % EXPECTED_DCT[name] == 0, name
        else:
            assert transform_of(auto[name]) == "identity", name
    assert verify_archive(archives[profile, "auto"]).ok


@pytest.mark.parametrize("profile", PROFILES)
def test_edge_shapes_decode_as_well_as_without_the_dct(edge_archives, profile: str) -> None:
    """Same step: about the same error in both domains, and the dct tables take fewer bytes;
    tensors without the dct decode bit for bit as with row_dct="off"."""
    tensors, archives = edge_archives
    auto, off = decode_all(archives[profile, "auto"]), decode_all(archives[profile, "off"])
    records_auto = containers(archives[profile, "auto"])
    records_off = containers(archives[profile, "off"])
    for name, original in tensors.items():
        assert auto[name].shape == original.shape and auto[name].dtype == original.dtype, name
        if name == "same_rows":
            # all rows alike: every coefficient row but the first is exactly 0 and codes to 0
            # without error, so the error is that of 64 coefficients, not of 32 768 weights
            assert snr_db(original, auto[name]) > snr_db(original, off[name]) + 20
        elif name == "rows16":
            # noiseless: its high-frequency coefficients code to exact zeros (less error)
            assert snr_db(original, auto[name]) >= snr_db(original, off[name]) - 1.0
        elif name in EXPECTED_DCT:
            assert snr_db(original, auto[name]) == pytest.approx(
                snr_db(original, off[name]), abs=1.5), name
        else:
            assert same_values(auto[name], off[name]), name
        if name in EXPECTED_DCT:
            assert records_auto[name]["stored_bytes"] < 0.8 * records_off[name]["stored_bytes"]


@pytest.mark.parametrize("profile", PROFILES)
def test_edge_nonfinite_zero_and_constant_tables(edge_archives, profile: str) -> None:
    tensors, archives = edge_archives
    decoded = decode_all(archives[profile, "auto"])
    original = tensors["nonfinite"]
    special = ~np.isfinite(original)
    assert same_values(decoded["nonfinite"][special], original[special])
    assert np.all(np.isfinite(decoded["nonfinite"][~special]))
    assert snr_db(original, decoded["nonfinite"]) > 20
    assert same_values(decoded["zeros"], tensors["zeros"])
    # (the trellis of dq may pick a level one step away: within a step, not half of one)
    assert np.max(np.abs(decoded["constant"] - tensors["constant"])) <= 1.01 * STEP


@pytest.mark.parametrize("profile", PROFILES)
def test_edge_model_under_an_snr_target(tmp_path: Path, profile: str) -> None:
    """Rate control over the finite edge tables (the all-zero one aside, see below):
    the dct tables meet the target as the others do."""
    tensors = {k: v for k, v in edge_tensors().items()
               if k in ("rows16", "rows15", "column", "cube", "half", "brain", "random",
                        "nonfinite")}
    out = compress_one(tmp_path, tensors, "snr", profile=profile, target_snr_db=30.0,
                       min_lossy_numel=2)
    records = containers(out)
    assert {k for k in tensors if transform_of(records[k]) == "dct"} == \
        {"rows16", "column", "cube", "half", "brain"}
    decoded = decode_all(out)
    signal = sum(float(np.nansum(np.where(np.isfinite(v), v, 0).astype(np.float64) ** 2))
                 for v in tensors.values())
    noise = sum(snr_noise(v, decoded[k]) for k, v in tensors.items())
    assert 10 * math.log10(signal / noise) >= 29.8
    assert verify_archive(out).ok


def snr_noise(original: np.ndarray, decoded: np.ndarray) -> float:
    a = original.astype(np.float64).reshape(-1)
    b = decoded.astype(np.float64).reshape(-1)
    finite = np.isfinite(a)
    return float(np.sum((a[finite] - b[finite]) ** 2))


@pytest.mark.parametrize("profile", PROFILES)
def test_all_zero_table_under_a_bpw_target(tmp_path: Path, profile: str) -> None:
    out = compress_one(tmp_path, {"w": np.zeros((512, 64), np.float32)}, "z", profile=profile,
                       target_bpw=4.0)
    assert transform_of(containers(out)["w"]) == "identity"
    assert same_values(decode_all(out)["w"], np.zeros((512, 64), np.float32))


def test_all_zero_table_under_an_snr_target(tmp_path: Path) -> None:
    """(A bug found here: a goal of zero error raised a bare ZeroDivisionError.)"""
    out = compress_one(tmp_path, {"w": np.zeros((512, 64), np.float32)}, "z", profile="scalar",
                       target_snr_db=30.0, row_dct="off")
    assert same_values(decode_all(out)["w"], np.zeros((512, 64), np.float32))


def test_constant_table_meets_the_snr_target_with_dq(tmp_path: Path) -> None:
    """(A bug found here: the scalar proxy's step puts the constant on its grid, the trellis
    cannot reproduce it, and the narrow bracket around the proxy's step held no step that met
    the target: 11.3 dB for 30. The plan now searches the wide bracket when it misses.)"""
    table = np.full((512, 64), 0.3, np.float32)
    out = compress_one(tmp_path, {"w": table}, "c", profile="dq", target_snr_db=30.0)
    assert snr_db(table, decode_all(out)["w"]) >= 29.0


@pytest.mark.parametrize("profile", PROFILES)
def test_blocks_of_two_rows_are_too_short_for_the_dct(tmp_path: Path, profile: str) -> None:
    """block_size 1000 with rows of 384: blocks of 768 values = 2 rows < MIN_ROWS."""
    table = position_table(512, 384, seed=9)
    out = compress_one(tmp_path, {"w": table}, "short", profile=profile, block_size=1000,
                       quantizer_overrides={"step": STEP})
    container = containers(out)["w"]
    assert transform_of(container) == "identity"
    assert snr_db(table, decode_all(out)["w"]) > 20


@pytest.mark.parametrize("profile", PROFILES)
def test_blocks_of_625_rows(tmp_path: Path, profile: str) -> None:
    """block_size 40000 with rows of 64: blocks of exactly 625 rows, each its own DCT."""
    table = position_table(2048, 64, seed=10)
    out = compress_one(tmp_path, {"w": table}, "b625", profile=profile, block_size=40000,
                       target_snr_db=30.0)
    container = containers(out)["w"]
    assert transform_of(container) == "dct"
    assert container["block_size"] == 40000
    counts = [b["count"] for b in container["payload"]["blocks"]]
    assert counts == [40000] * 3 + [2048 * 64 - 120000]
    assert all(c % 64 == 0 for c in counts)
    assert snr_db(table, decode_all(out)["w"]) >= 29.8
    off = compress_one(tmp_path, {"w": table}, "b625off", profile=profile, block_size=40000,
                       target_snr_db=30.0, row_dct="off")
    assert out.stat().st_size < 0.8 * off.stat().st_size
    assert verify_archive(out).ok


def test_a_row_longer_than_the_block_gets_no_dct(tmp_path: Path) -> None:
    table = position_table(64, 2000, seed=12)
    out = compress_one(tmp_path, {"w": table}, "long", profile="scalar", block_size=1500,
                       quantizer_overrides={"step": STEP})
    assert transform_of(containers(out)["w"]) == "identity"


def test_max_rel_error_never_uses_the_dct(tmp_path: Path) -> None:
    table = position_table(512, 64)
    out = compress_one(tmp_path, {"w": table}, "mre", profile="scalar", max_rel_error=0.01)
    assert transform_of(containers(out)["w"]) == "identity"
    decoded = decode_all(out)["w"].astype(np.float64)
    assert np.max(np.abs(decoded - table)) <= 0.01 * np.max(np.abs(table)) * 1.0001


# -- 3. rate control and determinism --------------------------------------------------------------

@pytest.fixture(scope="module")
def rate_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    rng = np.random.default_rng(6)
    state = {"pos.weight": position_table(1024, 128, seed=3),
             "layer.weight": (0.05 * rng.normal(size=(256, 128))).astype(np.float32),
             "layer.bias": (0.01 * rng.normal(size=128)).astype(np.float32)}
    path = tmp_path_factory.mktemp("dct-rate") / "m.safetensors"
    save_file(state, str(path))
    return path, sum(v.size for v in state.values())


@pytest.mark.parametrize("target", [2.0, 3.0, 5.0, 8.0])
def test_bpw_target_is_met_with_the_dct(rate_source, tmp_path: Path, target: float) -> None:
    """≤ target, and at most 3 % under. (The plan overestimates a dct tensor's bits by 2–4 %:
    the high-frequency rows at the end of a block quantize to a run of symbol 0, which
    constriction's rANS codes for nothing onto its initial state; the plan prices them at
    the average rate. So the dct archives land 2–3 % under, identity ones < 1 %.)"""
    source, numel = rate_source
    out = tmp_path / "a.rftp"
    rftpack.compress(source, out, profile="dq", target_bpw=target, row_dct="auto")
    assert transform_of(containers(out)["pos.weight"]) == "dct"
    assert transform_of(containers(out)["layer.weight"]) == "identity"
    bpw = out.stat().st_size * 8 / numel
    assert 0.97 * target <= bpw <= target, (target, bpw)


@pytest.mark.parametrize("profile", PROFILES)
def test_compressing_twice_gives_identical_archives(rate_source, tmp_path: Path,
                                                    profile: str) -> None:
    source, _ = rate_source
    a, b = tmp_path / "a.rftp", tmp_path / "b.rftp"
    for out in (a, b):
        rftpack.compress(source, out, profile=profile, target_bpw=3.0, row_dct="auto")
    assert a.read_bytes() == b.read_bytes()
    assert transform_of(containers(a)["pos.weight"]) == "dct"


# -- 4. CLI --row-dct ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dct-cli") / "model.safetensors"
    rng = np.random.default_rng(13)
    save_file({"pos": position_table(512, 64, seed=14),
               "w": (0.05 * rng.normal(size=(256, 64))).astype(np.float32)}, str(path))
    return path


@pytest.mark.parametrize(("flag", "expected"), [(["--row-dct", "off"], "identity"),
                                                (["--row-dct", "auto"], "dct"),
                                                ([], "identity")])  # off by default
def test_cli_row_dct(cli_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                     flag: list[str], expected: str) -> None:
    out = tmp_path / "out.rftp"
    code = main(["compress", str(cli_model), "-o", str(out), "--profile", "dq", "--bpw", "4",
                 "-q", *flag])
    assert code == 0, capsys.readouterr().err
    records = containers(out)
    assert transform_of(records["pos"]) == expected
    assert transform_of(records["w"]) == "identity"
    assert out.stat().st_size * 8 / (512 * 64 + 256 * 64) <= 4.0


@pytest.mark.parametrize("value", ["bogus", "on", "AUTO", "", "1"])
def test_cli_bad_row_dct_is_an_argparse_error(cli_model: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture,
                                              value: str) -> None:
    out = tmp_path / "out.rftp"
    with pytest.raises(SystemExit) as caught:
        main(["compress", str(cli_model), "-o", str(out), "--profile", "dq", "--bpw", "4",
              "--row-dct", value])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--row-dct" in err and "invalid choice" in err and "Traceback" not in err
    assert not out.exists()


def test_api_bad_row_dct_is_a_clean_error(cli_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.rftp"
    with pytest.raises(RftpackError, match="row_dct"):
        rftpack.compress(cli_model, out, profile="dq", row_dct="bogus")
    assert not out.exists()


# -- 5. properties --------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(m=st.integers(1, 300), c=st.integers(1, 40), seed=st.integers(0, 2 ** 32 - 1),
       scale=st.sampled_from([1e-30, 1e-3, 1.0, 1e30]))
def test_row_dct_inverts_and_keeps_energy(m: int, c: int, seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=m * c) * scale
    t = RowDCT(row_length=c)
    coefficients = t.forward(x)
    assert coefficients.shape == x.shape and coefficients.dtype == np.float64
    back = t.inverse(coefficients, x.shape[0])
    assert np.linalg.norm(back - x) <= 1e-9 * np.linalg.norm(x)
    assert float(coefficients @ coefficients) == pytest.approx(float(x @ x), rel=1e-9)
    # rows are transformed column by column: the first coefficient row is √m × the mean row
    np.testing.assert_allclose(coefficients[:c], np.sqrt(m) * x.reshape(m, c).mean(axis=0),
                               rtol=1e-9, atol=1e-9 * np.abs(x).max())
