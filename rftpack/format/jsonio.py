"""Deterministic JSON in and out, with errors that name the file."""

from __future__ import annotations

import json
from typing import Any

from rftpack.errors import FormatError

MAX_JSON_BYTES = 256 << 20


def dumps(obj: Any) -> bytes:
    """Stable bytes for a JSON document (key order as built, no NaN, trailing newline).

    >>> dumps({"a": 1})
    b'{\\n "a": 1\\n}\\n'
    """
    try:
        return (json.dumps(obj, indent=1, allow_nan=False, ensure_ascii=True) + "\n").encode()
    except ValueError as exc:
        raise FormatError(f"refusing to write non-finite numbers into JSON: {exc}") from exc


def loads(data: bytes, source: str) -> dict[str, Any]:
    """Parse a JSON object; anything else is a FormatError naming ``source``."""
    if len(data) > MAX_JSON_BYTES:
        raise FormatError(f"{source}: JSON document of {len(data)} bytes is too large")
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise FormatError(f"{source}: malformed JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise FormatError(f"{source}: expected a JSON object, found {type(obj).__name__}")
    return obj


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-standard JSON constant {name}")
