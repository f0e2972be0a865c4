"""``dq``'s encoder search in C (:func:`rftpack.native.dq_viterbi`) and in numba finds
exactly the indices numpy's finds, so an archive does not depend on what the encoder had
built or installed; decoding never loads numba, nor does encoding where the C search is
there."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

import rftpack
from rftpack import native, parallel
from rftpack.stages import dq

COMPILED = ["numba", "native"]


@contextlib.contextmanager
def searching_with(path: str) -> Iterator[None]:
    """Within the block, dq searches in numpy, numba or C (the test is skipped where that
    one is not there)."""
    if path == "native" and not native.available():
        pytest.skip("rftpack._native is not built here (tests/test_native.py says why)")
    if path == "numba":
        pytest.importorskip("numba")
        if dq._compiled("viterbi_chains") is None:
            pytest.skip("RFTPACK_NO_JIT is set, or numba cannot compile here")
    with pytest.MonkeyPatch.context() as monkeypatch:
        if path != "native":
            monkeypatch.setattr(native, "available", lambda: False)
        if path == "numpy":
            monkeypatch.setenv("RFTPACK_NO_JIT", "1")
        yield


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


@pytest.mark.parametrize("path", COMPILED)
@settings(max_examples=80, deadline=None)
@given(x=scaled_weights(), lam=st.sampled_from([0.0, 0.1, 0.25, 2.0]),
       chain=st.sampled_from([1, 2, 7, 64, 300]), states=st.sampled_from(sorted(dq.TRELLISES)))
def test_compiled_search_finds_the_same_indices(path, x, lam, chain, states) -> None:
    rates = dq._rate_table(x) if x.size else np.zeros(2)
    with searching_with("numpy"):
        plain = dq.viterbi(x, lam, rates, chain, states)
    with searching_with(path):
        np.testing.assert_array_equal(dq.viterbi(x, lam, rates, chain, states), plain)


@pytest.mark.parametrize("path", COMPILED)
def test_long_chains_on_several_threads_find_the_same_indices(path: str) -> None:
    """Many lane groups, split over threads, chains of the profile's length."""
    x = np.random.default_rng(8).laplace(0, 3, 70 * 8192 + 11)
    rates = dq._rate_table(x)
    with searching_with("numpy"):
        plain = dq.viterbi(x, 0.25, rates, 8192, 16)
    with searching_with(path), parallel.limited_to(2):
        np.testing.assert_array_equal(dq.viterbi(x, 0.25, rates, 8192, 16), plain)


def test_the_c_search_hands_weights_it_does_not_take_to_the_others() -> None:
    """Beyond 10⁹ steps (or not finite) the C search refuses; numba or numpy search instead."""
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    x = np.array([0.3, 2e9, -1.4, 5.0])
    rates = np.array([1.0, 2.0, 3.0])
    with pytest.raises(OverflowError, match="not finite or too large"):
        native.dq_viterbi(x[None, :], 0.25, rates, dq.EDGES[4], *dq.search_costs(0.25, rates, 4))
    with searching_with("numpy"):
        plain = dq.viterbi(x, 0.25, rates, 4, 4)
    np.testing.assert_array_equal(dq.viterbi(x, 0.25, rates, 4, 4), plain)


@pytest.mark.parametrize("bad", ["edges", "butterflies", "shared partner", "quantizers",
                                 "no butterflies", "rates", "lam", "scale", "start"])
def test_the_c_search_refuses_malformed_tables(bad: str) -> None:
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    xs = np.zeros((1, 4))
    edges, rates, lam = dq.EDGES[4].copy(), np.ones(3), 0.25
    scale, cap, start = dq.search_costs(lam, rates, 4)
    if bad == "edges":
        edges[2, 0] = 4  # a state outside the trellis
        match = "leaves the trellis"
    elif bad == "butterflies":  # state 0 entered by parity 0 from both its inputs
        edges[0, 3] = 0
        match = "not made of butterflies"
    elif bad == "shared partner":  # states 0 and 1 would both pair with state 2
        edges = np.array([[0, 0, 1, 1, 0], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0], [0, 1, 1, 0, 0]])
        match = "not made of butterflies"
    elif bad == "quantizers":  # a butterfly's two states on different quantizers
        edges[2, 4] = 1
        match = "not made of butterflies"
    elif bad == "no butterflies":  # no state entered by parity 0 from its first input
        edges[:, 1], edges[:, 3] = 1, 0
        match = "not made of butterflies"
    elif bad == "rates":
        rates = np.ones(0)
        match = "rates"
    elif bad == "lam":
        lam = float("nan")
        match = "lam and scale must be finite"
    elif bad == "scale":
        scale = float("inf")
        match = "lam and scale must be finite"
    else:
        start = 1 << 15
        match = r"cap and start in \[0, 32767\]"
    with pytest.raises(ValueError, match=match):
        native.dq_viterbi(xs, lam, rates, edges, scale, cap, start)


