"""Learned residual predictor: a tiny NumPy MLP, its training, and its JSON file format.

The predictor maps per-coefficient features ``[idx / max(1, n-1), coarse logA, coarse phase,
one-hot(band)]`` to corrections ``[d logA, d phase]``. This module holds the math (forward pass,
hand-written backprop, Adam) and the reference ``rft_hybrid_residual_predictor`` JSON format
(read with checksum verification and full validation, written bit-compatibly). How features are
built and corrections applied is the pipeline's business.

    hidden layers:  h = relu(h @ W + b)        W has shape (in, out)
    output layer:   y = h @ W + b              linear, output_dim (2) values
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rftpack.errors import ChecksumError, FormatError, StageError
from rftpack.stages.base import Predictor

logger = logging.getLogger(__name__)

PREDICTOR_TYPE = "rft_hybrid_residual_predictor"
#: Newest predictor JSON version this module writes and reads (1 = reference, 2 adds output_dim).
PREDICTOR_VERSION = 2
#: Features before the one-hot band id: idx / max(1, n-1), coarse logA, coarse phase.
BASE_FEATURES = 3
DEFAULT_OUTPUT_DIM = 2
LR_SCHEDULES = ("cosine", "step", "constant")
_RESERVED_KEYS = ("type", "version", "architecture", "state", "training", "checksum_sha256")

Layers = list[tuple[np.ndarray, np.ndarray]]


class MLP:
    """A ReLU multilayer perceptron with float32 ``(W, b)`` layers, ``W`` of shape (in, out).

    All hidden layers have the same width; the last layer is linear.

    Example:
        >>> mlp = MLP.init(input_dim=6, hidden_dim=16, num_hidden_layers=2, output_dim=2, seed=0)
        >>> mlp.forward(np.zeros((5, 6))).shape
        (5, 2)
    """

    def __init__(self, layers: Layers) -> None:
        if len(layers) < 2:
            raise ValueError(f"an MLP needs at least one hidden layer, got {len(layers)} layer(s)")
        checked: Layers = []
        for i, (w, b) in enumerate(layers):
            w = np.ascontiguousarray(w, dtype=np.float32)
            b = np.ascontiguousarray(b, dtype=np.float32)
            if w.ndim != 2 or b.shape != (w.shape[1],):
                raise ValueError(f"layer {i}: W {w.shape} and b {b.shape} are not (in, out), "
                                 "(out,)")
            if checked and checked[-1][0].shape[1] != w.shape[0]:
                raise ValueError(f"layer {i}: input width {w.shape[0]} != previous output width "
                                 f"{checked[-1][0].shape[1]}")
            checked.append((w, b))
        widths = {w.shape[1] for w, _ in checked[:-1]}
        if len(widths) != 1:
            raise ValueError(f"hidden layers must share one width, got {sorted(widths)}")
        self.layers = checked

    @classmethod
    def init(cls, input_dim: int, hidden_dim: int, num_hidden_layers: int, output_dim: int,
             seed: int) -> MLP:
        """He-initialised weights (normal, std sqrt(2 / fan_in)), zero biases; deterministic.

        Example:
            >>> a = MLP.init(3, 8, 2, 2, seed=1); b = MLP.init(3, 8, 2, 2, seed=1)
            >>> all((wa == wb).all() for (wa, _), (wb, _) in zip(a.layers, b.layers))
            True
        """
        rng = np.random.default_rng(seed)
        dims = [input_dim] + [hidden_dim] * num_hidden_layers + [output_dim]
        layers = []
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            w = rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)
            layers.append((w.astype(np.float32), np.zeros(fan_out, dtype=np.float32)))
        return cls(layers)

    @property
    def input_dim(self) -> int:
        return int(self.layers[0][0].shape[0])

    @property
    def hidden_dim(self) -> int:
        return int(self.layers[0][0].shape[1])

    @property
    def num_hidden_layers(self) -> int:
        return len(self.layers) - 1

    @property
    def output_dim(self) -> int:
        return int(self.layers[-1][0].shape[1])

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Predict for a batch: float32/float64 ``(N, input_dim)`` -> float32 ``(N, output_dim)``.

        Computed in float32, like the reference implementation.

        Example:
            >>> MLP.init(4, 8, 1, 2, seed=0).forward(np.ones((3, 4))).dtype
            dtype('float32')
        """
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise StageError(f"MLP expects input of shape (N, {self.input_dim}), got {x.shape}")
        return _forward(self.layers, x.astype(np.float32, copy=False))

    def __repr__(self) -> str:
        return (f"MLP(input_dim={self.input_dim}, hidden_dim={self.hidden_dim}, "
                f"num_hidden_layers={self.num_hidden_layers}, output_dim={self.output_dim})")


