"""Sinks: streaming, ordering checks, atomic finish, abort and disk errors."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from rftpack.errors import OutputError
from rftpack.io import TensorInfo, open_sink, open_source
from rftpack.io.safetensors_sink import SafetensorsSink
from rftpack.io.sinks import sink_format

STATE = {
    "a": np.arange(6, dtype=np.float32).reshape(2, 3),
    "b": np.array(3, np.int64),
    "c": np.ones(4, ml_dtypes.bfloat16),
}
INFOS = [TensorInfo(k, v.dtype, v.shape) for k, v in STATE.items()]
FORMATS = ["safetensors", "torch", "npz"]


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("fmt", FORMATS)
def test_abort_leaves_nothing(tmp_path: Path, fmt: str) -> None:
    sink = open_sink(tmp_path / "out.x", INFOS, format=fmt)
    sink.write("a", STATE["a"])
    sink.abort()
    assert _leftovers(tmp_path) == []
    sink.abort()  # idempotent
    sink.close()  # no-op after abort
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_exception_in_with_block_aborts(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(RuntimeError), open_sink(tmp_path / "o", INFOS, format=fmt) as sink:
        sink.write("a", STATE["a"])
        raise RuntimeError("boom")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_wrong_order_dtype_or_shape(tmp_path: Path, fmt: str) -> None:
    with open_sink(tmp_path / "o", INFOS, format=fmt) as sink:
        with pytest.raises(OutputError, match="expected tensor 'a' next, got 'b'"):
            sink.write("b", STATE["b"])
        with pytest.raises(OutputError, match="'a'.*float64.*expected float32"):
            sink.write("a", STATE["a"].astype(np.float64))
        with pytest.raises(OutputError, match=r"'a'.*\[3, 2\]"):
            sink.write("a", STATE["a"].T)
        for name, array in STATE.items():  # a failed write leaves the sink usable
            sink.write(name, array)
        with pytest.raises(OutputError, match="all tensors are written"):
            sink.write("a", STATE["a"])
    assert _leftovers(tmp_path) == ["o"]
    with open_source(tmp_path / "o") as src:  # no suffix: the format is sniffed
        assert [i.name for i in src.infos()] == list(STATE)


@pytest.mark.parametrize("fmt", FORMATS)
def test_close_with_missing_tensors_fails_and_leaves_nothing(tmp_path: Path, fmt: str) -> None:
    sink = open_sink(tmp_path / "o", INFOS, format=fmt)
    sink.write("a", STATE["a"])
    with pytest.raises(OutputError, match="2 tensor.*unwritten.*'b'"):
        sink.close()
    assert _leftovers(tmp_path) == []


def test_safetensors_sink_streams_before_close(tmp_path: Path) -> None:
    final = tmp_path / "m.safetensors"
    sink = open_sink(final, INFOS)
    assert isinstance(sink, SafetensorsSink)
    assert sink.temp_path == tmp_path / f".m.safetensors.partial-{os.getpid()}"
    sink.write("a", STATE["a"])
    sink._file.flush()  # type: ignore[union-attr]
    size_after_a = sink.temp_path.stat().st_size
    assert not final.exists()
    sink.write("b", STATE["b"])
    sink.write("c", STATE["c"])
    sink.close()
    assert not sink.temp_path.exists()
    total = final.stat().st_size
    assert total - size_after_a == STATE["b"].nbytes + STATE["c"].nbytes
    with pytest.raises(OutputError, match="closed"):
        sink.write("a", STATE["a"])


def test_accepts_non_contiguous_and_big_endian_arrays(tmp_path: Path) -> None:
    a = np.asfortranarray(STATE["a"]).astype(">f4")
    with open_sink(tmp_path / "m.safetensors", INFOS) as sink:
        sink.write("a", a)
        sink.write("b", STATE["b"])
        sink.write("c", STATE["c"][::1])
    with open_source(tmp_path / "m.safetensors") as src:
        np.testing.assert_array_equal(src.read("a"), STATE["a"])


def test_parent_directories_are_created_and_old_file_replaced(tmp_path: Path) -> None:
    final = tmp_path / "x" / "y" / "m.safetensors"
    for value in (1.0, 2.0):
        infos = [TensorInfo("v", np.dtype(np.float32), ())]
        with open_sink(final, infos) as sink:
            sink.write("v", np.array(value, np.float32))
    with open_source(final) as src:
        assert src.read("v") == 2.0
    assert _leftovers(final.parent) == ["m.safetensors"]


def test_disk_error_on_write_becomes_output_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self, info, array):  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device")

    sink = open_sink(tmp_path / "m.safetensors", INFOS)
    monkeypatch.setattr(SafetensorsSink, "_write", full)
    with pytest.raises(OutputError, match=r"m\.safetensors.*No space left"):
        sink.write("a", STATE["a"])
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_disk_error_on_close_becomes_output_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    sink = open_sink(tmp_path / "m", INFOS, format=fmt)
    for name, array in STATE.items():
        sink.write(name, array)

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OutputError, match="Input/output error"):
        sink.close()
    assert _leftovers(tmp_path) == []


def test_output_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is a directory"):
        open_sink(tmp_path, INFOS)


def test_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        open_sink(tmp_path / "file" / "m.safetensors", INFOS)


def test_bad_infos(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="'a' is listed twice"):
        open_sink(tmp_path / "m.safetensors", INFOS + INFOS[:1])
    with pytest.raises(OutputError, match="'z'.*complex64"):
        open_sink(tmp_path / "m.safetensors", [TensorInfo("z", np.dtype(np.complex64), (1,))])
    with pytest.raises(OutputError, match="unknown output format 'onnx'"):
        open_sink(tmp_path / "m.onnx", INFOS, format="onnx")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("m.safetensors", "safetensors"),
        ("m.bin", "torch"),
        ("m.PT", "torch"),
        ("m.pth", "torch"),
        ("m.npz", "npz"),
        ("m", "safetensors"),
    ],
)
def test_format_from_suffix(name: str, fmt: str) -> None:
    assert sink_format(name) == fmt


def test_empty_model(tmp_path: Path) -> None:
    for fmt, suffix in (("safetensors", ".safetensors"), ("torch", ".pt"), ("npz", ".npz")):
        with open_sink(tmp_path / f"e{suffix}", [], format=fmt):
            pass
        with open_source(tmp_path / f"e{suffix}") as src:
            assert src.infos() == []


@pytest.mark.parametrize(
    ("fmt", "name"), [("safetensors", "__metadata__"), ("npz", "__rftpack_dtypes__.json")]
)
def test_reserved_names(tmp_path: Path, fmt: str, name: str) -> None:
    infos = [TensorInfo(name, np.dtype(np.float32), (1,))]
    with pytest.raises(OutputError, match="reserved"):
        open_sink(tmp_path / "m", infos, format=fmt)
    assert _leftovers(tmp_path) == []
