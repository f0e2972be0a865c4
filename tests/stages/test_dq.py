"""Dependent quantization: the Viterbi search is optimal, the decoder replays it exactly, and
at equal rate it beats plain rounding."""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rftpack import native
from rftpack.codec import stage_record
from rftpack.errors import FormatError, StageError
from rftpack.stages import dq
from rftpack.stages.dq import (
    TRANS,
    TRELLISES,
    UNGERBOECK,
    DependentQuantizer,
    decode_symbols,
    replay,
    ungerboeck_trellis,
    viterbi,
)
from rftpack.stages.rans import RansCoder
from rftpack.stages.scalar import ScalarQuantizer, zigzag


@contextlib.contextmanager
def patched_trellis(states: int, trellis: tuple[np.ndarray, np.ndarray]):
    saved = dq.TRELLISES[states], dq.EDGES[states]
    dq.TRELLISES[states] = trellis
    dq.EDGES[states] = dq._edges(states)
    try:
        yield
    finally:
        dq.TRELLISES[states], dq.EDGES[states] = saved


def path_cost(x: np.ndarray, k: np.ndarray, states: int = 4) -> float:
    return float(np.sum((x - replay(k, len(x), states)) ** 2))


@pytest.mark.parametrize("states", [4, 8, 16, 64])
@pytest.mark.parametrize("seed", range(6))
def test_viterbi_finds_the_best_path_of_a_short_chain(seed: int, states: int) -> None:
    x = np.random.default_rng(seed).normal(size=4) * 3
    found = viterbi(x, 0.0, np.zeros(64), chain=4, states=states)
    # brute force over every index sequence near x (|k| ≤ 4 covers all useful levels)
    best = min(path_cost(x, np.array(ks), states)
               for ks in itertools.product(range(-4, 5), repeat=4))
    assert path_cost(x, found, states) == pytest.approx(best, abs=1e-9)


def test_eight_states_follow_their_table() -> None:
    trans, quantizer = TRELLISES[8]
    k = np.array([1, 2, -1, 0, 3, -2, 5, 1, 1, -3])
    state, levels = 0, []
    for ki in k:
        levels.append(2 * ki if quantizer[state] == 0 else 2 * ki - np.sign(ki))
        state = trans[state, ki & 1]
    assert replay(k, 10, 8).tolist() == levels
    assert quantizer.tolist() == [0, 1] * 4  # NNCodec's: odd states use Q1


def test_eight_states_have_more_granular_gain_than_four() -> None:
    x = np.random.default_rng(4).uniform(-200, 200, size=60_000)
    mse = {s: np.mean((x - replay(viterbi(x, 0.0, np.zeros(2), 256, s), 256, s)) ** 2)
           for s in (4, 8)}
    # TCQ on a uniform source: about 0.87 dB (4 states) and 1.0 dB (8) over rounding (1/3)
    assert 10 * np.log10((1 / 3) / mse[4]) > 0.7
    assert 10 * np.log10(mse[4] / mse[8]) > 0.08


def test_more_states_more_granular_gain() -> None:
    """Trellis-coded quantization of a uniform source at high rate, in dB over rounding with
    the single quantizer's step (MSE 1/3); measured: 4 states 0.99, 8 1.07, 16 1.11, 32 1.18,
    64 1.22, 128 1.26, 256 1.28 (the bound, an infinite trellis, is 1.53)."""
    x = np.random.default_rng(4).uniform(-200, 200, size=60_000)
    gain = {s: 10 * np.log10((1 / 3) / np.mean(
        (x - replay(viterbi(x, 0.0, np.zeros(2), 256, s), 256, s)) ** 2)) for s in TRELLISES}
    ordered = [gain[s] for s in sorted(gain)]
    assert all(a < b for a, b in zip(ordered, ordered[1:], strict=False)), gain
    assert gain[64] - gain[8] > 0.1 and 1.25 < gain[256] < 1.53


def test_polynomials_rebuild_the_small_tables() -> None:
    """In this construction NNCodec's 8-state table is the code (17, 04), state for state,
    and VVC's 4-state one is (5, 2) with states 1 and 2 swapped: the searches agree on every
    chain."""
    trans, quantizer = ungerboeck_trellis(0o17, 0o04)
    assert np.array_equal(trans, TRELLISES[8][0]) and np.array_equal(quantizer, TRELLISES[8][1])
    x = np.random.default_rng(9).normal(size=20 * 64) * 6
    costs = []
    for trellis in (TRELLISES[4], ungerboeck_trellis(0o5, 0o2)):
        with patched_trellis(4, trellis):
            k = viterbi(x, 0.0, np.zeros(2), 64, 4)
            costs.append(((x - replay(k, 64, 4)) ** 2).reshape(20, 64).sum(1))
    assert np.allclose(costs[0], costs[1], rtol=0, atol=1e-9)