def test_cost_units_keep_every_sum_inside_16_bits() -> None:
    """search_costs' invariants, for every trellis: the spread of costs (depth × cap) below
    2**14, the states other than 0 starting above any path from state 0 in its first depth
    steps, and those starting costs plus what they add in them below 2**15."""
    rates = np.array([1.0, 2.5, 40.0])
    for states in dq.TRELLISES:
        depth = states.bit_length() - 1
        scale, cap, start = dq.search_costs(0.3, rates, states)
        assert depth * cap <= dq.COST_SPREAD < 1 << 14
        assert start == depth * cap + 1 and start + depth * cap <= (1 << 15) - 1
        assert scale * (4.0 + 0.3 * (40.0 - 1.0)) <= cap  # no candidate is ever capped
    with pytest.raises(ValueError, match="finite"):
        dq.search_costs(0.3, np.array([0.0, np.inf]), 8)


@pytest.mark.parametrize("states", [4, 8, 256])
def test_wrapping_int16_costs_choose_what_unbounded_integers_do(states: int) -> None:
    """Inputs that drive the spread of path costs to its bound (weights at 0, a steep rate
    table, a large lam), searched with int16 costs that wrap around and with int64 costs that
    never do: the same indices. And exact halves of a unit, which round to even."""
    rng = np.random.default_rng(states)
    rates = np.concatenate([[0.0], 1000.0 + rng.uniform(0, 5, 40)])
    cases = [(rng.normal(0, 0.05, (400, 64)), 10.0),
             (rng.laplace(0, 2.0, (400, 64)), 10.0),
             (np.full((50, 64), 0.5), 0.0)]  # 8 states: 2730.5 units
    for xs, lam in cases:
        costs = dq.search_costs(lam, rates, states)
        wrapped = dq._viterbi_numpy(xs, lam, rates, dq.EDGES[states], *costs)
        exact = dq._viterbi_numpy(xs, lam, rates, dq.EDGES[states], *costs,
                                  cost_dtype=np.int64)
        np.testing.assert_array_equal(wrapped, exact)
        for path in COMPILED:
            with contextlib.suppress(pytest.skip.Exception), searching_with(path):
                np.testing.assert_array_equal(
                    dq.viterbi(xs.T.reshape(-1), lam, rates, xs.shape[0], states),
                    wrapped.T.reshape(-1), path)


@pytest.mark.parametrize("path", ["numpy", *COMPILED, "each C kernel"])
def test_candidate_costs_round_half_to_even(path: str) -> None:
    """A chain on which rounding a candidate's half unit (585 units a step² here) up instead
    of to even changes the chosen indices: every search must round the same way."""
    x = np.array([-2.0, -1.5, -1.75, -0.5, -1.75, -1.75])
    rates = np.array([1.0, 2.0, 3.0, 3.0, 4.0])
    assert dq.search_costs(1.0, rates, 16)[0] == 585.0
    expected = [-1, -1, -1, 0, -1, -1]  # half up: [-1, 0, -1, 0, -1, -1]
    if path != "each C kernel":
        with searching_with(path):
            assert dq.viterbi(x, 1.0, rates, 6, 16).tolist() == expected
        return
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    for kernel in native.dq_kernels():
        found = native.dq_viterbi(x[None, :], 1.0, rates, dq.EDGES[16],
                                  *dq.search_costs(1.0, rates, 16), kernel=kernel)
        assert found[0].tolist() == expected, kernel


def test_every_state_reaches_every_state_in_log2_states_steps() -> None:
    """What search_costs' bound on the spread of path costs rests on."""
    for states, (trans, _) in dq.TRELLISES.items():
        reach = np.eye(states, dtype=bool)  # reach[a, b]: b is exactly d steps from a
        for d in range(1, states.bit_length()):
            after = np.zeros_like(reach)
            for parity in (0, 1):
                after[:, trans[:, parity]] |= reach
            reach = after
            assert reach.all() == (d == states.bit_length() - 1), (states, d)


def _path_cost(x: np.ndarray, k: np.ndarray, lam: float, rates: np.ndarray, states: int) -> float:
    """Σ (x − level)² + lam · rates[min(|k|, top)] along the trellis from state 0, in float64."""
    trans, quantizer = dq.TRELLISES[states]
    state, total = 0, 0.0
    for xi, ki in zip(x.tolist(), k.tolist(), strict=True):
        level = 2 * ki - (int(np.sign(ki)) if quantizer[state] else 0)
        total += (xi - level) ** 2 + lam * rates[min(abs(ki), rates.shape[0] - 1)]
        state = int(trans[state, ki & 1])
    return total


