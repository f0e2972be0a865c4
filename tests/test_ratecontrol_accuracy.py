"""Rate-control accuracy: a plan never overshoots a bits-per-weight target, the first pass's
estimate matches what the rANS coder writes block by block (drifting statistics, heavy tails,
row steps), its samples and extremes hold what the estimate needs, and real archives land
just under --bpw (zip and directory layouts, scalar and dq, calibrated rounding)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import rftpack
from rftpack import api, ratecontrol
from rftpack.calibrated import calibrated_levels
from rftpack.codec import LossyPipeline, encode_lossy
from rftpack.ratecontrol import (
    ERROR_MARGIN,
    EXTREMES,
    MAX_SAMPLE,
    RATE_MARGIN,
    SAMPLE_SIZE,
    Overhead,
    TensorStats,
    _near_root,
    _root,
    _stride,
    entropy_bits,
    estimate,
    extremes_of,
    plan,
    row_sample,
    sample_of,
)
from rftpack.stages.dq import DependentQuantizer
from rftpack.stages.identity import Identity
from rftpack.stages.rans import RansCoder
from rftpack.stages.scalar import RowSteps, ScalarQuantizer

#: coder blocks of the synthetic tensors: four per tensor, each sampled with stride 8
BLOCK = 1 << 16
ACCURACY = 0.015  # the estimate's relative error allowed against the coded size


def coded_bits(x: np.ndarray, quantizer, block_size: int) -> int:
    """Bits of the codes as the codec writes them: quantized and rANS-coded block by block,
    one frequency table per block."""
    coder, total = RansCoder(), 0
    for start in range(0, x.shape[0], block_size):
        codes = quantizer.quantize(x[start:start + block_size], [])[0]["codes"]
        total += len(coder.encode(codes.symbols, codes.alphabet))
    return 8 * total


def first_pass(x: np.ndarray, name: str = "w", **fields) -> TensorStats:
    """What api._plan_rate keeps of a lossy tensor without row steps."""
    extremes, where = extremes_of(x)
    return TensorStats(name, x.shape[0], True, float(x @ x), float(np.max(np.abs(x))),
                       sample_of(x), extremes=extremes, extreme_positions=where, **fields)


def estimate_error(stats: TensorStats, quantizer, x: np.ndarray,
                   block_size: int = BLOCK) -> float:
    """Relative error of the estimated bits against the coded bits."""
    return estimate(stats, quantizer, block_size)[0] / coded_bits(x, quantizer, block_size) - 1


def one_histogram_bits(stats: TensorStats, quantizer, block_size: int) -> float:
    """The estimate before block-wise rates: one histogram of the whole sample, its table
    in every block."""
    symbols = quantizer.quantize(stats.sample, [])[0]["codes"].symbols
    counts = np.bincount(symbols)
    p = counts[counts > 0] / symbols.shape[0]
    blocks = math.ceil(stats.numel / block_size)
    return float(-(p * np.log2(p)).sum()) * stats.numel + 24 * p.shape[0] * blocks


def drifting(rng: np.random.Generator) -> np.ndarray:
    """Four blocks of Gaussian weights whose spread doubles from block to block."""
    return np.concatenate([rng.normal(size=BLOCK) * 0.02 * s for s in (0.5, 1.0, 2.0, 4.0)])


TENSORS = {
    "drifting": drifting,
    "heavy": lambda rng: rng.standard_t(3, size=4 * BLOCK) * 0.02,
    "gaussian": lambda rng: rng.normal(size=4 * BLOCK) * 0.02,
}


@pytest.fixture(scope="module")
def tensors() -> dict[str, np.ndarray]:
    return {kind: make(np.random.default_rng(1)) for kind, make in TENSORS.items()}


# -- _root: never past the root --------------------------------------------------------------


@pytest.mark.parametrize("root", [0.05, 0.3, 1.7, 3.9])
@pytest.mark.parametrize("rising", [True, False])
def test_root_stops_within_tolerance_on_the_met_side(root: float, rising: bool) -> None:
    def f(x: float) -> float:  # log(measure / goal), as plan's excess is
        ratio = math.log((1.0 + x) / (1.0 + root))
        return ratio if rising else -ratio

    x = _root(f, 0.0, 4.0)
    assert -5e-4 < f(x) <= 0.0, (x, f(x))


@pytest.mark.parametrize("evaluations", [0, 1, 2, 3])
def test_root_with_few_evaluations_still_meets_the_target(evaluations: int) -> None:
    def f(x: float) -> float:
        return x ** 3 - 2.0

    x = _root(f, 0.0, 3.0, evaluations=evaluations)
    assert f(x) <= 0.0
    assert x <= 2 ** (1 / 3)


def _bits_like(calls: list[float]):
    def f(x: float) -> float:  # log(bits / goal) falling with log step, flatter at low rate
        calls.append(x)
        return math.log(2.0 + math.exp(-1.7 * x)) - math.log(2.5)  # root at x = 0.4077
    return f


@pytest.mark.parametrize("start", [-0.6, 0.0, 0.2, 0.45, 1.4])
@pytest.mark.parametrize("slope", [-0.05, -0.6, -5.0])
def test_near_root_meets_the_target_from_below_in_few_evaluations(start: float,
                                                                  slope: float) -> None:
    calls: list[float] = []
    f = _bits_like(calls)
    x = _near_root(f, start, slope)
    assert x is not None and -5e-4 < f(x) <= 0.0, (x, f(x) if x is not None else None)
    assert len(calls) <= 11  # (+1: the check above)


@pytest.mark.parametrize("start", [-3.0, 3.0])
def test_near_root_far_from_the_root_meets_the_target_or_says_none(start: float) -> None:
    calls: list[float] = []
    f = _bits_like(calls)
    x = _near_root(f, start, -0.3)
    assert x is None or -5e-4 < f(x) <= 0.0


def test_near_root_gives_up_without_a_bracket() -> None:
    calls = []

    def f(x: float) -> float:  # never reaches the target: the caller falls back
        calls.append(x)
        return 1.0 + math.exp(-x)

    assert _near_root(f, 0.0, -1.0, evaluations=4) is None
    assert len(calls) == 5


def test_root_on_a_jump_returns_a_point_below_it() -> None:
    x = _root(lambda x: -1.0 if x < 1.0 else 1.0, 0.0, 4.0, evaluations=30)
    assert x < 1.0


@pytest.mark.parametrize(("f", "lo", "hi", "expected"), [
    (lambda x: x - 10.0, 0.0, 4.0, 4.0),   # met everywhere: the end nearest the root
    (lambda x: 10.0 - x, 5.0, 9.0, 9.0),   # decreasing, met nowhere: the least excess
    (lambda x: x + 1.0, 0.0, 4.0, 0.0),    # met nowhere: the least excess
    (lambda x: -x - 1.0, 0.0, 4.0, 0.0),   # decreasing, met everywhere
])
def test_root_not_bracketed_returns_the_better_end(f, lo: float, hi: float,
                                                   expected: float) -> None:
    calls: list[float] = []

    def counted(x: float) -> float:
        calls.append(x)
        return f(x)

    assert _root(counted, lo, hi) == expected
    assert calls == [lo, hi]  # no search outside the bracket


# -- plan: the estimate lands just under a bits-per-weight target ----------------------------


@pytest.fixture(scope="module")
def planned_stats() -> list[TensorStats]:
    rng = np.random.default_rng(2)
    return [first_pass(rng.normal(size=120_000) * 0.02, "a"),
            first_pass(rng.standard_t(3, size=60_000) * 0.01, "b", weight=0.1),
            first_pass(drifting(rng)[::8].copy(), "c"),
            TensorStats("bias", 500, False, 1.0, 0.0, exact_bytes=2000)]


@pytest.mark.parametrize(("quantizer", "bpw", "slack"), [
    (ScalarQuantizer(), 1.0, 2e-3), (ScalarQuantizer(), 2.5, 2e-3),
    (ScalarQuantizer(), 4.0, 2e-3), (ScalarQuantizer(), 6.0, 2e-3),
    (ScalarQuantizer(), 8.0, 2e-3),
    (DependentQuantizer(), 3.0, 1e-2),
])
def test_planned_bpw_never_exceeds_the_target(planned_stats, quantizer, bpw: float,
                                              slack: float) -> None:
    result = plan(planned_stats, quantizer, target_bpw=bpw, block_size=BLOCK)
    # Planned RATE_MARGIN under the target (room for the estimate's own error), never over
    # it ...
    assert result.estimated_bpw <= bpw * (1 - RATE_MARGIN) * (1 + 1e-12)
    assert result.estimated_bpw <= bpw * (1 - 5e-4)
    # ... but not much further under (within 1 %; the scalar search within 0.3 %).
    assert result.estimated_bpw >= bpw * (1 - RATE_MARGIN - slack), result.estimated_bpw
    # The figure is the estimate at the steps the plan hands out (each tensor's own).
    weights = sum(s.numel for s in planned_stats)
    overhead = Overhead()
    further_blocks = sum(math.ceil(s.numel / BLOCK) - 1 for s in planned_stats if s.lossy)
    fixed = 8 * (overhead.archive + overhead.manifest_entry * len(planned_stats)
                 + 3 * overhead.lossy + overhead.block * further_blocks + overhead.exact + 2000)
    bits = sum(estimate(s, dataclasses.replace(quantizer, step=result.step_for(s.name)),
                         BLOCK)[0] for s in planned_stats if s.lossy)
    assert (bits + fixed) / weights == pytest.approx(result.estimated_bpw, rel=1e-9)
    assert result.step_for("b") == pytest.approx(result.step / math.sqrt(0.1))


@pytest.mark.parametrize("snr", [15.0, 30.0, 45.0])
def test_planned_snr_meets_the_target_with_its_margin(planned_stats, snr: float) -> None:
    result = plan(planned_stats, ScalarQuantizer(), target_snr_db=snr, block_size=BLOCK)
    margin = -10 * math.log10(1 - ERROR_MARGIN)  # the estimate's own error, 0.02 dB
    assert snr + margin <= result.estimated_snr_db < snr + margin + 0.01


def test_each_tensor_manifest_entry_is_counted(planned_stats) -> None:
    weights = sum(s.numel for s in planned_stats)
    with_entries = plan(planned_stats, ScalarQuantizer(), max_rel_error=0.01, block_size=BLOCK)
    without = plan(planned_stats, ScalarQuantizer(), max_rel_error=0.01, block_size=BLOCK,
                   overhead=Overhead(manifest_entry=0))
    assert (with_entries.estimated_bpw - without.estimated_bpw) * weights == pytest.approx(
        8 * Overhead().manifest_entry * len(planned_stats))
    zip_entry = Overhead.for_layout("zip", "binary").manifest_entry
    assert 0 < zip_entry < Overhead.for_layout("directory", "binary").manifest_entry


def test_rate_bias_adds_its_bits_per_weight(tensors) -> None:
    stats = first_pass(tensors["gaussian"])
    quantizer = ScalarQuantizer(step=0.004)
    bits, error = estimate(stats, quantizer, BLOCK)
    more, same = estimate(dataclasses.replace(stats, rate_bias=0.03), quantizer, BLOCK)
    assert more - bits == pytest.approx(0.03 * stats.numel, rel=1e-9)
    assert same == error


# -- sampling --------------------------------------------------------------------------------


@pytest.mark.parametrize("numel", [0, 1, 1000, SAMPLE_SIZE, SAMPLE_SIZE + 1, 1 << 20,
                                   (1 << 20) + 1, 3 << 20, 16 << 20, 40 << 20, 1 << 30])
def test_stride_gives_sample_size_per_block_up_to_max_sample(numel: int) -> None:
    stride = _stride(numel)
    blocks = max(1, math.ceil(numel / (1 << 20)))
    budget = min(SAMPLE_SIZE * blocks, MAX_SAMPLE)
    assert stride >= 1
    assert math.ceil(numel / stride) <= budget
    if stride > 1:  # the smallest stride within the budget
        assert math.ceil(numel / (stride - 1)) > budget
    if numel <= 1 << 22:
        assert len(sample_of(np.zeros(numel, np.float32))) == math.ceil(numel / stride)


def test_extremes_are_the_largest_magnitudes_in_position_order() -> None:
    x = np.random.default_rng(3).standard_t(3, size=50_000).astype(np.float32)
    values, positions = extremes_of(x)
    # about EXTREMES: those above the matching quantile of every 8th weight
    assert values.shape == positions.shape
    assert 0.9 * EXTREMES <= values.shape[0] <= 1.1 * EXTREMES
    assert values.dtype == np.float64 and positions.dtype.kind == "i"
    assert np.all(np.diff(positions) > 0)
    assert np.array_equal(values, x[positions].astype(np.float64))
    assert np.min(np.abs(values)) >= np.max(np.abs(np.delete(x, positions)))


def test_extremes_are_kept_per_coder_block_of_a_million() -> None:
    x = np.random.default_rng(4).normal(size=(1 << 20) + 1000)
    values, positions = extremes_of(x)
    # about EXTREMES from the first block of 2**20, all 1,000 of the short second one
    assert np.array_equal(values, x[positions])
    first = positions[positions < 1 << 20]
    assert 0.9 * EXTREMES <= first.shape[0] <= 1.1 * EXTREMES
    rest = np.delete(x[:1 << 20], first)
    assert np.min(np.abs(x[first])) >= np.max(np.abs(rest))
    assert np.array_equal(positions[first.shape[0]:], np.arange(1 << 20, (1 << 20) + 1000))


def test_extremes_of_small_and_empty_arrays() -> None:
    values, positions = extremes_of(np.array([0.1, -3.0, 2.0], np.float32))
    assert positions.tolist() == [0, 1, 2]
    assert values.tolist() == pytest.approx([0.1, -3.0, 2.0])
    values, positions = extremes_of(np.arange(6.0).reshape(2, 3))  # flattened
    assert positions.tolist() == list(range(6)) and values.tolist() == list(range(6))
    values, positions = extremes_of(np.zeros(0, np.float32))
    assert values.shape == positions.shape == (0,)
    assert positions.dtype.kind == "i"


def row_tensor(rows: int, length: int, fine: int, seed: int = 6):
    rng = np.random.default_rng(seed)
    multipliers = np.ones(rows)
    multipliers[rng.choice(rows, fine, replace=False)] = 0.5
    return rng.normal(size=rows * length), multipliers


def test_row_sample_strides_the_bulk_and_keeps_every_finer_row() -> None:
    rows, length = 3000, 128
    x, multipliers = row_tensor(rows, length, fine=40)
    sample, scale, represents, positions = row_sample(x, multipliers, length)
    assert np.unique(positions).shape == positions.shape
    assert np.array_equal(sample, x[positions])
    assert np.array_equal(scale, multipliers[positions // length])
    finer = np.flatnonzero(np.repeat(multipliers != 1.0, length))
    assert np.isin(finer, positions).all()  # small enough: every weight of them
    assert np.all(represents[scale != 1.0] == 1.0)
    # the bulk: every stride-th weight of the tensor that lies in a bulk row
    stride = _stride(x.shape[0])
    grid = np.arange(0, x.shape[0], stride)
    assert stride > 1 and np.all(represents[scale == 1.0] == stride)
    assert np.array_equal(positions[scale == 1.0], grid[multipliers[grid // length] == 1.0])
    assert abs(represents.sum() - x.shape[0]) < 0.01 * x.shape[0]


def test_row_sample_strides_the_most_common_multiplier_even_if_finer() -> None:
    rows, length = 2000, 64
    x, multipliers = row_tensor(rows, length, fine=1900)  # most rows at 0.5
    sample, scale, represents, positions = row_sample(x, multipliers, length)
    assert np.all(represents[scale == 1.0] == 1.0)  # the 100 coarse rows, densely
    assert np.count_nonzero(scale == 1.0) == 100 * length
    assert np.all(represents[scale == 0.5] == _stride(rows * length))


def test_row_sample_caps_the_dense_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratecontrol, "DENSE_SAMPLE_SIZE", 1000)
    rows, length = 3000, 128
    x, multipliers = row_tensor(rows, length, fine=40)
    sample, scale, represents, positions = row_sample(x, multipliers, length)
    dense = 40 * length
    assert np.all(represents[scale == 0.5] == math.ceil(dense / 1000))
    assert np.count_nonzero(scale == 0.5) <= 1000
    assert abs(represents.sum() - x.shape[0]) < _stride(x.shape[0]) + math.ceil(dense / 1000)


# -- the estimate against the coded size -----------------------------------------------------


def test_coded_bits_is_what_the_codec_writes() -> None:
    x = (np.random.default_rng(5).normal(size=3 * 4096 + 100) * 0.02).astype(np.float32)
    quantizer = ScalarQuantizer(step=0.004)
    encoded = encode_lossy("w", x, LossyPipeline(Identity(), quantizer, RansCoder(),
                                                 block_size=4096))
    assert 8 * len(encoded.payload) == coded_bits(x.astype(np.float64), quantizer, 4096)


@pytest.mark.parametrize("kind", list(TENSORS))
@pytest.mark.parametrize("step", [0.001, 0.004, 0.01])  # ≈ 7, 5 and 3.5 bits per weight
def test_scalar_estimate_is_within_accuracy_of_the_coded_size(tensors, kind: str,
                                                              step: float) -> None:
    x = tensors[kind]
    error = estimate_error(first_pass(x), ScalarQuantizer(step=step), x)
    assert abs(error) <= ACCURACY, f"{kind} at step {step}: {error:+.3%}"


@pytest.mark.parametrize("kind", ["heavy", "gaussian"])
@pytest.mark.parametrize("step", [0.002, 0.006])
def test_dq_estimate_is_within_accuracy_of_the_coded_size(tensors, kind: str,
                                                          step: float) -> None:
    x = tensors[kind]
    error = estimate_error(first_pass(x), DependentQuantizer(step=step), x)
    assert abs(error) <= ACCURACY, f"{kind} at step {step}: {error:+.3%}"


@pytest.mark.parametrize("step", [0.001, 0.004, 0.01])
def test_drifting_blocks_are_estimated_block_by_block(tensors, step: float) -> None:
    x = tensors["drifting"]
    stats, quantizer = first_pass(x), ScalarQuantizer(step=step)
    truth = coded_bits(x, quantizer, BLOCK)
    blockwise = estimate(stats, quantizer, BLOCK)[0] / truth - 1
    single = one_histogram_bits(stats, quantizer, BLOCK) / truth - 1
    assert single > 0.05  # one histogram of the whole overestimates a drifting tensor ...
    assert abs(blockwise) < single / 10, (blockwise, single)  # ... each block's does not


def test_sample_positions_decide_the_blocks(tensors) -> None:
    """Samples taken unevenly across blocks (as row_sample does) count in their own block."""
    x = tensors["drifting"]
    rng = np.random.default_rng(7)
    positions = np.sort(np.concatenate([
        b * BLOCK + rng.choice(BLOCK, n, replace=False)
        for b, n in enumerate((2000, 14000, 8000, 6000))]))
    extremes, where = extremes_of(x)
    stats = TensorStats("w", x.shape[0], True, float(x @ x), float(np.max(np.abs(x))),
                        x[positions], positions=positions, extremes=extremes,
                        extreme_positions=where)
    quantizer = ScalarQuantizer(step=0.004)
    assert abs(estimate_error(stats, quantizer, x)) <= ACCURACY
    assumed = dataclasses.replace(stats, positions=None)  # as if every stride-th
    assert abs(estimate_error(assumed, quantizer, x)) > 3 * abs(estimate_error(stats,
                                                                              quantizer, x))


def sparse_outliers(seed: int = 3) -> np.ndarray:
    """Gaussian weights with 1500 large outliers between the sampled positions."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=4 * BLOCK) * 0.02
    stride = _stride(x.shape[0])
    where = rng.choice(np.flatnonzero(np.arange(x.shape[0]) % stride), 1500, replace=False)
    x[where] = np.sign(rng.normal(size=1500)) * rng.uniform(0.2, 5.0, size=1500)
    return x


