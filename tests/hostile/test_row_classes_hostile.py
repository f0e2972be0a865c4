"""Hostile tests for row classes (``scalar`` and ``dq``, FORMAT.md §8.5/§8.6).

- hand-edited containers (directory layout, container hash updated in the manifest so that
  only the semantic checks can refuse): bad ``row_classes`` / ``class_length`` side info,
  missing, extra, short and empty class streams, row classes out of their alphabet, a row
  moved to another class — all refused with rftpack's own error, and ``verify`` fails; a
  valid variant (an extra empty class) decodes to the same values; swapped class streams of
  equal length decode to wrong values that nothing can catch (documented);
- edge shapes through ``rftpack.compress`` (1×N, N×1, empty, 3-D/4-D, a huge row, zero rows,
  non-finite values, float16/bfloat16, rows longer than a block, blocks that are not a
  multiple of the row length): the decode equals the one without classes at the same step;
- rate control with classes (``target_bpw``, ``target_snr_db``), determinism, properties of
  :mod:`rftpack.stages.rowclasses` and the quantizers, and the CLI's ``--set row_classes``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from archive_helpers import Edit, containers, decode_all, edited_copy, same_values
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

import rftpack
from rftpack import api
from rftpack.cli.main import main
from rftpack.codec import MAX_BLOCK_SIZE
from rftpack.errors import FormatError, RftpackError
from rftpack.ratecontrol import (
    TensorStats,
    estimate,
    extremes_of,
    sample_of,
)
from rftpack.stages import rowclasses
from rftpack.stages.dq import DependentQuantizer
from rftpack.stages.rans import RansCoder
from rftpack.stages.scalar import ScalarQuantizer, zigzag
from rftpack.verify import verify_archive

FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)
MANIFEST = "manifest_hybrid.json"
PROFILES = ["scalar", "dq"]


# -- helpers --------------------------------------------------------------------------------------

def row_scaled(rng: np.random.Generator, rows: int, length: int, spread: float = 1.5,
               scale: float = 0.02) -> np.ndarray:
    """Gaussian rows whose RMS is log-normal with ``spread`` octaves of deviation."""
    sigma = np.exp2(rng.normal(size=(rows, 1)) * spread) * scale
    return (rng.normal(size=(rows, length)) * sigma).astype(np.float32)





def quantizer_record(container: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in container["stages"] if s["kind"] == "quantizer")


def snr_db(original: dict[str, np.ndarray], decoded: dict[str, np.ndarray]) -> float:
    signal = noise = 0.0
    for name, x in original.items():
        a = x.astype(np.float64).reshape(-1)
        b = decoded[name].astype(np.float64).reshape(-1)
        finite = np.isfinite(a)
        signal += float(np.dot(a[finite], a[finite]))
        noise += float(np.sum((a[finite] - b[finite]) ** 2))
    return 10 * math.log10(signal / noise)


def achieved_bpw(result: api.CompressResult) -> float:
    return 8 * result.archive_bytes / result.metrics["weights"]




def first_block(container: dict[str, Any]) -> dict[str, Any]:
    return container["payload"]["blocks"][0]


def segment_symbols(container: dict[str, Any], payload: bytearray, key: str) -> np.ndarray:
    """The decoded symbols of stream ``key`` of the first block."""
    block = first_block(container)
    seg = block["streams"][key]
    alphabet = block["side"]["row_classes"] if key == "row_classes" else block["side"]["alphabet"]
    data = bytes(payload[seg["offset"]:seg["offset"] + seg["length"]])
    return RansCoder().decode(data, seg["count"], alphabet).astype(np.int64)


def append_segment(container: dict[str, Any], payload: bytearray, key: str,
                   symbols: np.ndarray, alphabet: int) -> bytearray:
    """Point stream ``key`` of the first block at a fresh rANS segment of ``symbols``,
    appended to the payload."""
    data = RansCoder().encode(np.asarray(symbols, np.int64), alphabet)
    first_block(container)["streams"][key] = {"offset": len(payload), "length": len(data),
                                             "count": int(np.asarray(symbols).shape[0])}
    return payload + data


def reencoded(key: str, change: Callable[[np.ndarray, int], tuple[np.ndarray, int]]) -> Edit:
    """Re-encode stream ``key`` of the first block: ``change(symbols, alphabet)`` gives the
    new symbols and the alphabet to code them with."""
    def edit(container: dict[str, Any], payload: bytearray) -> bytearray:
        side = first_block(container)["side"]
        alphabet = side["row_classes"] if key == "row_classes" else side["alphabet"]
        symbols, coded_alphabet = change(segment_symbols(container, payload, key), alphabet)
        return append_segment(container, payload, key, symbols, coded_alphabet)
    return edit


def set_side(key: str, value: Any) -> Edit:
    def edit(container: dict[str, Any], payload: bytearray) -> None:
        first_block(container)["side"][key] = value
    return edit


def drop_side(*keys: str) -> Edit:
    def edit(container: dict[str, Any], payload: bytearray) -> None:
        for key in keys:
            del first_block(container)["side"][key]
    return edit


def drop_stream(key: str) -> Edit:
    def edit(container: dict[str, Any], payload: bytearray) -> None:
        del first_block(container)["streams"][key]
    return edit


def swap_streams(a: str, b: str) -> Edit:
    def edit(container: dict[str, Any], payload: bytearray) -> None:
        streams = first_block(container)["streams"]
        streams[a], streams[b] = streams[b], streams[a]
    return edit


def copy_stream(source: str, target: str) -> Edit:
    def edit(container: dict[str, Any], payload: bytearray) -> None:
        streams = first_block(container)["streams"]
        streams[target] = dict(streams[source])
    return edit


def add_to_count(key: str, delta: int) -> Edit:
    def edit(container: dict[str, Any], payload: bytearray) -> None:
        first_block(container)["streams"][key]["count"] += delta
    return edit


def move_first_row(container: dict[str, Any], payload: bytearray) -> bytearray:
    """Row 0 changes class (its codes stay where they were): the class streams no longer
    hold as many codes as their rows."""
    def change(symbols: np.ndarray, alphabet: int) -> tuple[np.ndarray, int]:
        symbols = symbols.copy()
        symbols[0] = (symbols[0] + 1) % alphabet
        return symbols, alphabet
    return reencoded("row_classes", change)(container, payload)


# -- 1. hand-edited containers --------------------------------------------------------------------

LENGTH = 128
ROWS = 512
STEP = 0.002
EDIT_BLOCK = 1 << 15  # 256 rows a block


@pytest.fixture(scope="module")
def classed_archives(tmp_path_factory: pytest.TempPathFactory
                     ) -> dict[str, tuple[Path, np.ndarray]]:
    """Directory archives (scalar and dq) of one strongly row-scaled matrix whose blocks are
    coded in 4 row classes."""
    tmp = tmp_path_factory.mktemp("row-classes-edit")
    weight = row_scaled(np.random.default_rng(11), ROWS, LENGTH)
    source = tmp / "m.safetensors"
    save_file({"w": weight}, str(source))
    done = {}
    for profile in PROFILES:
        out = tmp / profile
        rftpack.compress(source, out, profile=profile, layout="directory",
                         block_size=EDIT_BLOCK, quantizer_overrides={"step": STEP})
        done[profile] = (out, weight)
    return done


@pytest.mark.parametrize("profile", PROFILES)
def test_fixture_blocks_have_four_equal_classes(classed_archives, profile: str) -> None:
    """The edits below assume 4 classes of 64 rows in the first block."""
    out, _ = classed_archives[profile]
    container = containers(out)["w"]
    block = first_block(container)
    assert block["side"]["row_classes"] == 4 and block["side"]["class_length"] == LENGTH
    assert sorted(block["streams"]) == ["codes", "codes_1", "codes_2", "codes_3", "row_classes"]
    assert [block["streams"][k]["count"] for k in ("codes", "codes_1", "codes_2", "codes_3")] \
        == [64 * LENGTH] * 4
    assert block["streams"]["row_classes"]["count"] == EDIT_BLOCK // LENGTH
    assert quantizer_record(container)["format_version"] == (2 if profile == "scalar" else 4)
    assert verify_archive(out).ok


def _identity_reencode(symbols: np.ndarray, alphabet: int) -> tuple[np.ndarray, int]:
    return symbols, alphabet


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("edit", [
    lambda c, p: None,
    reencoded("codes_1", _identity_reencode),
    reencoded("row_classes", _identity_reencode),
], ids=["no-op", "codes_1-recoded", "row_classes-recoded"])
def test_controls_decode_to_the_same_values(classed_archives, tmp_path: Path, profile: str,
                                            edit: Edit) -> None:
    """The editing machinery itself (hash updates, segments appended to the payload) keeps
    an archive valid: the refusals below come from the semantic checks."""
    out, _ = classed_archives[profile]
    edited = edited_copy(out, tmp_path, edit)
    assert same_values(decode_all(out)["w"], decode_all(edited)["w"])
    assert verify_archive(edited).ok


def _one_more_empty_class(container: dict[str, Any], payload: bytearray) -> bytearray:
    """C → C + 1 with an empty stream for the new class, the row-class stream left as it was
    coded (for alphabet C). rANS's model spans the whole alphabet (constriction's leaky
    categorical gives every symbol of it some probability), so the row classes decode to
    other symbols: their counts no longer match the class streams."""
    block = first_block(container)
    classes = block["side"]["row_classes"]
    block["side"]["row_classes"] = classes + 1
    return append_segment(container, payload, f"codes_{classes}", np.zeros(0, np.int64),
                          block["side"]["alphabet"])


def _classes_recoded_wider(container: dict[str, Any], payload: bytearray) -> bytearray:
    """C → C + 1 with an empty stream for the new class and the row-class stream re-coded
    for its wider alphabet: valid (§8.5: a class stream's count is the number of its rows'
    weights, possibly 0)."""
    classes = first_block(container)["side"]["row_classes"]
    symbols = segment_symbols(container, payload, "row_classes")
    payload = _one_more_empty_class(container, payload)
    return append_segment(container, payload, "row_classes", symbols, classes + 1)


REFUSED: list[tuple[str, Edit]] = [
    ("row_classes=3", set_side("row_classes", 3)),
    ("row_classes=5", set_side("row_classes", 5)),
    ("row_classes=2", set_side("row_classes", 2)),
    ("row_classes=1", set_side("row_classes", 1)),
    ("row_classes=0", set_side("row_classes", 0)),
    ("row_classes=16", set_side("row_classes", 16)),
    ("row_classes=17", set_side("row_classes", 17)),
    ("row_classes=-4", set_side("row_classes", -4)),
    ("row_classes=true", set_side("row_classes", True)),
    ("row_classes=4.0", set_side("row_classes", 4.0)),
    ("row_classes='4'", set_side("row_classes", "4")),
    ("row_classes=null", set_side("row_classes", None)),
    ("row_classes=[4]", set_side("row_classes", [4])),
    ("no-row_classes", drop_side("row_classes")),
    ("class_length=L-1", set_side("class_length", LENGTH - 1)),
    ("class_length=L+1", set_side("class_length", LENGTH + 1)),
    ("class_length=L/2", set_side("class_length", LENGTH // 2)),
    ("class_length=2L", set_side("class_length", 2 * LENGTH)),
    ("class_length=1", set_side("class_length", 1)),
    ("class_length=0", set_side("class_length", 0)),
    ("class_length=-128", set_side("class_length", -LENGTH)),
    ("class_length=block", set_side("class_length", EDIT_BLOCK)),
    ("class_length=2^62", set_side("class_length", 1 << 62)),
    ("class_length=2^63", set_side("class_length", 1 << 63)),
    ("class_length=2^100", set_side("class_length", 1 << 100)),
    ("class_length=true", set_side("class_length", True)),
    ("class_length=128.0", set_side("class_length", float(LENGTH))),
    ("class_length=128.5", set_side("class_length", LENGTH + 0.5)),
    ("class_length='128'", set_side("class_length", str(LENGTH))),
    ("class_length=null", set_side("class_length", None)),
    ("no-class_length", drop_side("class_length")),
    ("no-side-keys-but-streams", drop_side("row_classes", "class_length")),
    ("no-codes", drop_stream("codes")),
    ("no-codes_1", drop_stream("codes_1")),
    ("no-codes_3", drop_stream("codes_3")),
    ("no-row_classes-stream", drop_stream("row_classes")),
    ("extra-codes_9", copy_stream("codes_1", "codes_9")),
    ("extra-codes_4", copy_stream("codes_1", "codes_4")),
    ("extra-row_levels", copy_stream("row_classes", "row_levels")),
    ("class>=C", reencoded("row_classes", lambda s, a: (np.where(np.arange(s.size) == 5, a, s),
                                                        a + 1))),
    ("class-stream-empty", reencoded("codes_2", lambda s, a: (s[:0], a))),
    ("class-stream-short", reencoded("codes_1", lambda s, a: (s[:-1], a))),
    ("class-stream-long", reencoded("codes_1", lambda s, a: (np.append(s, 0), a))),
    ("classes-short", reencoded("row_classes", lambda s, a: (s[:-1], a))),
    ("classes-long", reencoded("row_classes", lambda s, a: (np.append(s, 0), a))),
    ("classes-empty", reencoded("row_classes", lambda s, a: (s[:0], a))),
    ("row-changes-class", move_first_row),
    ("codes_1-count+1", add_to_count("codes_1", 1)),
    ("codes_1-count-1", add_to_count("codes_1", -1)),
    ("row_classes-count+1", add_to_count("row_classes", 1)),
    ("row_classes-count-1", add_to_count("row_classes", -1)),
    ("swap-codes_1-row_classes", swap_streams("codes_1", "row_classes")),
    ("row_classes=5+empty-codes_4", _one_more_empty_class),
]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("edit", [e for _, e in REFUSED], ids=[n for n, _ in REFUSED])
def test_edited_class_container_is_refused(classed_archives, tmp_path: Path, profile: str,
                                           edit: Edit) -> None:
    out, _ = classed_archives[profile]
    edited = edited_copy(out, tmp_path, edit)
    with pytest.raises(RftpackError):
        with rftpack.open(edited) as archive:
            archive.get_tensor("w")
    report = verify_archive(edited)
    assert not report.ok and any("'w'" in p for p in report.problems), report.problems


@pytest.mark.parametrize("profile", PROFILES)
def test_an_extra_empty_class_is_valid_and_decodes_the_same(classed_archives, tmp_path: Path,
                                                            profile: str) -> None:
    out, _ = classed_archives[profile]
    edited = edited_copy(out, tmp_path, _classes_recoded_wider)
    assert first_block(containers(edited)["w"])["side"]["row_classes"] == 5
    assert same_values(decode_all(out)["w"], decode_all(edited)["w"])
    assert verify_archive(edited).ok


def _reversed_rows(container: dict[str, Any], payload: bytearray) -> bytearray:
    """Row classes in reverse order: every class keeps its number of rows, so the counts
    still match."""
    return reencoded("row_classes", lambda s, a: (s[::-1], a))(container, payload)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("edit", [swap_streams("codes_1", "codes_2"),
                                  swap_streams("codes", "codes_3"), _reversed_rows],
                         ids=["swap-1-2", "swap-0-3", "reversed-rows"])
def test_equal_length_class_edits_never_decode_silently_to_the_true_values(
        classed_archives, tmp_path: Path, profile: str, edit: Edit) -> None:
    """Swapping two class streams of equal length (or permuting the rows' classes within
    their counts) leaves a container every check accepts: the segments are well-formed and
    the counts match their rows. Nothing in the format can catch it (only the container
    hash in the manifest protects the segment records; ``verify`` passes too, asserted here
    to document it), but the values decoded are not the true ones: the assignment of codes
    to rows is load-bearing, and the damage is large, not a silent near-miss."""
    out, weight = classed_archives[profile]
    edited = edited_copy(out, tmp_path, edit)
    assert verify_archive(edited).ok  # undetectable once the container hash is updated
    true, wrong = decode_all(out)["w"], decode_all(edited)["w"]
    assert true.shape == wrong.shape == weight.shape
    assert not np.array_equal(true, wrong)
    good = snr_db({"w": weight}, {"w": true})
    bad = snr_db({"w": weight}, {"w": wrong})
    assert bad < good - 10, (good, bad)


# -- 2. edge shapes through compress --------------------------------------------------------------

#: a multiple of every row length of the edge model (64, 96, 72, 128, 3072, 3, 1)
EDGE_BLOCK = 1024 * 9
EDGE_ROWS = 400


def edge_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(21)
    huge = row_scaled(rng, EDGE_ROWS, 64)
    huge[7] *= 1e4  # one row 10 000 × the rest
    zeros = row_scaled(rng, EDGE_ROWS, 64, spread=2.0)
    zeros[rng.random(EDGE_ROWS) < 0.6] = 0.0  # all-zero rows mixed with normal ones
    nonfinite = row_scaled(rng, EDGE_ROWS, 64)
    nonfinite[3, 5] = np.nan
    nonfinite[10, :] = np.inf  # a whole row of +inf
    nonfinite[20, 1] = -np.inf
    nonfinite[300, ::7] = np.nan
    # three exact row scales (rows of ±s) in every 4 rows: tied row levels, 25/25/50 % of
    # each block's rows, so the top quantile class of 4 is empty
    scales = np.tile([0.01, 0.16, 0.04, 0.16], EDGE_ROWS // 4)
    ties = (rng.choice([-1.0, 1.0], size=(EDGE_ROWS, 64)) * scales[:, None]).astype(np.float32)
    return {
        "row": row_scaled(rng, 1, 3072),
        "column": row_scaled(rng, 4096, 1),
        "tiny": row_scaled(rng, 2, 3),
        "empty": np.zeros((3, 0), np.float32),
        "empty3d": np.zeros((5, 7, 0), np.float32),
        "no_rows": np.zeros((0, 3), np.float32),
        "cube": row_scaled(rng, 200, 96).reshape(200, 8, 12),
        "conv": row_scaled(rng, 200, 72).reshape(200, 2, 6, 6),
        "huge_row": huge,
        "zero_rows": zeros,
        "nonfinite": nonfinite,
        "ties": ties,
        "half": row_scaled(rng, EDGE_ROWS, 64).astype(np.float16),
        "brain": row_scaled(rng, EDGE_ROWS, 64).astype(ml_dtypes.bfloat16),
        "wide": row_scaled(rng, 300, 128),
    }


@pytest.fixture(scope="module")
def edge_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    tmp = tmp_path_factory.mktemp("row-classes-edge")
    tensors = edge_tensors()
    source = tmp / "edge.safetensors"
    save_file(tensors, str(source))
    return source, tensors


@pytest.fixture(scope="module")
def edge_archives(edge_model, tmp_path_factory: pytest.TempPathFactory
                  ) -> dict[tuple[str, int], Path]:
    """(profile, row_classes) → zip archive of the edge model at one fixed step."""
    source, _ = edge_model
    tmp = tmp_path_factory.mktemp("row-classes-edge-out")
    done = {}
    for profile in PROFILES:
        for classes in (1, 4):
            out = tmp / f"{profile}-{classes}.rftp"
            rftpack.compress(source, out, profile=profile, block_size=EDGE_BLOCK,
                             min_lossy_numel=2, quantizer_overrides={"step": STEP,
                                                                     "row_classes": classes})
            done[profile, classes] = out
    return done


@pytest.mark.parametrize("profile", PROFILES)
def test_edge_shapes_decode_as_without_classes(edge_model, edge_archives, profile: str) -> None:
    _, tensors = edge_model
    plain = decode_all(edge_archives[profile, 1])
    classed = decode_all(edge_archives[profile, 4])
    assert set(plain) == set(classed) == set(tensors)
    for name, original in tensors.items():
        assert classed[name].shape == original.shape, name
        assert classed[name].dtype == original.dtype, name
        assert same_values(plain[name], classed[name]), name
    assert verify_archive(edge_archives[profile, 4]).ok


@pytest.mark.parametrize("profile", PROFILES)
def test_edge_shapes_blocks_hold_whole_rows(edge_model, edge_archives, profile: str) -> None:
    _, tensors = edge_model
    records = containers(edge_archives[profile, 4])
    used = set()
    for name, original in tensors.items():
        container = records[name]
        if container["codec"]["mode"] == "exact":
            assert original.size == 0 or original.ndim < 2, name
            continue
        length = original.size // original.shape[0]
        config = quantizer_record(container)["configuration"]
        if EDGE_BLOCK // length < 4:  # no block could hold 2 classes of 2 rows: blocks as asked
            assert config["row_length"] == 0 and container["block_size"] == EDGE_BLOCK, name
            continue
        assert config["row_classes"] == 4 and config["row_length"] == length, name
        assert container["block_size"] % length == 0, name
        counts = [b["count"] for b in container["payload"]["blocks"]]
        assert sum(counts) == original.size
        assert all(c % length == 0 for c in counts[:-1]), (name, counts)
        for block in container["payload"]["blocks"]:
            side = block["side"]
            if "row_classes" in side:
                used.add(name)
                assert side["class_length"] == length
                assert 2 <= side["row_classes"] <= 4
                assert block["streams"]["row_classes"]["count"] == -(-block["count"] // length)
                names = {"codes"} | {f"codes_{c}" for c in range(1, side["row_classes"])}
                assert set(block["streams"]) == names | {"row_classes"}
                assert sum(block["streams"][k]["count"] for k in names) == block["count"]
    # the feature is exercised where rows differ in scale, never where a block has < 4 rows
    assert {"huge_row", "zero_rows", "nonfinite", "ties", "half", "brain", "wide", "cube",
            "conv"} <= used, used
    assert not used & {"row", "tiny"}


@pytest.mark.parametrize("profile", PROFILES)
def test_tied_row_levels_give_three_classes(edge_archives, profile: str) -> None:
    """Three exact row scales: the quantile classes leave the top one of 4 empty, and the
    encoder writes C = 3 (not a power of two, still valid: 2 ≤ C ≤ 16)."""
    container = containers(edge_archives[profile, 4])["ties"]
    sides = [b["side"] for b in container["payload"]["blocks"]]
    assert {s.get("row_classes") for s in sides} == {3}, sides


@pytest.mark.parametrize("profile", PROFILES)
def test_nonfinite_values_round_trip_exactly(edge_model, edge_archives, profile: str) -> None:
    _, tensors = edge_model
    original = tensors["nonfinite"]
    got = decode_all(edge_archives[profile, 4])["nonfinite"]
    special = ~np.isfinite(original)
    assert np.array_equal(np.isnan(got), np.isnan(original))
    assert same_values(got[special], original[special])
    assert np.all(np.isfinite(got[~special]))
    assert np.max(np.abs(got[~special] - original[~special])) < 2 * STEP * 4


RATE_EDGE = ["row", "tiny", "empty", "empty3d", "no_rows", "cube", "huge_row", "zero_rows",
             "nonfinite", "half", "brain", "wide"]


@pytest.mark.parametrize("profile", PROFILES)
def test_edge_shapes_with_rate_control(edge_model, tmp_path: Path, profile: str) -> None:
    _, everything = edge_model
    tensors = {name: everything[name] for name in RATE_EDGE}
    source = tmp_path / "edge.safetensors"
    save_file(tensors, str(source))
    out = tmp_path / "rc.rftp"
    result = rftpack.compress(source, out, profile=profile, target_bpw=8.0,
                              block_size=EDGE_BLOCK, min_lossy_numel=2)
    assert achieved_bpw(result) <= 8.0
    decoded = decode_all(out)
    for name, original in tensors.items():
        assert decoded[name].shape == original.shape and decoded[name].dtype == original.dtype
    special = ~np.isfinite(tensors["nonfinite"])
    assert same_values(decoded["nonfinite"][special], tensors["nonfinite"][special])
    records = containers(out)
    assert any("row_classes" in b["side"] for b in records["wide"]["payload"]["blocks"])
    assert verify_archive(out).ok


@pytest.fixture(scope="module")
def row_step_archives(tmp_path_factory: pytest.TempPathFactory
                      ) -> dict[tuple[str, int], Path]:
    """(profile, row_classes) → directory archive of a token-embedding table with row steps
    (row weights) under an SNR target, whose step does not depend on the coder's bits."""
    tmp = tmp_path_factory.mktemp("row-classes-row-steps")
    source = tmp / "e.safetensors"
    save_file({"w": row_scaled(np.random.default_rng(5), 600, 64)}, str(source))
    weights = np.ones(600)
    weights[:50], weights[50:80] = 16.0, 64.0
    done = {}
    for profile in PROFILES:
        for classes in (1, 4):
            out = tmp / f"{profile}-{classes}"
            rftpack.compress(source, out, profile=profile, layout="directory",
                             block_size=1 << 13, target_snr_db=30.0,
                             row_importance={"w": weights},
                             quantizer_overrides={"row_classes": classes})
            done[profile, classes] = out
    return done


