"""Fast structural check of a manifest: what ``open()`` relies on, in O(tensors) plain Python.

The full JSON Schema (``formats/manifest.schema.json``) is checked by ``rftpack verify``;
running it on every open would cost ~1 ms per tensor, and ``open()`` must stay fast on
archives of thousands of tensors.
"""

from __future__ import annotations

import re
from typing import Any

from rftpack.archive.storage import check_member_path
from rftpack.errors import FormatError

MANIFEST_TYPE = "rft_hybrid_manifest_bundle"
SUPPORTED_VERSIONS = (1, 2)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _fail(source: str, path: str, message: str) -> FormatError:
    return FormatError(f"{source}: bad manifest at {path}: {message}")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_manifest(manifest: dict[str, Any], source: str) -> None:
    """Raise FormatError (naming the JSON path) if the manifest cannot be served.

    >>> check_manifest({"type": "rft_hybrid_manifest_bundle", "version": 2, "tensors": 3}, "m")
    Traceback (most recent call last):
    ...
    rftpack.errors.FormatError: m: bad manifest at $.tensors: must be a list
    """
    if manifest.get("type") != MANIFEST_TYPE:
        raise _fail(source, "$.type", f"{manifest.get('type')!r} is not {MANIFEST_TYPE!r}")
    version = manifest.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(f"{source}: manifest version {version!r} is not supported (this "
                          f"rftpack reads {SUPPORTED_VERSIONS}); upgrade rftpack")
    tensors = manifest.get("tensors")
    if not isinstance(tensors, list):
        raise _fail(source, "$.tensors", "must be a list")
    predictor = manifest.get("predictor")
    if predictor is not None:
        if not isinstance(predictor, str):
            raise _fail(source, "$.predictor", "must be a path or null")
        check_member_path(predictor)
    digest = manifest.get("predictor_sha256")
    if digest is not None and not (isinstance(digest, str) and _SHA256.match(digest)):
        raise _fail(source, "$.predictor_sha256", "must be 64 lowercase hex digits or null")
    for index, entry in enumerate(tensors):
        _check_entry(entry, f"$.tensors[{index}]", source, version)


def _check_entry(entry: Any, path: str, source: str, version: int) -> None:
    if not isinstance(entry, dict):
        raise _fail(source, path, "must be an object")
    if not isinstance(entry.get("tensor_name"), str):
        raise _fail(source, f"{path}.tensor_name", "must be a string")
    if not isinstance(entry.get("file"), str):
        raise _fail(source, f"{path}.file", "must be a string")
    check_member_path(entry["file"])
    required = version == 2
    if "dtype" in entry or required:
        if not isinstance(entry.get("dtype"), str):
            raise _fail(source, f"{path}.dtype", "must be a string")
    if "shape" in entry or required:
        shape = entry.get("shape")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise _fail(source, f"{path}.shape", "must be a list of non-negative integers")
    for key in ("stored_bytes", "original_bytes"):
        if (key in entry or required) and not _is_count(entry.get(key)):
            raise _fail(source, f"{path}.{key}", "must be a non-negative integer")
    if "container_sha256" in entry or required:
        digest = entry.get("container_sha256")
        if not (isinstance(digest, str) and _SHA256.match(digest)):
            raise _fail(source, f"{path}.container_sha256", "must be 64 lowercase hex digits")
    if ("predictor" in entry or required) and not isinstance(entry.get("predictor"), bool):
        raise _fail(source, f"{path}.predictor", "must be true or false")
    if "mode" in entry and entry["mode"] not in ("hybrid", "exact"):
        raise _fail(source, f"{path}.mode", "must be 'hybrid' or 'exact'")