@pytest.mark.parametrize("step", [0.002, 0.005, 0.01, 0.02])
def test_extremes_bring_the_tails_the_sample_misses_into_the_estimate(step: float) -> None:
    x = sparse_outliers()
    quantizer = ScalarQuantizer(step=step)
    with_tails = estimate_error(first_pass(x), quantizer, x)
    without = estimate_error(dataclasses.replace(
        first_pass(x), extremes=np.zeros(0), extreme_positions=np.zeros(0, np.int64)),
        quantizer, x)
    assert without < with_tails <= ACCURACY
    assert abs(with_tails) < 0.7 * abs(without), (with_tails, without)


def row_steps_error(quantizer, block_size: int, seed: int = 5) -> float:
    """Relative error of the estimate of a tensor whose rows have their own steps (130 of
    2048 rows 2 or 3 octaves finer), sampled by row_sample as api._plan_rate does, against
    the codes compress writes: the step scaled by the base multiplier, one level per row."""
    rows, length = 2048, 256
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, length)) * 0.02
    weights = np.ones(rows)
    weights[rng.choice(rows, 100, replace=False)] = 16.0
    weights[rng.choice(rows, 30, replace=False)] = 64.0
    levels, base = RowSteps.from_weights(weights)
    steps = RowSteps(levels, length)
    flat = x.reshape(-1)
    multipliers = base * steps.per_row()
    sample, scale, represents, positions = row_sample(flat, multipliers, length)
    extremes, where = extremes_of(flat / np.repeat(multipliers, length))
    stats = TensorStats("w", flat.shape[0], True, float(flat @ flat), 0.0, sample,
                        scale=scale, represents=represents, positions=positions,
                        extremes=extremes, extreme_positions=where)
    estimated = estimate(stats, quantizer, block_size)[0]
    scaled = dataclasses.replace(quantizer, step=quantizer.step * base)
    pipeline = LossyPipeline(Identity(), scaled, RansCoder(), block_size=block_size)
    encoded = encode_lossy("w", x, pipeline, rows=steps)
    codes = 8 * sum(b["streams"]["codes"]["length"]
                    for b in encoded.container["payload"]["blocks"])
    return estimated / codes - 1


