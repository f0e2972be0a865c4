""".npz reading: key order, no unpickling, byte order and the ml_dtypes dtype map."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from io_samples import assert_same

from rftpack.errors import InputError
from rftpack.io import TensorInfo, open_sink, open_source


def test_key_order_and_lazy_infos(tmp_path: Path) -> None:
    state = {"z": np.arange(3.0), "a": np.array(5, np.int8), "m": np.zeros((2, 0), np.uint16)}
    np.savez(tmp_path / "w.npz", **state)
    with open_source(tmp_path / "w.npz") as src:
        assert src.framework == "npz" and src.name == "w"
        assert src.infos() == [TensorInfo(k, v.dtype, v.shape) for k, v in state.items()]
        for name, expected in state.items():
            assert_same(src.read(name), expected)


def test_compressed_and_big_endian(tmp_path: Path) -> None:
    big = np.arange(6, dtype=">f4").reshape(2, 3)
    np.savez_compressed(tmp_path / "w.npz", big=big, fortran=np.asfortranarray(big))
    with open_source(tmp_path / "w.npz") as src:
        assert src.infos()[0].dtype == np.dtype("<f4")
        for name in ("big", "fortran"):
            assert_same(src.read(name), big.astype("<f4"))


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "o.npz", obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match=r"o\.npz.*'obj'"):
        open_source(tmp_path / "o.npz")


def test_unsupported_dtypes_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", c=np.zeros(2, np.complex64))
    with pytest.raises(InputError, match=r"'c'.*complex64"):
        open_source(tmp_path / "c.npz")
    np.savez(tmp_path / "b.npz", b=np.zeros(2, ml_dtypes.bfloat16))  # stored as raw V2
    with pytest.raises(InputError, match=r"'b'.*raw.*bfloat16"):
        open_source(tmp_path / "b.npz")


def test_extension_dtypes_survive_via_the_dtype_map(tmp_path: Path) -> None:
    arrays = {
        "bf": np.linspace(-1, 1, 6).astype(ml_dtypes.bfloat16).reshape(2, 3),
        "e4": np.array(0.5, ml_dtypes.float8_e4m3fn),
        "e5": np.zeros((0,), ml_dtypes.float8_e5m2),
    }
    infos = [TensorInfo(k, v.dtype, v.shape) for k, v in arrays.items()]
    with open_sink(tmp_path / "x.npz", infos) as sink:
        for name, array in arrays.items():
            sink.write(name, array)
    with np.load(tmp_path / "x.npz") as raw:
        assert raw["bf"].dtype == np.uint16  # plain numpy sees the raw bits
    with open_source(tmp_path / "x.npz") as src:
        assert [i.name for i in src.infos()] == list(arrays)
        for name, expected in arrays.items():
            assert_same(src.read(name), expected)


@pytest.mark.parametrize("content", [b"", b"garbage bytes", b"PK\x03\x04broken zip"])
def test_garbage(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "g.npz").write_bytes(content)
    with pytest.raises(InputError, match=r"g\.npz"):
        open_source(tmp_path / "g.npz")


def test_single_npy_renamed_npz(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.arange(3))
    (tmp_path / "a.npy").rename(tmp_path / "a.npz")
    with pytest.raises(InputError, match="single .npy"):
        open_source(tmp_path / "a.npz")