def _forward(layers: Layers, x: np.ndarray) -> np.ndarray:
    h = x
    for w, b in layers[:-1]:
        h = h @ w
        h += b
        np.maximum(h, 0, out=h)
    w, b = layers[-1]
    out = h @ w
    out += b
    return out


def mse_gradients(layers: Layers, x: np.ndarray, y: np.ndarray
                  ) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
    """Mean squared error over all outputs and its gradient for every ``(W, b)``, by backprop.

    Works in the dtype of the arrays given (float64 for gradient checks, float32 in training).

    Example:
        >>> mlp = MLP.init(3, 4, 1, 2, seed=0)
        >>> loss, grads = mse_gradients(mlp.layers, np.ones((5, 3), np.float32),
        ...                             np.zeros((5, 2), np.float32))
        >>> [g[0].shape for g in grads]
        [(3, 4), (4, 2)]
    """
    acts = [x]
    pre = []
    h = x
    for w, b in layers[:-1]:
        z = h @ w + b
        pre.append(z)
        h = np.maximum(z, 0)
        acts.append(h)
    w, b = layers[-1]
    out = h @ w + b
    diff = out - y
    loss = float(np.mean(diff * diff))
    delta = diff * (2.0 / diff.size)
    grads: list[tuple[np.ndarray, np.ndarray]] = []
    for i in range(len(layers) - 1, -1, -1):
        w = layers[i][0]
        grads.append((acts[i].T @ delta, delta.sum(axis=0)))
        if i:
            delta = (delta @ w.T) * (pre[i - 1] > 0)
    grads.reverse()
    return loss, grads


def _lr_factor(schedule: str, step: int, steps: int) -> float:
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / steps))
    if schedule == "step":  # x0.1 at half way, x0.01 from three quarters on
        return 1.0 if step < steps // 2 else 0.1 if step < (3 * steps) // 4 else 0.01
    return 1.0


def _mse(pred: np.ndarray, target: np.ndarray) -> float:
    d = pred.astype(np.float64) - target
    return float(np.mean(d * d)) if d.size else 0.0


def _gain_db(zero: float, loss: float) -> float:
    if zero <= 0.0:
        return 0.0
    return 10.0 * math.log10(zero / max(loss, 1e-30))


