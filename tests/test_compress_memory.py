"""Working memory of compress, as tracemalloc sees it (numpy reports its buffers to it; the
input's memory map does not count): rate control's first pass must not hold float64 copies
of a whole tensor (a 64 MB float32 tensor once took ~400 MB of them, ~1.9 GB for 268 MB)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import rftpack

SIDE = 4096
TENSOR_BYTES = SIDE * SIDE * 4  # 64 MB


@pytest.fixture(scope="module")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("memory") / "m.safetensors"
    rng = np.random.default_rng(0)
    save_file({"w": rng.standard_normal((SIDE, SIDE), dtype=np.float32) * 0.02,
               "b": np.zeros(SIDE, np.float32)}, str(path))
    return path


@pytest.mark.parametrize("target", [{"target_bpw": 4.0}, {"target_snr_db": 25.0}],
                         ids=["bpw", "snr"])
def test_rate_control_works_in_chunks_not_whole_float64_copies(big_model: Path,
                                                               tmp_path: Path,
                                                               target: dict) -> None:
    tracemalloc.start()
    try:
        result = rftpack.compress(big_model, tmp_path / "a.rftp", profile="scalar", **target)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.metrics["lossy_tensors"] == 1
    assert peak < 2 * TENSOR_BYTES, f"{peak / 2**20:.0f} MB"   # measured: ~90 MB (was ~400)


def test_freed_heap_memory_goes_back_after_large_tensors(big_model: Path, tmp_path: Path,
                                                         monkeypatch) -> None:
    """glibc keeps freed temporaries in its heap: compress trims it after rate control's
    pass and after each large tensor (rftpack._memory), so that a streaming job's resident
    memory is one tensor's work, not the high-water mark of all of them."""
    from rftpack import _memory

    trimmed = []
    monkeypatch.setattr(_memory, "_malloc_trim", lambda: trimmed.append)
    rftpack.compress(big_model, tmp_path / "a.rftp", profile="scalar", target_bpw=4.0)
    assert len(trimmed) == 2  # after planning, after the 64 MB tensor (not the 16 KB one)
    trimmed.clear()
    rftpack.compress(big_model, tmp_path / "b.rftp", profile="scalar")  # no rate control
    assert len(trimmed) == 1


def test_trimming_is_a_no_op_for_small_tensors_and_where_glibc_is_not() -> None:
    import platform

    from rftpack import _memory

    assert _memory.release_after(1024) is False
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert _memory.release_after(_memory.TRIM_AFTER_BYTES) is glibc