@pytest.mark.parametrize("profile", PROFILES)
def test_row_steps_and_classes_decode_as_without_classes(row_step_archives,
                                                         profile: str) -> None:
    classed = row_step_archives[profile, 4]
    blocks = containers(classed)["w"]["payload"]["blocks"]
    assert all({"row_levels", "row_classes"} <= set(b["streams"]) for b in blocks)
    assert all(b["side"]["row_length"] == b["side"]["class_length"] == 64 for b in blocks)
    assert same_values(decode_all(row_step_archives[profile, 1])["w"], decode_all(classed)["w"])
    assert verify_archive(classed).ok


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("edit", [
    swap_streams("row_levels", "row_classes"),
    set_side("class_length", 65),
    set_side("row_length", 65),
    drop_side("row_length", "row_levels"),
    drop_stream("row_levels"),
], ids=["swap-levels-classes", "class_length-65", "row_length-65", "no-row-steps-side",
        "no-row_levels-stream"])
def test_edited_row_steps_with_classes_are_refused(row_step_archives, tmp_path: Path,
                                                   profile: str, edit: Edit) -> None:
    edited = edited_copy(row_step_archives[profile, 4], tmp_path, edit)
    with pytest.raises(RftpackError):
        decode_all(edited)
    assert not verify_archive(edited).ok


