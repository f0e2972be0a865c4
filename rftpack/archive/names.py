"""File names for tensors: readable, unique, and always inside ``tensors/``."""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")
MAX_STEM = 120


def reference_stem(tensor_name: str) -> str:
    """The reference implementation's mapping: ``/`` → ``__``, ``.`` → ``_``.

    >>> reference_stem("head/proj.weight")
    'head__proj_weight'
    """
    return tensor_name.replace("/", "__").replace(".", "_")


class NameAllocator:
    """Gives each tensor a unique, safe file stem; collisions get a hash suffix.

    Stems are compared case-insensitively (macOS and Windows file systems are), contain only
    ``[A-Za-z0-9_-]``, and never start with a dot, so they cannot escape the archive.

    >>> names = NameAllocator()
    >>> names.stem("a.b"), names.stem("a/b"), names.stem("a_b")[:4]
    ('a_b', 'a__b', 'a_b-')
    """

    def __init__(self) -> None:
        self._used: set[str] = set()

    def stem(self, tensor_name: str) -> str:
        base = _UNSAFE.sub("_", reference_stem(tensor_name))[:MAX_STEM] or "tensor"
        candidate = base
        if candidate.lower() in self._used or base != reference_stem(tensor_name):
            digest = hashlib.sha256(tensor_name.encode("utf-8", "surrogatepass")).hexdigest()
            candidate = f"{base}-{digest[:12]}"
            suffix = 0
            while candidate.lower() in self._used:
                suffix += 1
                candidate = f"{base}-{digest[:12]}-{suffix}"
        self._used.add(candidate.lower())
        return candidate
