"""ArchiveSource.view: payload members served from a memory map, checked like a read."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import rftpack
from rftpack.archive.storage import MANIFEST, ArchiveSource
from rftpack.errors import ChecksumError, FormatError

PAYLOAD = bytes(range(256)) * 300  # 76,800 bytes: past one allocation granule (4 KiB)


def make_zip(path: Path, *, pad: int = 5) -> Path:
    """A ZIP with a stored payload at an offset that is not a multiple of a page."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(MANIFEST, "{}" + " " * pad, compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("tensors/w.bin", PAYLOAD, compress_type=zipfile.ZIP_STORED)
        z.writestr("tensors/w.json", b"{}" * 5000, compress_type=zipfile.ZIP_DEFLATED)
    return path


def patch_byte(path: Path, needle: bytes, offset: int, value: int) -> None:
    data = bytearray(path.read_bytes())
    data[data.index(needle) + offset] = value
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("pad", [0, 5, 4093])
def test_stored_member_is_a_zero_copy_view_equal_to_read(tmp_path: Path, pad: int) -> None:
    source = ArchiveSource(make_zip(tmp_path / "a.zip", pad=pad))
    view = source.view("tensors/w.bin")
    assert isinstance(view, memoryview) and view.readonly
    assert bytes(view) == PAYLOAD == source.read("tensors/w.bin")
    assert source.view("tensors/w.bin", hashed=True) == PAYLOAD


def test_deflated_member_and_file_object_archives_are_read(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip")
    source = ArchiveSource(path)
    assert source.view("tensors/w.json") == b"{}" * 5000
    from_memory = ArchiveSource(io.BytesIO(path.read_bytes()))  # no file descriptor
    assert from_memory.view("tensors/w.bin") == PAYLOAD


def test_directory_member_view(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "tensors").mkdir(parents=True)
    (root / MANIFEST).write_text("{}")
    (root / "tensors" / "w.bin").write_bytes(PAYLOAD)
    (root / "tensors" / "empty.bin").write_bytes(b"")
    source = ArchiveSource(root)
    assert bytes(source.view("tensors/w.bin")) == PAYLOAD
    assert source.view("tensors/empty.bin") == b""
    with pytest.raises(FormatError, match="missing"):
        source.view("tensors/gone.bin")


def test_view_outlives_the_source(tmp_path: Path) -> None:
    source = ArchiveSource(make_zip(tmp_path / "a.zip"))
    view = source.view("tensors/w.bin")
    source.close()
    assert bytes(view[-256:]) == bytes(range(256))


def test_corrupt_stored_member_fails_its_crc_unless_the_caller_hashes(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip")
    patch_byte(path, bytes(range(256)), 7, 0)
    source = ArchiveSource(path)
    with pytest.raises(FormatError, match="CRC"):
        source.view("tensors/w.bin")
    with pytest.raises(FormatError, match="CRC"):
        source.read("tensors/w.bin")  # zipfile's own check says the same
    assert bytes(source.view("tensors/w.bin", hashed=True))[7] == 0


def test_local_header_that_disagrees_with_the_directory_is_refused(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip")
    # the payload's local header names it "tensors/v.bin"; the central directory "w.bin"
    patch_byte(path, b"tensors/w.bin" + bytes(range(4)), len("tensors/"), ord("v"))
    with pytest.raises(FormatError, match="local header"):
        ArchiveSource(path).view("tensors/w.bin")


def test_member_running_past_the_end_of_the_file_is_refused(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip")
    data = bytearray(path.read_bytes())
    # the payload's central-directory record: its sizes are at +20 (compressed) and +24
    record = data.index(b"tensors/w.bin", data.index(b"PK\x01\x02")) - 46
    assert data[record:record + 4] == b"PK\x01\x02"
    struct.pack_into("<II", data, record + 20, len(data), len(data))
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="past the end"):
        ArchiveSource(path).view("tensors/w.bin")


def test_extracted_tensors_do_not_alias_the_archive(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    tensors = {"w": rng.normal(size=(300, 200)).astype(np.float32),
               "b": rng.normal(size=(200,)).astype(np.float32)}
    model = tmp_path / "m.safetensors"
    save_file(tensors, str(model))
    archive = tmp_path / "m.rftp"
    rftpack.compress(model, archive, profile="lossless")
    with rftpack.open(archive) as reader:
        w = reader.get_tensor("w")
    archive.unlink()  # the map (if any) must not be what the array holds
    base = w
    while isinstance(base.base, np.ndarray):
        base = base.base
    assert base.base is None and base.flags.owndata and w.flags.writeable
    np.testing.assert_array_equal(w, tensors["w"])
    w[0, 0] = 7.0  # writable memory of its own
    assert w[0, 0] == 7.0


def test_corrupt_payload_in_a_real_archive_is_a_checksum_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    model = tmp_path / "m.safetensors"
    save_file({"w": rng.normal(size=(256, 256)).astype(np.float32)}, str(model))
    archive = tmp_path / "m.rftp"
    rftpack.compress(model, archive, profile="lossless")
    with zipfile.ZipFile(archive) as z:
        info = z.getinfo(next(n for n in z.namelist() if n.endswith(".bin")))
    data = bytearray(archive.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + info.file_size // 2] ^= 0x40
    archive.write_bytes(bytes(data))
    with rftpack.open(archive) as reader, pytest.raises(ChecksumError):
        reader.get_tensor("w")


def test_file_systems_without_memory_maps_are_read(tmp_path: Path, monkeypatch) -> None:
    import mmap

    def refuse(*args, **kwargs):
        raise OSError(19, "No such device")  # ENODEV: what mmap says on such a file system

    path = make_zip(tmp_path / "a.zip")
    monkeypatch.setattr(mmap, "mmap", refuse)
    source = ArchiveSource(path)
    assert source.view("tensors/w.bin") == PAYLOAD
    root = tmp_path / "d"
    (root / "tensors").mkdir(parents=True)
    (root / MANIFEST).write_text("{}")
    (root / "tensors" / "w.bin").write_bytes(PAYLOAD)
    assert ArchiveSource(root).view("tensors/w.bin") == PAYLOAD
