"""Model directories (Hugging Face layout), file-type dispatch and the local HF cache."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch

from rftpack.errors import InputError
from rftpack.io import open_source, resolve_model


def _st(path: Path, name: str = "w") -> Path:
    safetensors.numpy.save_file({name: np.ones(2, np.float32)}, str(path))
    return path


def _pt(path: Path, name: str = "w") -> Path:
    torch.save({name: torch.ones(2)}, path)
    return path


def _names(path: Path) -> list[str]:
    with open_source(path) as src:
        return [i.name for i in src.infos()]


def test_directory_prefers_model_safetensors(tmp_path: Path) -> None:
    _pt(tmp_path / "pytorch_model.bin", "from_bin")
    _st(tmp_path / "other.safetensors", "from_other")
    _st(tmp_path / "model.safetensors", "from_st")
    assert _names(tmp_path) == ["from_st"]


def test_directory_prefers_safetensors_index_over_torch(tmp_path: Path) -> None:
    _pt(tmp_path / "pytorch_model.bin", "from_bin")
    _st(tmp_path / "shard-1.safetensors", "from_shard")
    index = {"weight_map": {"from_shard": "shard-1.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert _names(tmp_path) == ["from_shard"]


def test_directory_falls_back_to_pytorch_model_bin(tmp_path: Path) -> None:
    _pt(tmp_path / "pytorch_model.bin", "from_bin")
    _st(tmp_path / "adapter.safetensors", "from_adapter")
    with open_source(tmp_path) as src:
        assert src.framework == "pytorch"
        assert src.name == tmp_path.name
        assert [i.name for i in src.infos()] == ["from_bin"]


def test_directory_with_one_loose_safetensors(tmp_path: Path) -> None:
    _st(tmp_path / "weights.safetensors", "loose")
    (tmp_path / "config.json").write_text("{}")
    assert _names(tmp_path) == ["loose"]


def test_directory_with_several_loose_safetensors_is_ambiguous(tmp_path: Path) -> None:
    _st(tmp_path / "a.safetensors")
    _st(tmp_path / "b.safetensors")
    with pytest.raises(InputError, match=r"several.*a\.safetensors, b\.safetensors"):
        open_source(tmp_path)


def test_directory_without_model_lists_contents(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(InputError, match=r"no model file.*config\.json, tokenizer\.json"):
        open_source(tmp_path)
    with pytest.raises(InputError, match="found: nothing"):
        open_source(_empty(tmp_path / "empty"))


def _empty(path: Path) -> Path:
    path.mkdir()
    return path


def test_unknown_file_type(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"xx")
    with pytest.raises(InputError, match=r"model\.onnx.*unknown checkpoint type"):
        open_source(tmp_path / "model.onnx")


@pytest.mark.parametrize("missing", ["nope.safetensors", "sub/dir/model.bin", "./x", "/abs/x"])
def test_missing_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        open_source(missing)


# -- Hugging Face cache ----------------------------------------------------------------------


def _cache_repo(cache: Path, model_id: str, snapshots: list[str], ref: str | None) -> Path:
    repo = cache / ("models--" + model_id.replace("/", "--"))
    for i, rev in enumerate(snapshots):
        snap = repo / "snapshots" / rev
        snap.mkdir(parents=True)
        _st(snap / "model.safetensors", f"rev_{rev}")
        stamp = time.time() - 1000 + i
        os.utime(snap, (stamp, stamp))
    if ref is not None:
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(ref + "\n")
    return repo


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    return cache


def test_cache_uses_refs_main(hub: Path) -> None:
    repo = _cache_repo(hub, "acme/tiny-bert", ["aaa", "bbb"], ref="aaa")
    assert resolve_model("acme/tiny-bert") == repo / "snapshots" / "aaa"
    with open_source("acme/tiny-bert") as src:
        assert src.name == "tiny-bert"
        assert [i.name for i in src.infos()] == ["rev_aaa"]


def test_cache_without_ref_takes_newest_snapshot(hub: Path) -> None:
    repo = _cache_repo(hub, "acme/tiny-bert", ["old", "new"], ref=None)
    assert resolve_model("acme/tiny-bert") == repo / "snapshots" / "new"


def test_cache_with_stale_ref_falls_back_to_snapshot(hub: Path) -> None:
    repo = _cache_repo(hub, "acme/tiny-bert", ["only"], ref="gone")
    assert resolve_model("acme/tiny-bert") == repo / "snapshots" / "only"


def test_hf_home_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    repo = _cache_repo(tmp_path / "hf" / "hub", "acme/m", ["r1"], ref="r1")
    assert resolve_model("acme/m") == repo / "snapshots" / "r1"


def test_local_path_wins_over_cache(hub: Path, tmp_path: Path) -> None:
    _cache_repo(hub, "acme/tiny-bert", ["aaa"], ref="aaa")
    local = tmp_path / "acme" / "tiny-bert"
    local.mkdir(parents=True)
    assert resolve_model("acme/tiny-bert") == Path("acme/tiny-bert")


def test_not_in_cache_says_where_it_looked(hub: Path) -> None:
    with pytest.raises(InputError, match="neither a local path nor") as info:
        resolve_model("acme/absent")
    assert str(hub / "models--acme--absent") in str(info.value)


def test_cache_repo_without_snapshots(hub: Path) -> None:
    (hub / "models--acme--empty" / "refs").mkdir(parents=True)
    with pytest.raises(InputError, match="local Hugging Face cache"):
        resolve_model("acme/empty")
