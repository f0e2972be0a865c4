"""rftpack: compress neural-network checkpoints tensor by tensor, and give them back.

    >>> import rftpack
    >>> rftpack.compress("model.safetensors", "model.rftp")      # doctest: +SKIP
    >>> rftpack.extract("model.rftp", "restored.safetensors")    # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["compress", "extract", "open", "__version__"]


def __getattr__(name: str) -> Any:
    # The public functions live in rftpack.api; importing it lazily keeps `import rftpack` light.
    if name in ("compress", "extract", "open"):
        from rftpack import api

        return getattr(api, name)
    raise AttributeError(f"module 'rftpack' has no attribute {name!r}")
