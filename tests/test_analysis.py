"""Coding gain: 0 dB on white weights, large on smooth signals, exactly 0 for identity."""

from __future__ import annotations

import numpy as np

from rftpack.analysis import coding_gain_db
from rftpack.stages.identity import Identity
from rftpack.stages.rft import RFT


def test_white_weights_gain_nothing() -> None:
    white = np.random.default_rng(0).normal(size=(512, 384))
    assert abs(coding_gain_db(white, RFT())) < 0.2


def test_smooth_rows_gain_a_lot() -> None:
    rng = np.random.default_rng(1)
    smooth = np.cumsum(rng.normal(size=1 << 16))  # a random walk: power falls as 1/f²
    assert coding_gain_db(smooth, RFT()) > 10


def test_identity_on_stationary_noise_is_flat() -> None:
    noise = np.random.default_rng(2).normal(size=1 << 15)
    assert abs(coding_gain_db(noise, Identity())) < 0.2


def test_degenerate_inputs() -> None:
    assert coding_gain_db(np.zeros(10), RFT()) == 0.0
    assert coding_gain_db(np.array([np.nan, np.inf]), RFT()) == 0.0
