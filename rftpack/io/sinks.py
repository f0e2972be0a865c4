"""``open_sink``: pick the writer for an output path."""

from __future__ import annotations

import os
from pathlib import Path

from rftpack.errors import OutputError
from rftpack.io.npz_sink import NpzSink
from rftpack.io.safetensors_sink import SafetensorsSink
from rftpack.io.sink import ModelSink
from rftpack.io.tensor_info import TensorInfo
from rftpack.io.torch_sink import TorchSink

SINKS: dict[str, type[ModelSink]] = {
    "safetensors": SafetensorsSink,
    "torch": TorchSink,
    "npz": NpzSink,
}
_BY_SUFFIX = {
    ".safetensors": "safetensors",
    ".bin": "torch",
    ".pt": "torch",
    ".pth": "torch",
    ".npz": "npz",
}


def sink_format(path: str | os.PathLike[str]) -> str:
    """The format implied by a path's suffix: safetensors unless .bin/.pt/.pth/.npz.

    Example:
        >>> sink_format("out/pytorch_model.bin"), sink_format("out/model")
        ('torch', 'safetensors')
    """
    return _BY_SUFFIX.get(Path(path).suffix.lower(), "safetensors")


def open_sink(
    path: str | os.PathLike[str], infos: list[TensorInfo], format: str | None = None
) -> ModelSink:
    """A sink writing ``infos`` to ``path`` as ``format`` (default: from the suffix).

    Example:
        >>> with open_sink("restored/model.safetensors", src.infos()) as sink:  # doctest: +SKIP
        ...     for info in src.infos():
        ...         sink.write(info.name, src.read(info.name))
    """
    chosen = format or sink_format(path)
    if chosen not in SINKS:
        raise OutputError(f"{path}: unknown output format {chosen!r} (known: {', '.join(SINKS)})")
    return SINKS[chosen](path, infos)
