"""RateFeedback: a bits-per-weight plan's steps corrected as tensors are written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import rftpack
from rftpack import api
from rftpack.ratecontrol import (
    FEEDBACK_OCTAVES,
    FEEDBACK_SHARE,
    FINAL_MARGIN,
    RATE_MARGIN,
    TENSOR_MARGIN,
    RateFeedback,
    RatePlan,
)


def plan_for(payload: dict[str, float], overhead: float = 100.0, rest: float = 50.0,
             margin: float = RATE_MARGIN) -> RatePlan:
    """A plan whose tensors are planned at their payload + ``overhead``, aiming ``margin``
    under its limit, as ratecontrol.plan leaves it."""
    planned = {name: b + overhead for name, b in payload.items()}
    limit = (sum(planned.values()) + rest) / (1 - margin)
    return RatePlan(1.0, {}, 4.0, None, planned=planned, payload=payload, rest_bytes=rest,
                    limit_bytes=limit)


def run(feedback: RateFeedback, actual: dict[str, float], bits_per_octave: float = 1.0,
        numel: dict[str, int] | None = None) -> tuple[dict[str, float], float]:
    """Write every tensor: each takes its actual size, moved by its factor at
    ``bits_per_octave``; returns the factors and the archive's bytes (rest as planned)."""
    factors, total = {}, 0.0
    for name, size in actual.items():
        factor = feedback.multiplier(name)
        factors[name] = factor
        n = (numel or {}).get(name, 0)
        written = size + n * bits_per_octave * -np.log2(factor) / 8
        feedback.wrote(name, written)
        total += written
    return factors, total + feedback.plan.rest_bytes


def test_exact_estimates_land_the_archive_just_under_its_limit() -> None:
    payload = {f"t{i}": 10_000.0 for i in range(20)}
    numel = {name: 20_000 for name in payload}
    plan = plan_for(payload)
    factors, total = run(RateFeedback(plan, numel),
                         {n: plan.planned[n] for n in payload}, numel=numel)
    # each tensor written proves its estimate: its margin goes to the later ones, finer
    steps = list(factors.values())
    assert all(later < earlier for earlier, later in zip(steps, steps[1:], strict=False))
    assert steps[-1] < 1.0
    # kept back at the end: the final margin, the last tensor's own (nothing after it) and a
    # part of what was free before it (MOVE_MISS: nothing can make up for its move's miss)
    kept = (TENSOR_MARGIN + RATE_MARGIN) * 10_000
    leftover = plan.limit_bytes * (1 - FINAL_MARGIN) - total
    assert kept - 1 <= leftover <= 1.5 * kept


def test_a_tensor_larger_than_planned_makes_the_next_ones_coarser() -> None:
    payload = {"a": 50_000.0, "b": 10_000.0, "c": 10_000.0}
    numel = {"a": 100_000, "b": 20_000, "c": 20_000}
    plan = plan_for(payload)
    actual = {"a": plan.planned["a"] * 1.004, "b": plan.planned["b"], "c": plan.planned["c"]}
    factors, total = run(RateFeedback(plan, numel), actual, numel=numel)
    assert factors["b"] > 1.0 and factors["c"] > 1.0
    assert total <= plan.limit_bytes


def test_moves_stay_within_the_bound() -> None:
    payload = {"a": 50_000.0, "b": 1_000.0}
    numel = {"a": 100_000, "b": 2_000}
    plan = plan_for(payload)
    feedback = RateFeedback(plan, numel)
    feedback.multiplier("a")
    feedback.wrote("a", plan.planned["a"] - 20_000)  # far under: more than b could spend
    assert feedback.multiplier("b") == pytest.approx(2.0 ** -FEEDBACK_OCTAVES)


