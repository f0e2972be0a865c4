"""Tests of the NumPy MLP residual predictor: math, training, and the predictor JSON format."""

from __future__ import annotations

import base64
import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rftpack.errors import ChecksumError, FormatError, StageError
from rftpack.stages.mlp import (
    MLP,
    MLPPredictor,
    mse_gradients,
    predictor_checksum,
    predictor_from_json,
    predictor_to_json,
    train_mlp,
)

FIXTURE = Path("/work/shared/fixtures/reference_small/predictors/global_residual_predictor.json")


def resign(obj: dict) -> dict:
    """Recompute the checksum so only structural validation can reject ``obj``."""
    obj = dict(obj)
    obj["checksum_sha256"] = predictor_checksum(obj)
    return obj


def small_predictor(seed: int = 0) -> dict:
    mlp = MLP.init(input_dim=5, hidden_dim=4, num_hidden_layers=2, output_dim=2, seed=seed)
    return predictor_to_json(mlp, bands=2, training={"loss": 0.5, "samples": 10})


def same_weights(a: MLP, b: MLP) -> bool:
    return len(a.layers) == len(b.layers) and all(
        wa.dtype == wb.dtype and wa.tobytes() == wb.tobytes() and ba.tobytes() == bb.tobytes()
        for (wa, ba), (wb, bb) in zip(a.layers, b.layers, strict=True))


# --- MLP math -----------------------------------------------------------------------------------


def test_init_shapes_and_determinism():
    mlp = MLP.init(6, 16, 2, 2, seed=3)
    assert [w.shape for w, _ in mlp.layers] == [(6, 16), (16, 16), (16, 2)]
    assert all(w.dtype == np.float32 and b.dtype == np.float32 for w, b in mlp.layers)
    assert all((b == 0).all() for _, b in mlp.layers)
    assert same_weights(mlp, MLP.init(6, 16, 2, 2, seed=3))
    assert not same_weights(mlp, MLP.init(6, 16, 2, 2, seed=4))
    assert (mlp.input_dim, mlp.hidden_dim, mlp.num_hidden_layers, mlp.output_dim) == (6, 16, 2, 2)


def test_forward_shape_and_relu():
    eye = np.eye(2, dtype=np.float32)
    zero = np.zeros(2, dtype=np.float32)
    mlp = MLP([(eye, zero), (eye, zero), (2 * eye, np.array([1.0, -1.0]))])
    out = mlp.forward(np.array([[-1.0, 2.0], [3.0, -4.0]]))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1.0, 3.0], [7.0, -1.0]])
    rand = MLP.init(7, 8, 3, 2, seed=0)
    assert rand.forward(np.zeros((11, 7), dtype=np.float32)).shape == (11, 2)
    with pytest.raises(StageError, match="shape"):
        rand.forward(np.zeros((3, 6)))


def test_forward_matches_explicit_formula():
    mlp = MLP.init(4, 8, 2, 2, seed=1)
    x = np.random.default_rng(0).normal(size=(9, 4)).astype(np.float32)
    h = x
    for w, b in mlp.layers[:-1]:
        h = np.maximum(h @ w + b, 0)
    expected = h @ mlp.layers[-1][0] + mlp.layers[-1][1]
    np.testing.assert_allclose(mlp.forward(x), expected, rtol=1e-6, atol=1e-6)


def test_mlp_rejects_inconsistent_layers():
    with pytest.raises(ValueError):
        MLP([(np.zeros((3, 4)), np.zeros(4)), (np.zeros((5, 2)), np.zeros(2))])
    with pytest.raises(ValueError):
        MLP([(np.zeros((3, 4)), np.zeros(4))])


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    layers = [(rng.normal(size=(3, 5)), rng.normal(size=5)),
              (rng.normal(size=(5, 5)), rng.normal(size=5)),
              (rng.normal(size=(5, 2)), rng.normal(size=2))]
    x = rng.normal(size=(7, 3))
    y = rng.normal(size=(7, 2))
    loss, grads = mse_gradients(layers, x, y)
    assert loss == pytest.approx(np.mean((forward64(layers, x) - y) ** 2))
    eps = 1e-6
    for (w, b), (gw, gb) in zip(layers, grads, strict=True):
        for param, grad in ((w, gw), (b, gb)):
            assert grad.shape == param.shape
            numeric = np.zeros_like(param)
            for i in np.ndindex(param.shape):
                old = param[i]
                param[i] = old + eps
                up = mse_gradients(layers, x, y)[0]
                param[i] = old - eps
                down = mse_gradients(layers, x, y)[0]
                param[i] = old
                numeric[i] = (up - down) / (2 * eps)
            np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)


