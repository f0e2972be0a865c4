"""One encode or decode of one codec setting, in its own process (``python -m
rftpack.bench.worker SPEC.json``), so that its peak memory and its time are its own.

The spec is ``{"codec", "params", "phase": "encode"|"decode", "input", "output", "result"}``;
the result file receives ``seconds`` (read + code + write, measured after the imports),
``stored_bytes`` (encode) and ``peak_rss_bytes`` (the process's VmHWM: the interpreter, the
imports and the work; ``None`` where /proc is not available).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RFTPACK_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


def peak_rss_bytes() -> int | None:
    """High-water resident set size of this process (Linux), else ``None``.

    ``resource.getrusage(...).ru_maxrss`` is not used: after a vfork+exec it may still carry
    the parent's high-water mark, and tracemalloc does not see numpy's C allocations.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _path_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def rftpack_options(params: dict[str, Any]):
    """CompressOptions from a bench setting (keys are CompressOptions fields)."""
    from rftpack.api import CompressOptions

    return CompressOptions(overwrite=True, **params)


#: what rftpack's compress and extract import on first use, imported before the clock starts
#: as every peer's modules are (:func:`rftpack.bench.peers.preload`). numba is not among them:
#: its import is part of the work where ``dq`` needs it, and loading it would switch
#: ``rans`` decoding to its compiled decoder at once (:mod:`rftpack.stages.rans`)
RFTPACK_MODULES = ("rftpack.api", "rftpack.stages.builtin", "rftpack.stages.dct",
                   "rftpack.stages.identity", "rftpack.stages.rft", "rftpack.stages.dq",
                   "rftpack.stages.polar", "rftpack.stages.scalar", "rftpack.stages.floatplanes",
                   "rftpack.stages.rans", "rftpack.stages.raw", "rftpack.stages.zstd",
                   "rftpack.stages.mlp", "importlib.metadata", "zstandard", "constriction")


def preload_rftpack() -> None:
    """Import :data:`RFTPACK_MODULES` (and ``jsonschema_rs`` where installed)."""
    import importlib

    for name in RFTPACK_MODULES:
        importlib.import_module(name)
    try:
        importlib.import_module("jsonschema_rs")
    except ImportError:
        pass


def run(spec: dict[str, Any]) -> dict[str, Any]:
    codec, params, phase = spec["codec"], dict(spec.get("params") or {}), spec["phase"]
    source, out = spec["input"], spec["output"]
    if codec == "rftpack":
        import rftpack

        preload_rftpack()
        options = rftpack_options(params)
        started = time.perf_counter()
        if phase == "encode":
            result = rftpack.compress(source, out, options=options)
            return {"seconds": time.perf_counter() - started,
                    "stored_bytes": _path_bytes(Path(out)),
                    "manifest_metrics": result.metrics}
        rftpack.extract(source, out, overwrite=True)
        return {"seconds": time.perf_counter() - started}
    from rftpack.bench import peers

    peers.preload(codec)  # the peer's imports (ZipNN pulls in torch) are not timed
    if phase == "encode":
        encoder = peers.ENCODERS[codec]
        started = time.perf_counter()
        stored = encoder(source, out, **params)
        return {"seconds": time.perf_counter() - started, "stored_bytes": stored}
    decoder = peers.DECODERS[codec]
    started = time.perf_counter()
    decoder(source, out)
    return {"seconds": time.perf_counter() - started}


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    result = run(spec)
    result["peak_rss_bytes"] = peak_rss_bytes()
    Path(spec["result"]).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