def train_mlp(X: np.ndarray, Y: np.ndarray, *, hidden_dim: int = 32, num_hidden_layers: int = 2,
              steps: int = 2000, batch_size: int = 512, lr: float = 3e-3, seed: int = 0,
              validation_fraction: float = 0.2, lr_schedule: str = "cosine",
              eval_every: int = 100) -> tuple[MLP, dict[str, Any]]:
    """Train an MLP to predict ``Y`` from ``X`` (MSE, Adam, float32, seeded minibatches).

    A random seeded ``validation_fraction`` of the rows is held out; the weights with the lowest
    validation loss (checked every ``eval_every`` steps and at the end) are returned. Inputs and
    targets are standardised for training and the scaling is folded back into the first and last
    layers, so the returned MLP works on raw features. If no checkpoint beats predicting zero on
    the validation set, the returned MLP predicts exactly zero (``gain_db`` 0): a predictor never
    claims a gain it does not have. Same inputs and seed give bit-identical weights.

    Stats: ``train_loss``/``val_loss`` (MSE of the returned MLP), ``val_loss_zero`` (MSE of
    predicting zero), ``gain_db`` = 10 log10(val_loss_zero / val_loss), ``samples``, ``steps``,
    ``val_samples``, ``best_step`` (-1 when the zero predictor was kept).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.uniform(-1, 1, (2000, 1)); Y = np.hstack([np.sin(3 * X), X ** 2])
        >>> mlp, stats = train_mlp(X, Y, steps=300)
        >>> stats["gain_db"] > 10
        True
    """
    X = np.asarray(X)
    Y = np.asarray(Y)
    _check_training_args(X, Y, hidden_dim, num_hidden_layers, steps, batch_size, lr, seed,
                         validation_fraction, lr_schedule, eval_every)
    n = X.shape[0]
    n_val = min(n - 1, max(1, round(n * validation_fraction))) if validation_fraction > 0 else 0
    order = np.random.default_rng([seed, 1]).permutation(n)
    train_idx, val_idx = np.sort(order[n_val:]), np.sort(order[:n_val])
    if n_val == 0:  # no held-out set: select and report on the training rows
        val_idx = train_idx
    x64, y64 = X.astype(np.float64), Y.astype(np.float64)

    # Standardise with training statistics; fold back into the weights at the end.
    x_mu, x_sd = x64[train_idx].mean(axis=0), x64[train_idx].std(axis=0)
    y_mu, y_sd = y64[train_idx].mean(axis=0), y64[train_idx].std(axis=0)
    x_sd[x_sd < 1e-12] = 1.0
    y_sd[y_sd < 1e-12] = 1.0
    xs = ((x64 - x_mu) / x_sd).astype(np.float32)
    ys = ((y64 - y_mu) / y_sd).astype(np.float32)
    xt, yt, xv, yv_raw = xs[train_idx], ys[train_idx], xs[val_idx], y64[val_idx]

    # All parameters (and gradients) live in one flat float32 buffer: Adam is five array ops.
    init = MLP.init(X.shape[1], hidden_dim, num_hidden_layers, Y.shape[1], seed)
    theta, layers = _flat_layers(init.layers)
    grad, glayers = _flat_layers(init.layers, zero=True)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    beta1, beta2, eps = 0.9, 0.999, 1e-8

    def val_loss_now() -> float:
        return _mse(_forward(layers, xv) * y_sd + y_mu, yv_raw)

    val_loss_zero = _mse(np.zeros_like(yv_raw), yv_raw)
    best_loss, best_step, best_theta = val_loss_now(), 0, theta.copy()
    batch = min(batch_size, xt.shape[0])
    rng = np.random.default_rng([seed, 2])
    perm, pos = rng.permutation(xt.shape[0]), 0
    for step in range(1, steps + 1):
        if pos + batch > perm.size:
            perm, pos = rng.permutation(xt.shape[0]), 0
        idx = perm[pos:pos + batch]
        pos += batch
        _, grads = mse_gradients(layers, xt[idx], yt[idx])
        for (gw, gb), (dw, db) in zip(glayers, grads, strict=True):
            gw[...] = dw
            gb[...] = db
        step_lr = lr * _lr_factor(lr_schedule, step - 1, steps)
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * (grad * grad)
        corr = step_lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
        theta -= np.float32(corr) * m / (np.sqrt(v) + np.float32(eps))
        if step % eval_every == 0 or step == steps:
            loss = val_loss_now()
            if loss < best_loss:
                best_loss, best_step, best_theta = loss, step, theta.copy()
    theta[...] = best_theta

    mlp = MLP(_fold_standardisation(layers, x_mu, x_sd, y_mu, y_sd))
    val_loss = _mse(mlp.forward(X[val_idx]), yv_raw)
    if not val_loss < val_loss_zero:
        logger.info("residual predictor: no training checkpoint beat predicting zero on the "
                    "held-out samples, so it predicts zero (gain 0 dB)")
        last_w, last_b = mlp.layers[-1]
        mlp = MLP(mlp.layers[:-1] + [(np.zeros_like(last_w), np.zeros_like(last_b))])
        val_loss, best_step = val_loss_zero, -1
    stats = {
        "train_loss": _mse(mlp.forward(X[train_idx]), y64[train_idx]),
        "val_loss": val_loss,
        "val_loss_zero": val_loss_zero,
        "gain_db": _gain_db(val_loss_zero, val_loss),
        "samples": int(n),
        "val_samples": int(n_val),
        "steps": int(steps),
        "best_step": int(best_step),
    }
    logger.debug("trained MLP residual predictor: %s", stats)
    return mlp, stats