def forward64(layers, x):
    """Plain float64 forward pass, the reference for the gradient check."""
    h = x
    for w, b in layers[:-1]:
        h = np.maximum(h @ w + b, 0)
    return h @ layers[-1][0] + layers[-1][1]


# --- training -----------------------------------------------------------------------------------


def sine_data(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 2))
    y = np.column_stack([np.sin(3 * x[:, 0]), x[:, 0] * x[:, 1]])
    return x, y


def test_training_learns_nonlinear_function():
    x, y = sine_data()
    mlp, stats = train_mlp(x, y, steps=1500, batch_size=256, lr=1e-2)
    assert stats["gain_db"] > 10, stats
    assert set(stats) >= {"train_loss", "val_loss", "val_loss_zero", "gain_db", "samples", "steps"}
    assert stats["samples"] == 4000 and stats["steps"] == 1500
    assert stats["gain_db"] == pytest.approx(10 * math.log10(stats["val_loss_zero"]
                                                             / stats["val_loss"]))
    # The returned MLP works on raw features (normalisation folded in) and reproduces val_loss.
    x_test, y_test = sine_data(1000, seed=1)
    test_loss = float(np.mean((mlp.forward(x_test) - y_test) ** 2))
    assert 10 * math.log10(np.mean(y_test ** 2) / test_loss) > 10


def test_training_does_not_claim_gain_on_noise():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 4))
    y = rng.normal(size=(3000, 2))
    mlp, stats = train_mlp(x, y, steps=800, batch_size=128)
    assert stats["gain_db"] <= 0.5, stats
    val_loss_returned = stats["val_loss"]
    assert val_loss_returned <= stats["val_loss_zero"]
    if stats["best_step"] == -1:  # fell back to the zero predictor: it must predict zero
        assert not mlp.forward(x).any()


def test_training_is_deterministic():
    x, y = sine_data(1500)
    a, sa = train_mlp(x, y, steps=300, seed=7)
    b, sb = train_mlp(x.copy(), y.copy(), steps=300, seed=7)
    c, _ = train_mlp(x, y, steps=300, seed=8)
    assert same_weights(a, b) and sa == sb
    assert not same_weights(a, c)


@pytest.mark.parametrize("schedule", ["cosine", "step", "constant"])
def test_lr_schedules_and_tiny_inputs(schedule):
    x, y = sine_data(50)
    mlp, stats = train_mlp(x, y, steps=30, batch_size=512, lr_schedule=schedule)
    assert stats["val_samples"] == 10 and np.isfinite(mlp.forward(x)).all()
    _, stats0 = train_mlp(x, y, steps=30, validation_fraction=0.0, lr_schedule=schedule)
    assert stats0["val_samples"] == 0


@pytest.mark.parametrize("kwargs", [
    {"X": np.zeros((10, 3)), "Y": np.zeros((9, 2))},
    {"X": np.zeros(10), "Y": np.zeros((10, 2))},
    {"X": np.full((10, 3), np.nan), "Y": np.zeros((10, 2))},
    {"steps": 0}, {"hidden_dim": 2.5}, {"lr": -1.0}, {"validation_fraction": 1.0},
    {"lr_schedule": "linear"}, {"seed": -1}, {"batch_size": True},
])
def test_training_rejects_bad_arguments(kwargs):
    args = {"X": np.zeros((10, 3)), "Y": np.zeros((10, 2))}
    args.update(kwargs)
    X, Y = args.pop("X"), args.pop("Y")
    with pytest.raises(StageError):
        train_mlp(X, Y, **args)


# --- predictor JSON -----------------------------------------------------------------------------


def test_json_round_trip_exact():
    x, y = sine_data(600)
    x = np.column_stack([x, np.eye(3)[np.arange(600) % 3]])[:, :5]  # 3 base + 2 one-hot columns
    mlp, stats = train_mlp(x, y, steps=50)
    obj = predictor_to_json(mlp, bands=2, training=stats, extra={"note": "test"})
    assert obj["type"] == "rft_hybrid_residual_predictor" and obj["version"] == 2
    assert obj["architecture"] == {"input_dim": 5, "hidden_dim": 32, "num_hidden_layers": 2,
                                   "bands": 2, "use_fourier_features": False,
                                   "fourier_features": 0, "activation": "relu", "output_dim": 2}
    assert sorted(obj["state"]) == ["W0", "W1", "W2", "b0", "b1", "b2"]
    assert obj["note"] == "test"
    loaded = json.loads(json.dumps(obj))
    back, arch = predictor_from_json(loaded, source="p.json")
    assert same_weights(back, mlp)
    assert arch == obj["architecture"]
    assert predictor_to_json(back, bands=2, training=stats, extra={"note": "test"}) == obj


