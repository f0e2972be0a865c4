"""Deterministic JSON in and out, with errors that name the file."""

from __future__ import annotations

import json
from typing import Any

from rftpack.errors import FormatError

MAX_JSON_BYTES = 256 << 20


def dumps(obj: Any, compact: bool = False) -> bytes:
    """Stable bytes for a JSON document (key order as built, no NaN, trailing newline):
    indented by one space, or ``compact`` (no whitespace: tensor containers, which only
    programs read and whose size counts in every archive).

    >>> dumps({"a": 1})
    b'{\\n "a": 1\\n}\\n'
    >>> dumps({"a": [1, 2]}, compact=True)
    b'{"a":[1,2]}\\n'
    """
    layout: dict[str, Any] = {"separators": (",", ":")} if compact else {"indent": 1}
    try:
        return (json.dumps(obj, allow_nan=False, ensure_ascii=True, **layout) + "\n").encode()
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