def test_large_trellises_are_built_from_the_polynomials() -> None:
    for states, polynomials in UNGERBOECK.items():
        trans, quantizer = TRELLISES[states]
        assert trans.shape == (states, 2) and quantizer.shape == (states,)
        assert np.array_equal(trans, ungerboeck_trellis(*polynomials)[0])
        # every state has two ways in, both from states of one quantizer
        assert np.bincount(trans.reshape(-1), minlength=states).tolist() == [2] * states
        for s in range(states):
            sources = np.argwhere(trans == s)[:, 0]
            assert len(set(quantizer[sources].tolist())) == 1


def test_records_name_the_oldest_format_that_reads_them() -> None:
    assert stage_record(DependentQuantizer(states=64))["format_version"] == 3
    assert stage_record(DependentQuantizer(states=256))["format_version"] == 3
    assert stage_record(DependentQuantizer(states=8))["format_version"] == 2
    assert stage_record(DependentQuantizer(states=4))["format_version"] == 2


def test_version_1_records_read_with_four_states() -> None:
    assert DependentQuantizer().for_format_version(1).states == 4
    assert DependentQuantizer(states=4).for_format_version(2).states == 4
    assert DependentQuantizer(states=64).for_format_version(3).states == 64


def test_replay_follows_the_state_machine() -> None:
    k = np.array([1, 2, -1, 0, 3, -2])
    state, levels = 0, []
    for ki in k:
        levels.append(2 * ki if state < 2 else 2 * ki - np.sign(ki))
        state = TRANS[state, ki & 1]
    assert replay(k, 6).tolist() == levels


def test_granular_gain_over_the_single_quantizer() -> None:
    x = np.random.default_rng(0).normal(size=40_000) * 5
    mse_dq = np.mean((x - replay(viterbi(x, 0.0, np.zeros(64), 64), 64)) ** 2)
    mse_q0 = np.mean((x - 2 * np.rint(x / 2)) ** 2)
    assert mse_dq < 0.8 * mse_q0  # ≈ 1.4 dB at the same index grid


def test_beats_scalar_at_equal_rate() -> None:
    x = np.random.default_rng(1).standard_t(5, size=200_000) * 0.03
    coder = RansCoder()

    def measure(q):
        streams, side = q.quantize(x, [])
        codes = streams["codes"]
        bits = 8 * len(coder.encode(codes.symbols, codes.alphabet)) / x.size
        y = q.dequantize({"codes": codes.symbols}, side, x.size)
        return bits, 10 * np.log10(np.sum(x * x) / np.sum((x - y) ** 2))

    b_s, snr_s = measure(ScalarQuantizer(step=0.01))
    b_d, snr_d = measure(DependentQuantizer(step=0.0062))
    assert snr_d - (snr_s - 6.02 * (b_s - b_d)) > 0.5  # dB gained at equal rate


def test_round_trip_through_the_stage() -> None:
    q = DependentQuantizer(rel_step=0.05, chain=32)
    x = np.random.default_rng(2).normal(size=1000)
    streams, side = q.quantize(x, [])
    y = q.dequantize({"codes": streams["codes"].symbols}, side, 1000)
    assert np.max(np.abs(x - y)) < 3 * side["step"]
    assert 10 * np.log10(np.sum(x * x) / np.sum((x - y) ** 2)) > 25


@pytest.mark.parametrize("side", [{"step": -1.0, "alphabet": 5}, {"step": 1.0, "alphabet": 0}])
def test_bad_side_info(side: dict) -> None:
    with pytest.raises(FormatError):
        DependentQuantizer().dequantize({"codes": np.zeros(3, np.uint16)}, side, 3)


@pytest.mark.parametrize("config", [{"chain": 0}, {"lam": -1.0}, {"lam": float("nan")},
                                    {"lam": 1e300}, {"step": 0, "rel_step": 0},
                                    {"states": 12}, {"states": 512}, {"states": True},
                                    {"states": 4.0}])
def test_bad_config(config: dict) -> None:
    with pytest.raises(StageError):
        DependentQuantizer(**config)