def test_version_1_written_like_the_reference():
    obj = predictor_to_json(MLP.init(4, 3, 1, 2, seed=0), bands=1, training={}, version=1)
    assert obj["version"] == 1 and "output_dim" not in obj["architecture"]
    assert predictor_from_json(obj)[1]["output_dim"] == 2
    with pytest.raises(FormatError, match="version 1"):
        predictor_to_json(MLP.init(4, 3, 1, 3, seed=0), bands=1, training={}, version=1)
    with pytest.raises(FormatError, match="bands"):
        predictor_to_json(MLP.init(4, 3, 1, 2, seed=0), bands=2, training={})
    with pytest.raises(FormatError, match="collides"):
        predictor_to_json(MLP.init(4, 3, 1, 2, seed=0), bands=1, training={},
                          extra={"state": 1})
    with pytest.raises(FormatError, match="finite"):
        predictor_to_json(MLP.init(4, 3, 1, 2, seed=0), bands=1, training={"loss": math.nan})


def test_weights_are_little_endian_float32_base64():
    obj = small_predictor()
    mlp, _ = predictor_from_json(obj)
    raw = base64.b64decode(obj["state"]["W1"]["data"])
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4").reshape(4, 4), mlp.layers[1][0])


@pytest.fixture
def reference() -> dict:
    if not FIXTURE.exists():
        pytest.skip(f"reference fixture {FIXTURE} not available")
    return json.loads(FIXTURE.read_text())


def test_reference_v1_fixture_loads(reference):
    mlp, arch = predictor_from_json(reference, source=str(FIXTURE))
    assert (arch["input_dim"], arch["hidden_dim"], arch["num_hidden_layers"], arch["bands"]) \
        == (6, 16, 2, 3)
    assert arch["output_dim"] == 2 and reference["version"] == 1
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.uniform(0, 1, 8), rng.normal(-3, 1, 8), rng.uniform(-3, 3, 8),
                         np.eye(3)[np.arange(8) % 3]])
    out = mlp.forward(x)
    assert out.shape == (8, 2) and np.isfinite(out).all()
    # Writing it back as version 1 reproduces the reference file, checksum included.
    assert predictor_to_json(mlp, bands=3, training=reference["training"], version=1) == reference


def test_reference_tampering_raises_checksum_error(reference):
    weight = copy.deepcopy(reference)
    data = weight["state"]["W1"]["data"]
    weight["state"]["W1"]["data"] = ("B" if data[0] != "B" else "C") + data[1:]
    with pytest.raises(ChecksumError, match="reference.json"):
        predictor_from_json(weight, source="reference.json")

    number = copy.deepcopy(reference)
    number["training"]["loss"] += 1e-9
    with pytest.raises(ChecksumError, match="mismatch"):
        predictor_from_json(number)

    missing = {k: v for k, v in reference.items() if k != "checksum_sha256"}
    with pytest.raises(ChecksumError, match="no checksum"):
        predictor_from_json(missing, source="x")


def _nan_weight(obj):
    arr = np.frombuffer(base64.b64decode(obj["state"]["b1"]["data"]), "<f4").copy()
    arr[1] = np.nan
    obj["state"]["b1"]["data"] = base64.b64encode(arr.astype("<f4").tobytes()).decode()


