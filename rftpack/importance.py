"""Per-tensor importance weights for rate control: how much each tensor's squared error
counts. They come from :func:`rftpack.sensitivity.measure` (or anywhere else) and travel as a
small JSON file::

    {"format": "rftpack-importance", "version": 1, "distortion": "cosine",
     "weights": {"encoder.layer.0.attention.self.value.weight": 0.88, ...}}

Rate control then gives tensor *i* the step Δ / √wᵢ (equal slope of the *weighted* error),
so sensitive tensors get finer steps and insensitive ones coarser, at the same total size.
This module needs no torch.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

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


def save(weights: Mapping[str, float], path: str | os.PathLike, **details: Any) -> Path:
    """Write importance weights (plus JSON-ready ``details`` such as the distortion measure).

    >>> import tempfile; d = tempfile.mkdtemp()
    >>> load(save({"w": 1.5}, f"{d}/imp.json", distortion="cosine"))
    {'w': 1.5}
    """
    document = {"format": FORMAT, "version": VERSION, **details,
                "weights": validate(weights)}
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
    try:
        document = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such importance file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not a JSON importance file ({exc})") from None
    if isinstance(document, dict) and "weights" in document:
        if document.get("format", FORMAT) != FORMAT:
            raise InputError(f"{path}: format {document.get('format')!r} is not {FORMAT!r}")
        version = document.get("version", VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or version > VERSION:
            raise InputError(f"{path}: importance format version {version!r} is newer than "
                             f"this rftpack reads ({VERSION}); upgrade rftpack")
        document = document["weights"]
    return validate(document, str(path))


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
