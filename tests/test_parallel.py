"""Threads for rftpack's kernels: where the count comes from, its checks, and that splitting
the ``dq`` search over threads changes nothing in the result."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import rftpack
from rftpack import parallel
from rftpack.errors import StageError
from rftpack.stages import dq


def test_count_comes_from_the_innermost_limit_then_the_environment_then_the_cores(
        monkeypatch) -> None:
    monkeypatch.delenv("RFTPACK_THREADS", raising=False)
    assert parallel.threads() == parallel.available_cores() >= 1
    monkeypatch.setenv("RFTPACK_THREADS", "3")
    assert parallel.threads() == 3
    with parallel.limited_to(5):
        assert parallel.threads() == 5
        with parallel.limited_to(2):
            assert parallel.threads() == 2
        with parallel.limited_to(None):
            assert parallel.threads() == 5
        assert parallel.threads() == 5
    assert parallel.threads() == 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_a_thread_count_must_be_a_positive_integer(bad) -> None:
    with pytest.raises(StageError, match="threads must be an integer ≥ 1"):
        parallel.check_threads(bad)


@pytest.mark.parametrize("bad", ["0", "two", "-3"])
def test_a_bad_environment_value_is_named(monkeypatch, bad) -> None:
    monkeypatch.setenv("RFTPACK_THREADS", bad)
    with pytest.raises(StageError, match="RFTPACK_THREADS must be an integer ≥ 1"):
        parallel.threads()


def test_run_split_keeps_the_parts_order_and_uses_several_threads() -> None:
    seen: set[int] = set()
    barrier = threading.Barrier(2, timeout=10)

    def work(part: int) -> int:
        seen.add(threading.get_ident())
        if part < 2:
            barrier.wait()  # only returns when two parts run at the same time
        return part * part

    with parallel.limited_to(2):
        assert parallel.run_split(work, list(range(6))) == [p * p for p in range(6)]
    assert len(seen) == 2
    with parallel.limited_to(1):
        seen.clear()
        assert parallel.run_split(lambda p: p + 1, [3, 1, 2]) == [4, 2, 3]


@pytest.mark.parametrize("n", [0, 1, 1000, 16 * 64, 16 * 64 * 3 + 17, 40000])
def test_dq_search_on_threads_finds_the_same_indices(n) -> None:
    pytest.importorskip("numba")
    x = np.random.default_rng(n).laplace(0, 3.0, n)
    rates = dq._rate_table(x) if n else np.zeros(2)
    with parallel.limited_to(1):
        alone = dq.viterbi(x, 0.25, rates, 64, 16)
    for count in (2, 3, 7):
        with parallel.limited_to(count):
            np.testing.assert_array_equal(dq.viterbi(x, 0.25, rates, 64, 16), alone)


def test_archives_are_byte_identical_at_any_thread_count(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    model = tmp_path / "m.safetensors"
    save_file({"a.weight": (rng.standard_t(4, (256, 300)) * 0.02).astype(np.float32),
               "b.weight": (rng.normal(size=(64, 96)) * 0.1).astype(np.float32)}, str(model))
    archives = []
    for threads in (1, 2, 3):
        out = tmp_path / f"t{threads}.rftp"
        rftpack.compress(model, out, profile="dq", target_bpw=3.0, threads=threads)
        archives.append(out.read_bytes())
    assert archives[0] == archives[1] == archives[2]


def test_compress_rejects_a_bad_thread_count(tmp_path: Path) -> None:
    model = tmp_path / "m.safetensors"
    save_file({"w": np.ones((64, 64), np.float32)}, str(model))
    with pytest.raises(StageError, match="threads must be an integer ≥ 1, got 0"):
        rftpack.compress(model, tmp_path / "o.rftp", profile="dq", threads=0)


def test_a_bad_environment_value_stops_compress_before_any_work(tmp_path: Path,
                                                                monkeypatch) -> None:
    model = tmp_path / "m.safetensors"
    save_file({"w": np.ones((64, 64), np.float32)}, str(model))
    monkeypatch.setenv("RFTPACK_THREADS", "many")
    with pytest.raises(StageError, match="RFTPACK_THREADS must be an integer"):
        rftpack.compress(model, tmp_path / "o.rftp", profile="scalar")
    assert not (tmp_path / "o.rftp").exists()