def test_the_last_tensors_own_miss_is_kept_back_when_nothing_can_absorb_it() -> None:
    payload = {"big": 1_000_000.0, "tail": 2_000.0}
    numel = {"big": 2_000_000, "tail": 4_000}
    feedback = RateFeedback(plan_for(payload), numel)
    # the tail cannot make up for 1 % of the big tensor within its bound, nor for its own
    absorbs = 4_000 * FEEDBACK_OCTAVES * 1.0 / 8
    assert feedback.exposed["big"] == pytest.approx(TENSOR_MARGIN * 1_000_000 - absorbs)
    assert feedback.exposed["tail"] == pytest.approx(TENSOR_MARGIN * 2_000)


def test_tensors_off_the_lossy_path_keep_their_step_but_count() -> None:
    plan = plan_for({"w": 10_000.0})
    plan.planned["bias"] = 500.0
    feedback = RateFeedback(plan, {"w": 20_000, "bias": 100})
    assert feedback.multiplier("bias") == 1.0
    before = feedback.multiplier("w")
    feedback.wrote("bias", 400.0)  # 100 bytes under its plan: w may spend them
    assert feedback.multiplier("w") < before


# -- whole archives --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(5)
    tensors = {f"layer.{i}.weight": (rng.normal(size=(192, 128)) * 0.02 * (1 + i % 3))
               .astype(np.float32) for i in range(8)}
    tensors["layer.0.bias"] = rng.normal(size=128).astype(np.float32)
    path = tmp_path_factory.mktemp("feedback") / "m.safetensors"
    save_file(tensors, str(path))
    return path


def achieved(result: api.CompressResult) -> float:
    return 8 * result.archive_bytes / result.metrics["weights"]


@pytest.mark.parametrize(("profile", "bpw"), [("scalar", 3.0), ("dq", 4.0)])
def test_feedback_lands_closer_to_the_target_and_never_over(model: Path, tmp_path: Path,
                                                            monkeypatch, profile: str,
                                                            bpw: float) -> None:
    closed = rftpack.compress(model, tmp_path / "closed.rftp", profile=profile, target_bpw=bpw)
    moved = closed.manifest["codec"]["rate_control"]["step_feedback"]
    assert moved and all(2 ** -FEEDBACK_OCTAVES <= f <= 2 ** FEEDBACK_OCTAVES
                         for f in moved.values())
    with rftpack.open(closed.path) as archive:  # each step is the plan's × its factor
        for name, factor in moved.items():
            step = archive.container(name)["stages"][1]["configuration"]["step"]
            assert step == pytest.approx(closed.manifest["codec"]["rate_control"]["step"]
                                         * factor, rel=1e-12)

    class Open(RateFeedback):  # the plan alone
        def multiplier(self, name: str) -> float:
            return 1.0

    monkeypatch.setattr(api, "RateFeedback", Open)
    open_loop = rftpack.compress(model, tmp_path / "open.rftp", profile=profile,
                                 target_bpw=bpw)
    assert "step_feedback" not in open_loop.manifest["codec"]["rate_control"]
    assert achieved(open_loop) < achieved(closed) <= bpw
    # what is left: mostly the estimate of the manifest and the containers (this model's
    # archive is ~100 KB, where MiniLM's lands 0.03 % under)
    assert achieved(closed) >= bpw * 0.99


def test_a_small_tensor_at_a_low_rate_is_not_asked_to_grow_by_more_than_a_share() -> None:
    """MiniLM's pooler under calibration: 147k weights planned at 3.6 KB, last in line, with
    9 KB free before it. Asked to spend all of it at the plan's bits per octave, it took 60 %
    more than predicted and the archive went over; now its move is bounded by its payload."""
    payload = {"big": 1_000_000.0, "pooler": 3_650.0}
    numel = {"big": 2_000_000, "pooler": 147_456}
    plan = plan_for(payload)
    feedback = RateFeedback(plan, numel)
    feedback.multiplier("big")
    feedback.wrote("big", plan.planned["big"] - 9_000)
    octaves = -np.log2(feedback.multiplier("pooler"))
    predicted_spend = octaves * numel["pooler"] * plan.bits_per_octave / 8
    assert predicted_spend == pytest.approx(FEEDBACK_SHARE * payload["pooler"])
