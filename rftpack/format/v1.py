"""Reading the reference implementation's version-1 containers (see SPEC-NOTES §2).

All n complex coefficients of the Φ-phase FFT, base64 uint32 indices, uint16 codes,
``amp_scale`` = [min, max] of ln|c|, phase on 2**bits − 1 levels over [−π, π].
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import numpy as np

from rftpack.errors import FormatError
from rftpack.stages.polar import wrap_phase
from rftpack.stages.rft import inverse_full

MAX_V1_NUMEL = 1 << 31


def _b64_array(payload: dict[str, Any], key: str, dtype: str, source: str) -> np.ndarray:
    text = payload.get(key)
    if not isinstance(text, str):
        raise FormatError(f"{source}: payload.{key} must be a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"{source}: payload.{key} is not valid base64 ({exc})") from exc
    itemsize = np.dtype(dtype).itemsize
    if len(raw) % itemsize:
        raise FormatError(f"{source}: payload.{key} length {len(raw)} is not a multiple of "
                          f"{itemsize}")
    return np.frombuffer(raw, dtype=dtype)


def _dequant(codes: np.ndarray, bits: int, lo: float, hi: float) -> np.ndarray:
    levels = (1 << bits) - 1
    if hi <= lo:
        return np.full(codes.shape, lo, np.float64)
    return codes.astype(np.float64) / levels * (hi - lo) + lo


def _scale(payload: dict[str, Any], key: str, source: str) -> tuple[float, float]:
    value = payload.get(key)
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int | float) and math.isfinite(v) for v in value)):
        raise FormatError(f"{source}: payload.{key} must be two finite numbers")
    return float(value[0]), float(value[1])


def v1_coarse(container: dict[str, Any], source: str) -> dict[str, Any]:
    """Parse a v1 container into numpy arrays: indices, log_amp, phase, n, bands, shape."""
    shape = container.get("original_shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise FormatError(f"{source}: original_shape must be a list of non-negative integers")
    n = math.prod(shape)
    if n > MAX_V1_NUMEL:
        raise FormatError(f"{source}: {n} elements is more than a v1 container can hold")
    codec = container.get("codec") or {}
    amp_bits, phase_bits = codec.get("quant_amp_bits"), codec.get("quant_phase_bits")
    if not all(isinstance(b, int) and 1 <= b <= 16 for b in (amp_bits, phase_bits)):
        raise FormatError(f"{source}: codec.quant_amp_bits/quant_phase_bits must be in [1, 16]")
    payload = container.get("payload")
    if not isinstance(payload, dict):
        raise FormatError(f"{source}: payload must be an object")
    index = _b64_array(payload, "indices", "<u4", source).astype(np.int64)
    amp = _b64_array(payload, "amp_codes", "<u2", source)
    phase = _b64_array(payload, "phase_codes", "<u2", source)
    if not (index.shape == amp.shape == phase.shape):
        raise FormatError(f"{source}: indices, amp_codes and phase_codes differ in length")
    if index.size and (int(index.max()) >= n or np.unique(index).size != index.size):
        raise FormatError(f"{source}: indices out of range or duplicated")
    if amp.size and (int(amp.max()) >= 1 << amp_bits or int(phase.max()) >= 1 << phase_bits):
        raise FormatError(f"{source}: codes exceed their bit width")
    lo, hi = _scale(payload, "amp_scale", source)
    plo, phi = _scale(payload, "phase_scale", source)
    bands = container.get("bands") or []
    return {
        "index": index, "n": n, "shape": shape,
        "log_amp": _dequant(amp, amp_bits, lo, hi),
        "phase": _dequant(phase, phase_bits, plo, phi),
        "bands": [(int(b["start"]), int(b["end"])) for b in bands
                  if isinstance(b, dict) and isinstance(b.get("start"), int)
                  and isinstance(b.get("end"), int)],
    }


def v1_features(parsed: dict[str, Any], band_count: int) -> np.ndarray:
    """The reference predictor's inputs: [idx/max(1, n−1), logA, phase, one-hot(band)]."""
    index = parsed["index"]
    n = parsed["n"]
    band = np.zeros(index.shape[0], np.int64)
    for i, (start, end) in enumerate(parsed["bands"]):
        band[(index >= start) & (index < end)] = i
    onehot = np.zeros((index.shape[0], band_count), np.float64)
    inside = band < band_count
    onehot[np.flatnonzero(inside), band[inside]] = 1.0
    return np.column_stack([index / max(1, n - 1), parsed["log_amp"], parsed["phase"], onehot])


def decode_v1(container: dict[str, Any], source: str, predictor: Any = None,
              band_count: int = 0) -> np.ndarray:
    """Decode a reference container to float32; ``predictor.forward`` adds [ΔlogA, Δphase].

    >>> decode_v1  # doctest: +ELLIPSIS
    <function decode_v1 ...>
    """
    parsed = v1_coarse(container, source)
    log_amp, phase = parsed["log_amp"], parsed["phase"]
    if predictor is not None and log_amp.size:
        delta = np.asarray(predictor.forward(v1_features(parsed, band_count)), np.float64)
        log_amp = log_amp + delta[:, 0]
        phase = wrap_phase(phase + delta[:, 1])
    coefficients = np.zeros(parsed["n"], np.complex128)
    coefficients[parsed["index"]] = np.exp(log_amp) * (np.cos(phase) + 1j * np.sin(phase))
    x = inverse_full(coefficients).real if parsed["n"] else np.zeros(0)
    return x.reshape(parsed["shape"]).astype(np.float32)
