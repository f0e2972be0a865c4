"""Give freed heap memory back to the operating system after a large tensor.

glibc's allocator keeps what numpy frees in its heap when the blocks were small enough to come
from it (a block's temporaries of 8 MB, after it has seen larger ones), and only returns the
top of the heap; a streaming job over large tensors then holds the high-water mark of every
tensor's temporaries, scattered. ``malloc_trim(0)`` hands the free pages back. Elsewhere (other
C libraries, other systems) this does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import platform
from collections.abc import Callable

#: tensors at least this large are followed by a trim (smaller ones leave little behind; the
#: pages a trim returns fault in again when the next tensor needs them: ~5 % of the compress
#: time of a model of 64 MB tensors)
TRIM_AFTER_BYTES = 32 << 20


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_after(nbytes: int) -> bool:
    """After a tensor of ``nbytes``: return the heap's free pages to the OS where that is
    possible and the tensor was large (TRIM_AFTER_BYTES). True when it trimmed.

    >>> release_after(1024)
    False
    """
    trim = _malloc_trim() if nbytes >= TRIM_AFTER_BYTES else None
    if trim is None:
        return False
    trim(0)
    return True