def one_tensor_archive(tmp: Path, weight: np.ndarray, profile: str, block_size: int,
                       classes: int, tag: str) -> Path:
    source = tmp / f"{tag}.safetensors"
    if not source.exists():
        save_file({"w": weight}, str(source))
    out = tmp / f"{tag}-{profile}-{block_size}-{classes}.rftp"
    rftpack.compress(source, out, profile=profile, block_size=block_size, overwrite=True,
                     quantizer_overrides={"step": STEP, "row_classes": classes})
    return out


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize(("rows", "length", "block_size", "expected"), [
    (40, 1500, 1000, 1000),    # a row longer than the block: no classes, blocks as asked
    (300, 96, 1000, 960),      # not a multiple: the block shrinks to whole rows
    (300, 96, 1 << 13, 8160),  # 85 rows a block
])
def test_blocks_are_cut_at_row_boundaries(tmp_path: Path, profile: str, rows: int,
                                          length: int, block_size: int,
                                          expected: int) -> None:
    weight = row_scaled(np.random.default_rng(rows), rows, length)
    classed = one_tensor_archive(tmp_path, weight, profile, block_size, 4, "w")
    container = containers(classed)["w"]
    assert container["block_size"] == expected
    counts = [b["count"] for b in container["payload"]["blocks"]]
    assert all(c == expected for c in counts[:-1]) and sum(counts) == weight.size
    # the same blocks without classes: the same values
    plain = one_tensor_archive(tmp_path, weight, profile, expected, 1, "w")
    assert same_values(decode_all(classed)["w"], decode_all(plain)["w"])
    assert verify_archive(classed).ok


