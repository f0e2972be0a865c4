"""Safetensors reading: lazy memory maps, order, shards and header validation."""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st
from io_samples import assert_same, sample_array

from rftpack.errors import InputError
from rftpack.io import TensorInfo, open_source
from rftpack.io.dtypes import SAFETENSORS_DTYPES
from rftpack.io.safetensors_format import build_header, parse_header


def _raw_file(path: Path, header: dict, data: bytes = b"", length: int | None = None) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def _model(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    state = {
        "b": np.arange(6, dtype=np.float32).reshape(2, 3),
        "a": np.arange(4, dtype=np.int64),
        "s": np.array(True),
        "z": np.zeros((0, 5), np.float16),
    }
    path = tmp_path / "model.safetensors"
    safetensors.numpy.save_file(state, str(path))
    return path, state


def test_reads_are_read_only_views_of_a_memory_map(tmp_path: Path) -> None:
    path, state = _model(tmp_path)
    with open_source(path) as src:
        array = src.read("b")
        assert not array.flags.writeable
        base = array
        while getattr(base, "base", None) is not None:
            base = base.base
        assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)
        assert_same(array, state["b"])
    assert_same(array, state["b"])  # still valid after close


def test_infos_follow_storage_order(tmp_path: Path) -> None:
    header = {
        "second": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
        "first": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
        "__metadata__": {"format": "pt"},
    }
    path = _raw_file(tmp_path / "m.safetensors", header, bytes(8))
    with open_source(path) as src:
        assert [i.name for i in src.infos()] == ["first", "second"]
        assert src.framework == "safetensors"
        assert src.name == "m"


def test_scalar_and_zero_size(tmp_path: Path) -> None:
    path, state = _model(tmp_path)
    with open_source(path) as src:
        infos = {i.name: i for i in src.infos()}
        assert infos["s"] == TensorInfo("s", np.dtype(bool), ())
        assert infos["z"].numel == 0 and infos["z"].nbytes == 0
        assert_same(src.read("s"), state["s"])
        assert_same(src.read("z"), state["z"])


def _sharded(tmp_path: Path) -> dict[str, np.ndarray]:
    state = {f"layer{i}.w": sample_array("F32", (2, i + 1), seed=i) for i in range(4)}
    names = list(state)
    shard_of = {n: f"model-0000{1 + i // 2}-of-00002.safetensors" for i, n in enumerate(names)}
    for shard in set(shard_of.values()):
        part = {n: state[n] for n in names if shard_of[n] == shard}
        safetensors.numpy.save_file(part, str(tmp_path / shard))
    index = {"metadata": {"total_size": 0}, "weight_map": dict(reversed(shard_of.items()))}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    return state


def test_sharded_directory(tmp_path: Path) -> None:
    state = _sharded(tmp_path)
    with open_source(tmp_path) as src:
        assert src.framework == "safetensors"
        assert src.name == tmp_path.name
        assert [i.name for i in src.infos()] == list(state)  # shard order, then storage order
        for name, expected in state.items():
            assert_same(src.read(name), expected)


def test_sharded_index_path(tmp_path: Path) -> None:
    state = _sharded(tmp_path)
    with open_source(tmp_path / "model.safetensors.index.json") as src:
        assert {i.name for i in src.infos()} == set(state)


def test_sharded_missing_shard_or_tensor(tmp_path: Path) -> None:
    _sharded(tmp_path)
    index = tmp_path / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    doc["weight_map"]["ghost"] = "model-00001-of-00002.safetensors"
    index.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="ghost"):
        open_source(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(InputError, match="model-00002-of-00002"):
        open_source(tmp_path)


@pytest.mark.parametrize("index", ["{not json", "[]", '{"weight_map": {"a": "../x.safetensors"}}'])
def test_bad_index(tmp_path: Path, index: str) -> None:
    path = tmp_path / "model.safetensors.index.json"
    path.write_text(index)
    with pytest.raises(InputError, match="index.json"):
        open_source(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.safetensors"):
        open_source(tmp_path / "nope.safetensors")


def test_truncated_file(tmp_path: Path) -> None:
    path, _ = _model(tmp_path)
    blob = path.read_bytes()
    for cut in (0, 5, 20, len(blob) - 3):
        path.write_bytes(blob[:cut])
        with pytest.raises(InputError, match="model.safetensors"):
            open_source(path)


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"this is not a model at all, just some text")
    with pytest.raises(InputError, match="junk.safetensors"):
        open_source(path)
    path.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{]")
    with pytest.raises(InputError, match="not valid JSON"):
        open_source(path)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}, "unknown or unsupported dtype"),
        ({"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}, "needs 12"),
        ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}, "bad shape"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}, "bad data_offsets"),
        ({"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "past end of file"),
        ({"dtype": "F32", "shape": [2]}, "bad data_offsets"),
        ("F32", "not a JSON object"),
    ],
)
def test_bad_header_entries_name_file_and_tensor(tmp_path: Path, entry, message: str) -> None:
    path = _raw_file(tmp_path / "bad.safetensors", {"w": entry}, bytes(8))
    with pytest.raises(InputError, match=message) as info:
        open_source(path)
    assert "bad.safetensors" in str(info.value) and "'w'" in str(info.value)


def test_header_length_beyond_file(tmp_path: Path) -> None:
    path = _raw_file(tmp_path / "m.safetensors", {}, length=10**6)
    with pytest.raises(InputError, match="header length"):
        open_source(path)


def test_unknown_tensor_name(tmp_path: Path) -> None:
    path, _ = _model(tmp_path)
    with open_source(path) as src, pytest.raises(InputError, match="nothere"):
        src.read("nothere")


_codes = st.sampled_from(sorted(SAFETENSORS_DTYPES))
_shapes = st.lists(st.integers(0, 4), max_size=3).map(tuple)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(_codes, _shapes), max_size=6))
def test_build_then_parse_header(specs: list[tuple[str, tuple[int, ...]]]) -> None:
    infos = [TensorInfo(f"t{i}", SAFETENSORS_DTYPES[c], s) for i, (c, s) in enumerate(specs)]
    head = build_header(infos, {"format": "pt"})
    size = len(head) + sum(i.nbytes for i in infos)
    parsed = parse_header(Path("x"), head, size)
    assert [e.info for e in parsed.entries] == infos
    assert parsed.metadata == {"format": "pt"}