@pytest.mark.parametrize("step", [0.005, 0.01, 0.02])
@pytest.mark.parametrize("block_size", [BLOCK, 1 << 20])
def test_row_steps_are_estimated_from_the_stratified_sample(step: float,
                                                            block_size: int) -> None:
    error = row_steps_error(ScalarQuantizer(step=step), block_size)
    assert abs(error) <= ACCURACY, error


# -- whole archives --------------------------------------------------------------------------

E2E_BLOCK = 1 << 17
BIG = "model.big.weight"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(11)
    tensors = {BIG: (rng.normal(size=(384, 512)) * 0.03).astype(np.float32),  # two blocks
               "model.heavy.weight": (rng.standard_t(3, size=(256, 256)) * 0.02)
               .astype(np.float32),
               "model.small.weight": (rng.normal(size=(128, 256)) * 0.05).astype(np.float32),
               "model.small.bias": (rng.normal(size=256) * 0.01).astype(np.float32)}
    path = tmp_path_factory.mktemp("rc-accuracy") / "m.safetensors"
    save_file(tensors, str(path))
    return path


def achieved_bpw(result: api.CompressResult) -> float:
    return 8 * result.archive_bytes / result.metrics["weights"]


@pytest.mark.parametrize("layout", ["zip", "directory"])
@pytest.mark.parametrize(("profile", "bpw"), [("scalar", 2.5), ("scalar", 5.0), ("dq", 3.5)])
def test_archive_lands_just_under_the_bpw_target(model: Path, tmp_path: Path, layout: str,
                                                 profile: str, bpw: float) -> None:
    result = rftpack.compress(model, tmp_path / "a.rftp", profile=profile, target_bpw=bpw,
                              layout=layout, block_size=E2E_BLOCK)
    with rftpack.open(result.path) as archive:
        assert len(archive.container(BIG)["payload"]["blocks"]) == 2
    achieved = achieved_bpw(result)
    assert bpw * 0.99 <= achieved <= bpw, achieved
    assert result.manifest["codec"]["rate_control"]["estimated_bpw"] <= bpw


