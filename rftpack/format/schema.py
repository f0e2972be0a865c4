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
def _validator(kind: str):
    import jsonschema

    text = resources.files("rftpack.format").joinpath("schemas", SCHEMAS[kind]).read_text()
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def validate(kind: str, document: dict[str, Any], source: str) -> None:
    """Raise FormatError naming the first problem's JSON path, if ``document`` breaks its schema.

    >>> validate("manifest", {}, "m.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    rftpack.errors.FormatError: m.json: does not match the manifest schema at $: ...
    """
    validator = _validator(kind)
    error = next(iter(sorted(validator.iter_errors(document), key=lambda e: list(e.path))), None)
    if error is None:
        return
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    message = error.message if len(error.message) < 200 else error.message[:200] + "…"
    raise FormatError(f"{source}: does not match the {kind} schema at {path}: {message}")
