"""Helpers for testing: a byte-counting file for lazy reads, and ``check_stage``, the
conformance checks every stage (built-in or third-party plugin) should pass."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any


class CountingFile(io.RawIOBase):
    """A read-only file that counts the bytes it hands out: proves lazy reads are lazy.

    Example:
        >>> import rftpack                                     # doctest: +SKIP
        >>> counting = CountingFile("model.rftp")              # doctest: +SKIP
        >>> with rftpack.open(counting) as archive:            # doctest: +SKIP
        ...     archive.get_tensor("w")
        >>> counting.bytes_read                                # doctest: +SKIP
        3458
    """

    def __init__(self, path: str | Path) -> None:
        self.handle = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.name = str(path)
        self.bytes_read = 0
        self._lock = threading.Lock()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.handle.seek(offset, whence)

    def tell(self) -> int:
        return self.handle.tell()

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = self.handle.readinto(buffer)
        with self._lock:
            self.bytes_read += n or 0
        return n

    def close(self) -> None:
        self.handle.close()
        super().close()


def check_stage(stage: Any, *, seed: int = 0) -> None:
    """Conformance checks any stage (built-in or plugin) should pass; raises AssertionError.

    Config: a JSON round trip through ``to_config``/``from_config`` gives an equal stage.
    Determinism: the same input gives the same output twice. Round trips: a transform's
    inverse undoes its forward; a quantizer's codes are in range and dequantize to the right
    count; a coder decodes exactly what it encoded, and garbage input raises RftpackError.

    Example:
        >>> from rftpack.stages.zstd import ZstdCoder
        >>> check_stage(ZstdCoder())
    """
    import json

    import numpy as np

    from rftpack.errors import RftpackError

    config = json.loads(json.dumps(stage.to_config()))
    rebuilt = type(stage).from_config(config)
    assert rebuilt == stage, f"{stage.id}: config round trip changed the stage"
    rng = np.random.default_rng(seed)
    if stage.kind == "transform":
        for n in (0, 1, 7, 64, 1000):
            x = rng.normal(size=n)
            y = stage.forward(x)
            assert y.shape == (stage.coefficient_count(n),), f"{stage.id}: coefficient count"
            back = stage.inverse(y, n)
            assert back.shape == (n,) and np.allclose(back, x, atol=1e-9), \
                f"{stage.id}: inverse(forward(x)) != x for n={n}"
            assert np.array_equal(stage.forward(x), y), f"{stage.id}: not deterministic"
    elif stage.kind == "quantizer":
        x = rng.normal(size=512) * 0.05
        streams, side = stage.quantize(x, [(0, 512)])
        json.dumps(side)  # side info must be JSON
        alphabets = stage.stream_alphabets(side)
        for key, codes in streams.items():
            assert key in alphabets, f"{stage.id}: stream {key!r} has no alphabet"
            assert codes.symbols.ndim == 1 and codes.symbols.dtype.kind in "ui"
            assert codes.symbols.size == 0 or int(codes.symbols.max()) < alphabets[key]
        symbols = {k: v.symbols for k, v in streams.items()}
        y = stage.dequantize(symbols, side, 512)
        assert y.shape == (512,) and np.all(np.isfinite(y)), f"{stage.id}: dequantize shape"
        again, _ = stage.quantize(x, [(0, 512)])
        assert all(np.array_equal(again[k].symbols, symbols[k]) for k in symbols), \
            f"{stage.id}: not deterministic"
    elif stage.kind == "predictor" and hasattr(stage, "fit"):
        features = rng.uniform(-1, 1, size=(600, 5))
        targets = np.sin(features[:, :2])
        first, _ = stage.fit(features, targets)
        second, _ = stage.fit(features, targets)
        assert np.array_equal(first.forward(features), second.forward(features)), \
            f"{stage.id}: training is not deterministic"
    elif stage.kind == "coder":
        for alphabet in (2, 64, 256, 4096):
            symbols = rng.integers(0, alphabet, size=2000).astype(np.uint16)
            data = stage.encode(symbols, alphabet)
            assert isinstance(data, bytes), f"{stage.id}: encode must return bytes"
            assert data == stage.encode(symbols, alphabet), f"{stage.id}: not deterministic"
            back = stage.decode(data, 2000, alphabet)
            assert np.array_equal(back, symbols), f"{stage.id}: decode(encode(s)) != s"
        garbage = rng.bytes(64)
        try:
            stage.decode(garbage, 2000, 256)
        except RftpackError:
            pass
        except Exception as exc:  # any other exception is a conformance failure
            raise AssertionError(f"{stage.id}: garbage input raised {type(exc).__name__}, "
                                 f"not an RftpackError") from exc
