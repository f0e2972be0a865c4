"""Model sources (read a checkpoint tensor by tensor) and sinks (write one).

Formats: safetensors (single or sharded, memory-mapped), PyTorch state dicts (``torch`` is
imported only when such a file is read or written) and ``.npz``.

Example:
    >>> from rftpack.io import open_sink, open_source
    >>> with open_source("org/tiny-bert") as src, open_sink("copy.safetensors", src.infos()) as out:
    ...     for info in src.infos():  # doctest: +SKIP
    ...         out.write(info.name, src.read(info.name))
"""

from rftpack.io.resolve import resolve_model
from rftpack.io.sink import ModelSink
from rftpack.io.sinks import open_sink
from rftpack.io.source import ModelSource
from rftpack.io.sources import open_source
from rftpack.io.tensor_info import TensorInfo

__all__ = [
    "ModelSink",
    "ModelSource",
    "TensorInfo",
    "open_sink",
    "open_source",
    "resolve_model",
]
