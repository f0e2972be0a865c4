"""Every dtype (incl. bfloat16, float8, bool, scalars, empty tensors) through every source/sink."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from io_samples import assert_same, plain_state, sample_state, to_torch

from rftpack.io import open_sink, open_source
from rftpack.io.dtypes import SAFETENSORS_DTYPES

SUFFIX = {"safetensors": ".safetensors", "torch": ".bin", "npz": ".npz"}


def _write_with_reference_tools(kind: str, path: Path, state: dict[str, np.ndarray]) -> None:
    """Make a model file the way other tools do (not with rftpack's sinks)."""
    if kind == "safetensors-torch":
        safetensors.torch.save_file(to_torch(state), str(path))
    elif kind == "safetensors-numpy":
        safetensors.numpy.save_file(state, str(path))
    elif kind == "torch":
        torch.save(to_torch(state), path)
    elif kind == "npz":
        np.savez(path, **state)
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "suffix", "full"),
    [
        ("safetensors-torch", ".safetensors", True),
        ("safetensors-numpy", ".safetensors", False),
        ("torch", ".pt", True),
        ("npz", ".npz", False),
    ],
)
def test_sources_read_files_written_by_reference_tools(
    tmp_path: Path, kind: str, suffix: str, full: bool
) -> None:
    state = sample_state() if full else plain_state()
    path = tmp_path / f"model{suffix}"
    _write_with_reference_tools(kind, path, state)
    with open_source(path) as src:
        infos = {i.name: i for i in src.infos()}
        assert set(infos) == set(state)
        for name, expected in state.items():
            assert infos[name].dtype == expected.dtype
            assert infos[name].shape == expected.shape
            assert infos[name].nbytes == expected.nbytes
            assert_same(src.read(name), expected)


@pytest.mark.parametrize("sink_format", ["safetensors", "torch", "npz"])
@pytest.mark.parametrize("source_kind", ["safetensors-torch", "torch"])
def test_every_dtype_through_every_sink(tmp_path: Path, source_kind: str, sink_format: str) -> None:
    state = sample_state()
    src_path = tmp_path / ("in.safetensors" if source_kind != "torch" else "in.pth")
    _write_with_reference_tools(source_kind, src_path, state)
    out = tmp_path / "out" / f"model{SUFFIX[sink_format]}"
    with open_source(src_path) as src, open_sink(out, src.infos()) as sink:
        for info in src.infos():
            sink.write(info.name, src.read(info.name))
        order = [i.name for i in src.infos()]
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    with open_source(out) as back:
        assert [i.name for i in back.infos()] == order
        for name, expected in state.items():
            assert_same(back.read(name), expected)


def test_safetensors_sink_output_loads_with_the_safetensors_library(tmp_path: Path) -> None:
    state = sample_state()
    with open_source(_saved(tmp_path, state)) as src:
        infos = src.infos()
        with open_sink(tmp_path / "o.safetensors", infos) as sink:
            for info in infos:
                sink.write(info.name, src.read(info.name))
    loaded = safetensors.torch.load_file(str(tmp_path / "o.safetensors"))
    assert loaded["bf16.matrix"].dtype == torch.bfloat16
    assert loaded["f8_e4m3.matrix"].dtype == torch.float8_e4m3fn
    assert loaded["f8_e5m2.matrix"].dtype == torch.float8_e5m2
    for name, tensor in loaded.items():
        assert torch.equal(
            tensor.view(-1).view(torch.uint8), to_torch(state)[name].view(-1).view(torch.uint8)
        )


def test_safetensors_sink_output_loads_with_safetensors_numpy(tmp_path: Path) -> None:
    state = plain_state()
    infos = _infos(state)
    with open_sink(tmp_path / "o.safetensors", infos) as sink:
        for name, array in state.items():
            sink.write(name, array)
    loaded = safetensors.numpy.load_file(str(tmp_path / "o.safetensors"))
    assert list(loaded) == list(state) or set(loaded) == set(state)
    for name, expected in state.items():
        assert_same(loaded[name], expected)


def test_torch_sink_output_is_a_plain_state_dict(tmp_path: Path) -> None:
    state = sample_state(["BF16", "I64", "BOOL"])
    with open_sink(tmp_path / "m.pt", _infos(state)) as sink:
        for name, array in state.items():
            sink.write(name, array)
    loaded = torch.load(tmp_path / "m.pt", weights_only=True)
    assert list(loaded) == list(state)
    assert loaded["bf16.matrix"].dtype == torch.bfloat16
    assert loaded["bool.scalar"].shape == ()


def test_npz_sink_output_loads_with_numpy(tmp_path: Path) -> None:
    state = plain_state()
    with open_sink(tmp_path / "m.npz", _infos(state)) as sink:
        for name, array in state.items():
            sink.write(name, array)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as npz:
        assert npz.files == list(state)
        for name, expected in state.items():
            assert_same(npz[name], expected)


@pytest.mark.parametrize("code", sorted(SAFETENSORS_DTYPES))
def test_single_dtype_round_trip_through_safetensors(tmp_path: Path, code: str) -> None:
    state = sample_state([code])
    path = tmp_path / "one.safetensors"
    with open_sink(path, _infos(state)) as sink:
        for name, array in state.items():
            sink.write(name, array)
    with open_source(path) as src:
        for name, expected in state.items():
            assert_same(src.read(name), expected)


def _saved(tmp_path: Path, state: dict[str, np.ndarray]) -> Path:
    path = tmp_path / "ref.safetensors"
    safetensors.torch.save_file(to_torch(state), str(path))
    return path


def _infos(state: dict[str, np.ndarray]) -> list:
    from rftpack.io import TensorInfo

    return [TensorInfo(name, a.dtype, a.shape) for name, a in state.items()]