def test_many_rows_of_one_weight_never_pay_for_classes(tmp_path: Path) -> None:
    """(N, 1): rows of one weight: a class symbol per weight is never worth it."""
    weight = row_scaled(np.random.default_rng(3), 1 << 14, 1, spread=3.0)
    out = one_tensor_archive(tmp_path, weight, "scalar", 1 << 12, 4, "column")
    container = containers(out)["w"]
    assert quantizer_record(container)["configuration"]["row_length"] == 1
    assert not any("row_classes" in b["side"] for b in container["payload"]["blocks"])


def test_row_length_override_on_a_vector_decodes(tmp_path: Path) -> None:
    """``row_length`` is an encoder parameter the api sets per matrix; set by hand it stays
    on 1-D tensors (which have no rows), whose blocks then need not start at a row: each
    block's classes still decode on their own."""
    vector = row_scaled(np.random.default_rng(4), 3000, 7, spread=2.0).reshape(-1)
    source = tmp_path / "v.safetensors"
    save_file({"v": vector}, str(source))
    outs = {}
    for classes, length in ((1, 0), (8, 7), (8, 5)):
        out = tmp_path / f"v-{classes}-{length}.rftp"
        rftpack.compress(source, out, profile="scalar", lossy_1d=True, block_size=1 << 13,
                         quantizer_overrides={"step": STEP, "row_classes": classes,
                                              "row_length": length})
        outs[classes, length] = out
    reference = decode_all(outs[1, 0])["v"]
    # blocks of 8192 start mid-row (8192 = 7 · 1170 + 2), and rows of 7 get classes
    assert any("row_classes" in b["side"]
               for b in containers(outs[8, 7])["v"]["payload"]["blocks"])
    for key in ((8, 7), (8, 5)):
        assert same_values(decode_all(outs[key])["v"], reference), key
        assert verify_archive(outs[key]).ok


