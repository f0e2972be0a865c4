"""Where archive members live: a ZIP file or a directory. Both write atomically.

ZIP: payload members are ``ZIP_STORED`` (they are already compressed; stored members can be
read at any offset), JSON members ``ZIP_DEFLATED`` (level 9: JSON shrinks ~5×, which matters
for models with many small tensors); fixed timestamps; written
member by member into ``<name>.partial-<pid>``; the central directory is written last and the
file renamed into place, so a file under the final name is always complete.

Directory: each member is written to a temporary name and renamed; the manifest is written last,
so a directory without ``manifest_hybrid.json`` is an incomplete archive.
"""

from __future__ import annotations

import mmap
import os
import posixpath
import shutil
import struct
import threading
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

from rftpack._fs import fsync_dir, remove_stale_partials
from rftpack.errors import FormatError, IncompleteArchiveError, OutputError

MANIFEST = "manifest_hybrid.json"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
#: a ZIP member's local header and central directory record, without its name (no extras)
_ZIP_HEADERS = 30 + 46
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then the name and extra field lengths
_LOCAL_SIGNATURE = b"PK\x03\x04"


def check_member_path(member: object) -> str:
    """A member path must be relative, normalized, and stay inside the archive.

    >>> check_member_path("tensors/a.json")
    'tensors/a.json'
    """
    if not isinstance(member, str) or not member or "\\" in member or "\x00" in member:
        raise FormatError(f"archive member path {member!r} is not a relative path")
    normalized = posixpath.normpath(member)
    if (member.startswith("/") or normalized != member or normalized.startswith("..")
            or ":" in normalized.split("/")[0]):
        raise FormatError(f"archive member path {member!r} escapes the archive or is not "
                          f"normalized")
    return member




