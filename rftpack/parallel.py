"""How many threads rftpack's compiled kernels may use, and a pool to run them on.

Only work that releases the GIL and splits into independent pieces runs on threads (today:
the ``dq`` trellis search, whose chains are independent), and the pieces' results are joined
in order, so an archive's bytes never depend on the thread count.

The count is, in order: the innermost :func:`limited_to` (``compress(..., threads=N)``,
``rftpack compress --threads N``), the ``RFTPACK_THREADS`` environment variable, else every
core this process may run on.

Example:
    >>> with limited_to(1):
    ...     threads()
    1
    >>> run_split(lambda part: part * 2, [1, 2, 3])
    [2, 4, 6]
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from rftpack.errors import StageError

T = TypeVar("T")
R = TypeVar("R")

_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("rftpack_threads",
                                                                   default=None)
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_threads(value: object, what: str = "threads") -> int:
    """``value`` as a thread count (an integer ≥ 1), else a clear error."""
    if type(value) is not int or value < 1:
        raise StageError(f"{what} must be an integer ≥ 1, got {value!r}")
    return value


def threads() -> int:
    """The number of threads kernels may use now (see the module docstring)."""
    limit = _LIMIT.get()
    if limit is not None:
        return limit
    env = os.environ.get("RFTPACK_THREADS")
    if env:
        try:
            return check_threads(int(env), "RFTPACK_THREADS")
        except ValueError:
            raise StageError(f"RFTPACK_THREADS must be an integer ≥ 1, got {env!r}") from None
    return available_cores()


@contextlib.contextmanager
def limited_to(count: int | None) -> Iterator[None]:
    """Within the block, kernels use ``count`` threads (None: leave the setting as it is)."""
    if count is None:
        yield
        return
    token = _LIMIT.set(check_threads(count))
    try:
        yield
    finally:
        _LIMIT.reset(token)


def _pool(size: int) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        pool = _POOLS.get(size)
        if pool is None:
            pool = _POOLS[size] = ThreadPoolExecutor(size, thread_name_prefix="rftpack")
        return pool


def run_split(work: Callable[[T], R], parts: Sequence[T]) -> list[R]:
    """``[work(p) for p in parts]``, on up to :func:`threads` threads when there are several
    parts (``work`` should release the GIL, as numba's ``nogil`` functions do)."""
    count = min(threads(), len(parts))
    if count <= 1:
        return [work(p) for p in parts]
    return list(_pool(count).map(work, parts))