# -- 3. rate control ------------------------------------------------------------------------------

RATE_BLOCK = 1 << 14  # 128 rows of emb.weight a block


@pytest.fixture(scope="module")
def rate_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(31)
    tensors = {"emb.weight": row_scaled(rng, 256, 128, spread=1.5),
               "proj.weight": row_scaled(rng, 128, 256, spread=1.0),
               "proj.bias": (rng.normal(size=256) * 0.01).astype(np.float32)}
    path = tmp_path_factory.mktemp("row-classes-rate") / "m.safetensors"
    save_file(tensors, str(path))
    return path, tensors


@pytest.mark.parametrize(("profile", "bpw"), [("scalar", 2.0), ("dq", 4.0), ("scalar", 6.0),
                                              ("dq", 8.0)])
def test_target_bpw_is_not_exceeded_with_classes(rate_model, tmp_path: Path, profile: str,
                                                 bpw: float) -> None:
    source, _ = rate_model
    result = rftpack.compress(source, tmp_path / "a.rftp", profile=profile, target_bpw=bpw,
                              block_size=RATE_BLOCK)
    achieved = achieved_bpw(result)
    assert 0.95 * bpw <= achieved <= bpw, achieved
    blocks = containers(result.path)["emb.weight"]["payload"]["blocks"]
    assert all("row_classes" in b["side"] for b in blocks)


