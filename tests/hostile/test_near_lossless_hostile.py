"""Hostile tests for near-lossless storage of small tensors and the larger dq trellises.

- ``rftpack.rounding``: mantissa rounding (idempotence, monotonicity, double rounding, signs,
  NaN payloads, overflow, 0-d / big-endian / strided inputs) and the planning helpers;
- the public API with rate control (``scalar`` and ``dq`` profiles): rounded small tensors
  decode to exactly ``round_mantissa(original, mantissa_bits)``, specials survive, the
  ``max_rel_error`` bound holds, ``verify`` passes and the manifest's counts add up;
- ``DependentQuantizer`` with 4 … 256 states on adversarial inputs, its record's format
  version, and hand-edited archives with invalid ``states`` / ``format_version``;
- the CLI's ``--set KEY=VALUE``: odd values fail with one line and exit code 1.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from safetensors.numpy import save_file

import rftpack
from rftpack.cli.main import main
from rftpack.codec import stage_record
from rftpack.errors import RftpackError
from rftpack.ratecontrol import RatePlan, TensorStats
from rftpack.rounding import (
    MIN_BITS,
    Candidate,
    bits_for_budget,
    bits_for_relative_error,
    plan_rounding,
    round_mantissa,
    squared_errors,
)
from rftpack.stages.dq import DependentQuantizer
from rftpack.verify import verify_archive

FAST = settings(max_examples=40, deadline=None)
WIDTH = {np.dtype(np.float32): 23, np.dtype(np.float64): 52}
UNSIGNED = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}
F32_MAX = np.finfo(np.float32).max


# -- helpers --------------------------------------------------------------------------------------

def bits_of(x: np.ndarray) -> np.ndarray:
    """The raw bit patterns of a float32/float64 array (native byte order)."""
    x = np.asarray(x)
    x = x.astype(x.dtype.newbyteorder("="), copy=False)
    return np.ascontiguousarray(x).view(UNSIGNED[x.dtype])


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(bits_of(a), bits_of(b)))


def sign_bits(x: np.ndarray) -> np.ndarray:
    return np.signbit(np.asarray(x))


def float_arrays(dtype: Any, min_size: int = 1, max_size: int = 64,
                 finite: bool = False) -> st.SearchStrategy[np.ndarray]:
    width = 32 if np.dtype(dtype) == np.float32 else 64
    elements = st.floats(width=width, allow_nan=not finite, allow_infinity=not finite,
                         allow_subnormal=True)
    return arrays(dtype, st.integers(min_size, max_size), elements=elements)


def nan_with_payload(payload: int, negative: bool = False) -> np.float32:
    word = np.uint32(0x7F800000 | payload | (0x80000000 if negative else 0))
    return np.array([word], np.uint32).view(np.float32)[0]


def fake_candidate(name: str, errors: dict[int, float], numel: int = 100) -> Candidate:
    stats = TensorStats(name, numel, False, 1.0, 0.0)
    return Candidate(stats, dict(errors), rounded_bytes=numel * 2, exact_bytes=numel * 4)


def specials() -> np.ndarray:
    tiny_sub = np.array([1], np.uint32).view(np.float32)[0]
    return np.array([nan_with_payload(0x1234), nan_with_payload(0x400001, negative=True),
                     np.inf, -np.inf, -0.0, 0.0, tiny_sub, -tiny_sub * 77, F32_MAX, -F32_MAX,
                     np.finfo(np.float32).tiny, 1.0 + 2.0 ** -12, -3.14159265], np.float32)


def small_model(tmp: Path, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    tensors = {
        "layer.0.weight": rng.normal(size=(256, 256)).astype(np.float32),
        "layer.1.weight": (rng.standard_t(3, size=(128, 192)) * 0.02).astype(np.float32),
        "layer.0.bias": rng.normal(size=256).astype(np.float32),
        "tiny.2d": rng.normal(size=(8, 8)).astype(np.float32),
        "scale": np.array(0.7071067811865476, np.float32),
        "double": rng.normal(size=300) * 1e-3,
        "specials": specials(),
    }
    path = tmp / f"model{seed}.safetensors"
    save_file(tensors, str(path))
    return path, tensors


def archive_arrays(out: Path) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]],
                                       dict[str, Any]]:
    with rftpack.open(out) as archive:
        names = archive.keys()
        arrays_ = {n: np.asarray(archive.get_tensor(n)) for n in names}
        entries = {n: dict(archive.entry(n)) for n in names}
        metrics = dict(archive.manifest["metrics"])
    return arrays_, entries, metrics


# -- 1. rounding: properties ----------------------------------------------------------------------

@FAST
@given(x=st.one_of(float_arrays(np.float32), float_arrays(np.float64)), bits=st.integers(0, 60))
def test_rounding_is_idempotent_and_keeps_signs_and_specials(x: np.ndarray, bits: int) -> None:
    once = round_mantissa(x, bits)
    assert once.dtype == x.dtype and once.shape == x.shape
    assert same_bits(round_mantissa(once, bits), once)
    assert np.array_equal(sign_bits(once), sign_bits(x))
    finite = np.isfinite(x)
    assert np.all(np.isfinite(once[finite])), "finite input rounded to inf/NaN"
    # infinities and NaNs (with their payloads) are kept bit for bit
    assert np.array_equal(bits_of(once)[~finite], bits_of(x)[~finite])


@FAST
@given(x=st.one_of(float_arrays(np.float32, finite=True), float_arrays(np.float64, finite=True)),
       bits=st.integers(0, 30))
def test_rounding_is_monotone(x: np.ndarray, bits: int) -> None:
    ordered = np.sort(x)
    rounded = round_mantissa(ordered, bits)
    assert np.all(np.diff(rounded.astype(np.float64)) >= 0), (ordered, rounded)


@FAST
@given(x=st.one_of(float_arrays(np.float32, finite=True), float_arrays(np.float64, finite=True)),
       c=st.integers(0, 20), extra=st.integers(0, 20))
def test_double_rounding_stays_within_one_grid_step(x: np.ndarray, c: int, extra: int) -> None:
    """Rounding to b then c < b bits may differ from rounding to c directly (double rounding),
    but only by one step of the c-bit grid, and the result is on that grid."""
    b = c + extra
    twice = round_mantissa(round_mantissa(x, b), c)
    direct = round_mantissa(x, c)
    assert same_bits(round_mantissa(twice, c), twice)  # on the c-bit grid
    # adjacent or equal on the c-bit grid: bit patterns differ by at most one c-bit ulp
    drop = WIDTH[x.dtype] - c
    gap = np.abs(bits_of(twice).astype(object) - bits_of(direct).astype(object))
    assert all(int(g) <= 1 << drop for g in gap.reshape(-1))
    if extra == 0:
        assert same_bits(twice, direct)


@FAST
@given(x=float_arrays(np.float32, finite=True), bits=st.integers(0, 22))
def test_rounding_error_is_at_most_half_a_step(x: np.ndarray, bits: int) -> None:
    rounded = round_mantissa(x, bits).astype(np.float64)
    values = x.astype(np.float64)
    normal = np.abs(values) >= np.finfo(np.float32).tiny
    error = np.abs(rounded - values)
    # half a step of the value's binade; values rounded down at the top of the range: a step
    limit = np.where(np.abs(values) > F32_MAX * (1 - 2.0 ** -(bits + 1)), 2.0 ** -bits,
                     2.0 ** -(bits + 1)) * np.abs(values)
    assert np.all(error[normal] <= limit[normal] * (1 + 1e-12))
    # subnormals: half a step of the fixed subnormal grid
    sub_step = 2.0 ** (23 - bits) * 2.0 ** -149
    assert np.all(error[~normal] <= sub_step / 2)


def test_rounding_ties_go_to_even_and_overflow_rounds_down() -> None:
    # 1 + 2^-11 is halfway between 1 and 1 + 2^-10 at 10 bits: the even one (1.0) wins;
    # 1 + 3·2^-11 is halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even)
    x = np.array([1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, -(1 + 2.0 ** -11)], np.float32)
    assert round_mantissa(x, 10).tolist() == [1.0, 1 + 2.0 ** -9, -1.0]
    top = round_mantissa(np.array([F32_MAX, -F32_MAX], np.float32), 10)
    assert np.all(np.isfinite(top)) and top[0] == -top[1] and top[0] <= F32_MAX
    assert top[0] == np.float32((2 - 2.0 ** -10) * 2.0 ** 127)
    big = round_mantissa(np.array([np.finfo(np.float64).max], np.float64), 3)
    assert np.isfinite(big[0])


def test_rounding_odd_layouts() -> None:
    rng = np.random.default_rng(1)
    m = rng.normal(size=(7, 9)).astype(np.float32)
    for view in (m.T, m[::2], m[:, ::3], m[::-1, 1::2], m.astype(">f4"), m.T.astype(">f4")):
        out = round_mantissa(view, 7)
        assert out.shape == view.shape
        assert out.dtype.isnative and out.dtype == np.float32
        expected = round_mantissa(np.ascontiguousarray(view.astype(np.float32)), 7)
        assert np.array_equal(out, expected)
    before = m.copy()
    round_mantissa(m.T, 3)
    assert np.array_equal(m, before), "input mutated"
    zero_d = round_mantissa(np.array(-1.2345678, np.float64), 5)
    assert zero_d.shape == () and zero_d.dtype == np.float64 and float(zero_d) == -1.25
    assert round_mantissa(np.zeros((0, 3), np.float32), 4).shape == (0, 3)
    negative_zero = round_mantissa(np.array([-0.0], np.float32), 0)
    assert np.signbit(negative_zero[0]) and negative_zero[0] == 0
    full = round_mantissa(m, 23)
    assert np.array_equal(full, m) and full is not m
    full[0, 0] = 99
    assert m[0, 0] != 99, "bits ≥ mantissa must return a copy, not the input"


@pytest.mark.parametrize("bad, error", [
    (np.ones(3, np.float16), TypeError), (np.ones(3, np.int32), TypeError),
    (np.ones(3, np.complex64), TypeError),
])
def test_rounding_rejects_other_dtypes(bad: np.ndarray, error: type[Exception]) -> None:
    with pytest.raises(error):
        round_mantissa(bad, 5)
    with pytest.raises(ValueError):
        round_mantissa(np.ones(3, np.float32), -1)


@FAST
@given(x=float_arrays(np.float32, min_size=0))
def test_squared_errors_match_and_shrink_with_bits(x: np.ndarray) -> None:
    errors = squared_errors(x, range(MIN_BITS, 23))
    assert list(errors) == list(range(MIN_BITS, 23))
    finite = np.isfinite(x)
    for bits, value in errors.items():
        diff = round_mantissa(x, bits)[finite].astype(np.float64) - x[finite].astype(np.float64)
        assert value == pytest.approx(float(np.sum(diff * diff)), rel=1e-12, abs=0.0)
        assert math.isfinite(value) and value >= 0
    # the b-bit grid is a subset of the (b+1)-bit one: errors never grow with bits
    ordered = [errors[b] for b in sorted(errors)]
    assert all(a >= b for a, b in zip(ordered, ordered[1:], strict=False))


@FAST
@given(errors=st.dictionaries(st.integers(0, 60), st.floats(0, 1e6), max_size=8),
       budget=st.floats(0, 1e9))
def test_bits_for_budget_is_the_fewest_within_one_percent(errors: dict[int, float],
                                                          budget: float) -> None:
    chosen = bits_for_budget(errors, budget)
    fitting = [b for b, e in errors.items() if e <= 0.01 * budget]
    assert chosen == (min(fitting) if fitting else None)


@FAST
@given(rel=st.floats(1e-15, 0.5))
def test_bits_for_relative_error_is_minimal_and_sufficient(rel: float) -> None:
    bits = bits_for_relative_error(rel)
    assert bits >= MIN_BITS
    assert 2.0 ** -(bits + 1) <= rel
    if bits > MIN_BITS:
        assert 2.0 ** -bits > rel, "one bit fewer would already do"


@pytest.mark.parametrize("exponent", [11, 12, 20, 24, 40])
def test_bits_for_relative_error_at_powers_of_two(exponent: int) -> None:
    assert bits_for_relative_error(2.0 ** -exponent) == max(MIN_BITS, exponent - 1)


def test_plan_rounding_paths() -> None:
    calls: list[int] = []

    def planner(snr: float | None = 40.0) -> RatePlan:
        calls.append(1)
        return RatePlan(0.1, {}, 4.0, snr)

    assert plan_rounding([], planner, signal=1.0).mantissa_bits is None
    assert len(calls) == 1
    errors = {b: 2.0 ** -(2 * b) for b in range(MIN_BITS, 23)}
    a, b = fake_candidate("a", errors), fake_candidate("b", errors)
    # max_rel_error: the bits of bits_for_relative_error, each candidate sized at those bits
    plan = plan_rounding([a, b], planner, signal=1.0, max_rel_error=2.0 ** -15)
    assert plan.mantissa_bits == 14
    assert a.stats.fixed_error == errors[14] and b.stats.fixed_error == errors[14]
    assert a.stats.exact_bytes == math.ceil(a.rounded_bytes + 4 * 100 / 8)
    # a bound finer than float32's mantissa: stored exactly
    plan = plan_rounding([a], planner, signal=1.0, max_rel_error=1e-12)
    assert a.stats.fixed_error == 0.0 and a.stats.exact_bytes == a.exact_bytes
    # an SNR target nothing can meet within 1 %: exact
    plan = plan_rounding([a], planner, signal=1.0, target_snr_db=500.0)
    assert plan.mantissa_bits is None and a.stats.fixed_error == 0.0
    # a rate target, refined by the planned SNR: the fewest bits within 1 % of its error
    plan = plan_rounding([a, b], lambda: planner(60.0), signal=1.0)
    total = {k: 2 * v for k, v in errors.items()}
    assert plan.mantissa_bits == bits_for_budget(total, 1.0 / 10 ** 6.0)
    assert a.stats.fixed_error == errors[plan.mantissa_bits]
    # no planned SNR (error 0): stays at MIN_BITS
    assert plan_rounding([a], lambda: planner(None), signal=1.0).mantissa_bits == MIN_BITS


# -- 2. near-lossless storage through the public API ----------------------------------------------

CASES = [
    ("dq", {"target_bpw": 5.0}),
    ("scalar", {"target_bpw": 4.0}),
    ("scalar", {"target_snr_db": 30.0}),
    ("scalar", {"max_rel_error": 1e-2}),
    ("scalar", {"max_rel_error": 1e-3}),
    ("scalar", {"target_bpw": 4.0, "exact_small": True}),
]


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Any]:
    tmp = tmp_path_factory.mktemp("near-lossless")
    source, tensors = small_model(tmp)
    done = {}
    for index, (profile, target) in enumerate(CASES):
        out = tmp / f"out{index}.rftp"
        rftpack.compress(source, out, profile=profile, **target)
        done[index] = (out, tensors, *archive_arrays(out))
    return done


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{p}-{t}" for p, t in CASES])
def test_small_tensors_decode_to_their_rounding(compressed: dict[int, Any], case: int) -> None:
    out, tensors, decoded, entries, metrics = compressed[case]
    profile, target = CASES[case]
    assert set(decoded) == set(tensors)
    for name, original in tensors.items():
        entry, got = entries[name], decoded[name]
        assert got.shape == original.shape and got.dtype == original.dtype, name
        if entry["mode"] != "exact":
            continue
        bits = entry.get("mantissa_bits")
        if target.get("exact_small"):
            assert bits is None, f"{name} rounded despite exact_small"
        expected = original if bits is None else round_mantissa(original, bits)
        assert same_bits(got, expected), f"{name}: not round_mantissa(original, {bits})"
    # specials keep their bits whatever the rounding
    got = decoded["specials"]
    original = tensors["specials"]
    special = ~np.isfinite(original)
    assert np.array_equal(bits_of(got)[special], bits_of(original)[special])
    assert np.signbit(got[4]) and got[4] == 0, "-0.0 lost its sign"
    assert np.all(np.isfinite(got[~special]))
    counts = (metrics["rounded_tensors"] + metrics["exact_tensors"] + metrics["lossy_tensors"])
    assert counts == metrics["total_tensors"] == len(tensors)
    rounded = sum(1 for e in entries.values() if e["mode"] == "exact" and "mantissa_bits" in e)
    assert metrics["rounded_tensors"] == rounded
    report = verify_archive(out)
    assert report.ok, report.problems


@pytest.mark.parametrize("case", [i for i, (_, t) in enumerate(CASES) if "max_rel_error" in t])
def test_max_rel_error_bound_holds_for_every_tensor(compressed: dict[int, Any], case: int) -> None:
    _, tensors, decoded, _, _ = compressed[case]
    bound = CASES[case][1]["max_rel_error"]
    for name, original in tensors.items():
        with np.errstate(invalid="ignore"):  # signalling NaN payloads
            values = original.astype(np.float64).reshape(-1)
            got = decoded[name].astype(np.float64).reshape(-1)
        finite = np.isfinite(values)
        if not finite.any():
            continue
        peak = np.max(np.abs(values[finite]))
        worst = np.max(np.abs(got[finite] - values[finite]))
        assert worst <= bound * peak * (1 + 1e-9), f"{name}: {worst} > {bound} × {peak}"


def worst_relative_error(tmp: Path, bound: float, seed: int = 0) -> float:
    """max |decoded − original| / (bound × max |original|) of one 256×256 lossy tensor."""
    weight = np.random.default_rng(seed).normal(size=(256, 256)).astype(np.float32)
    source = tmp / "w.safetensors"
    save_file({"w": weight}, str(source))
    out = tmp / "w.rftp"
    rftpack.compress(source, out, profile="scalar", max_rel_error=bound, overwrite=True)
    with rftpack.open(out) as archive:
        got = archive.get_tensor("w").astype(np.float64)
    return float(np.max(np.abs(got - weight)) / (bound * np.max(np.abs(weight))))


def test_max_rel_error_below_code_range_is_refused(tmp_path: Path) -> None:
    """Codes span ±32000 steps, so a bound finer than ~1/64000 of a tensor's peak cannot be
    kept on the lossy path: refused with the least bound that works, never violated."""
    with pytest.raises(RftpackError, match="needs at least 1.5"):
        worst_relative_error(tmp_path, 1e-5)


def test_max_rel_error_survives_the_float32_cast(tmp_path: Path) -> None:
    for bound in (3e-5, 1.6e-5, 1e-3):
        assert worst_relative_error(tmp_path, bound) <= 1.0, bound


def test_max_rel_error_with_dq_is_refused(tmp_path: Path) -> None:
    source, _ = small_model(tmp_path)
    with pytest.raises(RftpackError, match="scalar"):
        rftpack.compress(source, tmp_path / "o.rftp", profile="dq", max_rel_error=1e-2)
    assert not (tmp_path / "o.rftp").exists()


def test_extract_matches_open(compressed: dict[int, Any], tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    out, _, decoded, _, _ = compressed[0]
    restored = load_file(str(rftpack.extract(out, tmp_path / "back.safetensors")))
    assert set(restored) == set(decoded)
    for name, array in decoded.items():
        assert same_bits(restored[name], array), name


# -- 3. dq trellises ------------------------------------------------------------------------------

STATES = [4, 8, 16, 32, 64, 128, 256]


def adversarial_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    outlier = rng.normal(size=1000) * 1e-3
    outlier[517] = 1e4
    return {
        "zeros": np.zeros(777),
        "outlier": outlier,
        "constant": np.full(1031, -0.375),
        "alternating": np.tile([1.0, -1.0], 333),
        "one": np.array([0.123]),
        "odd length": rng.normal(size=1029),
        "tiny": rng.normal(size=13) * 1e-30,
    }


def dq_round_trip(q: DependentQuantizer, x: np.ndarray) -> tuple[np.ndarray, float]:
    streams, side = q.quantize(x, [])
    y = q.dequantize({name: codes.symbols for name, codes in streams.items()}, side, x.size)
    return np.asarray(y), float(side["step"])


@pytest.mark.parametrize("states", STATES)
def test_dq_round_trips_adversarial_inputs(states: int) -> None:
    for chain in (1, 3, 1024):
        q = DependentQuantizer(states=states, chain=chain)
        for label, x in adversarial_inputs().items():
            y, step = dq_round_trip(q, x)
            assert y.shape == x.shape, label
            assert np.all(np.isfinite(y)), label
            # the search looks at most one index beyond the nearest level: |error| < 2 steps
            assert np.max(np.abs(y - x)) <= 2 * step * (1 + 1e-9), (states, chain, label)
            if label == "zeros":
                assert np.all(y == 0)


@pytest.mark.parametrize("states", STATES)
def test_dq_record_format_version(states: int) -> None:
    record = stage_record(DependentQuantizer(states=states))
    assert record["format_version"] == (2 if states <= 8 else 3)
    assert record["configuration"]["states"] == states


@pytest.mark.parametrize("states", [0, 2, 12, 512, -8, True, 16.0, "64", None])
def test_dq_rejects_bad_states(states: Any) -> None:
    with pytest.raises(RftpackError):
        DependentQuantizer(states=states)


@pytest.fixture(scope="module")
def dq_directory(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    tmp = tmp_path_factory.mktemp("dq-dir")
    weight = np.random.default_rng(3).normal(size=(256, 256)).astype(np.float32)
    source = tmp / "m.safetensors"
    save_file({"w": weight}, str(source))
    out = tmp / "archive"
    rftpack.compress(source, out, profile="dq", target_bpw=4.0, layout="directory",
                     quantizer_overrides={"states": 16})
    return out, weight


def edited_copy(source: Path, tmp: Path, edit) -> Path:
    import shutil

    out = tmp / "edited"
    shutil.copytree(source, out)
    manifest_path = next(out.glob("manifest*.json"))
    manifest = json.loads(manifest_path.read_text())
    entry = next(e for e in manifest["tensors"] if e["tensor_name"] == "w")
    container_path = out / entry["file"]
    container = json.loads(container_path.read_text())
    edit(next(s for s in container["stages"] if s["kind"] == "quantizer"))
    data = json.dumps(container).encode()
    container_path.write_bytes(data)
    entry["container_sha256"] = hashlib.sha256(data).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    return out


def test_dq_directory_archive_decodes(dq_directory: tuple[Path, np.ndarray],
                                      tmp_path: Path) -> None:
    out, weight = dq_directory
    # the no-op edit must still decode (the hash update is right), and to the same values
    same = edited_copy(out, tmp_path, lambda stage: None)
    with rftpack.open(out) as a, rftpack.open(same) as b:
        x, y = a.get_tensor("w"), b.get_tensor("w")
    record = quantizer_record_of(out)
    # 16 states say 3; the profile's row classes (an encoder parameter) say 4
    assert record["configuration"]["states"] == 16 and record["format_version"] == 4
    assert np.array_equal(x, y)
    assert 10 < 10 * np.log10(np.sum(weight.astype(float) ** 2)
                              / np.sum((x - weight).astype(float) ** 2)) < 40


def _set(key: str, value: Any):
    def edit(stage: dict[str, Any]) -> None:
        if key == "format_version":
            stage[key] = value
        else:
            stage["configuration"][key] = value
    return edit


@pytest.mark.parametrize("key, value", [
    ("states", 12), ("states", 0), ("states", -8), ("states", "64"), ("states", 2 ** 20),
    ("states", 16.0), ("states", None), ("states", True), ("format_version", 5),
    ("format_version", 0), ("format_version", "3"), ("chain", 0), ("lam", -1),
])
def test_dq_edited_record_is_refused(dq_directory: tuple[Path, np.ndarray], tmp_path: Path,
                                     key: str, value: Any) -> None:
    out = edited_copy(dq_directory[0], tmp_path, _set(key, value))
    with pytest.raises(RftpackError):
        with rftpack.open(out) as archive:
            archive.get_tensor("w")
    assert not verify_archive(out).ok


@pytest.mark.parametrize("states", [4, 8, 32, 64])
def test_dq_edited_states_never_decode_silently_wrong(dq_directory: tuple[Path, np.ndarray],
                                                      tmp_path: Path, states: int) -> None:
    """Another valid number of states: the codes replay through the wrong trellis. Nothing
    in the container can catch that, but the values must differ from the true ones
    (the records are what tells the trellis apart) — documents that states is load-bearing."""
    out, _ = dq_directory
    edited = edited_copy(out, tmp_path, _set("states", states))
    with rftpack.open(out) as a, rftpack.open(edited) as b:
        assert not np.array_equal(a.get_tensor("w"), b.get_tensor("w"))


# -- 4. CLI --set ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    path = tmp / "m.safetensors"
    rng = np.random.default_rng(5)
    save_file({"w": rng.normal(size=(256, 256)).astype(np.float32),
               "b": rng.normal(size=64).astype(np.float32)}, str(path))
    return path


def compress_cli(model: Path, out: Path, *sets: str) -> int:
    args = ["compress", str(model), "-o", str(out), "--profile", "dq", "--bpw", "4", "-q"]
    for item in sets:
        args += ["--set", item]
    return main(args)


@pytest.mark.parametrize("sets", [
    ("states=16.0",), ("states=true",), ("states=12",), ("states=\"16\"",), ("states=null",),
    ("states==8",), ("chain=0",), ("chain=65537",), ("chain=1.5",), ("lam=-1",), ("lam=NaN",),
    ("lam=Infinity",), ("lam=\"x\"",), ("=3",), (" =3",), ("states",), ("nosuchkey=1",),
    ("states=16", "states=7"),
])
def test_bad_set_is_one_line(cli_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                             sets: tuple[str, ...]) -> None:
    out = tmp_path / "o.rftp"
    code = compress_cli(cli_model, out, *sets)
    err = capsys.readouterr().err
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rftpack compress: error:"), err
    assert "Traceback" not in err
    assert not out.exists()


def test_set_chain_true_is_refused(cli_model: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "o.rftp"
    assert compress_cli(cli_model, out, "chain=true") == 1
    assert capsys.readouterr().err.startswith("rftpack compress: error:")


def test_repeated_set_last_wins(cli_model: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "o.rftp"
    assert compress_cli(cli_model, out, "states=7", "states=32", " lam =0.3") == 0, \
        capsys.readouterr().err
    record = quantizer_record_of(out)
    assert record["configuration"]["states"] == 32
    assert record["configuration"]["lam"] == 0.3
    assert record["format_version"] == 4  # row classes (the profile's)


def quantizer_record_of(archive_path: Path, name: str = "w") -> dict[str, Any]:
    with rftpack.open(archive_path) as archive:
        container = archive.container(name)
    return next(s for s in container["stages"] if s["kind"] == "quantizer")
