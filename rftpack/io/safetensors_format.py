"""The safetensors file layout: parse and build the JSON header.

Layout: 8-byte little-endian header length ``n``, ``n`` bytes of JSON
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``),
then the data area; offsets are relative to the start of the data area.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftpack.errors import InputError
from rftpack.io.dtypes import SAFETENSORS_DTYPES, safetensors_name
from rftpack.io.tensor_info import TensorInfo

#: Same limit as the reference implementation: a larger header means a corrupt file.
MAX_HEADER_BYTES = 100_000_000
METADATA_KEY = "__metadata__"


@dataclass(frozen=True)
class Entry:
    """One tensor of a safetensors file: its info and absolute byte range in the file."""

    info: TensorInfo
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    """A parsed header: entries sorted by data offset, and the free-form metadata."""

    entries: list[Entry]
    metadata: dict[str, Any]


def parse_header(path: Path, head: bytes, file_size: int) -> Header:
    """Parse and validate the header at the start of ``head`` (the file's first bytes).

    Tensors are returned in storage order (by data offset, ties in header order).

    Example:
        >>> raw = b'{"x":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}'
        >>> blob = len(raw).to_bytes(8, "little") + raw + bytes(4)
        >>> parse_header(Path("m"), blob, len(blob)).entries[0].info.shape
        ()
    """
    if file_size < 8 or len(head) < 8:
        raise InputError(f"{path}: truncated safetensors file ({file_size} bytes, no header)")
    (length,) = struct.unpack("<Q", head[:8])
    if length == 0 or length > MAX_HEADER_BYTES or 8 + length > file_size:
        raise InputError(
            f"{path}: not a safetensors file or truncated "
            f"(header length {length} does not fit file size {file_size})"
        )
    if len(head) < 8 + length:
        raise InputError(f"{path}: truncated safetensors header")
    try:
        doc = json.loads(bytes(head[8 : 8 + length]).decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{path}: safetensors header is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: safetensors header is not a JSON object")
    metadata = doc.pop(METADATA_KEY, None) or {}
    if not isinstance(metadata, dict):
        raise InputError(f"{path}: safetensors {METADATA_KEY} is not a JSON object")
    data_start = 8 + length
    entries = [_entry(path, name, spec, data_start, file_size) for name, spec in doc.items()]
    entries.sort(key=lambda e: e.begin)  # stable: ties keep header order
    return Header(entries, metadata)


def _entry(path: Path, name: str, spec: Any, data_start: int, file_size: int) -> Entry:
    where = f"{path}: tensor {name!r}"
    if not isinstance(spec, dict):
        raise InputError(f"{where}: header entry is not a JSON object")
    dtype = SAFETENSORS_DTYPES.get(spec.get("dtype"))  # type: ignore[arg-type]
    if dtype is None:
        raise InputError(f"{where}: unknown or unsupported dtype {spec.get('dtype')!r}")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise InputError(f"{where}: bad shape {shape!r}")
    offsets = spec.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_count(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise InputError(f"{where}: bad data_offsets {offsets!r}")
    info = TensorInfo(name, dtype, tuple(shape))
    begin, end = data_start + offsets[0], data_start + offsets[1]
    if end - begin != info.nbytes:
        raise InputError(
            f"{where}: data_offsets span {end - begin} bytes but "
            f"{spec['dtype']}{list(shape)} needs {info.nbytes}"
        )
    if end > file_size:
        raise InputError(f"{where}: data ends at byte {end}, past end of file ({file_size})")
    return Entry(info, begin, end)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def build_header(infos: list[TensorInfo], metadata: dict[str, str] | None = None) -> bytes:
    """Length prefix + JSON header for ``infos`` stored back to back, padded to 8 bytes.

    Example:
        >>> import numpy as np
        >>> blob = build_header([TensorInfo("x", np.dtype("float32"), (2,))])
        >>> len(blob) % 8, blob[8:9]
        (0, b'{')
    """
    doc: dict[str, Any] = {}
    if metadata:
        doc[METADATA_KEY] = metadata
    offset = 0
    for info in infos:
        doc[info.name] = {
            "dtype": safetensors_name(info.dtype),
            "shape": list(info.shape),
            "data_offsets": [offset, offset + info.nbytes],
        }
        offset += info.nbytes
    raw = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)
    return struct.pack("<Q", len(raw)) + raw
