"""The ``dq`` search compiled with numba gives exactly what the numpy version gives, so an
archive does not depend on whether the encoder had numba installed; decoding never loads
numba."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

import rftpack
from rftpack.stages import dq

pytest.importorskip("numba")


def both(monkeypatch: pytest.MonkeyPatch, run):
    """(numpy result, compiled result) of ``run()``."""
    monkeypatch.setenv("RFTPACK_NO_JIT", "1")
    plain = run()
    monkeypatch.delenv("RFTPACK_NO_JIT")
    return plain, run()


@st.composite
def scaled_weights(draw):
    n = draw(st.integers(0, 3000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.laplace(0, draw(st.sampled_from([0.2, 1.0, 4.0, 50.0, 2000.0])), n)
    kind = draw(st.sampled_from(["plain", "half-steps", "zeros", "odd-levels"]))
    if kind == "half-steps":  # exact ties between neighbouring levels
        x = np.round(x * 2) / 2
    elif kind == "zeros":
        x[: n // 2] = 0.0
    elif kind == "odd-levels":  # exactly on Q1's levels ±1, ±3 …
        x = 2 * np.floor(x / 2) + 1
    return x


@settings(max_examples=80, deadline=None)
@given(x=scaled_weights(), lam=st.sampled_from([0.0, 0.1, 0.25, 2.0]),
       chain=st.sampled_from([1, 2, 7, 64, 300]), states=st.sampled_from(sorted(dq.TRELLISES)))
def test_compiled_search_finds_the_same_indices(x, lam, chain, states) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        rates = dq._rate_table(x) if x.size else np.zeros(2)
        plain, compiled = both(monkeypatch, lambda: dq.viterbi(x, lam, rates, chain, states))
    np.testing.assert_array_equal(plain, compiled)


def test_archives_are_byte_identical_with_and_without_numba(tmp_path: Path,
                                                             monkeypatch) -> None:
    rng = np.random.default_rng(3)
    model = tmp_path / "m.safetensors"
    save_file({"a.weight": (rng.standard_t(4, (300, 200)) * 0.02).astype(np.float32),
               "b.weight": (rng.normal(size=(64, 1000)) * 0.05).astype(np.float32)}, str(model))

    names = iter(["plain", "compiled"])

    def compress() -> dict[str, bytes]:
        out = tmp_path / next(names)
        rftpack.compress(model, out, profile="dq", target_bpw=4.0, layout="directory")
        return {p.name: p.read_bytes() for p in (out / "tensors").glob("*.bin")}

    plain, compiled = both(monkeypatch, compress)
    assert plain and plain == compiled


def test_numba_loads_only_when_dq_encodes(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    model = tmp_path / "m.safetensors"
    save_file({"w": rng.normal(size=(128, 128)).astype(np.float32)}, str(model))
    rftpack.compress(model, tmp_path / "a.rftp", profile="dq", target_bpw=4.0)
    code = ("import sys, rftpack; assert 'numba' not in sys.modules; "
            f"a = rftpack.open({str(tmp_path / 'a.rftp')!r}); a.get_tensor('w'); "
            "assert 'numba' not in sys.modules, 'decoding loaded numba'; "
            "from rftpack.stages.dq import DependentQuantizer; import numpy as np; "
            "DependentQuantizer(step=0.1).quantize(np.ones(10), []); "
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"  # loaded when dq first encodes


def test_the_compiled_search_is_the_one_used() -> None:
    assert dq._compiled("viterbi_chains") is not None


def test_a_numba_that_cannot_load_falls_back_to_numpy(monkeypatch) -> None:
    """E.g. a read-only install where numba finds nowhere to cache: dq still encodes."""
    x = np.random.default_rng(6).laplace(0, 3, 5000)
    expected = dq.viterbi(x, 0.25, dq._rate_table(x), 256, 8)
    import rftpack.stages

    monkeypatch.setitem(sys.modules, "rftpack.stages._dq_jit", None)  # import fails
    monkeypatch.delattr(rftpack.stages, "_dq_jit", raising=False)
    assert dq._compiled("viterbi_chains") is None
    np.testing.assert_array_equal(dq.viterbi(x, 0.25, dq._rate_table(x), 256, 8), expected)
