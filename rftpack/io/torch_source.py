"""Read PyTorch checkpoints (``.bin``/``.pt``/``.pth``, optionally sharded) with ``torch.load``."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from rftpack.errors import InputError
from rftpack.io.shards import read_weight_map
from rftpack.io.source import ModelSource
from rftpack.io.tensor_info import TensorInfo
from rftpack.io.torch_convert import numpy_dtype, to_numpy

#: Keys under which training checkpoints commonly nest the state dict.
WRAPPER_KEYS = ("state_dict", "model")


class TorchSource(ModelSource):
    """A PyTorch state dict: one file, or shards listed by ``pytorch_model.bin.index.json``.

    Loaded with ``weights_only=True`` and memory-mapped where the file format allows.
    Tensor order: shards in file-name order, within a file the state dict's order.

    Example:
        >>> with TorchSource(Path("pytorch_model.bin")) as src:  # doctest: +SKIP
        ...     w = src.read(src.infos()[0].name)
    """

    def __init__(self, path: Path, name: str | None = None) -> None:
        super().__init__(path, name or path.stem, "pytorch")
        self._tensors: dict[str, Any] = {}
        self._infos: list[TensorInfo] = []
        if path.name.endswith(".json"):
            weight_map = read_weight_map(path)
            files = [path.parent / shard for shard in sorted(set(weight_map.values()))]
        else:
            weight_map, files = {}, [path]
        for file in files:
            self._add(file, _state_dict(file, _load(file)))
        for tensor, shard in weight_map.items():
            if tensor not in self._tensors:
                raise InputError(f"{path}: tensor {tensor!r} is not in its shard {shard!r}")

    def _add(self, file: Path, state: dict[str, Any]) -> None:
        for key, tensor in state.items():
            if key in self._tensors:
                raise InputError(f"{file}: tensor {key!r} is also stored in another shard")
            dtype = numpy_dtype(tensor.dtype)
            if dtype is None:
                raise InputError(f"{file}: tensor {key!r} has unsupported dtype {tensor.dtype}")
            self._tensors[key] = tensor
            self._infos.append(TensorInfo(key, dtype, tuple(tensor.shape)))

    def infos(self) -> list[TensorInfo]:
        return list(self._infos)

    def read(self, name: str) -> np.ndarray:
        try:
            tensor = self._tensors[name]
        except KeyError:
            raise self._unknown(name) from None
        array = to_numpy(tensor)
        array.flags.writeable = False  # may share memory with other tensors or the file map
        return array

    def close(self) -> None:
        self._tensors = {}


def _load(file: Path) -> Any:
    import torch

    if not file.is_file():
        raise InputError(f"{file}: no such file")
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # legacy (non-zip) files cannot be mapped; retry below
        pass
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f"a pickled {found.group(1)} object" if found else "pickled Python objects"
        raise InputError(
            f"{file}: holds {what}; only tensors are loaded (weights_only=True)"
        ) from None
    except Exception as exc:  # torch raises many types; report them all alike
        raise InputError(
            f"{file}: not a loadable PyTorch checkpoint ({_first_line(exc)})"
        ) from None


def _first_line(exc: Exception) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _state_dict(file: Path, obj: Any) -> dict[str, Any]:
    """The tensors of a loaded checkpoint: a state dict, possibly under a wrapper key."""
    import torch

    if not isinstance(obj, dict):
        raise InputError(f"{file}: holds a {type(obj).__name__}, not a state dict")
    prefix = ""
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj, prefix = obj[key], f"{key}."
                break
    for key, value in obj.items():
        if not isinstance(key, str):
            raise InputError(f"{file}: state dict key {prefix}{key!r} is not a string")
        where = f"{file}: {'entry' if prefix else 'key'} {prefix + key!r}"
        if not isinstance(value, torch.Tensor):
            raise InputError(f"{where} holds a {type(value).__name__} value, not a tensor")
        if value.layout != torch.strided or value.is_quantized:
            raise InputError(f"{where} is a sparse or quantized tensor (unsupported)")
    return obj