LIN, OTHER, LIN_BIAS = "model.lin.weight", "model.other.weight", "model.lin.bias"
CALIBRATED_BPW = 2.0


class PlanSpy:
    """Wraps ratecontrol.plan as api uses it: the stats and rate biases each call saw, and
    its plans."""

    def __init__(self) -> None:
        self.stats: list[TensorStats] = []
        self.biases: list[dict[str, float]] = []
        self.plans: list[ratecontrol.RatePlan] = []

    def __call__(self, stats, quantizer, **settings):
        self.stats = stats
        self.biases.append({s.name: s.rate_bias for s in stats})
        self.plans.append(plan(stats, quantizer, **settings))
        return self.plans[-1]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory):
    """A linear layer with strongly correlated inputs (rank-8 signal plus a little noise, as in
    tests/test_calibrated_compress.py) and a layer without a covariance, compressed with
    calibrated rounding: (tensors, covariance, result, the plans it made)."""
    rng = np.random.default_rng(0)
    inputs = (rng.normal(size=(2000, 8)) @ rng.normal(size=(8, 192))
              + 0.1 * rng.normal(size=(2000, 192))) * np.exp(0.5 * rng.normal(size=192))
    tensors = {LIN: (rng.standard_normal((512, 192)) * 0.05).astype(np.float32),
               OTHER: (rng.standard_normal((128, 128)) * 0.05).astype(np.float32),
               LIN_BIAS: (rng.standard_normal(512) * 0.01).astype(np.float32)}
    directory = tmp_path_factory.mktemp("rc-bias")
    save_file(tensors, str(directory / "m.safetensors"))
    covariance = inputs.T @ inputs / len(inputs)
    spy = PlanSpy()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api, "plan", spy)
        result = rftpack.compress(directory / "m.safetensors", directory / "a.rftp",
                                  profile="scalar", target_bpw=CALIBRATED_BPW,
                                  input_covariance={LIN: covariance})
    return tensors, covariance, result, spy