class ArchiveStore:
    """Write side. ``put`` members, then ``commit`` (or ``abort`` on failure)."""

    def put(self, member: str, data: bytes) -> int:
        """Store a member; returns the bytes it occupies (after ZIP compression)."""
        raise NotImplementedError

    def cost(self, member: str, data: bytes) -> int:
        """Bytes ``put(member, data)`` would add to the archive, headers included."""
        raise NotImplementedError

    def header_bytes(self, member: str) -> int:
        """Bytes a member adds to the archive besides what ``put`` returns (its headers)."""
        return 0

    def commit(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class ZipStore(ArchiveStore):
    def __init__(self, path: Path, *, overwrite: bool = False) -> None:
        self.path = path
        if path.exists() and not overwrite:
            raise OutputError(f"{path} exists; pass --force (overwrite=True) to replace it")
        if path.is_dir():
            raise OutputError(f"{path} is a directory; choose a file name for a zip archive")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(path)
            self.temp = path.with_name(f".{path.name}.partial-{os.getpid()}")
            self.zip = zipfile.ZipFile(self.temp, "w", compression=zipfile.ZIP_STORED,
                                       allowZip64=True)
        except OSError as exc:
            raise OutputError(f"cannot create {path}: {exc.strerror or exc}") from exc

    def put(self, member: str, data: bytes) -> int:
        info = zipfile.ZipInfo(check_member_path(member), date_time=_ZIP_EPOCH)
        deflate = member.endswith(".json")
        info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        info.create_system = 3  # "made by Unix" everywhere, so bytes do not depend on the OS
        try:
            self.zip.writestr(info, data, compresslevel=9 if deflate else None)
        except OSError as exc:
            self.abort()
            raise OutputError(f"writing {member} into {self.path} failed: "
                              f"{exc.strerror or exc}") from exc
        return info.compress_size

    def cost(self, member: str, data: bytes) -> int:
        # what writestr stores (deflate level 9, raw stream) plus the member's local header
        # and central directory record, each 30 or 46 bytes and the name
        size = len(data)
        if member.endswith(".json"):
            deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
            size = len(deflater.compress(data)) + len(deflater.flush())
        return size + self.header_bytes(member)

    def header_bytes(self, member: str) -> int:
        return _ZIP_HEADERS + 2 * len(member.encode())

    def commit(self) -> None:
        try:
            self.zip.close()
            with open(self.temp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(self.temp, self.path)
            fsync_dir(self.path.parent)
        except OSError as exc:
            self.abort()
            raise OutputError(f"finishing {self.path} failed: {exc.strerror or exc}") from exc

    def abort(self) -> None:
        try:
            self.zip.close()
        except Exception:  # already broken; we are cleaning up
            pass
        self.temp.unlink(missing_ok=True)


class DirectoryStore(ArchiveStore):
    def __init__(self, path: Path, *, overwrite: bool = False) -> None:
        self.path = path
        self.written: list[Path] = []
        if path.exists() and not path.is_dir():
            raise OutputError(f"{path} exists and is not a directory")
        if path.is_dir() and any(path.iterdir()):
            if not overwrite:
                raise OutputError(f"{path} is not empty; pass --force (overwrite=True) to "
                                  f"replace the archive in it")
            # The old manifest goes first: from now on the directory reads as incomplete.
            (path / MANIFEST).unlink(missing_ok=True)
            for sub in ("tensors", "predictors"):
                shutil.rmtree(path / sub, ignore_errors=True)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {path}: {exc.strerror or exc}") from exc

    def put(self, member: str, data: bytes) -> int:
        target = self.path / check_member_path(member)
        temp = target.with_name(f".{target.name}.partial-{os.getpid()}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(temp, "wb") as handle:
                handle.write(data)
                if member == MANIFEST:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(temp, target)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            self.abort()
            raise OutputError(f"writing {target} failed: {exc.strerror or exc}") from exc
        self.written.append(target)
        return len(data)

    def cost(self, member: str, data: bytes) -> int:
        return len(data)

    def commit(self) -> None:
        fsync_dir(self.path)

    def abort(self) -> None:
        for path in self.written:
            path.unlink(missing_ok=True)
        self.written.clear()


class ArchiveSource:
    """Read side: random access to members of a ZIP file or a directory."""

    def __init__(self, path: str | os.PathLike | BinaryIO) -> None:
        self._zip: zipfile.ZipFile | None = None
        # zipfile serialises its own reads; the lock also keeps seek+read pairs atomic for us.
        self._lock = threading.Lock()
        if hasattr(path, "read") and hasattr(path, "seek"):
            self.path = Path(getattr(path, "name", "<archive file object>"))
            self._open_zip(path)
            return
        self.path = Path(path)  # type: ignore[arg-type]
        if self.path.is_dir():
            if not (self.path / MANIFEST).is_file():
                raise IncompleteArchiveError(
                    f"{self.path} has no {MANIFEST}: not an rftpack archive, or an interrupted "
                    f"compress run")
            self.root = self.path.resolve()
        elif self.path.is_file():
            self._open_zip(self.path)
        else:
            raise FormatError(f"{self.path} does not exist")

    def _open_zip(self, file: Path | BinaryIO) -> None:
        try:
            self._zip = zipfile.ZipFile(file)
        except zipfile.BadZipFile as exc:
            raise IncompleteArchiveError(
                f"{self.path} is not a complete rftpack archive (no ZIP central directory: "
                f"not an archive, or an interrupted write)") from exc
        except OSError as exc:
            raise FormatError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        if MANIFEST not in self._zip.NameToInfo:
            self._zip.close()
            raise IncompleteArchiveError(f"{self.path} has no {MANIFEST}")

    @property
    def form(self) -> str:
        """``"zip"`` or ``"directory"``."""
        return "zip" if self._zip is not None else "directory"

    def exists(self, member: str) -> bool:
        check_member_path(member)
        if self._zip is not None:
            return member in self._zip.NameToInfo
        return self._resolve(member).is_file()

    def _resolve(self, member: str) -> Path:
        target = (self.root / check_member_path(member)).resolve()
        if self.root not in target.parents:
            raise FormatError(f"archive member {member!r} resolves outside the archive "
                              f"(symlink?)")
        return target

    def size(self, member: str) -> int:
        if self._zip is not None:
            return self._info(member).file_size
        try:
            return self._resolve(member).stat().st_size
        except OSError:
            raise FormatError(f"{self.path}: member {member!r} is missing") from None

    def _info(self, member: str) -> zipfile.ZipInfo:
        assert self._zip is not None
        try:
            return self._zip.getinfo(check_member_path(member))
        except KeyError:
            raise FormatError(f"{self.path}: member {member!r} is missing") from None

    def read(self, member: str, offset: int = 0, length: int | None = None, *,
             hashed: bool = False) -> bytes:
        """Bytes of a member, or of the range ``[offset, offset + length)`` of it.
        ``hashed``: the caller checks the bytes' SHA-256 itself, so zipfile's CRC-32 pass
        over them is skipped (a tenth of a lossless extract's time)."""
        try:
            if self._zip is not None:
                info = self._info(member)
                with self._lock, self._zip.open(info) as handle:
                    if hashed:  # (a CPython detail: if it changes, both checks run)
                        handle._expected_crc = None  # type: ignore[attr-defined]
                    if info.compress_type == zipfile.ZIP_STORED and offset:
                        handle.seek(offset)
                    elif offset:
                        handle.read(offset)
                    data = handle.read() if length is None else handle.read(length)
            else:
                target = self._resolve(member)
                with open(target, "rb") as handle:
                    handle.seek(offset)
                    data = handle.read() if length is None else handle.read(length)
        except FileNotFoundError:
            raise FormatError(f"{self.path}: member {member!r} is missing") from None
        except (OSError, zipfile.BadZipFile) as exc:
            raise FormatError(f"{self.path}: cannot read {member!r}: {exc}") from exc
        if length is not None and len(data) != length:
            raise FormatError(f"{self.path}: {member!r} is shorter than declared "
                              f"({offset + len(data)} < {offset + length} bytes)")
        return data

    def view(self, member: str, *, hashed: bool = False) -> bytes | memoryview:
        """A member's bytes, not copied where it is stored uncompressed: a read-only view of a
        memory map of its range of the file (pages are read on first touch; the map is
        released with the last view of it). Deflated members, and archives given as file
        objects without a descriptor, are read as by :meth:`read`. ``hashed`` as there: a
        ZIP member whose bytes the caller does not hash is checked against its CRC-32.

        Like any memory map, a view assumes the file is not truncated while it is in use.

        Example:
            >>> import tempfile, zipfile
            >>> path = tempfile.mkdtemp() + "/a.zip"
            >>> with zipfile.ZipFile(path, "w") as z:
            ...     z.writestr(MANIFEST, "{}"); z.writestr("tensors/w.bin", b"payload")
            >>> bytes(ArchiveSource(path).view("tensors/w.bin"))
            b'payload'
        """
        try:
            if self._zip is not None:
                return self._zip_view(member, hashed)
            with open(self._resolve(member), "rb") as handle:
                mapped = _map(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
            return self.read(member) if mapped is None else mapped
        except FileNotFoundError:
            raise FormatError(f"{self.path}: member {member!r} is missing") from None
        except (OSError, ValueError) as exc:
            raise FormatError(f"{self.path}: cannot read {member!r}: {exc}") from exc

    def _zip_view(self, member: str, hashed: bool) -> bytes | memoryview:
        assert self._zip is not None
        info = self._info(member)
        try:
            fd = self._zip.fp.fileno() if self._zip.fp is not None else -1
        except (AttributeError, OSError, ValueError):  # e.g. an io.BytesIO archive
            fd = -1
        if fd < 0 or info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            return self.read(member, hashed=hashed)
        header = os.pread(fd, _LOCAL_HEADER.size, info.header_offset)
        if len(header) != _LOCAL_HEADER.size:
            raise FormatError(f"{self.path}: {member!r}: local header lies past the end")
        signature, name_length, extra_length = _LOCAL_HEADER.unpack(header)
        start = info.header_offset + _LOCAL_HEADER.size
        name = os.pread(fd, name_length, start)
        encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
        if signature != _LOCAL_SIGNATURE or name.decode(encoding, "replace") != info.orig_filename:
            raise FormatError(f"{self.path}: {member!r}: bad local header (corrupt archive)")
        start += name_length + extra_length
        if start + info.file_size > os.fstat(fd).st_size:
            raise FormatError(f"{self.path}: {member!r} runs past the end of the file "
                              f"(truncated archive)")
        data = _map(fd, start, info.file_size)
        if data is None:
            return self.read(member, hashed=hashed)
        if not hashed and zlib.crc32(data) != info.CRC:
            raise FormatError(f"{self.path}: cannot read {member!r}: Bad CRC-32 (corrupt "
                              f"archive)")
        return data

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _map(fd: int, start: int, length: int) -> bytes | memoryview | None:
    """A read-only view of bytes ``[start, start + length)`` of file ``fd``, memory-mapped;
    None where the file cannot be mapped (some network and FUSE file systems)."""
    if length == 0:
        return b""
    aligned = start - start % mmap.ALLOCATIONGRANULARITY
    try:
        mapped = mmap.mmap(fd, start + length - aligned, access=mmap.ACCESS_READ,
                           offset=aligned)
    except (OSError, ValueError):
        return None
    return memoryview(mapped)[start - aligned:]