def test_a_version_1_archive_decodes_with_four_states(tmp_path) -> None:
    """Archives written before the ``states`` parameter (dq format version 1) hold 4-state
    indices and records without ``states``: they decode as before."""
    import hashlib
    import json

    from safetensors.numpy import save_file

    import rftpack

    model = tmp_path / "m.safetensors"
    w = (np.random.default_rng(5).standard_t(4, (200, 300)) * 0.02).astype(np.float32)
    save_file({"w": w}, str(model))
    out = tmp_path / "a"
    rftpack.compress(model, out, profile="dq", target_bpw=4.0, layout="directory",
                     quantizer_overrides={"states": 4, "row_classes": 1})
    with rftpack.open(out) as archive:
        expected = archive.get_tensor("w")
    manifest_path = out / "manifest_hybrid.json"
    manifest = json.loads(manifest_path.read_text())
    entry = next(e for e in manifest["tensors"] if e["tensor_name"] == "w")
    container = json.loads((out / entry["file"]).read_text())
    record = container["stages"][1]
    assert record["name"] == "dq" and record["format_version"] == 2
    assert record["configuration"].pop("states") == 4

    def decoded_as(version: int) -> np.ndarray:
        record["format_version"] = version
        data = json.dumps(container).encode()
        (out / entry["file"]).write_bytes(data)
        entry["container_sha256"] = hashlib.sha256(data).hexdigest()
        manifest_path.write_text(json.dumps(manifest))
        with rftpack.open(out) as archive:
            return archive.get_tensor("w")

    np.testing.assert_array_equal(decoded_as(1), expected)
    # the same record read as version 2 would mean 8 states: a different tensor
    assert not np.array_equal(decoded_as(2), expected)


@pytest.mark.parametrize("states", [4, 8])
def test_range_guard_keeps_codes_in_the_alphabet(states: int) -> None:
    from rftpack.stages.scalar import MAX_CODE

    rng = np.random.default_rng(9)
    x = rng.normal(size=20_000) * 0.01
    x[[5, 777]] = [123.0, -123.0]  # the guard binds: |x|/Δ would be ~10⁹ at this step
    q = DependentQuantizer(step=1e-7, states=states)
    streams, side = q.quantize(x, [])
    assert side["step"] == pytest.approx(q.min_step(123.0))
    assert side["alphabet"] <= 2 * MAX_CODE + 1
    symbols = streams["codes"].symbols
    assert int(symbols.max()) < side["alphabet"]
    y = q.dequantize({"codes": symbols}, side, x.size)
    assert np.max(np.abs(x - y)) <= 2 * side["step"]


def test_numpy_search_in_groups_of_chains_finds_the_same_indices(monkeypatch) -> None:
    """Without numba the search bounds its traceback memory by taking chains a group at a
    time; the groups change nothing."""
    monkeypatch.setenv("RFTPACK_NO_JIT", "1")
    x = np.random.default_rng(5).laplace(size=5000) * 7
    rates = dq._rate_table(x)
    whole = viterbi(x, 0.25, rates, 64, 64)
    monkeypatch.setattr(dq, "NUMPY_TRACEBACK_ENTRIES", 3 * 64 * 64)  # 3 chains per group
    assert np.array_equal(viterbi(x, 0.25, rates, 64, 64), whole)


def stepwise_replay(k: np.ndarray, chain: int, states: int) -> np.ndarray:
    """FORMAT.md §8.6 one index at a time: the reference for the grouped replay."""
    trans, quantizer = TRELLISES[states]
    levels = np.zeros(k.shape[0])
    for start in range(0, k.shape[0], chain):
        state = 0
        for i in range(start, min(k.shape[0], start + chain)):
            ki = int(k[i])
            levels[i] = 2 * ki if quantizer[state] == 0 else 2 * ki - np.sign(ki)
            state = trans[state, abs(ki) & 1]
    return levels


@settings(max_examples=150, deadline=None)
@given(k=st.lists(st.integers(-40000, 40000), max_size=700),
       chain=st.sampled_from([1, 3, 8, 9, 64, 100, 1000]),
       states=st.sampled_from(sorted(TRELLISES)))
def test_grouped_replay_is_the_state_machine(k: list[int], chain: int, states: int) -> None:
    ks = np.array(k, np.int64)
    levels = replay(ks, chain, states)
    assert levels.dtype == np.float64 and levels.shape == ks.shape
    np.testing.assert_array_equal(levels, stepwise_replay(ks, chain, states))


def test_records_without_states_or_chain_mean_what_version_2_wrote() -> None:
    """The dataclass defaults are what a record that omits them means (8 states, chains of
    256, as version 2 wrote); the dq profile asks for more explicitly."""
    from rftpack.profiles import PROFILES, build_stage

    bare = DependentQuantizer.from_config({"name": "dq", "configuration": {"step": 0.1}})
    assert (bare.states, bare.chain) == (8, 256)
    profile = build_stage("quantizer", PROFILES["dq"].quantizer)
    assert (profile.states, profile.chain) == (256, 8192)


