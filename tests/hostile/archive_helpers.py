"""Helpers shared by the hostile tests: bit-exact comparison and whole-archive reads."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import rftpack

MANIFEST = "manifest_hybrid.json"


def same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-for-bit equal arrays (NaN payloads included), of any float dtype.

    >>> same_values(np.array([np.nan]), np.array([np.nan])), same_values(np.zeros(1), -np.zeros(1))
    (True, False)
    """
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.itemsize == 0 or a.size == 0:
        return True
    view = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    return bool(np.array_equal(np.ascontiguousarray(a).view(view),
                               np.ascontiguousarray(b).view(view)))


def decode_all(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of an archive, decoded."""
    with rftpack.open(path) as archive:
        return {name: np.asarray(archive.get_tensor(name)) for name in archive.keys()}


def containers(path: Path) -> dict[str, dict[str, Any]]:
    """Every tensor container of an archive, by tensor name."""
    with rftpack.open(path) as archive:
        return {name: archive.container(name) for name in archive.keys()}


Edit = Callable[[dict[str, Any], bytearray], "bytearray | None"]


def edited_copy(source: Path, tmp: Path, edit: Edit, name: str = "w") -> Path:
    """A copy of directory archive ``source`` whose container of ``name`` went through
    ``edit(container, payload)`` (which may return a new payload); the payload's size and
    sha256 and the container's sha256 in the manifest are brought up to date, so only the
    semantic checks can refuse the result."""
    out = tmp / "edited"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(source, out)
    manifest_path = out / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    entry = next(e for e in manifest["tensors"] if e["tensor_name"] == name)
    container_path = out / entry["file"]
    container = json.loads(container_path.read_text())
    payload_path = out / container["payload"]["file"]
    payload = bytearray(payload_path.read_bytes())
    changed = edit(container, payload)
    if changed is not None:
        payload = changed
    payload_path.write_bytes(bytes(payload))
    container["payload"]["size"] = len(payload)
    container["payload"]["sha256"] = hashlib.sha256(bytes(payload)).hexdigest()
    data = json.dumps(container).encode()
    container_path.write_bytes(data)
    entry["container_sha256"] = hashlib.sha256(data).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    return out
