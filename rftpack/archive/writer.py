"""Streaming archive writer: one container (+ payload) per tensor as soon as it is encoded,
the predictor after the stream, the manifest last.

Payload encodings:
    binary  ``tensors/<stem>.bin`` holds the payload; segments are ``{"offset", "length"}``
    base64  the spec's layout: each segment carries ``"data"`` (base64) inside the JSON
"""

from __future__ import annotations

import base64
import copy
import hashlib
import os
from pathlib import Path
from typing import Any

from rftpack.archive.names import NameAllocator
from rftpack.archive.storage import MANIFEST, ArchiveStore, DirectoryStore, ZipStore
from rftpack.codec import EncodedTensor, iter_segments
from rftpack.errors import OutputError
from rftpack.format.jsonio import dumps

PREDICTOR_MEMBER = "predictors/global_residual_predictor.json"
LAYOUTS = ("zip", "directory")
PAYLOADS = ("binary", "base64")


def default_layout(path: Path) -> str:
    """``directory`` for an existing directory or a path ending in a separator, else ``zip``."""
    return "directory" if path.is_dir() or str(path).endswith(os.sep) else "zip"


class ArchiveWriter:
    """Write an archive member by member; nothing looks complete until ``finish``.

    Example:
        >>> writer = ArchiveWriter("model.rftp")                # doctest: +SKIP
        >>> entry = writer.add_tensor(encoded)                  # doctest: +SKIP
        >>> writer.finish({"type": "rft_hybrid_manifest_bundle", ...})  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, *, layout: str | None = None,
                 payload: str = "binary", overwrite: bool = False) -> None:
        self.path = Path(path)
        self.layout = layout or default_layout(self.path)
        if self.layout not in LAYOUTS:
            raise OutputError(f"unknown layout {self.layout!r}; choose {' or '.join(LAYOUTS)}")
        if payload not in PAYLOADS:
            raise OutputError(f"unknown payload encoding {payload!r}; choose "
                              f"{' or '.join(PAYLOADS)}")
        self.payload = payload
        self.names = NameAllocator()
        self.tensor_names: set[str] = set()
        self.store: ArchiveStore = (ZipStore(self.path, overwrite=overwrite)
                                    if self.layout == "zip"
                                    else DirectoryStore(self.path, overwrite=overwrite))

    def _put(self, member: str, data: bytes) -> int:
        return self.store.put(member, data)

    def add_tensor(self, encoded: EncodedTensor) -> dict[str, Any]:
        """Store one tensor; returns what the manifest needs to know about it."""
        container = copy.deepcopy(encoded.container)
        name = container["name"]
        if name in self.tensor_names:
            raise OutputError(f"tensor name {name!r} appears twice in the input")
        self.tensor_names.add(name)
        stem = self.names.stem(name)
        member = f"tensors/{stem}.json"
        payload = container["payload"]
        payload_bytes = 0
        if self.payload == "binary":
            payload_member = f"tensors/{stem}.bin"
            payload["file"] = payload_member
            self._put(payload_member, encoded.payload)
            payload_bytes = len(encoded.payload)
        else:
            payload["encoding"] = "base64"
            view = memoryview(encoded.payload)
            for seg in iter_segments(container):
                offset, length = seg["offset"], seg["length"]
                seg["data"] = base64.b64encode(view[offset:offset + length]).decode("ascii")
        document = dumps(container)
        stored = self._put(member, document)
        return {"file": member, "container_sha256": hashlib.sha256(document).hexdigest(),
                "container_bytes": stored, "stored_bytes": stored + payload_bytes}

    def add_predictor(self, obj: dict[str, Any]) -> dict[str, Any]:
        document = dumps(obj)
        self._put(PREDICTOR_MEMBER, document)
        return {"file": PREDICTOR_MEMBER, "sha256": hashlib.sha256(document).hexdigest(),
                "bytes": len(document)}

    def finish(self, manifest: dict[str, Any]) -> None:
        """Write the manifest last and make the archive visible under its final name."""
        self._put(MANIFEST, dumps(manifest))
        self.store.commit()

    def abort(self) -> None:
        """Remove everything written so far (best effort)."""
        self.store.abort()
