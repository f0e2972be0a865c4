"""Reading archives (version 2, and the reference's version 1): manifest first, tensors lazily.

Opening reads only the manifest. A tensor's container and payload are read, checked against the
SHA-256 recorded for them, and decoded when asked for.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from rftpack.archive.storage import MANIFEST, ArchiveSource, check_member_path
from rftpack.codec import CONTAINER_TYPE, decode_container, iter_segments
from rftpack.dtypes import dtype_from_name
from rftpack.errors import (
    ChecksumError,
    ClosedArchiveError,
    FormatError,
    RftpackError,
    StageError,
)
from rftpack.format.jsonio import loads
from rftpack.format.manifest import check_manifest
from rftpack.format.schema import validate
from rftpack.format.v1 import decode_v1
from rftpack.io.tensor_info import TensorInfo
from rftpack.residual import TrainedResidual
from rftpack.stages.mlp import predictor_from_json
from rftpack.stages.workload import planned


@dataclass(frozen=True)
class TensorRecord(TensorInfo):
    """What an archive says about one tensor, without decoding it: name, dtype and shape
    (with ``numel``/``nbytes``) plus how it is stored."""

    stored_bytes: int | None = None
    mode: str = ""
    stages: tuple[str, ...] = ()
    snr_db: float | None = None


class _TensorCache:
    """A thread-safe LRU of decoded tensors, bounded in bytes (0 disables it)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.items: OrderedDict[tuple[str, bool], np.ndarray] = OrderedDict()
        self.bytes = 0
        self.lock = threading.Lock()

    def get(self, key: tuple[str, bool]) -> np.ndarray | None:
        with self.lock:
            value = self.items.get(key)
            if value is not None:
                self.items.move_to_end(key)
            return value

    def put(self, key: tuple[str, bool], value: np.ndarray) -> None:
        if value.nbytes > self.max_bytes:
            return
        value.setflags(write=False)  # shared between callers: nobody may modify it
        with self.lock:
            if key in self.items:
                return
            self.items[key] = value
            self.bytes += value.nbytes
            while self.bytes > self.max_bytes:
                _, old = self.items.popitem(last=False)
                self.bytes -= old.nbytes

    def clear(self) -> None:
        with self.lock:
            self.items.clear()
            self.bytes = 0