@pytest.mark.parametrize(("profile", "snr"), [("scalar", 25.0), ("scalar", 35.0), ("dq", 30.0)])
def test_target_snr_is_met_with_classes(rate_model, tmp_path: Path, profile: str,
                                        snr: float) -> None:
    source, tensors = rate_model
    out = tmp_path / "a.rftp"
    rftpack.compress(source, out, profile=profile, target_snr_db=snr, block_size=RATE_BLOCK)
    achieved = snr_db(tensors, decode_all(out))
    assert snr - 0.05 <= achieved <= snr + 0.3, achieved


def _rate_source(tmp: Path, rows: int, length: int, spread: float) -> Path:
    source = tmp / "m.safetensors"
    save_file({"w": row_scaled(np.random.default_rng(2), rows, length, spread=spread)},
              str(source))
    return source


def test_rate_control_meets_the_target_when_told_the_real_blocks(tmp_path: Path) -> None:
    """Control for the next test: blocks of whole rows given as the block size."""
    source = _rate_source(tmp_path, 64, 2000, spread=0.0)
    result = rftpack.compress(source, tmp_path / "a", profile="dq", target_bpw=4.0,
                              layout="directory", block_size=2000,
                              quantizer_overrides={"states": 8})
    assert achieved_bpw(result) <= 4.0  # measured: 3.72


def test_rate_control_counts_the_blocks_cut_at_row_boundaries(tmp_path: Path) -> None:
    """Regression: block_size 3999 with rows of 2000 used to give blocks of 2000 (64 of
    them) while the plan counted blocks of 3999 (33): 4.32 bpw for a target of 4. A block
    that cannot hold 4 rows now keeps the requested size (no classes), and the plan counts
    each tensor's real blocks."""
    source = _rate_source(tmp_path, 64, 2000, spread=0.0)
    result = rftpack.compress(source, tmp_path / "a", profile="dq", target_bpw=4.0,
                              layout="directory", block_size=3999,
                              quantizer_overrides={"states": 8})
    assert achieved_bpw(result) <= 4.0


def test_small_blocks_without_classes_meet_the_target(tmp_path: Path) -> None:
    """Control for the next test: 2 rows a block, row_classes=1."""
    source = _rate_source(tmp_path, 400, 600, spread=1.0)
    result = rftpack.compress(source, tmp_path / "a.rftp", profile="scalar", target_bpw=4.0,
                              block_size=1200, quantizer_overrides={"row_classes": 1})
    assert achieved_bpw(result) <= 4.0


def test_class_gain_is_not_claimed_for_blocks_too_small_for_classes(tmp_path: Path) -> None:
    """Regression: blocks of 1200 = 2 rows of 600 allow no class (:func:`rowclasses.finest`)
    and the archive has none, yet the plan used to assume 4 classes over the whole tensor
    (its blocks' samples are merged into one group): 4.21 bpw for a target of 4."""
    source = _rate_source(tmp_path, 400, 600, spread=1.0)
    result = rftpack.compress(source, tmp_path / "a.rftp", profile="scalar", target_bpw=4.0,
                              block_size=1200)
    blocks = containers(result.path)["w"]["payload"]["blocks"]
    assert len(blocks) == 200 and not any("row_classes" in b["side"] for b in blocks)
    assert achieved_bpw(result) <= 4.0


def test_estimated_class_gain_is_zero_when_no_block_can_have_classes() -> None:
    """Regression: the gain used the rows of a merged sample group, not of a coder block."""
    rng = np.random.default_rng(2)
    length, block = 600, 1200
    x = row_scaled(rng, 400, length, spread=1.0).astype(np.float64).reshape(-1)
    extremes, where = extremes_of(x)
    levels = rowclasses.row_levels(x, length)
    stats = TensorStats("w", x.shape[0], True, float(x @ x), float(np.max(np.abs(x))),
                        sample_of(x), extremes=extremes, extreme_positions=where,
                        row_length=length, row_levels=levels)
    step = 0.006
    assert rowclasses.finest(4, block / length) == 1  # no block can have classes
    classed = ScalarQuantizer(step=step, row_classes=4, row_length=length)
    assert all(sorted(classed.quantize(x[s:s + block], [])[0]) == ["codes"]
               for s in range(0, x.shape[0], block))
    plain_bits = estimate(stats, ScalarQuantizer(step=step), block)[0]
    classed_bits = estimate(stats, ScalarQuantizer(step=step, row_classes=4), block)[0]
    assert classed_bits == pytest.approx(plain_bits)