def _best_cost(x: np.ndarray, lam: float, rates: np.ndarray, states: int
               ) -> tuple[float, float]:
    """(the least path cost, the sum of each step's least cost) over every index within 4
    levels of each weight: a float64 Viterbi search written independently of dq's."""
    trans, quantizer = dq.TRELLISES[states]
    top = rates.shape[0] - 1
    cost = np.full(states, np.inf)
    cost[0] = 0.0
    floor = 0.0
    for xi in x.tolist():
        nxt = np.full(states, np.inf)
        centre = int(round(xi / 2))
        steps = []
        for k in range(centre - 4, centre + 5):
            for q in (0, 1):
                level = 2 * k - (int(np.sign(k)) if q else 0)
                step = (xi - level) ** 2 + lam * rates[min(abs(k), top)]
                steps.append(step)
                sources = np.flatnonzero(quantizer == q)
                np.minimum.at(nxt, trans[sources, k & 1], cost[sources] + step)
        cost = nxt
        floor += min(steps)
    return float(cost.min()), floor


@pytest.mark.parametrize("path", ["numpy", *COMPILED])
@pytest.mark.parametrize(("states", "lam", "spread", "steps"), [
    (4, 0.25, 3.0, 600), (16, 0.5, 40.0, 1000), (256, 0.3, 4.0, 2400)])
def test_integer_path_costs_find_the_least_cost_path(path, states, lam, spread, steps) -> None:
    """Within what rounding the step costs to 1/scale can lose (steps/scale), over long
    chains whose 16-bit costs wrap around. (Rates that do not grow with |k| beyond 0: where
    they do, an index one step farther from x but nearer 0 can be cheaper than the nearer
    one of its parity, which the search does not weigh.)"""
    x = np.random.default_rng(states).laplace(0, spread, steps)
    rates = np.full(int(np.abs(x).max() / 2) + 6, 6.0)
    rates[0] = 1.0
    scale = dq.search_costs(lam, rates, states)[0]
    with searching_with(path):
        k = dq.viterbi(x, lam, rates, x.shape[0], states)
    found = _path_cost(x, k, lam, rates, states)
    best, floor = _best_cost(x, lam, rates, states)
    assert best - 1e-6 <= found <= best + x.shape[0] / scale
    assert (found - floor) * scale > 1 << 16  # the path's int16 cost wrapped around


def test_archives_are_byte_identical_whichever_search_ran(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    model = tmp_path / "m.safetensors"
    save_file({"a.weight": (rng.standard_t(4, (300, 200)) * 0.02).astype(np.float32),
               "b.weight": (rng.normal(size=(64, 1000)) * 0.05).astype(np.float32)}, str(model))
    archives = {}
    for path in ["numpy", *COMPILED]:
        with contextlib.suppress(pytest.skip.Exception), searching_with(path):
            out = tmp_path / path
            rftpack.compress(model, out, profile="dq", target_bpw=4.0, layout="directory")
            archives[path] = {p.name: p.read_bytes() for p in (out / "tensors").glob("*.bin")}
    assert archives["numpy"]
    if len(archives) == 1:
        pytest.skip("neither the C extension nor numba is here: nothing to compare")
    for path, files in archives.items():
        assert files == archives["numpy"], path


def test_numba_loads_only_when_dq_encodes_without_the_c_search(tmp_path: Path) -> None:
    pytest.importorskip("numba")
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
    for no_native in ("", "1"):
        env = {**os.environ, "RFTPACK_NO_NATIVE": no_native}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env=env)
        built = importlib.util.find_spec("rftpack._native") is not None
        searched_in_c = built and not no_native
        # loaded when dq first encodes, unless the C search is there
        assert out.stdout.strip() == str(not searched_in_c)


def test_the_c_search_is_the_one_used_where_it_is_built(monkeypatch) -> None:
    if not native.available():
        pytest.skip("rftpack._native is not built here")
    calls = []
    real = native.dq_viterbi
    monkeypatch.setattr(native, "dq_viterbi", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(dq, "_compiled", lambda name: pytest.fail("numba searched"))
    x = np.random.default_rng(5).laplace(0, 3, 1000)
    dq.viterbi(x, 0.25, dq._rate_table(x), 256, 8)
    assert calls


def test_numbas_search_is_the_one_used_where_installed() -> None:
    pytest.importorskip("numba")
    assert dq._compiled("viterbi_chains") is not None


def test_a_numba_that_cannot_load_falls_back_to_numpy(monkeypatch) -> None:
    """E.g. a read-only install where numba finds nowhere to cache: dq still encodes."""
    pytest.importorskip("numba")
    x = np.random.default_rng(6).laplace(0, 3, 5000)
    expected = dq.viterbi(x, 0.25, dq._rate_table(x), 256, 8)
    import rftpack.stages

    monkeypatch.setattr(native, "available", lambda: False)
    monkeypatch.setitem(sys.modules, "rftpack.stages._dq_jit", None)  # import fails
    monkeypatch.delattr(rftpack.stages, "_dq_jit", raising=False)
    assert dq._compiled("viterbi_chains") is None
    np.testing.assert_array_equal(dq.viterbi(x, 0.25, dq._rate_table(x), 256, 8), expected)