class Archive:
    """A read-only, lazy view of an rftpack archive (ZIP file, file object or directory).

    Opening reads only the manifest. ``get_tensor`` decodes one tensor and reads only its own
    container and payload. Safe to use from several threads at once.

    ``framework``: ``"numpy"`` (default) or ``"torch"``; ``device``: a torch device for the
    torch framework; ``cache_bytes``: keep up to that many bytes of decoded tensors (LRU).

    Example:
        >>> with Archive("model.rftp") as archive:             # doctest: +SKIP
        ...     weights = archive.get_tensor("encoder.layer.0.attention.self.query.weight")
    """

    def __init__(self, path: str | os.PathLike | BinaryIO, *, framework: str = "numpy",
                 device: Any = None, cache_bytes: int = 0) -> None:
        if framework not in ("numpy", "torch"):
            raise ValueError(f"framework must be 'numpy' or 'torch', got {framework!r}")
        if device is not None and framework != "torch":
            raise ValueError("device= needs framework='torch'")
        self.framework = framework
        self.device = device
        self.source = ArchiveSource(path)
        self.path = self.source.path
        self._lock = threading.Lock()
        self._cache = _TensorCache(max(0, int(cache_bytes)))
        self._closed = False
        try:
            self.manifest = loads(self.source.read(MANIFEST), f"{self.path}/{MANIFEST}")
            check_manifest(self.manifest, f"{self.path}/{MANIFEST}")
            self.version = self.manifest["version"]
            self._entries: dict[str, dict[str, Any]] = {}
            for entry in self.manifest["tensors"]:
                name = entry["tensor_name"]
                if name in self._entries:
                    raise FormatError(f"{self.path}: tensor {name!r} is listed twice in the "
                                      f"manifest")
                self._entries[name] = entry
        except BaseException:
            self.source.close()
            raise
        self._predictor: Any = None
        self._predictor_loaded = False

    # -- mapping-like access --------------------------------------------------------------------
    def keys(self) -> list[str]:
        """Tensor names in stored order."""
        self._check_open()
        return list(self._entries)

    def info(self, name: str) -> TensorRecord:
        """Shape, dtype, stored bytes, mode and stages of one tensor, without decoding it.

        Version-2 manifests hold everything but the stages, which come from the small
        container JSON (the payload is not read).
        """
        entry = self.entry(name)
        container = self.container(name)
        if container.get("version") == 1:
            stages: tuple[str, ...] = ("transform:rft(v1)", "quantizer:polar(v1)", "coder:none")
            mode = "hybrid"
        else:
            stages = tuple(f"{s['kind']}:{s['name']}" for s in container["stages"])
            mode = container["codec"]["mode"]
        dtype = entry.get("dtype") or _v1_dtype(container.get("dtype"))
        return TensorRecord(name, dtype_from_name(dtype),
                            tuple(entry.get("shape") or container["original_shape"]),
                            entry.get("stored_bytes"), mode, stages, entry.get("snr_db"))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def metadata(self) -> dict[str, Any]:
        """The manifest without the per-tensor list."""
        return {k: v for k, v in self.manifest.items() if k != "tensors"}

    def entry(self, name: str) -> dict[str, Any]:
        """The manifest's record of one tensor (no decoding)."""
        self._check_open()
        try:
            return self._entries[name]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise KeyError(f"no tensor {name!r} in {self.path}{hint}") from None

    def container(self, name: str) -> dict[str, Any]:
        """A tensor's container, checked against the manifest's checksum and the schema."""
        entry = self.entry(name)
        member = entry["file"]
        raw = self.source.read(member)
        expected = entry.get("container_sha256")
        if expected is not None and hashlib.sha256(raw).hexdigest() != expected:
            raise ChecksumError(f"{self.path}/{member}: checksum mismatch for tensor {name!r} "
                                f"(the container was modified or corrupted)")
        container = loads(raw, f"{self.path}/{member}")
        if container.get("type") != CONTAINER_TYPE:
            raise FormatError(f"{self.path}/{member}: type {container.get('type')!r} is not "
                              f"{CONTAINER_TYPE!r}")
        validate("tensor", container, f"{self.path}/{member}")
        stored_name = container.get("name", name)
        if stored_name != name:
            raise FormatError(f"{self.path}/{member}: holds tensor {stored_name!r}, but the "
                              f"manifest lists it as {name!r}")
        return container

    # -- decoding -------------------------------------------------------------------------------
    def get_tensor(self, name: str, *, use_predictor: bool = True) -> Any:
        """Decode one tensor (reads only its own container and payload).

        Returns a numpy array, or a torch tensor when the archive was opened with
        ``framework="torch"``. Tensors served from the cache are read-only.
        """
        key = (name, use_predictor)
        array = self._cache.get(key)
        if array is None:
            array = self._decode(name, use_predictor)
            if self._cache.max_bytes:
                self._cache.put(key, array)
        if self.framework == "torch":
            from rftpack.torch import numpy_to_torch

            return numpy_to_torch(array, self.device)
        return array

    __getitem__ = get_tensor

    def _decode(self, name: str, use_predictor: bool) -> np.ndarray:
        container = self.container(name)
        entry = self._entries[name]
        source = f"{self.path}/{entry['file']}"
        if container.get("version") == 1:
            predictor = self.predictor() if use_predictor else None
            band_count = predictor[1]["bands"] if predictor else 0
            array = decode_v1(container, source, predictor[0] if predictor else None, band_count)
            return array.astype(dtype_from_name(_v1_dtype(container.get("dtype"))))
        refine = None
        if use_predictor and entry.get("predictor") and self.manifest.get("predictor"):
            trained = self.predictor()
            refine = trained.refine_factory() if trained is not None else None
        reader = _SegmentReader(self, container, source)
        try:
            return decode_container(container, reader, refine)
        except FormatError as exc:
            raise FormatError(f"{source}: {exc}") from exc
        except RftpackError:
            raise
        except Exception as exc:  # a stage (maybe a plugin) choked on this container
            raise StageError(f"{source}: a stage failed while decoding: "
                             f"{type(exc).__name__}: {exc}") from exc

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def items(self, *, use_predictor: bool = True) -> Iterator[tuple[str, Any]]:
        """Decode tensors one at a time, in stored order: memory holds one tensor at a time.

        Example:
            >>> for name, array in archive.items():   # doctest: +SKIP
            ...     sink.write(name, array)
        """
        for name in self.keys():
            yield name, self.get_tensor(name, use_predictor=use_predictor)

    def plan_decoding(self, names: Iterable[str] | None = None) -> AbstractContextManager[None]:
        """A block that decodes ``names`` (default: every tensor): choices that pay only on big
        jobs (the ``rans`` coder's compiled decoder, and with it ``dq``'s compiled replay:
        :mod:`rftpack.stages.workload`) are then made once for all of them, from their lossy
        weights and coded bits.

        Example:
            >>> with archive.plan_decoding():   # doctest: +SKIP
            ...     arrays = {name: archive[name] for name in archive}
        """
        lossy = bits = 0
        for name in self.keys() if names is None else names:
            entry = self.entry(name)
            shape, stored = entry.get("shape"), entry.get("stored_bytes")
            if entry.get("mode") != "exact" and isinstance(shape, list):
                lossy += math.prod(int(d) for d in shape)
                bits += 8 * stored if isinstance(stored, int) else 0
        codec = self.manifest.get("codec")
        replayed = isinstance(codec, dict) and codec.get("quantizer") == "dq"
        return planned(lossy, coded_bits=bits, replays=lossy if replayed else 0)

    def predictor(self) -> Any:
        """The archive's residual predictor (checksum verified), or None.

        Version-1 archives give ``(MLP, architecture)``; version 2 a ``TrainedResidual``.
        """
        with self._lock:
            if not self._predictor_loaded:
                member = self.manifest.get("predictor")
                if member:
                    check_member_path(member)
                    source = f"{self.path}/{member}"
                    raw = self.source.read(member)
                    expected = self.manifest.get("predictor_sha256")
                    if expected is not None and hashlib.sha256(raw).hexdigest() != expected:
                        raise ChecksumError(f"{source}: checksum mismatch (modified or corrupt)")
                    obj = loads(raw, source)
                    # The loaders verify the checksum first, then the schema names any problem.
                    if self.version == 1:
                        predictor = predictor_from_json(obj, source=source)
                    else:
                        predictor = TrainedResidual.from_json(obj, source)
                    validate("predictor", obj, source)
                    self._predictor = predictor
                self._predictor_loaded = True
            return self._predictor

    # -- lifecycle ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ClosedArchiveError(f"archive {self.path} is closed; open it again with "
                                     f"rftpack.open()")

    def close(self) -> None:
        """Release the archive's file; further use raises ClosedArchiveError."""
        self._closed = True
        self._cache.clear()
        self.source.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _v1_dtype(name: object) -> str:
    """The reference decoded every tensor to float32 unless it was float16/64 or bfloat16."""
    return name if name in ("float16", "float64", "bfloat16") else "float32"  # type: ignore