def test_a_row_longer_than_the_largest_block_is_still_compressible() -> None:
    """Regression: the block used to grow to one row, past MAX_BLOCK_SIZE for a (1, 2**26 + 1)
    tensor, so the scalar/dq profiles refused what row_classes=1 compresses."""
    options = api.CompressOptions(profile="scalar")
    lossy = options.build()[1]
    # a view of one float: a (1, 2**26 + 1) tensor (think (1, vocab, dim)) without its memory
    array = np.broadcast_to(np.float32(0.5), (1, MAX_BLOCK_SIZE + 1))
    plain_options = api.CompressOptions(profile="scalar",
                                        quantizer_overrides={"row_classes": 1})
    plain = api._with_row_length(plain_options.build()[1], array, plain_options)
    assert plain is not None and plain.block_size <= MAX_BLOCK_SIZE
    pipeline = api._with_row_length(lossy, array, options)
    assert pipeline is not None and pipeline.block_size <= MAX_BLOCK_SIZE


# -- 4. determinism -------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_compressing_twice_gives_identical_archives(rate_model, tmp_path: Path,
                                                    profile: str) -> None:
    source, _ = rate_model
    a, b = tmp_path / "a.rftp", tmp_path / "b.rftp"
    for out in (a, b):
        rftpack.compress(source, out, profile=profile, block_size=RATE_BLOCK,
                         quantizer_overrides={"step": STEP})
    assert a.read_bytes() == b.read_bytes()
    assert any("row_classes" in blk["side"]
               for blk in containers(a)["emb.weight"]["payload"]["blocks"])


# -- 5. properties --------------------------------------------------------------------------------

@st.composite
def levels_and_most(draw: st.DrawFn) -> tuple[np.ndarray, int, bool]:
    rows = draw(st.integers(0, 300))
    distinct = draw(st.booleans())
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    if distinct:  # up to 9 octaves apart
        levels = rng.permutation(rows).astype(np.float64) * 0.03 + rng.random()
    else:  # few values, many ties, maybe the all-zero level
        levels = rng.choice([-1100.0, -3.0, -2.5, 0.0, 1.0], size=rows)
    return levels, draw(st.integers(1, 16)), distinct


@FAST
@given(case=levels_and_most(), upper=st.integers(1, 16))
def test_quantile_classes_are_monotone_and_balanced(case, upper: int) -> None:
    levels, _, distinct = case
    classes = rowclasses.quantile_classes(levels, upper)
    assert classes.shape == levels.shape and classes.dtype == np.uint8
    if not levels.size:
        return
    assert int(classes.max()) < max(1, upper)
    order = np.argsort(levels, kind="stable")
    # a higher level never gets a lower class; equal levels get equal classes
    assert np.all(np.diff(classes[order].astype(int)) >= 0)
    for value in np.unique(levels):
        assert np.unique(classes[levels == value]).size == 1
    if distinct and upper > 1:
        counts = np.bincount(classes, minlength=upper)
        assert counts.max() - counts.min() <= 1, counts


