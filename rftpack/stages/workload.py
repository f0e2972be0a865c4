"""How many symbols the job under way will decode: a hint for coders whose per-process
choice depends on it (the ``rans`` coder's compiled decoder costs numba's start-up, ~0.6 s,
and pays only over tens of millions of symbols).

A whole-archive decode (``extract``, ``verify``, loading a whole state dict) plans its
symbols up front, so that choice is made once for the job instead of midway through it.
The plan is per thread (a context variable).

Example:
    >>> with planned(40_000_000):
    ...     planned_symbols()
    40000000
    >>> planned_symbols() is None
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_planned: ContextVar[int | None] = ContextVar("rftpack_planned_symbols", default=None)


@contextmanager
def planned(symbols: int) -> Iterator[None]:
    """Within the block, about ``symbols`` coded symbols will be decoded (at least)."""
    token = _planned.set(max(0, int(symbols)))
    try:
        yield
    finally:
        _planned.reset(token)


def planned_symbols() -> int | None:
    """The symbols planned by the innermost :func:`planned` block, or ``None`` outside one."""
    return _planned.get()
