"""JSON Schema validation of the archive's documents (schemas ship in ``formats/``)."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from rftpack.errors import FormatError

SCHEMAS = {"manifest": "manifest.schema.json", "tensor": "tensor.schema.json",
           "predictor": "predictor.schema.json"}


@functools.cache
def _schema(kind: str) -> dict[str, Any]:
    text = resources.files("rftpack.format").joinpath("schemas", SCHEMAS[kind]).read_text()
    return json.loads(text)


@functools.cache
def _validator(kind: str):
    import jsonschema

    schema = _schema(kind)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


@functools.cache
def _fast_validator(kind: str) -> Any:
    """The compiled validator of ``jsonschema-rs`` when installed (``rftpack[fast]``): about
    100× faster on valid documents, which is a quarter of a lossless decode's time. ``None``
    without it."""
    try:
        import jsonschema_rs
    except ImportError:
        return None
    try:
        return jsonschema_rs.validator_for(_schema(kind))
    except Exception:  # a version that cannot compile our schema: use the reference path
        return None


def validate(kind: str, document: dict[str, Any], source: str) -> None:
    """Raise FormatError naming the first problem's JSON path, if ``document`` breaks its schema.

    >>> validate("manifest", {}, "m.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    rftpack.errors.FormatError: m.json: does not match the manifest schema at $: ...
    """
    fast = _fast_validator(kind)
    if fast is not None and fast.is_valid(document):
        return
    # Invalid (or no fast validator): the reference validator finds and names the problem.
    validator = _validator(kind)
    error = next(iter(sorted(validator.iter_errors(document), key=lambda e: list(e.path))), None)
    if error is None:
        if fast is None:
            return
        # The two validators disagree: refuse, with the compiled validator's reason.
        reason = next(iter(fast.iter_errors(document)), None)
        raise FormatError(f"{source}: does not match the {kind} schema: {reason}")
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    message = error.message if len(error.message) < 200 else error.message[:200] + "…"
    raise FormatError(f"{source}: does not match the {kind} schema at {path}: {message}")