@contextlib.contextmanager
def replay_path(path: str):
    """Decode with numpy's grouped replay, numba's compiled one (numba loaded) or the C
    extension's (:mod:`rftpack.native`)."""
    real_compiled, real_available = dq._compiled, native.available
    if path == "native" and not native.available():
        pytest.skip("rftpack._native is not built here (tests/test_native.py says why)")
    if path == "numba":
        pytest.importorskip("numba")
        if real_compiled("replay_chains") is None:
            pytest.skip("RFTPACK_NO_JIT is set, or numba cannot compile here")
    try:
        if path != "native":
            native.available = lambda: False
        if path == "numpy":
            dq._compiled = lambda name: None if name == "replay_chains" else real_compiled(name)
        yield
    finally:
        dq._compiled, native.available = real_compiled, real_available


@pytest.mark.parametrize("path", ["numpy", "numba", "native"])
@pytest.mark.parametrize("states", sorted(TRELLISES))
@pytest.mark.parametrize("chain", [1, 7, 8, 9, 1024])
def test_decoding_symbols_replays_the_state_machine(states: int, chain: int, path: str) -> None:
    rng = np.random.default_rng(states * 31 + chain)
    for n in (0, 1, chain - 1, chain, 3 * chain + 5, 5000):
        k = rng.integers(-300, 300, max(n, 0))
        symbols = zigzag(k)
        alphabet = int(symbols.max()) + 1 if symbols.size else 1
        expected = stepwise_replay(k, chain, states) * 0.37
        with replay_path(path):
            assert np.array_equal(decode_symbols(symbols, alphabet, chain, states, 0.37),
                                  expected)
            assert np.array_equal(replay(k, chain, states) * 0.37, expected)


@pytest.mark.parametrize("path", ["numba", "native"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int32, np.int64, np.uint64])
def test_compiled_replay_takes_any_symbol_dtype_and_refuses_symbols_outside(dtype,
                                                                             path) -> None:
    rng = np.random.default_rng(4)
    bound = 100 if np.dtype(dtype).itemsize == 1 else 2000
    symbols = zigzag(rng.integers(-bound, bound, 9000)).astype(dtype)
    alphabet = int(symbols.max()) + 1
    with replay_path("numpy"):
        expected = decode_symbols(symbols, alphabet, 4096, 256, 0.01)
    with replay_path(path):
        assert np.array_equal(decode_symbols(symbols, alphabet, 4096, 256, 0.01), expected)
        with pytest.raises(FormatError, match="outside the alphabet"):
            decode_symbols(symbols, alphabet - 1, 4096, 256, 0.01)
        if np.dtype(dtype).kind == "i":
            negative = symbols.copy()
            negative[5000] = -1
            with pytest.raises(FormatError, match="outside the alphabet"):
                decode_symbols(negative, alphabet, 4096, 256, 0.01)


def test_the_refitted_rate_table_prices_the_searchs_own_indices() -> None:
    """Rounding's table misprices what the trellis chooses; the refit is close to the bits
    those indices really cost (their entropy plus a sign bit per non-zero index)."""
    x = np.random.default_rng(4).laplace(size=1 << 16) * 3
    rounding = dq._rate_table(x)
    refitted = dq.refitted_rates(x, 0.25, 1024, 64)
    k = np.abs(dq.viterbi(x, 0.25, refitted, 1024, 64))
    counts = np.bincount(k)
    p = counts[counts > 0] / k.size
    true_bits = float(-(p * np.log2(p)).sum() + np.mean(k > 0))

    def priced(table: np.ndarray) -> float:
        return float(table[np.minimum(k, table.shape[0] - 1)].mean())

    assert abs(priced(refitted) - true_bits) < 0.02
    assert abs(priced(rounding) - true_bits) > 5 * abs(priced(refitted) - true_bits)


def test_a_refit_with_shares_prices_the_block_the_sample_stands_for() -> None:
    """A stratified sample over-represents some values; counted with each value's share, the
    rate table is the one the whole block would give (equal shares: rounding's own table)."""
    rng = np.random.default_rng(6)
    bulk, fine = rng.laplace(size=60_000) * 0.5, rng.laplace(size=4_000) * 8
    block = np.concatenate([bulk, fine])
    sample = np.concatenate([bulk[::20], fine[::2]])     # 3,000 + 2,000 values
    shares = np.concatenate([np.full(3_000, 20.0), np.full(2_000, 2.0)])
    whole = dq._rate_table(block)
    weighted, plain = dq._rate_table(sample, shares), dq._rate_table(sample)
    assert abs(weighted[0] - whole[0]) < 0.05            # bits of a zero
    assert plain[0] - whole[0] > 0.5                     # the sample as it stands: 0.54 bit off
    assert np.array_equal(dq._rate_table(sample, np.full(5_000, 7.0)), plain)
    assert np.array_equal(dq.refitted_rates(sample, 0.25, 256, 8, np.ones(5_000)),
                          dq.refitted_rates(sample, 0.25, 256, 8))