def _check_training_args(X: np.ndarray, Y: np.ndarray, hidden_dim: int, num_hidden_layers: int,
                         steps: int, batch_size: int, lr: float, seed: int,
                         validation_fraction: float, lr_schedule: str, eval_every: int) -> None:
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise StageError(f"train_mlp needs X (N, d) and Y (N, k) with the same N, "
                         f"got {X.shape} and {Y.shape}")
    if X.shape[0] < 2 or X.shape[1] < 1 or Y.shape[1] < 1:
        raise StageError(f"train_mlp needs at least 2 samples and 1 input/output, got X {X.shape}, "
                         f"Y {Y.shape}")
    for name, arr in (("X", X), ("Y", Y)):
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise StageError(f"train_mlp: {name} must be real numbers, got dtype {arr.dtype}")
        if not np.isfinite(arr).all():
            raise StageError(f"train_mlp: {name} contains NaN or infinite values")
    for name, value, low in (("hidden_dim", hidden_dim, 1), ("num_hidden_layers",
                             num_hidden_layers, 1), ("steps", steps, 1),
                             ("batch_size", batch_size, 1), ("seed", seed, 0),
                             ("eval_every", eval_every, 1)):
        if not _is_int(value) or value < low:
            raise StageError(f"train_mlp: {name} must be an integer >= {low}, got {value!r}")
    if not _is_real(lr) or not (0 < lr < math.inf):
        raise StageError(f"train_mlp: lr must be a positive finite number, got {lr!r}")
    if not _is_real(validation_fraction) or not 0 <= validation_fraction < 1:
        raise StageError(f"train_mlp: validation_fraction must be in [0, 1), "
                         f"got {validation_fraction!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise StageError(f"train_mlp: lr_schedule must be one of {LR_SCHEDULES}, "
                         f"got {lr_schedule!r}")


def _flat_layers(layers: Layers, zero: bool = False) -> tuple[np.ndarray, Layers]:
    """One contiguous float32 buffer and (W, b) views into it, filled from ``layers``."""
    total = sum(w.size + b.size for w, b in layers)
    flat = np.zeros(total, dtype=np.float32)
    views: Layers = []
    pos = 0
    for w, b in layers:
        wv = flat[pos:pos + w.size].reshape(w.shape)
        pos += w.size
        bv = flat[pos:pos + b.size]
        pos += b.size
        if not zero:
            wv[...] = w
            bv[...] = b
        views.append((wv, bv))
    return flat, views


def _fold_standardisation(layers: Layers, x_mu: np.ndarray, x_sd: np.ndarray, y_mu: np.ndarray,
                          y_sd: np.ndarray) -> Layers:
    """Weights for raw x and y from weights trained on (x - x_mu) / x_sd -> (y - y_mu) / y_sd."""
    out = [(w.astype(np.float64), b.astype(np.float64)) for w, b in layers]
    w0, b0 = out[0]
    out[0] = (w0 / x_sd[:, None], b0 - (x_mu / x_sd) @ w0)
    wl, bl = out[-1]
    out[-1] = (wl * y_sd[None, :], bl * y_sd + y_mu)
    return [(w.astype(np.float32), b.astype(np.float32)) for w, b in out]


# ---------------------------------------------------------------------------------------------
# Predictor JSON


