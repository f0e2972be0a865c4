"""Dependent quantization: the Viterbi search is optimal, the decoder replays it exactly, and
at equal rate it beats plain rounding."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rftpack.errors import FormatError, StageError
from rftpack.stages.dq import TRANS, DependentQuantizer, replay, viterbi
from rftpack.stages.rans import RansCoder
from rftpack.stages.scalar import ScalarQuantizer


def path_cost(x: np.ndarray, k: np.ndarray) -> float:
    return float(np.sum((x - replay(k, len(x))) ** 2))


@pytest.mark.parametrize("seed", range(6))
def test_viterbi_finds_the_best_path_of_a_short_chain(seed: int) -> None:
    x = np.random.default_rng(seed).normal(size=4) * 3
    found = viterbi(x, 0.0, np.zeros(64), chain=4)
    # brute force over every index sequence near x (|k| ≤ 4 covers all useful levels)
    best = min(path_cost(x, np.array(ks)) for ks in itertools.product(range(-4, 5), repeat=4))
    assert path_cost(x, found) == pytest.approx(best, abs=1e-9)


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


@pytest.mark.parametrize("config", [{"chain": 0}, {"lam": -1.0}, {"step": 0, "rel_step": 0}])
def test_bad_config(config: dict) -> None:
    with pytest.raises(StageError):
        DependentQuantizer(**config)
