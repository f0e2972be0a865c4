"""rftpack.calibrated.calibrated_levels: GPTQ-style error-feedback rounding onto the grid k·Δ
(on the grid, lower output error than plain rounding, act order, dead inputs, blocked updates
equal to the one-column-at-a-time OBS update, and every refusal)."""

from __future__ import annotations

import numpy as np
import pytest

from rftpack import calibrated
from rftpack.calibrated import calibrated_levels
from rftpack.errors import InputError


def correlated_inputs(rng: np.random.Generator, rows: int, columns: int, *, rank: int = 12,
                      noise: float = 0.3) -> np.ndarray:
    """Inputs with strong correlations (a low-rank part plus a little noise) and columns of
    very different energy, so act order has a real ordering to follow."""
    latent = rng.normal(size=(rows, rank)) @ rng.normal(size=(rank, columns))
    scales = np.exp(rng.normal(size=columns))
    return (latent + noise * rng.normal(size=(rows, columns))) * scales


def problem(seed: int = 0, out: int = 24, columns: int = 48, rows: int = 3000
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = correlated_inputs(rng, rows, columns)
    return rng.normal(size=(out, columns)), x.T @ x / rows, x


def plain(w: np.ndarray, step: float) -> np.ndarray:
    return np.rint(w / step) * step


def output_error(w: np.ndarray, q: np.ndarray, h: np.ndarray) -> float:
    e = w - q
    return float(np.trace(e @ h @ e.T))


def obs_reference(w: np.ndarray, h: np.ndarray, step: float, damp: float,
                  order: np.ndarray | None = None) -> np.ndarray:
    """One column at a time, no Cholesky and no blocks: the optimal-brain-surgeon update with
    the inverse of H restricted to the columns not yet rounded, recomputed at every step.
    Rounds in act order (descending diag H, ties in index order) unless given an order."""
    h = 0.5 * (h + h.T)
    h = h + damp * float(np.mean(np.diag(h))) * np.eye(h.shape[0])
    if order is None:
        order = np.argsort(-np.diag(h), kind="stable")
    order = [int(j) for j in order]
    work = w / step
    levels = np.zeros_like(work)
    for position, j in enumerate(order):
        rest = order[position:]  # j and the columns still free
        inverse = np.linalg.inv(h[np.ix_(rest, rest)])
        levels[:, j] = np.rint(work[:, j])
        err = (work[:, j] - levels[:, j]) / inverse[0, 0]
        work[:, rest[1:]] -= np.outer(err, inverse[0, 1:])
    return levels * step


# -- the grid --------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [0.5, 0.1, 0.037, 3.0])
def test_results_lie_exactly_on_the_grid(step: float) -> None:
    w, h, _ = problem()
    q = calibrated_levels(w, h, step)
    assert q.shape == w.shape and q.dtype == np.float64
    levels = np.rint(q / step)
    assert np.array_equal(levels * step, q)  # exactly k·Δ, nothing in between
    assert np.max(np.abs(q / step - levels)) < 1e-9
    assert not np.array_equal(q, plain(w, step))  # and not simply plain rounding


def test_float32_weights_are_accepted_and_give_the_same_grid_values() -> None:
    w, h, _ = problem()
    w32 = w.astype(np.float32)
    q = calibrated_levels(w32, h.astype(np.float32), 0.25)
    assert q.dtype == np.float64
    assert np.array_equal(np.rint(q / 0.25) * 0.25, q)
    assert np.array_equal(q, calibrated_levels(w32.astype(np.float64),
                                               h.astype(np.float32).astype(np.float64), 0.25))


def test_inputs_are_not_modified() -> None:
    w, h, _ = problem()
    w0, h0 = w.copy(), h.copy()
    calibrated_levels(w, h, 0.5)
    assert np.array_equal(w, w0) and np.array_equal(h, h0)


# -- what it is for --------------------------------------------------------------------------


@pytest.mark.parametrize("step", [0.25, 0.5, 1.0])
def test_correlated_inputs_give_a_much_lower_output_error(step: float) -> None:
    w, h, x = problem(seed=1)
    q = calibrated_levels(w, h, step, damp=0.01)
    p = plain(w, step)
    ratio = output_error(w, q, h) / output_error(w, p, h)
    assert ratio < 0.6, ratio
    # Measured on the inputs themselves, too (E·x over the calibration rows).
    assert np.mean(((w - q) @ x.T) ** 2) < 0.6 * np.mean(((w - p) @ x.T) ** 2)
    # The weights themselves move more, but not absurdly: still a rounding, not a refit.
    weight_ratio = np.sum((w - q) ** 2) / np.sum((w - p) ** 2)
    assert 1.0 < weight_ratio < 4.0, weight_ratio


def test_held_out_inputs_from_the_same_distribution_also_gain() -> None:
    rng = np.random.default_rng(2)
    mixing = rng.normal(size=(10, 64))
    scales = np.exp(rng.normal(size=64))

    def draw(rows: int) -> np.ndarray:
        return (rng.normal(size=(rows, 10)) @ mixing + 0.2 * rng.normal(size=(rows, 64))) \
            * scales

    calibration, held_out = draw(400), draw(4000)
    w = rng.normal(size=(32, 64))
    q = calibrated_levels(w, calibration.T @ calibration / 400, 0.5)
    p = plain(w, 0.5)
    assert np.mean(((w - q) @ held_out.T) ** 2) < 0.6 * np.mean(((w - p) @ held_out.T) ** 2)


def test_uncorrelated_equal_energy_inputs_give_plain_rounding_exactly() -> None:
    rng = np.random.default_rng(3)
    w = rng.normal(size=(40, 200))  # more than one block of columns
    for scale in (1.0, 7.5):
        for step in (0.3, 1.0):
            q = calibrated_levels(w, scale * np.eye(200), step)
            assert np.array_equal(q, plain(w, step)), (scale, step)


def test_the_doctest_claim_holds() -> None:
    # The module's docstring example: on the grid and under half the output error.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 32)) @ rng.normal(size=(32, 32))
    w = rng.normal(size=(16, 32))
    h = x.T @ x / len(x)
    fitted = calibrated_levels(w, h, 0.5, damp=0.01)
    assert np.mean(((w - fitted) @ x.T) ** 2) < 0.5 * np.mean(((w - plain(w, 0.5)) @ x.T) ** 2)


def test_more_damping_moves_towards_plain_rounding() -> None:
    w, h, _ = problem(seed=4)
    p = plain(w, 0.5)
    changed = [np.count_nonzero(calibrated_levels(w, h, 0.5, damp=d) != p)
               for d in (0.01, 1.0, 1e4)]
    assert changed[0] > changed[1] > changed[2]
    errors = [output_error(w, calibrated_levels(w, h, 0.5, damp=d), h) for d in (0.01, 1e4)]
    assert errors[0] < errors[1]


# -- act order -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [5, 6])
def test_a_permuted_problem_gives_the_permuted_answer(seed: int) -> None:
    w, h, _ = problem(seed=seed, columns=150)  # crosses a block boundary
    q = calibrated_levels(w, h, 0.5)
    perm = np.random.default_rng(seed + 100).permutation(w.shape[1])
    qp = calibrated_levels(w[:, perm], h[np.ix_(perm, perm)], 0.5)
    assert np.array_equal(qp, q[:, perm])


def test_rounds_in_descending_input_energy() -> None:
    w, h, _ = problem(seed=7, columns=60)
    energies = np.diag(h)
    assert len(set(energies)) == len(energies)  # a unique act order ...
    assert not np.all(np.diff(energies) <= 0)  # ... that is not the index order
    q = calibrated_levels(w, h, 0.5, damp=0.1)
    act = obs_reference(w, h, 0.5, damp=0.1)
    assert np.mean(q == act) > 0.99
    # Rounding in index order (or ascending energy) is a different answer.
    for order in (np.arange(60), np.argsort(energies, kind="stable")):
        other = obs_reference(w, h, 0.5, damp=0.1, order=order)
        assert np.mean(q == other) < 0.9


# -- dead inputs -----------------------------------------------------------------------------


def test_dead_inputs_are_rounded_plainly_and_do_not_break_the_rest() -> None:
    rng = np.random.default_rng(8)
    x = correlated_inputs(rng, 3000, 80)
    dead = np.array([0, 13, 14, 79])
    x[:, dead] = 0.0  # inputs that are always zero
    h = x.T @ x / len(x)
    w = rng.normal(size=(20, 80))
    q = calibrated_levels(w, h, 0.5)
    assert np.all(np.isfinite(q))
    assert np.array_equal(np.rint(q / 0.5) * 0.5, q)
    # A dead input's weights never reach the output: rounded plainly, error fed nowhere.
    assert np.array_equal(q[:, dead], plain(w[:, dead], 0.5))
    live = np.setdiff1d(np.arange(80), dead)
    # The live columns still gain as much as without the dead ones.
    p = plain(w, 0.5)
    assert output_error(w, q, h) < 0.6 * output_error(w, p, h)
    # ... and solve the problem restricted to them (same absolute damping: damp × mean diag
    # over all 80 inputs is damp·80/76 × the mean over the 76 live ones).
    reduced = calibrated_levels(w[:, live], h[np.ix_(live, live)], 0.5,
                                damp=0.1 * len(live) / 80)
    assert np.mean(q[:, live] == reduced) > 0.99
    assert output_error(w[:, live], q[:, live], h[np.ix_(live, live)]) == pytest.approx(
        output_error(w[:, live], reduced, h[np.ix_(live, live)]), rel=0.02)


def test_all_inputs_dead_is_plain_rounding() -> None:
    rng = np.random.default_rng(9)
    w = rng.normal(size=(8, 30))
    assert np.array_equal(calibrated_levels(w, np.zeros((30, 30)), 0.5), plain(w, 0.5))


def test_no_columns_at_all() -> None:
    assert calibrated_levels(np.zeros((4, 0)), np.zeros((0, 0)), 0.5).shape == (4, 0)


# -- blocked updates vs a one-column-at-a-time reference -------------------------------------


@pytest.mark.parametrize("columns", [calibrated.BLOCK + 37, 2 * calibrated.BLOCK + 5])
def test_blocked_updates_match_the_column_by_column_reference(columns: int) -> None:
    assert columns > calibrated.BLOCK  # block boundaries are crossed
    w, h, _ = problem(seed=10, out=16, columns=columns, rows=4 * columns)
    q = calibrated_levels(w, h, 0.5, damp=0.05)
    expected = obs_reference(w, h, 0.5, damp=0.05)
    # Same algorithm, other floating-point order: a level may flip at a near-tie, no more.
    assert np.mean(q == expected) > 0.995
    assert output_error(w, q, h) == pytest.approx(output_error(w, expected, h), rel=0.01)
    # The columns after the first block carry the feedback of the first block's errors.
    after = slice(calibrated.BLOCK, None)
    order = np.argsort(-np.diag(h), kind="stable")
    late = order[after]
    assert np.mean(q[:, late] == expected[:, late]) > 0.995
    assert np.count_nonzero(q[:, late] != plain(w, 0.5)[:, late]) > 0.1 * q[:, late].size


def test_block_size_does_not_change_the_answer(monkeypatch) -> None:
    w, h, _ = problem(seed=11, out=16, columns=200, rows=800)
    reference = calibrated_levels(w, h, 0.5)
    for block in (1, 7, 64, 1000):
        monkeypatch.setattr(calibrated, "BLOCK", block)
        q = calibrated_levels(w, h, 0.5)
        assert np.mean(q == reference) > 0.995, block
        assert output_error(w, q, h) == pytest.approx(output_error(w, reference, h),
                                                      rel=0.01), block


# -- refusals --------------------------------------------------------------------------------


GOOD_W = np.ones((3, 4))
GOOD_H = np.eye(4)


@pytest.mark.parametrize("weights, covariance, message", [
    (np.ones(4), GOOD_H, "weights \\(out, in\\)"),                       # 1-D weights
    (np.ones((2, 3, 4)), GOOD_H, "weights \\(out, in\\)"),               # 3-D weights
    (GOOD_W, np.eye(5), "covariance"),                                     # in mismatch
    (GOOD_W, np.ones((4, 5)), "covariance"),                               # not square
    (GOOD_W, np.ones(4), "covariance"),                                    # 1-D covariance
    (GOOD_W, np.ones((4, 4, 1)), "covariance"),                            # 3-D covariance
    (np.ones((4, 3)), GOOD_H, "covariance"),                               # transposed W
])
def test_shape_mismatches_are_input_errors(weights, covariance, message: str) -> None:
    with pytest.raises(InputError, match=message):
        calibrated_levels(weights, covariance, 0.5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["weights", "covariance"])
def test_non_finite_inputs_are_input_errors(bad: float, where: str) -> None:
    w, h = GOOD_W.copy(), GOOD_H.copy()
    (w if where == "weights" else h)[1, 2] = bad
    with pytest.raises(InputError, match="finite"):
        calibrated_levels(w, h, 0.5)


@pytest.mark.parametrize("step, damp", [
    (0.0, 0.1), (-0.5, 0.1), (np.nan, 0.1), (np.inf, 0.1),
    (0.5, 0.0), (0.5, -0.1), (0.5, np.nan), (0.5, np.inf),
])
def test_bad_step_or_damp_is_an_input_error(step: float, damp: float) -> None:
    with pytest.raises(InputError, match="step and damp must be positive"):
        calibrated_levels(GOOD_W, GOOD_H, step, damp=damp)


@pytest.mark.parametrize("covariance", [
    [[1.0, 2.0], [2.0, 1.0]],                # eigenvalue −1, beyond what damping repairs
    [[1.0, 1.1], [1.1, 1.0]],                # exactly singular after damping (+0.1·I)
    [[2.0, 3.0, 0.0], [3.0, 2.0, 0.0], [0.0, 0.0, 2.0]],
])
def test_a_covariance_that_is_not_positive_definite_is_an_input_error(covariance) -> None:
    h = np.array(covariance)
    with pytest.raises(InputError, match="not positive definite"):
        calibrated_levels(np.ones((2, len(h))), h, 0.5)


def test_a_negative_variance_counts_as_a_dead_input() -> None:
    # diag ≤ 0 is "dead": that input is given the mean variance, not refused.
    h = np.array([[4.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 3.0]])
    w = np.array([[0.26, 0.74, -0.4]])
    q = calibrated_levels(w, h, 0.5)
    assert np.array_equal(q, plain(w, 0.5))  # no correlations: plain rounding
