"""A minimal streaming file of named byte records, used by the peer codecs of the benchmark.

Layout: ``RFTBENCH`` magic, the payloads back to back, a UTF-8 JSON index (one entry per
tensor: name, dtype, shape, codec tag, offset, length and any codec parameters), the index
length as 8 little-endian bytes, and the magic again. Payloads are written as they are made
and read as views of one buffer, so a peer holds about one tensor at a time beyond the file
itself. The whole file counts toward a peer's bits per weight, so peers are charged for their
metadata just as rftpack is charged for its manifest.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

MAGIC = b"RFTBENCH"


@dataclass
class Record:
    """One stored tensor: how to rebuild it (``codec`` tag + ``params``) and its payload."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    codec: str
    payload: bytes | memoryview
    params: dict[str, Any] = field(default_factory=dict)


class ContainerWriter:
    """Append records one at a time; ``close()`` writes the index."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self._file: BinaryIO = open(path, "wb")
        self._file.write(MAGIC)
        self._index: list[dict[str, Any]] = []
        self._offset = 0

    def add(self, record: Record) -> None:
        self._index.append({"name": record.name, "dtype": record.dtype,
                            "shape": list(record.shape), "codec": record.codec,
                            "offset": self._offset, "length": len(record.payload),
                            "params": record.params})
        self._file.write(record.payload)
        self._offset += len(record.payload)

    def close(self) -> int:
        blob = json.dumps(self._index, separators=(",", ":")).encode("utf-8")
        self._file.write(blob + struct.pack("<Q", len(blob)) + MAGIC)
        self._file.close()
        return os.path.getsize(self.path)

    def __enter__(self) -> ContainerWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._file.closed:
            self._file.close()


def write_container(path: str | os.PathLike[str], records) -> int:
    """Write an iterable of records to ``path``; return the file size in bytes."""
    with ContainerWriter(path) as writer:
        for record in records:
            writer.add(record)
        return writer.close()


def read_container(path: str | os.PathLike[str]) -> list[Record]:
    """Every record of a container; payloads are views of the file's bytes (no copies)."""
    with open(path, "rb") as f:
        data = memoryview(f.read())
    if bytes(data[:8]) != MAGIC or bytes(data[-8:]) != MAGIC:
        raise ValueError(f"{path}: not a benchmark container")
    (size,) = struct.unpack("<Q", data[-16:-8])
    index = json.loads(bytes(data[-16 - size:-16]).decode("utf-8"))
    return [Record(h["name"], h["dtype"], tuple(h["shape"]), h["codec"],
                   data[8 + h["offset"]: 8 + h["offset"] + h["length"]], h["params"])
            for h in index]