@pytest.mark.parametrize("mutate, message", [
    (lambda o: o["state"].pop("W1"), "missing W1"),
    (lambda o: o["state"]["W1"].update(shape=[4, 5]), r"shape is \[4, 5\]"),
    (lambda o: o["state"]["W0"].update(shape=[5, "4"]), "list of integers"),
    (lambda o: o["state"]["W1"].update(data="not base64!"), "not valid base64"),
    (lambda o: o["state"]["W1"].update(data=o["state"]["W1"]["data"][:-8]), "bytes"),
    (lambda o: o["state"]["b0"].update(data=7), "base64 string"),
    (lambda o: o["state"].update(W9={"shape": [1], "data": ""}), "unexpected"),
    (_nan_weight, "NaN"),
    (lambda o: o.update(type="something_else"), "type"),
    (lambda o: o.update(version=3), "newer"),
    (lambda o: o.update(version="2"), "version"),
    (lambda o: o.update(training=[1, 2]), "training"),
    (lambda o: o.pop("architecture"), "architecture"),
    (lambda o: o.update(state=[]), "state"),
    (lambda o: o["architecture"].update(hidden_dim=4.0), "hidden_dim"),
    (lambda o: o["architecture"].update(num_hidden_layers=True), "num_hidden_layers"),
    (lambda o: o["architecture"].update(num_hidden_layers=1), "unexpected"),
    (lambda o: o["architecture"].update(num_hidden_layers=3), "missing W3"),
    (lambda o: o["architecture"].pop("input_dim"), "input_dim is missing"),
    (lambda o: o["architecture"].update(bands=3), "bands"),
    (lambda o: o["architecture"].update(output_dim=3), "shape"),
    (lambda o: o["architecture"].update(activation="tanh"), "activation"),
    (lambda o: o["architecture"].update(use_fourier_features=True), "Fourier"),
])
def test_malformed_predictors_raise_format_error(mutate, message):
    obj = copy.deepcopy(small_predictor())
    mutate(obj)
    with pytest.raises(FormatError, match=message) as info:
        predictor_from_json(resign(obj), source="p.json")
    assert type(info.value) is FormatError  # the checksum passed; the structure is at fault
    assert "p.json" in str(info.value) and "\n" not in str(info.value)


def test_non_object_predictor():
    for bad in ([], "x", None, 3):
        with pytest.raises(FormatError):
            predictor_from_json(bad)


# --- hypothesis: arbitrary re-signed mutations are FormatError or fine --------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10 ** 12) | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


BASE = small_predictor()
PATHS = [p for p in _paths(BASE) if p and p != ("checksum_sha256",)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), action=st.sampled_from(["replace", "delete", "tweak"]),
       value=json_values, position=st.integers(0, 10 ** 6), delta=st.integers(-3, 3),
       char=st.characters(codec="ascii"))
def test_mutated_predictor_only_raises_format_error(path, action, value, position, delta, char):
    obj = copy.deepcopy(BASE)
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    current = parent[key]
    if action == "delete":
        if isinstance(parent, dict):
            del parent[key]
        else:
            parent.pop(key)
    elif action == "tweak" and isinstance(current, str) and current:
        i = position % len(current)
        parent[key] = current[:i] + char + current[i + 1:]
    elif action == "tweak" and isinstance(current, int) and not isinstance(current, bool):
        parent[key] = current + delta
    else:
        parent[key] = value
    try:
        mlp, arch = predictor_from_json(resign(obj), source="fuzz")
    except ChecksumError:
        pytest.fail("a re-signed predictor must never fail its checksum")
    except FormatError as exc:
        assert "fuzz" in str(exc)
    else:
        assert isinstance(mlp, MLP) and mlp.input_dim == arch["input_dim"]


# --- stage --------------------------------------------------------------------------------------


def test_stage_config_round_trip_and_fit():
    stage = MLPPredictor(hidden_dim=8, steps=40, learning_rate=1e-2, seed=2)
    config = stage.to_config()
    assert config == {"name": "mlp", "configuration": {
        "hidden_dim": 8, "num_hidden_layers": 2, "steps": 40, "batch_size": 512,
        "learning_rate": 1e-2, "seed": 2}}
    assert MLPPredictor.from_config(json.loads(json.dumps(config))) == stage
    assert MLPPredictor.kind == "predictor" and MLPPredictor.id == "mlp"
    assert MLPPredictor.describe() == ("Tiny NumPy MLP that predicts the residual of coarse "
                                       "log-amplitude and phase.")
    x, y = sine_data(500)
    mlp, stats = stage.fit(x, y)
    expected, _ = train_mlp(x, y, hidden_dim=8, steps=40, lr=1e-2, seed=2)
    assert same_weights(mlp, expected) and stats["steps"] == 40


@pytest.mark.parametrize("params", [
    {"hidden_dim": 0}, {"num_hidden_layers": -1}, {"steps": 1.5}, {"batch_size": "512"},
    {"learning_rate": 0.0}, {"learning_rate": math.inf}, {"learning_rate": True}, {"seed": -3},
    {"hidden_dim": True},
])
def test_stage_rejects_bad_fields(params):
    with pytest.raises(StageError):
        MLPPredictor(**params)
    with pytest.raises(StageError):
        MLPPredictor.from_config({"name": "mlp", "configuration": params})
