"""rftpack.open: lazy, reads only what it needs, thread-safe, numpy or torch, bounded cache."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

import rftpack
from rftpack.errors import ClosedArchiveError
from rftpack.testing import CountingFile


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(11)
    tensors = {f"blocks.{i}.weight": (rng.normal(size=(64, 48)) * 0.05).astype(np.float32)
               for i in range(40)}
    tensors["big.weight"] = (rng.normal(size=(512, 256)) * 0.05).astype(np.float32)
    tensors["ids"] = np.arange(100, dtype=np.int64)
    path = tmp_path_factory.mktemp("open") / "model.safetensors"
    save_file(tensors, str(path))
    out = path.with_suffix(".rftp")
    rftpack.compress(path, out, predictor=False)
    return out


def test_open_reads_only_the_manifest_and_fetch_reads_only_own_bytes(archive: Path) -> None:
    counting = CountingFile(archive)
    with rftpack.open(counting) as reader:
        after_open = counting.bytes_read
        manifest_size = len(rftpack.archive.storage.ArchiveSource(archive).read(
            "manifest_hybrid.json"))
        # the manifest plus the ZIP central directory (about 100 bytes per member)
        assert after_open <= manifest_size + 200 * (2 * len(reader) + 1)
        for name in ("big.weight", "blocks.3.weight", "ids"):
            before = counting.bytes_read
            reader.get_tensor(name)
            fetched = counting.bytes_read - before
            stored = reader.entry(name)["stored_bytes"]  # container JSON + payload
            # its own bytes plus the ZIP local headers of its two members
            assert stored <= fetched <= stored + 512, (name, fetched, stored)
    counting.close()


def test_metadata_and_info_without_decoding(archive: Path, monkeypatch) -> None:
    import rftpack.archive.reader as reader_module

    def no_decode(*args, **kwargs):
        raise AssertionError("info() must not decode")

    monkeypatch.setattr(reader_module, "decode_container", no_decode)
    with rftpack.open(archive) as reader:
        assert reader.metadata()["version"] == 2 and "tensors" not in reader.metadata()
        record = reader.info("big.weight")
        assert record.shape == (512, 256) and record.dtype == np.float32
        assert record.stages == ("transform:rft", "quantizer:polar", "coder:rans")
        assert 0 < record.stored_bytes < record.nbytes


def test_missing_name_is_a_keyerror_with_close_names(archive: Path) -> None:
    with rftpack.open(archive) as reader:
        with pytest.raises(KeyError, match=r"did you mean 'blocks\.1\.weight'"):
            reader.get_tensor("blocks.1.weigth")
        with pytest.raises(KeyError, match="no tensor 'zzz'"):
            reader.get_tensor("zzz")


def test_closed_archive_use_is_an_error(archive: Path) -> None:
    reader = rftpack.open(archive)
    reader.close()
    with pytest.raises(ClosedArchiveError, match="closed"):
        reader.get_tensor("ids")
    with pytest.raises(ClosedArchiveError):
        reader.keys()
    with rftpack.open(archive) as inner:
        pass
    with pytest.raises(ClosedArchiveError):
        inner.info("ids")


def test_concurrent_reads_from_threads_match_sequential(archive: Path) -> None:
    with rftpack.open(archive) as reader:
        expected = {name: reader.get_tensor(name) for name in reader.keys()}
        names = reader.keys() * 4
        barrier = threading.Barrier(8)

        def fetch(name: str) -> tuple[str, np.ndarray]:
            if names.index(name) < 8:
                barrier.wait(timeout=10)
            return name, reader.get_tensor(name)

        with ThreadPoolExecutor(max_workers=8) as pool:
            for name, array in pool.map(fetch, names):
                assert array.tobytes() == expected[name].tobytes(), name


def test_cache_is_bounded_and_serves_repeats(archive: Path) -> None:
    budget = 3 * 64 * 48 * 4
    with rftpack.open(archive, cache_bytes=budget) as reader:
        first = reader.get_tensor("blocks.0.weight")
        assert reader.get_tensor("blocks.0.weight") is first  # served from the cache
        assert not first.flags.writeable  # shared arrays are read-only
        for i in range(1, 10):
            reader.get_tensor(f"blocks.{i}.weight")
        assert reader._cache.bytes <= budget
        assert reader.get_tensor("blocks.0.weight") is not first  # evicted, decoded again
        reader.get_tensor("big.weight")  # larger than the whole budget: not cached
        assert reader._cache.bytes <= budget


def test_torch_framework_and_dtypes(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    tensors = {"bf": (rng.normal(size=(64, 64)) * 0.1).astype(ml_dtypes.bfloat16),
               "h": (rng.normal(size=(64, 64)) * 0.1).astype(np.float16),
               "i": np.arange(6, dtype=np.int32), "b": np.array([True, False])}
    source = tmp_path / "m.npz"
    from rftpack.io import open_sink
    from rftpack.io.tensor_info import TensorInfo

    with open_sink(source, [TensorInfo(k, v.dtype, v.shape) for k, v in tensors.items()]) as sink:
        for k, v in tensors.items():
            sink.write(k, v)
    archive = tmp_path / "m.rftp"
    rftpack.compress(source, archive, predictor=False)
    with rftpack.open(archive) as as_numpy, rftpack.open(archive, framework="torch") as as_torch:
        for name, want in (("bf", torch.bfloat16), ("h", torch.float16), ("i", torch.int32),
                           ("b", torch.bool)):
            tensor = as_torch.get_tensor(name)
            assert tensor.dtype == want
            array = as_numpy.get_tensor(name)
            if name == "bf":
                assert torch.equal(tensor.view(torch.int16),
                                   torch.from_numpy(array.view(np.int16)))
            else:
                assert np.array_equal(tensor.numpy(), array)
    with pytest.raises(ValueError):
        rftpack.open(archive, device="cpu")  # device= needs framework="torch"