def test_calibrated_rounding_is_measured_and_replanned(calibrated) -> None:
    tensors, covariance, result, spy = calibrated
    assert len(spy.plans) == 2
    assert set(spy.biases[0].values()) == {0.0}
    bias = spy.biases[1]
    assert math.isfinite(bias[LIN]) and bias[LIN] > 0.005, bias  # rounding costs bits
    assert bias[OTHER] == bias[LIN_BIAS] == 0.0  # no covariance: plain rounding
    first, second = spy.plans
    assert second.step > first.step  # a coarser step pays for them
    assert second.estimated_bpw <= CALIBRATED_BPW * (1 - RATE_MARGIN)
    assert result.manifest["codec"]["rate_control"]["step"] == second.step
    # Measured on a subset of rows at the first step, it is about the whole layer's extra
    # rate at the step used.
    step = second.step
    w = tensors[LIN].astype(np.float64)
    whole = (entropy_bits(np.rint(calibrated_levels(w, covariance, step) / step))
             - entropy_bits(np.rint(w / step)))
    assert bias[LIN] == pytest.approx(whole, rel=0.3)


def test_calibrated_layer_is_estimated_within_accuracy(calibrated) -> None:
    _, _, result, spy = calibrated
    stats = next(s for s in spy.stats if s.name == LIN)
    step = spy.plans[-1].step_for(LIN)
    estimated = estimate(stats, ScalarQuantizer(step=step), 1 << 20)[0]
    with rftpack.open(result.path) as archive:
        blocks = archive.container(LIN)["payload"]["blocks"]
    coded = 8 * sum(b["streams"]["codes"]["length"] for b in blocks)
    assert abs(estimated / coded - 1) <= ACCURACY, estimated / coded - 1