class _SegmentReader:
    """Serves a container's segments: from its ``.bin`` (read once, checked) or inline base64."""

    def __init__(self, archive: Archive, container: dict[str, Any], source: str) -> None:
        self.payload = container.get("payload") or {}
        self.source = source
        if self.payload.get("encoding", "binary") == "binary":
            member = self.payload.get("file")
            if not isinstance(member, str):
                raise FormatError(f"{source}: binary payload has no 'file'")
            size = self.payload.get("size")
            if not isinstance(size, int) or size < 0:
                raise FormatError(f"{source}: payload.size must be a non-negative integer")
            actual = archive.source.size(check_member_path(member))
            if actual != size:
                raise FormatError(f"{source}: payload {member} holds {actual} bytes, declared "
                                  f"{size}")
            self.data = archive.source.view(member, hashed=self.payload.get("sha256") is not None)
        else:
            self.data = self._assemble_inline(container)
        self._check_sha(self.data)

    def _assemble_inline(self, container: dict[str, Any]) -> bytes:
        """Rebuild the payload bytes from base64 segments (checked like a ``.bin``)."""
        size = self.payload.get("size")
        if not isinstance(size, int) or size < 0:
            raise FormatError(f"{self.source}: payload.size must be a non-negative integer")
        buffer = bytearray(size)
        covered = 0
        for seg in iter_segments(container):
            offset, length, text = seg.get("offset"), seg.get("length"), seg.get("data")
            if not (isinstance(offset, int) and isinstance(length, int) and offset >= 0
                    and length >= 0 and offset + length <= size and isinstance(text, str)):
                raise FormatError(f"{self.source}: base64 segment with bad offset/length/data")
            try:
                raw = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise FormatError(f"{self.source}: segment is not valid base64 ({exc})") from exc
            if len(raw) != length:
                raise FormatError(f"{self.source}: segment holds {len(raw)} bytes, declared "
                                  f"{length}")
            buffer[offset:offset + length] = raw
            covered += length
        if covered != size:
            raise FormatError(f"{self.source}: segments cover {covered} bytes of a {size}-byte "
                              f"payload")
        return bytes(buffer)

    def _check_sha(self, data: bytes) -> None:
        expected = self.payload.get("sha256")
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise ChecksumError(f"{self.source}: payload checksum mismatch (modified or corrupt)")

    def __call__(self, seg: dict[str, Any]) -> bytes | memoryview:
        length, offset = seg.get("length"), seg.get("offset")
        if not (isinstance(length, int) and isinstance(offset, int) and length >= 0
                and offset >= 0 and offset + length <= len(self.data)):
            raise FormatError(f"{self.source}: segment [{offset}, +{length}) lies outside "
                              f"the {len(self.data)}-byte payload")
        if offset == 0 and length == len(self.data):
            return self.data
        return memoryview(self.data)[offset:offset + length]  # not copied
