"""Reading archives (version 2, and the reference's version 1): manifest first, tensors lazily.

Opening reads only the manifest. A tensor's container and payload are read, checked against the
SHA-256 recorded for them, and decoded when asked for.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rftpack.archive.storage import MANIFEST, ArchiveSource, check_member_path
from rftpack.codec import CONTAINER_TYPE, decode_container, iter_segments
from rftpack.dtypes import dtype_from_name
from rftpack.errors import ChecksumError, FormatError
from rftpack.format.jsonio import loads
from rftpack.format.schema import validate
from rftpack.format.v1 import decode_v1
from rftpack.residual import TrainedResidual
from rftpack.stages.mlp import predictor_from_json

MANIFEST_TYPE = "rft_hybrid_manifest_bundle"
SUPPORTED_VERSIONS = (1, 2)


class Archive:
    """A read-only view of an rftpack archive (ZIP file or directory).

    Example:
        >>> with Archive("model.rftp") as archive:             # doctest: +SKIP
        ...     weights = archive.get_tensor("encoder.layer.0.attention.self.query.weight")
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.source = ArchiveSource(self.path)
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.manifest = loads(self.source.read(MANIFEST), f"{self.path}/{MANIFEST}")
            if self.manifest.get("type") != MANIFEST_TYPE:
                raise FormatError(f"{self.path}: {MANIFEST} has type "
                                  f"{self.manifest.get('type')!r}, expected {MANIFEST_TYPE!r}")
            self.version = self.manifest.get("version")
            if self.version not in SUPPORTED_VERSIONS:
                raise FormatError(f"{self.path}: manifest version {self.version!r} is not "
                                  f"supported (this rftpack reads {SUPPORTED_VERSIONS}); "
                                  f"upgrade rftpack")
            validate("manifest", self.manifest, f"{self.path}/{MANIFEST}")
            self._entries: dict[str, dict[str, Any]] = {}
            for entry in self.manifest["tensors"]:
                name = entry["tensor_name"]
                if name in self._entries:
                    raise FormatError(f"{self.path}: tensor {name!r} is listed twice in the "
                                      f"manifest")
                check_member_path(entry["file"])
                self._entries[name] = entry
        except BaseException:
            self.source.close()
            raise
        self._predictor: Any = None
        self._predictor_loaded = False

    # -- mapping-like access --------------------------------------------------------------------
    def keys(self) -> list[str]:
        """Tensor names in stored order."""
        return list(self._entries)

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
    def get_tensor(self, name: str, *, use_predictor: bool = True) -> np.ndarray:
        """Decode one tensor (reads only its own container and payload)."""
        container = self.container(name)
        entry = self._entries[name]
        source = f"{self.path}/{entry['file']}"
        if container.get("version") == 1:
            predictor = self.predictor() if use_predictor else None
            band_count = predictor[1]["bands"] if predictor else 0
            array = decode_v1(container, source, predictor[0] if predictor else None, band_count)
            dtype = container.get("dtype")
            return array.astype(dtype_from_name(dtype)) if dtype in ("float16", "float64",
                                                                    "bfloat16") else array
        refine = None
        if use_predictor and entry.get("predictor") and self.manifest.get("predictor"):
            trained = self.predictor()
            refine = trained.refine_factory() if trained is not None else None
        reader = _SegmentReader(self, container, source)
        try:
            return decode_container(container, reader, refine)
        except FormatError as exc:
            raise FormatError(f"{source}: {exc}") from exc

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def items(self, *, use_predictor: bool = True) -> Iterator[tuple[str, np.ndarray]]:
        """Decode tensors one at a time, in stored order (bounded memory)."""
        for name in self.keys():
            yield name, self.get_tensor(name, use_predictor=use_predictor)

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
            raise ValueError(f"archive {self.path} is closed")

    def close(self) -> None:
        self._closed = True
        self.source.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
            self.data = archive.source.read(member)
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

    def __call__(self, seg: dict[str, Any]) -> bytes:
        length, offset = seg.get("length"), seg.get("offset")
        if not (isinstance(length, int) and isinstance(offset, int) and length >= 0
                and offset >= 0 and offset + length <= len(self.data)):
            raise FormatError(f"{self.source}: segment [{offset}, +{length}) lies outside "
                              f"the {len(self.data)}-byte payload")
        return self.data[offset:offset + length]