def test_calibrated_archive_lands_at_the_target(calibrated, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    tensors, covariance, result, _ = calibrated
    achieved = achieved_bpw(result)
    # Not quite ≤ the target here: this one sampled layer is estimated 0.7 % low (its
    # row-subset bias 0.020 bit of the whole layer's 0.023, and sampling noise of its plain
    # rate), more than RATE_MARGIN; but within half a percent.
    assert CALIBRATED_BPW * 0.97 <= achieved <= CALIBRATED_BPW * 1.005, achieved
    # Without the re-plan the archive is larger: the rounding's extra rate goes uncounted.
    monkeypatch.setattr(api, "_measure_rate_bias", lambda *args: False)
    source = result.path.with_name("m.safetensors")
    unmeasured = rftpack.compress(source, tmp_path / "a.rftp", profile="scalar",
                                  target_bpw=CALIBRATED_BPW,
                                  input_covariance={LIN: covariance})
    assert achieved < achieved_bpw(unmeasured)


def test_without_covariances_there_is_one_plan(model: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    spy = PlanSpy()
    monkeypatch.setattr(api, "plan", spy)
    rftpack.compress(model, tmp_path / "a.rftp", profile="scalar", target_bpw=4.0)
    assert len(spy.plans) == 1 and set(spy.biases[0].values()) == {0.0}


# -- blocks, short blocks, outliers ------------------------------------------------------------


@pytest.mark.parametrize("layout", ["zip", "directory"])
def test_many_blocks_per_tensor_still_meet_the_target(tmp_path: Path, layout: str) -> None:
    source = tmp_path / "m.safetensors"
    rng = np.random.default_rng(0)
    save_file({"w": (rng.normal(size=(512, 512)) * 0.02).astype(np.float32)}, str(source))
    result = rftpack.compress(source, tmp_path / "a.rftp", profile="scalar", target_bpw=3.0,
                              layout=layout, block_size=1 << 14)  # 16 blocks
    assert achieved_bpw(result) <= 3.0


@pytest.mark.parametrize("step", [0.03, 0.06])
def test_dq_estimate_of_drifting_blocks(tensors, step: float) -> None:
    x = tensors["drifting"]
    error = estimate_error(first_pass(x), DependentQuantizer(step=step), x)
    assert abs(error) <= ACCURACY, error


def test_short_last_block_is_not_charged_a_full_share() -> None:
    x = np.random.default_rng(0).normal(size=3 * BLOCK + 1000) * 0.02
    error = estimate_error(first_pass(x), ScalarQuantizer(step=0.005), x)
    assert abs(error) <= ACCURACY, error


@pytest.mark.parametrize("step", [0.01, 0.02])
def test_sparse_outliers_are_estimated_within_accuracy(step: float) -> None:
    x = sparse_outliers()
    error = estimate_error(first_pass(x), ScalarQuantizer(step=step), x)
    assert abs(error) <= ACCURACY, error


@pytest.mark.parametrize("step", [0.01, 0.02, 0.03])
def test_dq_row_steps_are_estimated_from_the_stratified_sample(step: float) -> None:
    """Regression: dq's search fitted its rate table to the stratified sample as it stands,
    where the finer rows weigh as much as the bulk, and the estimate came out 4 / 53 / 39 %
    over the coded size at steps 0.01 / 0.02 / 0.04. Fitted with each sampled value's share
    it is unbiased; a trellis search over a sample is noisier than rounding (±2 % per tensor
    here, against scalar's ±1 %), so this looks at six tensors."""
    errors = np.array([row_steps_error(DependentQuantizer(step=step), BLOCK, seed)
                       for seed in range(6)])
    assert np.max(np.abs(errors)) <= 2 * ACCURACY, errors
    assert abs(float(np.mean(errors))) <= ACCURACY, errors


@pytest.mark.parametrize("quantizer", [ScalarQuantizer(), DependentQuantizer()],
                         ids=["scalar", "dq"])
def test_blocks_whose_outlier_raises_the_step_are_estimated_at_that_step(quantizer) -> None:
    """A block with one weight 10⁵× the others gets a coarser step from the 16-bit range guard
    than the plan's; the stride sample misses the outlier, the extremes do not."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=4 * BLOCK) * 0.01
    x[BLOCK + 12345] = 1000.0  # block 1 only
    stats = first_pass(x)
    fine = dataclasses.replace(quantizer, step=0.01 / 400)  # ≈ 10 bits/weight elsewhere
    assert fine.step < quantizer.min_step(1000.0)
    assert not np.any(np.abs(stats.sample) > 1)  # the sample alone would not know
    assert abs(estimate_error(stats, fine, x)) < ACCURACY
    # and distortion is estimated at the raised step too: block 1 much worse than the others
    error = estimate(stats, fine, BLOCK)[1]
    rebuilt = np.concatenate([fine.dequantize(
        {"codes": (c := fine.quantize(x[s:s + BLOCK], []))[0]["codes"].symbols}, c[1], BLOCK)
        for s in range(0, x.shape[0], BLOCK)])
    assert error == pytest.approx(float(np.sum((x - rebuilt) ** 2)), rel=0.1)


@pytest.mark.parametrize("bpw", [4.0, 8.0])
def test_tiny_blocks_each_pay_their_table(tmp_path: Path, bpw: float) -> None:
    """Regression: blocks of 1024 weights have too few sampled weights to be estimated alone,
    so their samples are merged; the merged group used to be charged one table where each
    block writes its own (8 bpw planned: 9.01 written). Now each block is charged a table of
    the symbols it likely holds."""
    rng = np.random.default_rng(0)
    weight = (rng.normal(size=(400, 600)) * np.exp2(rng.normal(size=(400, 1))) * 0.02)
    source = tmp_path / "m.safetensors"
    save_file({"w": weight.astype(np.float32)}, str(source))
    result = rftpack.compress(source, tmp_path / "a.rftp", profile="scalar", target_bpw=bpw,
                              block_size=1024)
    achieved = 8 * result.archive_bytes / result.metrics["weights"]
    assert 0.9 * bpw <= achieved <= bpw, achieved  # measured: 3.76 and 7.82
