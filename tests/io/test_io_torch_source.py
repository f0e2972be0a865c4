"""PyTorch checkpoints: wrappers, strictness about non-tensors, dtypes, legacy files, shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from io_samples import assert_same

from rftpack.errors import InputError
from rftpack.io import open_source
from rftpack.io.torch_convert import to_numpy


def _state() -> dict[str, torch.Tensor]:
    return {
        "w": torch.arange(12, dtype=torch.float32).reshape(3, 4),
        "b": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        "n": torch.tensor(7, dtype=torch.int64),
    }


def _check(path: Path, expected: dict[str, torch.Tensor]) -> None:
    with open_source(path) as src:
        assert src.framework == "pytorch"
        assert [i.name for i in src.infos()] == list(expected)
        for name, tensor in expected.items():
            array = src.read(name)
            assert not array.flags.writeable
            assert_same(array, to_numpy(tensor))


def test_plain_state_dict_keeps_order(tmp_path: Path) -> None:
    torch.save(_state(), tmp_path / "m.pt")
    _check(tmp_path / "m.pt", _state())


@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_wrapped_state_dict(tmp_path: Path, key: str) -> None:
    torch.save({key: _state(), "epoch": 3, "lr": 0.1}, tmp_path / "ckpt.pth")
    _check(tmp_path / "ckpt.pth", _state())


def test_non_tensor_entry_is_an_error_naming_the_key(tmp_path: Path) -> None:
    torch.save({**_state(), "step": 5}, tmp_path / "m.bin")
    with pytest.raises(InputError, match=r"m\.bin.*'step'"):
        open_source(tmp_path / "m.bin")


def test_nested_non_tensor_inside_wrapper_is_named(tmp_path: Path) -> None:
    torch.save({"state_dict": {**_state(), "sub": {"x": torch.ones(1)}}}, tmp_path / "m.pt")
    with pytest.raises(InputError, match=r"'state_dict\.sub'|state_dict.'sub'"):
        open_source(tmp_path / "m.pt")


def test_complex_tensor_is_unsupported(tmp_path: Path) -> None:
    torch.save({"c": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "m.pt")
    with pytest.raises(InputError, match=r"'c'.*complex64"):
        open_source(tmp_path / "m.pt")


def test_views_and_shared_storage(tmp_path: Path) -> None:
    base = torch.arange(20, dtype=torch.float32).reshape(4, 5)
    state = {"full": base, "t": base.t(), "row": base[1], "tied": base}
    torch.save(state, tmp_path / "m.pt")
    with open_source(tmp_path / "m.pt") as src:
        for name, tensor in state.items():
            assert_same(np.ascontiguousarray(src.read(name)), tensor.contiguous().numpy())


def test_legacy_non_zip_file_falls_back_to_plain_load(tmp_path: Path) -> None:
    torch.save(_state(), tmp_path / "old.bin", _use_new_zipfile_serialization=False)
    _check(tmp_path / "old.bin", _state())


def test_garbage_and_truncated_files(tmp_path: Path) -> None:
    (tmp_path / "junk.bin").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match=r"junk\.bin"):
        open_source(tmp_path / "junk.bin")
    torch.save(_state(), tmp_path / "cut.pt")
    blob = (tmp_path / "cut.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputError, match=r"cut\.pt"):
        open_source(tmp_path / "cut.pt")


def test_not_a_dict(tmp_path: Path) -> None:
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(InputError, match="not a state dict"):
        open_source(tmp_path / "list.pt")


def test_pickled_object_is_refused(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(1), "obj": Path("x")}, tmp_path / "m.pt")
    with pytest.raises(InputError, match=r"m\.pt"):
        open_source(tmp_path / "m.pt")


def test_sharded_torch_directory(tmp_path: Path) -> None:
    state = _state()
    shards = {"w": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00001-of-00002.bin"}
    shards["n"] = "pytorch_model-00002-of-00002.bin"
    for shard in set(shards.values()):
        torch.save({k: v for k, v in state.items() if shards[k] == shard}, tmp_path / shard)
    index = tmp_path / "pytorch_model.bin.index.json"
    index.write_text(json.dumps({"weight_map": shards}))
    _check(tmp_path, state)
    _check(index, state)
