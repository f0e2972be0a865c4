"""Per-tensor importance weights for rate control: how much each tensor's squared error
counts. They come from :func:`rftpack.sensitivity.measure` (or anywhere else) and travel as a
small JSON file::

    {"format": "rftpack-importance", "version": 1, "distortion": "cosine",
     "weights": {"encoder.layer.0.attention.self.value.weight": 0.88, ...}}

Rate control then gives tensor *i* the step Δ / √wᵢ (equal slope of the *weighted* error),
so sensitive tensors get finer steps and insensitive ones coarser, at the same total size.

A file may also weigh the *rows* of a tensor (``"rows"``, e.g. a token-embedding table's rows
by how often calibration text used their tokens); rows not listed take ``default``::

    "rows": {"embeddings.word_embeddings.weight":
             {"count": 30522, "default": 0.5, "weights": {"101": 40.5, "1996": 12.5}}}

Row weights are relative (rate control normalises them to mean 1 within the tensor, whose
own weight stays as given). This module needs no torch.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from rftpack.errors import InputError, OutputError

FORMAT = "rftpack-importance"
VERSION = 1

T = TypeVar("T")


def validate(weights: Any, where: str = "importance weights") -> dict[str, float]:
    """A checked copy of ``weights``: a mapping of tensor names to finite numbers > 0.

    >>> validate({"a.weight": 2})
    {'a.weight': 2.0}
    """
    if not isinstance(weights, Mapping) or not weights:
        raise InputError(f"{where}: expected a non-empty mapping of tensor names to weights")
    checked = {}
    for name, value in weights.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"{where}: tensor names must be non-empty strings, got {name!r}")
        if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                or not math.isfinite(value) or value <= 0):
            raise InputError(f"{where}: the weight of {name!r} must be a finite number > 0, "
                             f"got {value!r}")
        checked[name] = float(value)
    return checked


def validate_rows(rows: Any, where: str = "row weights") -> dict[str, np.ndarray]:
    """A checked copy of per-row weights: tensor name → 1-D array of finite numbers > 0.

    >>> validate_rows({"emb.weight": [1, 3]})["emb.weight"].tolist()
    [1.0, 3.0]
    """
    if not isinstance(rows, Mapping) or not rows:
        raise InputError(f"{where}: expected a non-empty mapping of tensor names to per-row "
                         f"weights")
    checked = {}
    for name, values in rows.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"{where}: tensor names must be non-empty strings, got {name!r}")
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{where}: the row weights of {name!r} are not numbers") from None
        if array.ndim != 1 or not array.size or not np.all(np.isfinite(array)) \
                or not np.all(array > 0):
            raise InputError(f"{where}: the row weights of {name!r} must be a non-empty list "
                             f"of finite numbers > 0")
        checked[name] = array
    return checked


def save(weights: Mapping[str, float], path: str | os.PathLike, *,
         rows: Mapping[str, Any] | None = None, **details: Any) -> Path:
    """Write importance weights and optional per-row weights (plus JSON-ready ``details``
    such as the distortion measure).

    >>> import tempfile; d = tempfile.mkdtemp()
    >>> load(save({"w": 1.5}, f"{d}/imp.json", distortion="cosine"))
    {'w': 1.5}
    """
    document = {"format": FORMAT, "version": VERSION, **details,
                "weights": validate(weights)}
    if rows:
        document["rows"] = {name: _sparse(array)
                            for name, array in validate_rows(rows).items()}
    out = Path(path)
    try:
        out.write_text(json.dumps(document, indent=1) + "\n")
    except OSError as exc:
        raise OutputError(f"{out}: cannot write the importance file ({exc.strerror or exc})"
                          ) from None
    return out


def load(path: str | os.PathLike) -> dict[str, float]:
    """The weights of an importance file written by :func:`save` (or a plain name → weight
    JSON object)."""
    document = _read(path)
    if isinstance(document, dict) and "weights" in document:
        if document.get("format", FORMAT) != FORMAT:
            raise InputError(f"{path}: format {document.get('format')!r} is not {FORMAT!r}")
        version = document.get("version", VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or version > VERSION:
            raise InputError(f"{path}: importance format version {version!r} is newer than "
                             f"this rftpack reads ({VERSION}); upgrade rftpack")
        document = document["weights"]
    return validate(document, str(path))


def load_rows(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The per-row weights of an importance file (empty if it has none).

    >>> import tempfile; d = tempfile.mkdtemp()
    >>> f = save({"w": 1.0}, f"{d}/imp.json", rows={"w": [0.5, 0.5, 9.0]})
    >>> load_rows(f)["w"].tolist()
    [0.5, 0.5, 9.0]
    """
    load(path)  # format and version checks
    document = _read(path)
    sparse = document.get("rows") if isinstance(document, dict) else None
    if sparse is None:
        return {}
    if not isinstance(sparse, Mapping):
        raise InputError(f"{path}: 'rows' must map tensor names to row weights")
    return validate_rows({name: _dense(entry, f"{path}: rows of {name!r}")
                          for name, entry in sparse.items()}, str(path))


def _read(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such importance file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not a JSON importance file ({exc})") from None


def _sparse(array: np.ndarray) -> dict[str, Any]:
    """Row weights as the most common value plus the rows that differ from it."""
    values, counts = np.unique(array, return_counts=True)
    default = float(values[np.argmax(counts)])
    differ = np.flatnonzero(array != default)
    return {"count": int(array.shape[0]), "default": default,
            "weights": {str(int(i)): float(array[i]) for i in differ}}


def _dense(entry: Any, where: str) -> np.ndarray:
    if not isinstance(entry, Mapping) or set(entry) != {"count", "default", "weights"}:
        raise InputError(f"{where}: expected {{'count', 'default', 'weights'}}")
    count, default, listed = entry["count"], entry["default"], entry["weights"]
    if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= 1 << 31:
        raise InputError(f"{where}: 'count' must be a positive integer")
    if isinstance(default, bool) or not isinstance(default, numbers.Real):
        raise InputError(f"{where}: 'default' must be a number")
    if not isinstance(listed, Mapping):
        raise InputError(f"{where}: 'weights' must map row numbers to weights")
    array = np.full(count, float(default))
    for key, value in listed.items():
        if not (isinstance(key, str) and key.isascii() and key.isdecimal()
                and int(key) < count):
            raise InputError(f"{where}: row {key!r} is not a row number below {count}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InputError(f"{where}: the weight of row {key} must be a number")
        array[int(key)] = float(value)
    return array


def lookup(weights: Mapping[str, T], name: str) -> T | None:
    """The entry for checkpoint tensor ``name``: an exact entry, else the longest entry name
    the checkpoint's adds a prefix to (``bert.encoder.x`` ← ``encoder.x``), else ``None``.
    Works for any mapping keyed by tensor names (weights, input covariances).

    >>> lookup({"encoder.x": 2.0}, "bert.encoder.x"), lookup({"encoder.x": 2.0}, "y")
    (2.0, None)
    """
    if name in weights:
        return weights[name]
    matches = [key for key in weights if name.endswith("." + key)]
    return weights[max(matches, key=len)] if matches else None