@FAST
@given(case=levels_and_most(), length=st.integers(1, 64), seed=st.integers(0, 2 ** 32 - 1))
def test_choose_returns_valid_classes(case, length: int, seed: int) -> None:
    levels, most, _ = case
    rows = levels.shape[0]
    rng = np.random.default_rng(seed)
    # rows of ``length`` values at the drawn levels (the last row may be cut short)
    count = max(0, rows * length - int(rng.integers(0, length)))
    scale = np.where(levels <= -1100, 0.0, np.exp2(levels))
    x = rng.normal(size=rows * length) * np.repeat(scale, length)
    x = x[:count]
    if not x.size:
        return
    rms = float(np.sqrt(np.mean(x * x)))
    symbols = zigzag(np.clip(np.rint(x / (0.05 * max(rms, 1e-300))), -499, 499))
    row_class = rowclasses.choose(x, symbols, 1000, length, most)
    rows = -(-count // length)
    if length == 1:
        # a class symbol per weight costs at least what it saves (the joint entropy of
        # codes and classes is never below the codes'), and each class adds a table
        assert row_class is None
    if row_class is None:
        return
    assert row_class.dtype == np.uint8 and row_class.shape == (rows,)
    limit = rowclasses.finest(most, rows)
    assert 2 <= limit <= min(most, 16) and limit & (limit - 1) == 0
    used = int(row_class.max()) + 1
    assert 2 <= used <= limit
    if np.unique(rowclasses.row_levels(x, length)).size == rows:
        # distinct row levels: a power of two of classes, each of at least 2 rows
        counts = np.bincount(row_class, minlength=used)
        assert used & (used - 1) == 0, used
        assert counts.min() >= 2, counts


@FAST
@given(length=st.integers(1, 30), classes=st.integers(2, 16), count=st.integers(1, 400),
       seed=st.integers(0, 2 ** 32 - 1))
def test_merge_refuses_any_code_moved_between_classes(length: int, classes: int, count: int,
                                                     seed: int) -> None:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 300, count).astype(np.uint16)
    row_class = rng.integers(0, classes, -(-count // length)).astype(np.uint8)
    parts = rowclasses.split(codes, row_class, length, classes)
    assert np.array_equal(rowclasses.merge(parts, row_class, length, count), codes)
    donor = int(rng.choice(np.flatnonzero([p.size for p in parts])))
    taker = int(rng.choice([c for c in range(classes) if c != donor]))
    moved = list(parts)
    moved[taker] = np.append(moved[taker], moved[donor][-1])
    moved[donor] = moved[donor][:-1]
    with pytest.raises(FormatError):
        rowclasses.merge(moved, row_class, length, count)
    if parts[-1].size:
        with pytest.raises(FormatError):  # the stream of a class with rows is missing
            rowclasses.merge(parts[:-1], row_class, length, count)


@FAST
@given(count=st.integers(1, 300), length=st.integers(1, 50), seed=st.integers(0, 2 ** 32 - 1))
def test_row_levels_match_their_definition(count: int, length: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=count) * np.exp2(rng.integers(-60, 60, count).astype(np.float64))
    x[rng.random(count) < 0.3] = 0.0
    levels = rowclasses.row_levels(x, length)
    assert levels.shape == (-(-count // length),)
    for r, level in enumerate(levels):
        row = x[r * length:(r + 1) * length]
        energy = float(np.mean(row * row))
        if energy == 0:
            assert level == -1100.0
        else:
            assert level == pytest.approx(0.5 * math.log2(energy), abs=1e-9)


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(classes=st.integers(1, 16), length=st.integers(1, 50), rows=st.integers(1, 60),
       short=st.integers(0, 49), spread=st.sampled_from([0.0, 1.0, 3.0]),
       states=st.sampled_from([4, 8, 64]), seed=st.integers(0, 2 ** 32 - 1))
def test_quantizers_decode_the_same_with_any_classes(classes: int, length: int, rows: int,
                                                     short: int, spread: float, states: int,
                                                     seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = row_scaled(rng, rows, length, spread=spread).astype(np.float64).reshape(-1)
    x = x[:max(1, x.shape[0] - short % length)]
    for plain in (ScalarQuantizer(step=STEP), DependentQuantizer(step=STEP, states=states,
                                                                  chain=37)):
        classed = dataclasses.replace(plain, row_classes=classes, row_length=length)
        s1, side1 = plain.quantize(x, [])
        sc, sidec = classed.quantize(x, [])
        expected = plain.dequantize({k: v.symbols for k, v in s1.items()}, side1, x.shape[0])
        got = classed.dequantize({k: v.symbols for k, v in sc.items()}, sidec, x.shape[0])
        assert np.array_equal(expected, got)
        if "row_classes" in sidec:
            c = sidec["row_classes"]
            assert 2 <= c <= classes and sidec["class_length"] == length
            assert sc["row_classes"].symbols.shape == (-(-x.shape[0] // length),)
            assert sum(sc[k].symbols.shape[0] for k in sc if k.startswith("codes")) \
                == x.shape[0]
        else:
            assert sorted(sc) == ["codes"]


@FAST
@given(seed=st.integers(0, 2 ** 32 - 1), size=st.integers(0, 3000), most=st.integers(1, 16))
def test_estimated_gain_is_never_negative(seed: int, size: int, most: int) -> None:
    rng = np.random.default_rng(seed)
    levels = rng.normal(size=size)
    codes = np.abs(np.rint(rng.normal(size=size) * 4 * np.exp2(levels))).astype(np.int64)
    classes = rowclasses.sample_classes(levels, size / 8, most)
    gain = rowclasses.estimated_gain(codes, classes, np.ones(size), float(size), size / 8)
    assert gain >= 0.0 and math.isfinite(gain)
    if classes[0] == 1 or not size:
        assert gain == 0.0


# -- 6. CLI --set row_classes ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("row-classes-cli") / "m.safetensors"
    rng = np.random.default_rng(41)
    save_file({"w": row_scaled(rng, 256, 128), "b": rng.normal(size=64).astype(np.float32)},
              str(path))
    return path


def compress_cli(model: Path, out: Path, profile: str, *sets: str,
                 bpw: str | None = "4") -> int:
    args = ["compress", str(model), "-o", str(out), "--profile", profile, "-q"]
    args += ["--bpw", bpw] if bpw else ["--set", f"step={STEP}"]
    for item in sets:
        args += ["--set", item]
    return main(args)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("value", ["0", "17", "2.5", "true", "\"4\"", "null", "-1", "4.0",
                                   "[4]", "four", ""])
def test_bad_row_classes_is_a_clean_error(cli_model: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture, profile: str,
                                          value: str) -> None:
    out = tmp_path / "o.rftp"
    code = compress_cli(cli_model, out, profile, f"row_classes={value}")
    err = capsys.readouterr().err
    assert code != 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rftpack compress: error:"), err
    assert "row_classes" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("value", ["-1", "2.5", "true", "\"64\""])
def test_bad_row_length_is_a_clean_error(cli_model: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture, value: str) -> None:
    out = tmp_path / "o.rftp"
    code = compress_cli(cli_model, out, "scalar", f"row_length={value}")
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("rftpack compress: error:") and "row_length" in err
    assert not out.exists()


@pytest.mark.parametrize(("profile", "value", "bpw"), [
    ("dq", 8, "4"), ("dq", 16, None), ("scalar", 16, "4"), ("scalar", 1, None)])
def test_good_row_classes_is_recorded(cli_model: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture, profile: str,
                                      value: int, bpw: str | None) -> None:
    out = tmp_path / "o.rftp"
    assert compress_cli(cli_model, out, profile, f"row_classes={value}", bpw=bpw) == 0, \
        capsys.readouterr().err
    container = containers(out)["w"]
    record = quantizer_record(container)
    assert record["configuration"]["row_classes"] == value
    assert record["configuration"]["row_length"] == (128 if value > 1 else 0)
    sides = [b["side"] for b in container["payload"]["blocks"]]
    if value == 1:
        assert not any("row_classes" in s for s in sides)
        assert record["format_version"] == (1 if profile == "scalar" else 3)
    else:
        assert all(2 <= s.get("row_classes", 2) <= value for s in sides)
        assert any("row_classes" in s for s in sides)
        assert record["format_version"] == (2 if profile == "scalar" else 4)
    assert verify_archive(out).ok
