"""Write a PyTorch state dict with ``torch.save`` (tensors are collected until ``close``)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from rftpack.io.sink import ModelSink
from rftpack.io.tensor_info import TensorInfo
from rftpack.io.torch_convert import from_numpy


class TorchSink(ModelSink):
    """A ``.bin``/``.pt``/``.pth`` state dict, saved in ``infos`` order on ``close``.

    Example:
        >>> with TorchSink("pytorch_model.bin", infos) as sink:  # doctest: +SKIP
        ...     sink.write("w", w)
    """

    format = "torch"

    def _start(self) -> None:
        import torch  # noqa: F401 - fail early if torch is missing

        self._state: dict[str, Any] = {}

    def _write(self, info: TensorInfo, array: np.ndarray) -> None:
        self._state[info.name] = from_numpy(array)

    def _finish(self) -> None:
        import torch

        with open(self.temp_path, "wb") as f:
            torch.save(self._state, f)
            f.flush()
            os.fsync(f.fileno())
        self._state = {}

    def _discard(self) -> None:
        self._state = {}