def predictor_checksum(obj: dict[str, Any]) -> str:
    """SHA-256 of ``json.dumps(obj without checksum_sha256, sort_keys=True)`` (reference rule).

    Example:
        >>> predictor_checksum({"a": 1, "checksum_sha256": "x"})[:12]
        'f9d86028c6e0'
    """
    body = {k: v for k, v in obj.items() if k != "checksum_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def predictor_to_json(mlp: MLP, *, bands: int, training: dict[str, Any], version: int = 2,
                      extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``rft_hybrid_residual_predictor`` JSON object of ``mlp``, checksum included.

    Version 1 (the reference format) has no ``output_dim`` and so requires ``output_dim == 2``.

    Example:
        >>> mlp = MLP.init(6, 16, 2, 2, seed=0)
        >>> obj = predictor_to_json(mlp, bands=3, training={"samples": 10})
        >>> predictor_from_json(obj)[1]["hidden_dim"]
        16
    """
    if not _is_int(bands) or bands < 1 or mlp.input_dim != bands + BASE_FEATURES:
        raise FormatError(f"predictor: bands {bands!r} does not fit input_dim {mlp.input_dim} "
                          f"(expected input_dim == bands + {BASE_FEATURES})")
    if version not in (1, PREDICTOR_VERSION) or not _is_int(version):
        raise FormatError(f"predictor: cannot write version {version!r}; known: 1, 2")
    if version == 1 and mlp.output_dim != DEFAULT_OUTPUT_DIM:
        raise FormatError(f"predictor: version 1 has no output_dim and means 2, got "
                          f"{mlp.output_dim}; write version 2")
    architecture: dict[str, Any] = {
        "input_dim": mlp.input_dim,
        "hidden_dim": mlp.hidden_dim,
        "num_hidden_layers": mlp.num_hidden_layers,
        "bands": int(bands),
        "use_fourier_features": False,
        "fourier_features": 0,
        "activation": "relu",
    }
    if version >= 2:
        architecture["output_dim"] = mlp.output_dim
    state: dict[str, Any] = {}
    for i, (w, b) in enumerate(mlp.layers):
        state[f"W{i}"] = _encode_array(w)
        state[f"b{i}"] = _encode_array(b)
    obj: dict[str, Any] = {"type": PREDICTOR_TYPE, "version": int(version),
                           "architecture": architecture, "state": state,
                           "training": _json_clean(training, "training")}
    for key, value in (extra or {}).items():
        if key in _RESERVED_KEYS:
            raise FormatError(f"predictor: extra key {key!r} collides with a format key")
        obj[key] = _json_clean(value, key)
    try:
        json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"predictor: training/extra must hold finite JSON values: {exc}") from exc
    obj["checksum_sha256"] = predictor_checksum(obj)
    return obj


def predictor_from_json(obj: Any, *, source: str = "predictor") -> tuple[MLP, dict[str, Any]]:
    """Verify the checksum, validate and load a predictor JSON object (version 1 or 2).

    Returns the MLP and its architecture (``output_dim`` filled in). Raises ``ChecksumError``
    when the checksum is missing or wrong and ``FormatError`` on any structural problem; both
    messages name ``source``.

    Example:
        >>> obj = predictor_to_json(MLP.init(5, 4, 1, 2, seed=0), bands=2, training={})
        >>> mlp, arch = predictor_from_json(obj, source="model.rft/predictor.json")
        >>> arch["output_dim"], mlp.forward(np.zeros((1, 5))).shape
        (2, (1, 2))
    """
    if not isinstance(obj, dict):
        raise FormatError(f"{source}: predictor must be a JSON object, got {type(obj).__name__}")
    stored = obj.get("checksum_sha256")
    if not isinstance(stored, str):
        raise ChecksumError(f"{source}: predictor has no checksum_sha256; refusing to load "
                            f"unverified weights")
    try:
        computed = predictor_checksum(obj)
    except (TypeError, ValueError, RecursionError) as exc:
        raise FormatError(f"{source}: predictor is not plain JSON: {exc}") from exc
    if stored != computed:
        raise ChecksumError(f"{source}: predictor checksum mismatch (stored {stored[:16]}..., "
                            f"computed {computed[:16]}...); the file is corrupted or was edited")

    if obj.get("type") != PREDICTOR_TYPE:
        raise FormatError(f"{source}: type is {obj.get('type')!r}, expected {PREDICTOR_TYPE!r}")
    version = obj.get("version")
    if not _is_int(version) or version < 1:
        raise FormatError(f"{source}: version must be a positive integer, got {version!r}")
    if version > PREDICTOR_VERSION:
        raise FormatError(f"{source}: predictor version {version} is newer than this rftpack "
                          f"supports ({PREDICTOR_VERSION}); upgrade rftpack")
    if "training" in obj and not isinstance(obj["training"], dict):
        raise FormatError(f"{source}: training must be an object, got "
                          f"{type(obj['training']).__name__}")
    arch = _check_architecture(obj.get("architecture"), source)
    layers = _decode_state(obj.get("state"), arch, source)
    return MLP(layers), arch


def _check_architecture(arch: Any, source: str) -> dict[str, Any]:
    if not isinstance(arch, dict):
        raise FormatError(f"{source}: architecture must be an object, got {type(arch).__name__}")
    out = dict(arch)
    out.setdefault("output_dim", DEFAULT_OUTPUT_DIM)
    out.setdefault("use_fourier_features", False)
    out.setdefault("fourier_features", 0)
    out.setdefault("activation", "relu")
    for key in ("input_dim", "hidden_dim", "num_hidden_layers", "bands", "output_dim"):
        if key not in out:
            raise FormatError(f"{source}: architecture.{key} is missing")
        if not _is_int(out[key]) or out[key] < 1:
            raise FormatError(f"{source}: architecture.{key} must be a positive integer, "
                              f"got {out[key]!r}")
    if out["use_fourier_features"] is not False or out["fourier_features"] != 0 \
            or not _is_int(out["fourier_features"]):
        raise FormatError(f"{source}: Fourier features are not supported (use_fourier_features "
                          f"{out['use_fourier_features']!r}, fourier_features "
                          f"{out['fourier_features']!r})")
    if out["activation"] != "relu":
        raise FormatError(f"{source}: activation {out['activation']!r} is not supported "
                          f"(only 'relu')")
    if out["input_dim"] != out["bands"] + BASE_FEATURES:
        raise FormatError(f"{source}: architecture.input_dim {out['input_dim']} != bands "
                          f"{out['bands']} + {BASE_FEATURES}")
    return out


def _decode_state(state: Any, arch: dict[str, Any], source: str) -> Layers:
    if not isinstance(state, dict):
        raise FormatError(f"{source}: state must be an object, got {type(state).__name__}")
    nh = arch["num_hidden_layers"]
    dims = [arch["input_dim"]] + [arch["hidden_dim"]] * nh + [arch["output_dim"]]
    expected = {}
    for i in range(nh + 1):
        expected[f"W{i}"] = [dims[i], dims[i + 1]]
        expected[f"b{i}"] = [dims[i + 1]]
    missing = [k for k in expected if k not in state]
    if missing:
        raise FormatError(f"{source}: state is missing {', '.join(missing)} (num_hidden_layers "
                          f"{nh} needs W0..b{nh})")
    unexpected = sorted(str(k) for k in state if k not in expected)
    if unexpected:
        raise FormatError(f"{source}: state has unexpected entries {unexpected}")
    arrays = {key: _decode_array(state[key], shape, f"{source}: state.{key}")
              for key, shape in expected.items()}
    return [(arrays[f"W{i}"], arrays[f"b{i}"]) for i in range(nh + 1)]


def _decode_array(entry: Any, expected_shape: list[int], where: str) -> np.ndarray:
    if not isinstance(entry, dict) or "shape" not in entry or "data" not in entry:
        raise FormatError(f"{where} must be an object with 'shape' and 'data'")
    shape = entry["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
        raise FormatError(f"{where}.shape must be a list of integers, got {shape!r}")
    if shape != expected_shape:
        raise FormatError(f"{where}.shape is {shape}, architecture implies {expected_shape}")
    data = entry["data"]
    if not isinstance(data, str):
        raise FormatError(f"{where}.data must be a base64 string, got {type(data).__name__}")
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise FormatError(f"{where}.data is not valid base64: {exc}") from exc
    count = math.prod(shape)
    if len(raw) != 4 * count:
        raise FormatError(f"{where}.data holds {len(raw)} bytes, shape {shape} needs "
                          f"{4 * count} (float32)")
    arr = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
    if not np.isfinite(arr).all():
        raise FormatError(f"{where} contains NaN or infinite weights")
    return arr


def _encode_array(arr: np.ndarray) -> dict[str, Any]:
    data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
    return {"shape": [int(d) for d in arr.shape], "data": base64.b64encode(data).decode("ascii")}


def _json_clean(value: Any, where: str) -> Any:
    """Copy of ``value`` with numpy scalars/arrays turned into plain JSON values."""
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise FormatError(f"predictor: {where} has non-string keys")
        return {k: _json_clean(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_clean(v, where) for v in value]
    if isinstance(value, np.ndarray):
        return _json_clean(value.tolist(), where)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) \
        and not isinstance(value, (bool, np.bool_))


# ---------------------------------------------------------------------------------------------
# Stage


@dataclass(frozen=True)
class MLPPredictor(Predictor):
    """Tiny NumPy MLP that predicts the residual of coarse log-amplitude and phase.

    Example:
        >>> stage = MLPPredictor(hidden_dim=16, steps=200)
        >>> stage.to_config()["configuration"]["hidden_dim"]
        16
    """

    id: ClassVar[str] = "mlp"

    hidden_dim: int = 32
    num_hidden_layers: int = 2
    steps: int = 2000
    batch_size: int = 512
    learning_rate: float = 3e-3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "num_hidden_layers", "steps", "batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise StageError(f"stage 'mlp': {name} must be a positive integer, got {value!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise StageError(f"stage 'mlp': seed must be a non-negative integer, got {self.seed!r}")
        lr = self.learning_rate
        if not _is_real(lr) or not 0 < lr < math.inf:
            raise StageError(f"stage 'mlp': learning_rate must be a positive finite number, "
                             f"got {lr!r}")

    def fit(self, X: np.ndarray, Y: np.ndarray) -> tuple[MLP, dict[str, Any]]:
        """Train on features ``X`` (N, 3 + bands) and corrections ``Y`` (N, 2); see train_mlp.

        Example:
            >>> X = np.random.default_rng(0).uniform(-1, 1, (500, 5))
            >>> mlp, stats = MLPPredictor(steps=50).fit(X, np.sin(X[:, :2]))
            >>> stats["steps"]
            50
        """
        return train_mlp(X, Y, hidden_dim=self.hidden_dim, num_hidden_layers=self.num_hidden_layers,
                         steps=self.steps, batch_size=self.batch_size, lr=self.learning_rate,
                         seed=self.seed)
