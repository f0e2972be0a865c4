"""``ModelSource``: the interface every checkpoint reader implements."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import numpy as np

from rftpack.errors import InputError
from rftpack.io.tensor_info import TensorInfo


class ModelSource:
    """Reads a checkpoint tensor by tensor; use as a context manager.

    Example:
        >>> with open_source("model.safetensors") as src:  # doctest: +SKIP
        ...     for info in src.infos():
        ...         array = src.read(info.name)
    """

    name: str
    framework: str
    path: Path

    def __init__(self, path: Path, name: str, framework: str) -> None:
        self.path = path
        self.name = name
        self.framework = framework

    def infos(self) -> list[TensorInfo]:
        """All tensors in stored order, without loading any data."""
        raise NotImplementedError

    def read(self, name: str) -> np.ndarray:
        """One tensor as a little-endian numpy array of its stored dtype and shape."""
        raise NotImplementedError

    def release(self, name: str) -> None:
        """Hint that tensor ``name`` is done with: memory-mapped sources drop its pages."""

    def close(self) -> None:
        """Release files and maps; arrays already returned stay valid."""

    def _unknown(self, name: str) -> InputError:
        return InputError(f"{self.path}: no tensor named {name!r}")

    def __enter__(self) -> ModelSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, framework={self.framework!r})"
