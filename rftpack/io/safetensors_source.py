"""Read safetensors checkpoints (one file or shards) through read-only memory maps."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from rftpack.errors import InputError
from rftpack.io.safetensors_format import Entry, parse_header
from rftpack.io.shards import read_weight_map
from rftpack.io.source import ModelSource
from rftpack.io.tensor_info import TensorInfo


class _MappedFile:
    """One safetensors file, mapped read-only, with its parsed header."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < 8:
                    raise InputError(
                        f"{path}: truncated safetensors file ({size} bytes, no header)"
                    )
                self.map: mmap.mmap | None = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
        try:
            self.entries = parse_header(path, self.map, size).entries
        except InputError:
            self.close()
            raise

    def read(self, entry: Entry) -> np.ndarray:
        info = entry.info
        if self.map is None:
            raise ValueError(f"{self.path}: source is closed")
        if info.numel == 0:
            empty = np.empty(info.shape, info.dtype)
            empty.flags.writeable = False
            return empty
        flat = np.frombuffer(self.map, dtype=info.dtype, count=info.numel, offset=entry.begin)
        return flat.reshape(info.shape)

    def release(self, entry: Entry) -> None:
        """Drop the mapped pages of one tensor from this process's memory (they stay in the
        page cache). Streaming a large file then keeps RSS near one tensor, not the file."""
        if self.map is None or entry.info.nbytes == 0 or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = entry.begin - entry.begin % mmap.PAGESIZE
        length = entry.begin + entry.info.nbytes - start
        try:
            self.map.madvise(mmap.MADV_DONTNEED, start, length)
        except (OSError, ValueError):
            pass  # advice only

    def close(self) -> None:
        if self.map is not None:
            try:
                self.map.close()
            except BufferError:
                pass  # arrays returned by read() still view the map; it closes when they die
            self.map = None


class SafetensorsSource(ModelSource):
    """A safetensors checkpoint: one file, or shards listed by an index json.

    Tensor order: shards in file-name order, within a shard by data offset (storage order).

    Example:
        >>> with SafetensorsSource(Path("model.safetensors")) as src:  # doctest: +SKIP
        ...     w = src.read(src.infos()[0].name)
    """

    def __init__(self, path: Path, name: str | None = None) -> None:
        super().__init__(path, name or path.stem, "safetensors")
        self._files: list[_MappedFile] = []
        self._where: dict[str, tuple[_MappedFile, Entry]] = {}
        try:
            if path.name.endswith(".json"):
                self._open_sharded(path)
            else:
                self._add(_MappedFile(path))
        except BaseException:
            self.close()
            raise

    def _open_sharded(self, index: Path) -> None:
        weight_map = read_weight_map(index)
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            self._add(_MappedFile(index.parent / shard))
        for tensor, shard in weight_map.items():
            found = self._where.get(tensor)
            if found is None or found[0].path != index.parent / shard:
                raise InputError(f"{index}: tensor {tensor!r} is not in its shard {shard!r}")

    def _add(self, file: _MappedFile) -> None:
        self._files.append(file)
        for entry in file.entries:
            name = entry.info.name
            if name in self._where:
                other = self._where[name][0].path
                raise InputError(f"{file.path}: tensor {name!r} is also stored in {other}")
            self._where[name] = (file, entry)

    def infos(self) -> list[TensorInfo]:
        return [entry.info for _, entry in self._where.values()]

    def read(self, name: str) -> np.ndarray:
        try:
            file, entry = self._where[name]
        except KeyError:
            raise self._unknown(name) from None
        return file.read(entry)

    def release(self, name: str) -> None:
        if name in self._where:
            file, entry = self._where[name]
            file.release(entry)

    def close(self) -> None:
        for file in self._files:
            file.close()
