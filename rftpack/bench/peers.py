"""Peer codecs for ``rftpack bench``: zstd, ZipNN, GGUF (gguf-py) and NNCodec.

None of them is a dependency of rftpack. Each is imported lazily, inside the functions here
(run in the benchmark's worker processes), and :func:`peer_status` reports a peer that is not
installed so the benchmark can skip it with a line saying so.

Every peer but NNCodec writes a :mod:`rftpack.bench.container` file whose whole size is what
the peer is charged. NNCodec runs in a standalone script (``nncodec_worker.py``) because
``nncodec`` 2.1 pins ``numpy<2`` and so often lives in another interpreter.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rftpack.bench.container import Record, read_container, write_container

#: peer name -> (import name, pip name, what it is)
PEERS: dict[str, tuple[str, str, str]] = {
    "zstd": ("zstandard", "zstandard", "zstd on each tensor's raw little-endian bytes"),
    "zipnn": ("zipnn", "zipnn", "ZipNN (byte grouping + entropy coding), lossless"),
    "gguf": ("gguf", "gguf", "llama.cpp block quantizers Q8_0/Q5_0/Q4_0 via gguf-py"),
    "nncodec": ("nncodec", "nncodec", "NNCodec 2.1 (DeepCABAC, dependent quantization)"),
}

GGUF_TYPES = ("Q8_0", "Q5_0", "Q4_0")


def peer_status(name: str, nncodec_python: str | None = None) -> str | None:
    """``None`` when peer ``name`` can run here, else a one-line reason it cannot."""
    module, pip_name, _ = PEERS[name]
    if name == "nncodec":
        return _nncodec_status(nncodec_python or sys.executable)
    try:
        importlib.import_module(module)
    except ImportError:
        return f"not installed (pip install {pip_name})"
    except Exception as exc:  # a broken install: say what broke
        return f"not importable: {type(exc).__name__}: {exc}"
    return None


def _nncodec_status(python: str) -> str | None:
    try:
        done = subprocess.run([python, "-c", "import numpy, torch; import nncodec.nnc"],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot start {python}: {exc}"
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else f"exit code {done.returncode}"
    if "No module named 'nncodec'" in last:
        return ("not installed (pip install nncodec; it pins numpy<2, so install it in its "
                "own venv and pass --nncodec-python VENV/bin/python)")
    return f"not importable with {python}: {last}"


def preload(name: str) -> None:
    """Import a peer's modules (and rftpack's I/O) before its encode or decode is timed."""
    importlib.import_module(PEERS[name][0])
    if name == "zipnn":
        importlib.import_module("zstandard")
    importlib.import_module("rftpack.io")


# -- reading and writing checkpoints in the worker ------------------------------------------------

def read_model(path: str) -> Iterator[tuple[Any, np.ndarray]]:
    """(TensorInfo, array) for every tensor of a checkpoint, in stored order."""
    from rftpack.io import open_source

    with open_source(path) as src:
        for info in src.infos():
            yield info, np.ascontiguousarray(src.read(info.name))
            src.release(info.name)


def _le_bytes(array: np.ndarray) -> bytes:
    from rftpack.dtypes import to_little_endian

    return np.ascontiguousarray(to_little_endian(array)).tobytes()


def _from_bytes(data: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).reshape(shape).astype(dtype)


def write_restored(out: str, records: list[Record], decode) -> None:
    """Decode every record with ``decode(record, dtype)`` and stream it into checkpoint ``out``."""
    from rftpack.dtypes import dtype_from_name
    from rftpack.io import TensorInfo, open_sink

    infos = [TensorInfo(r.name, dtype_from_name(r.dtype), r.shape) for r in records]
    with open_sink(out, infos) as sink:
        for info, record in zip(infos, records, strict=True):
            sink.write(info.name, decode(record, info.dtype).reshape(info.shape))


# -- zstd -----------------------------------------------------------------------------------------

def zstd_encode(source: str, out: str, level: int = 3) -> int:
    import zstandard

    from rftpack.dtypes import dtype_name

    coder = zstandard.ZstdCompressor(level=level, threads=0)
    return write_container(out, (Record(info.name, dtype_name(info.dtype), info.shape, "zstd",
                                        coder.compress(_le_bytes(a)))
                                 for info, a in read_model(source)))


def zstd_decode(archive: str, out: str) -> None:
    import zstandard

    decoder = zstandard.ZstdDecompressor()

    def decode(record: Record, dtype: np.dtype) -> np.ndarray:
        return _from_bytes(decoder.decompress(record.payload), dtype, record.shape)

    write_restored(out, read_container(archive), decode)


# -- ZipNN ----------------------------------------------------------------------------------------

def _zipnn():
    import zipnn

    return zipnn.ZipNN(input_format="numpy", threads=1)


def zipnn_encode(source: str, out: str) -> int:
    import zstandard

    from rftpack.dtypes import dtype_name

    z, fallback = _zipnn(), zstandard.ZstdCompressor(level=3, threads=0)

    def records():
        for info, a in read_model(source):
            if a.dtype in (np.float32, np.float16) and a.size:
                native = a.astype(a.dtype.newbyteorder("="), copy=False)
                payload, tag = bytes(z.compress(native)), "zipnn"
            else:  # ZipNN's numpy API takes only float32/float16: the rest goes to zstd-3
                payload, tag = fallback.compress(_le_bytes(a)), "zstd"
            yield Record(info.name, dtype_name(info.dtype), info.shape, tag, payload)

    return write_container(out, records())


def zipnn_decode(archive: str, out: str) -> None:
    import zstandard

    z, fallback = _zipnn(), zstandard.ZstdDecompressor()

    def decode(record: Record, dtype: np.dtype) -> np.ndarray:
        if record.codec == "zipnn":
            return np.asarray(z.decompress(record.payload)).astype(dtype, copy=False)
        return _from_bytes(fallback.decompress(record.payload), dtype, record.shape)

    write_restored(out, read_container(archive), decode)


# -- GGUF -----------------------------------------------------------------------------------------

def _gguf_type(name: str):
    import gguf

    if name not in GGUF_TYPES:
        raise ValueError(f"unsupported GGUF type {name!r} (known: {', '.join(GGUF_TYPES)})")
    qtype = gguf.GGMLQuantizationType[name]
    return gguf, qtype, gguf.GGML_QUANT_SIZES[qtype][0]


def gguf_encode(source: str, out: str, qtype: str = "Q8_0") -> int:
    """Like llama.cpp: 2-D float weights whose rows are whole blocks are quantized, the rest
    (1-D biases and norms, odd shapes, integers) stay as they are (float32 stays float32)."""
    from rftpack.dtypes import dtype_name

    gguf, qt, block = _gguf_type(qtype)

    def records():
        for info, a in read_model(source):
            name = dtype_name(info.dtype)
            is_float = a.dtype.kind == "f" or a.dtype.name == "bfloat16"
            if is_float and a.ndim == 2 and a.shape[-1] % block == 0 and a.size:
                q = gguf.quants.quantize(a.astype(np.float32), qt)
                yield Record(info.name, name, info.shape, "gguf", q.tobytes(), {"type": qtype})
            else:
                yield Record(info.name, name, info.shape, "raw", _le_bytes(a))

    return write_container(out, records())


def gguf_decode(archive: str, out: str) -> None:
    records = read_container(archive)

    def decode(record: Record, dtype: np.dtype) -> np.ndarray:
        if record.codec != "gguf":
            return _from_bytes(record.payload, dtype, record.shape)
        gguf, qt, block = _gguf_type(record.params["type"])
        rows, cols = record.shape
        type_size = gguf.GGML_QUANT_SIZES[qt][1]
        raw = np.frombuffer(record.payload, np.uint8).reshape(rows, cols // block * type_size)
        return gguf.quants.dequantize(raw, qt).astype(dtype)

    write_restored(out, records, decode)


# -- dispatch -------------------------------------------------------------------------------------

ENCODERS = {"zstd": zstd_encode, "zipnn": zipnn_encode, "gguf": gguf_encode}
DECODERS = {"zstd": zstd_decode, "zipnn": zipnn_decode, "gguf": gguf_decode}

NNCODEC_WORKER = Path(__file__).with_name("nncodec_worker.py")
