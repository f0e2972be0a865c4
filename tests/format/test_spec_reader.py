"""A second, independent reader written from formats/FORMAT.md alone.

It uses no rftpack code (only numpy, zstandard, ml_dtypes and the standard library) and must
decode every archive rftpack writes to the tensors rftpack's own reader returns, and the
reference's version-1 fixture to the reference's own decode. If FORMAT.md and the code drift
apart, this test says where.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import math
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import zstandard
from conftest import VARIANTS, archive_documents

import rftpack

MANIFEST = "manifest_hybrid.json"
PHI = (1.0 + math.sqrt(5.0)) / 2.0
DTYPES = {
    "float64": np.dtype("<f8"), "float32": np.dtype("<f4"), "float16": np.dtype("<f2"),
    "bfloat16": np.dtype(ml_dtypes.bfloat16), "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2), "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"), "int16": np.dtype("<i2"), "int8": np.dtype("i1"),
    "uint64": np.dtype("<u8"), "uint32": np.dtype("<u4"), "uint16": np.dtype("<u2"),
    "uint8": np.dtype("u1"), "bool": np.dtype("?"),
}


# -- §2 archive forms ---------------------------------------------------------------------------

class Members:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip = None if path.is_dir() else zipfile.ZipFile(path)

    def read(self, member: str) -> bytes:
        assert not member.startswith("/") and ".." not in member.split("/")
        if self.zip is not None:
            return self.zip.read(member)
        return (self.path / member).read_bytes()


# -- §7 coders ----------------------------------------------------------------------------------

def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def symbol_dtype(alphabet: int) -> np.dtype:
    for dtype in ("<u1", "<u2", "<u4"):
        if alphabet <= 1 << (8 * np.dtype(dtype).itemsize):
            return np.dtype(dtype)
    return np.dtype("<u8")


def _rans_table_v1(data: bytes, alphabet: int) -> tuple[list[int], int, int]:
    """§7.1.1: (frequencies summing to 2^16, distinct symbols, end of the table)."""
    distinct, pos = read_varint(data, 0)
    freq = [0] * alphabet
    symbol = -1
    for _ in range(distinct):
        gap, pos = read_varint(data, pos)
        f, pos = read_varint(data, pos)
        symbol += gap + 1
        freq[symbol] = f
    assert distinct == 0 or sum(freq) == 1 << 16
    return freq, distinct, pos


# round(2^(32 − j/8)), j = 0 … 7 (§7.1)
POWERS = [4294967296, 3938502376, 3611622603, 3311872529, 3037000500, 2784941738,
          2553802834, 2341847524]


def _rans_table_v2(data: bytes, alphabet: int) -> tuple[list[int], int, int]:
    """§7.1: (frequencies summing to 2^24, distinct symbols, end of the table)."""
    runs, pos = read_varint(data, 0)
    symbols, end = [], 0
    for _ in range(runs):
        gap, pos = read_varint(data, pos)
        length, pos = read_varint(data, pos)
        symbols += range(end + gap, end + gap + length)
        end += gap + length
    d = len(symbols)
    if d == 0:
        return [0] * alphabet, 0, pos
    nibbles = []
    for byte in data[pos:pos + (d + 1) // 2]:
        nibbles += [byte & 15, byte >> 4]
    pos += (d + 1) // 2
    z = nibbles[:d]
    for i in range(d):  # escape bytes, in symbol order
        if z[i] == 15:
            z[i] += data[pos]
            pos += 1
    for i in range(d):  # then a uint16 for each escape byte that was 255
        if z[i] == 15 + 255:
            z[i] += int.from_bytes(data[pos:pos + 2], "little")
            pos += 2
    levels, level = [], 0
    for zi in z:
        level += zi // 2 if zi % 2 == 0 else -(zi + 1) // 2
        assert 0 <= level <= 192
        levels.append(level)
    weights = [POWERS[v % 8] >> (v // 8) for v in levels]
    total = sum(weights)
    f = [max(1, w * (1 << 24) // total) for w in weights]
    order = sorted(range(d), key=lambda i: (-weights[i], i))  # most frequent first
    deficit = (1 << 24) - sum(f)
    if deficit > 0:
        f[order[0]] += deficit
    k = 0
    while deficit < 0:
        i = order[k % d]
        take = min(-deficit, f[i] - 1)
        f[i] -= take
        deficit += take
        k += 1
    freq = [0] * alphabet
    for symbol, fi in zip(symbols, f, strict=True):
        freq[symbol] = fi
    return freq, d, pos


def rans_decode(data: bytes, count: int, alphabet: int, version: int = 3) -> np.ndarray:
    freq, distinct, pos = (_rans_table_v1 if version == 1 else _rans_table_v2)(data, alphabet)
    total_bits = 16 if version == 1 else 24
    if count == 0 or distinct == 0:
        return np.zeros(0, np.int64)
    if distinct == 1:
        return np.full(count, max(i for i, f in enumerate(freq) if f), np.int64)
    # The 24-bit table the coder used: cdf[i] = floor(F_i * (2^24 - A) / 2^T) + i.
    cdf, running = [], 0
    for i in range(alphabet):
        cdf.append((running * ((1 << 24) - alphabet) >> total_bits) + i)
        running += freq[i]
    cdf.append(1 << 24)
    deltas = []
    if version >= 3:  # L lanes; how far each but the last is from ⌊W / L⌋ words (zigzag)
        lanes = data[pos]
        pos += 1
        for _ in range(lanes - 1):
            z, pos = read_varint(data, pos)
            deltas.append(z // 2 if z % 2 == 0 else -(z + 1) // 2)
    words = np.frombuffer(data[pos:], "<u4").tolist()
    lengths = [len(words) // (len(deltas) + 1) + delta for delta in deltas]
    starts = [0]
    for length in lengths:
        starts.append(starts[-1] + length)
    lanes = [words[a:b] for a, b in zip(starts, starts[1:] + [len(words)], strict=True)]
    states = []
    for lane in lanes:
        state = lane.pop() if lane else 0
        while lane and state < 1 << 32:
            state = (state << 32) | lane.pop()
        states.append(state)
    out = np.empty(count, np.int64)
    for j in range(count):  # symbol j from lane j mod L
        lane = j % len(lanes)
        state = states[lane]
        quantile = state & 0xFFFFFF
        s = bisect.bisect_right(cdf, quantile) - 1
        state = (state >> 24) * (cdf[s + 1] - cdf[s]) + quantile - cdf[s]
        if state < 1 << 32 and lanes[lane]:
            state = (state << 32) | lanes[lane].pop()
        states[lane] = state
        out[j] = s
    return out


def zstd_decode(data: bytes, count: int, alphabet: int) -> np.ndarray:
    dtype = symbol_dtype(alphabet)
    raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=count * dtype.itemsize)
    assert len(raw) == count * dtype.itemsize
    return np.frombuffer(raw, dtype).astype(np.int64)


def raw_decode(data: bytes, count: int, alphabet: int) -> np.ndarray:
    bits = (alphabet - 1).bit_length()
    if bits == 0 or count == 0:
        return np.zeros(count, np.int64)
    assert len(data) == (count * bits + 7) // 8
    stream = int.from_bytes(data, "little")
    mask = (1 << bits) - 1
    return np.array([(stream >> (i * bits)) & mask for i in range(count)], np.int64)


CODERS = {"rans": rans_decode, "zstd": zstd_decode, "raw": raw_decode}


def floatplanes_elements(data: bytes, n: int, dtype: np.dtype) -> np.ndarray:
    """FORMAT.md §7.4: exact-path elements of the ``floatplanes`` coder."""
    size = dtype.itemsize
    unzstd = zstandard.ZstdDecompressor()
    if data[0] == 0:
        return np.empty(0, dtype)
    if data[0] == 2:  # zstd over byte-shuffled bytes
        raw = np.frombuffer(unzstd.decompress(data[1:], max_output_size=n * size), np.uint8)
        return np.frombuffer(raw.reshape(size, n).T.tobytes(), dtype)
    assert data[0] == 1
    rotation, pos, planes = data[1], 2, []
    for _ in range(size):
        length, pos = read_varint(data, pos)
        planes.append(np.frombuffer(unzstd.decompress(data[pos:pos + length],
                                                       max_output_size=n), np.uint8))
        pos += length
    rotated = (planes[0].astype(np.uint32) << 8) | planes[1]
    top16 = ((rotated >> rotation) | (rotated << (16 - rotation))) & 0xFFFF
    out = np.empty((n, size), np.uint8)
    for i, plane in enumerate(planes[2:]):  # low bytes, least significant first
        out[:, i] = plane
    out[:, size - 2] = top16 & 0xFF
    out[:, size - 1] = top16 >> 8
    return np.frombuffer(out.tobytes(), dtype)


# -- §8 transforms, quantizer, bands ------------------------------------------------------------

def phase_factors(n: int, m: int, beta: float, sigma: float) -> np.ndarray:
    k = np.arange(m, dtype=np.float64)
    return np.exp(1j * (np.pi * sigma * (k / n) * k + 2.0 * np.pi * beta * np.mod(k / PHI, 1.0)))


def inverse_transform(stage: dict, coefficients: np.ndarray, n: int) -> np.ndarray:
    if stage["name"] == "identity":
        return coefficients.real[:n].astype(np.float64)
    if stage["name"] == "dct":  # §8.2.1, straight from the sum (no FFT)
        length = stage["configuration"].get("row_length", 1)
        assert n % length == 0
        m = n // length
        k, r = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
        basis = np.cos(np.pi * k * (2 * r + 1) / (2 * m))
        basis *= np.where(k == 0, np.sqrt(1.0 / m), np.sqrt(2.0 / m))
        return (basis.T @ coefficients.real.reshape(m, length)).reshape(-1)
    assert stage["name"] == "rft"
    config = stage["configuration"]
    factors = phase_factors(n, coefficients.shape[0], config.get("beta", 1.0),
                            config.get("sigma", 1.0))
    return np.fft.irfft(coefficients * np.conj(factors), n=n, norm="ortho")


def coefficient_count(stage: dict, n: int) -> int:
    return n if stage["name"] in ("identity", "dct") else n // 2 + 1


def geometric_bands(m: int, band_min: int, growth: float) -> list[tuple[int, int]]:
    bands, start, size = [], 0, band_min
    while start < m:
        end = min(m, start + size)
        bands.append((start, end))
        start, size = end, int(size * growth)
    return bands


def wrap(phase: np.ndarray) -> np.ndarray:
    return np.mod(phase + np.pi, 2.0 * np.pi) - np.pi


# -- §9 predictor -------------------------------------------------------------------------------

def load_predictor(obj: dict) -> tuple[list, dict]:
    body = {k: v for k, v in obj.items() if k != "checksum_sha256"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()
    assert digest == obj["checksum_sha256"]
    arch = obj["architecture"]
    layers = []
    for i in range(arch["num_hidden_layers"] + 1):
        w, b = obj["state"][f"W{i}"], obj["state"][f"b{i}"]
        layers.append((np.frombuffer(base64.b64decode(w["data"]), "<f4").reshape(w["shape"]),
                       np.frombuffer(base64.b64decode(b["data"]), "<f4").reshape(b["shape"])))
    return layers, arch


def mlp(layers: list, x: np.ndarray) -> np.ndarray:
    h = x.astype(np.float32)
    for w, b in layers[:-1]:
        h = np.maximum(h @ w + b, np.float32(0))
    w, b = layers[-1]
    return h @ w + b


def onehot(band: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((band.shape[0], width))
    inside = band < width
    out[np.flatnonzero(inside), band[inside]] = 1.0
    return out


# -- §5-§6 version-2 containers -----------------------------------------------------------------

def decode_v2(members: Members, entry: dict, predictor) -> np.ndarray:
    raw_container = members.read(entry["file"])
    assert hashlib.sha256(raw_container).hexdigest() == entry["container_sha256"]
    c = json.loads(raw_container)
    dtype = DTYPES[c["dtype"]]
    payload = c["payload"]
    if payload["encoding"] == "binary":
        blob = members.read(payload["file"])
        assert len(blob) == payload["size"]
        assert hashlib.sha256(blob).hexdigest() == payload["sha256"]

        def segment(seg: dict) -> bytes:
            return blob[seg["offset"]:seg["offset"] + seg["length"]]
    else:
        def segment(seg: dict) -> bytes:
            data = base64.b64decode(seg["data"], validate=True)
            assert len(data) == seg["length"]
            return data

    stages = c["stages"]
    coder = CODERS.get(stages[-1]["name"])
    if stages[-1]["name"] == "rans":
        version = stages[-1].get("format_version", 1)

        def coder(data: bytes, count: int, alphabet: int) -> np.ndarray:
            return rans_decode(data, count, alphabet, version)
    numel = math.prod(c["original_shape"])
    out = np.empty(numel, dtype)
    start = 0
    for block in payload["blocks"]:
        n = block["count"]
        if c["codec"]["mode"] == "exact" and stages[-1]["name"] == "floatplanes":
            out[start:start + n] = floatplanes_elements(segment(block["streams"]["bytes"]), n,
                                                        dtype)
        elif c["codec"]["mode"] == "exact":
            seg = block["streams"]["bytes"]
            data = coder(segment(seg), seg["count"], 256).astype(np.uint8)
            if c["codec"]["byte_shuffle"] and dtype.itemsize > 1:
                data = data.reshape(dtype.itemsize, n).T.reshape(-1)
            out[start:start + n] = np.frombuffer(data.tobytes(), dtype)
        else:
            if stages[1]["name"] in ("scalar", "dq"):
                x = inverse_transform(stages[0],
                                      decode_grid_block(block, stages[1], coder, segment, n), n)
            else:
                x = decode_polar_block(c, block, stages, coder, segment, n,
                                       predictor if entry["predictor"] else None)
            if dtype != np.float64:
                limit = float(ml_dtypes.finfo(dtype).max)
                x = np.clip(x, -limit, limit)
            out[start:start + n] = x.astype(dtype)
        start += n
    assert start == numel
    nonfinite = payload.get("nonfinite")
    if nonfinite:
        index = np.frombuffer(segment(nonfinite["index"]), "<u8")
        out[index.astype(np.int64)] = np.frombuffer(segment(nonfinite["values"]), dtype)
    return out.reshape(c["original_shape"])


def dq_trellis(states: int) -> tuple[list[list[int]], list[int]]:
    """§8.6: (TRANS, QUANTIZER) of a `dq` state machine."""
    if states == 4:
        return [[0, 2], [2, 0], [1, 3], [3, 1]], [0, 0, 1, 1]
    if states == 8:
        return ([[0, 2], [7, 5], [1, 3], [6, 4], [2, 0], [5, 7], [3, 1], [4, 6]],
                [0, 1, 0, 1, 0, 1, 0, 1])
    h0, h1 = {16: (0o23, 0o04), 32: (0o45, 0o10), 64: (0o103, 0o024), 128: (0o235, 0o126),
              256: (0o515, 0o362)}[states]
    nu = round(math.log2(states))
    trans, quantizer = [], []
    for state in range(states):
        r = [0] + [(state >> (i - 1)) & 1 for i in range(1, nu + 1)] + [0]  # r[1] … r[nu]
        quantizer.append(r[1])
        row = []
        for p in (0, 1):
            bits = [r[i + 1] ^ ((h0 >> i) & 1 & r[1]) ^ ((h1 >> i) & 1 & p)
                    for i in range(1, nu + 1)]  # r[nu + 1] is 0: the last rule
            row.append(sum(bit << (i - 1) for i, bit in enumerate(bits, start=1)))
        trans.append(row)
    return trans, quantizer


def decode_grid_block(block, quantizer, coder, segment, n) -> np.ndarray:
    """§8.5 `scalar` and §8.6 `dq`, with row steps and row classes."""
    side = block["side"]
    streams = block["streams"]
    if "row_classes" in side:  # §8.5 row classes: one code stream per class of rows
        length = side["class_length"]
        rows = -(-n // length)
        row_class = coder(segment(streams["row_classes"]), rows, side["row_classes"])
        per_class = []
        for c in range(side["row_classes"]):
            seg = streams["codes" if c == 0 else f"codes_{c}"]
            per_class.append(iter(coder(segment(seg), seg["count"], side["alphabet"]).tolist()))
        s = np.array([next(per_class[int(row_class[i // length])]) for i in range(n)],
                     np.int64)
        assert all(next(rest, None) is None for rest in per_class)  # every code used
    else:
        assert "row_classes" not in streams and "codes_1" not in streams
        s = coder(segment(streams["codes"]), n, side["alphabet"]).astype(np.int64)
    q = (s >> 1) ^ -(s & 1)
    if quantizer["name"] == "scalar":
        d1, d2 = side["offsets"]
        magnitude = np.abs(q)
        delta = np.where(magnitude == 1, d1, np.where(magnitude >= 2, d2, 0.0))
        x = np.where(q == 0, 0.0, np.sign(q) * (magnitude - delta) * side["step"])
    else:
        config = quantizer["configuration"]
        version = quantizer.get("format_version", 1)
        trans, which = dq_trellis(config.get("states", 4 if version == 1 else 8))
        levels = np.empty(n)
        for start in range(0, n, config["chain"]):
            state = 0
            for i in range(start, min(n, start + config["chain"])):
                k = int(q[i])
                levels[i] = 2 * k if which[state] == 0 else 2 * k - (k > 0) + (k < 0)
                state = trans[state][abs(k) & 1]
        x = levels * side["step"]
    if "row_length" in side:
        length = side["row_length"]
        rows = -(-n // length)
        ell = coder(segment(block["streams"]["row_levels"]), rows, side["row_levels"])
        x = x * np.repeat(2.0 ** (-ell.astype(np.float64) / 4), length)[:n]
    else:
        assert "row_levels" not in block["streams"]
    return x


def decode_polar_block(c, block, stages, coder, segment, n, predictor) -> np.ndarray:
    transform, quantizer = stages[0], stages[1]
    assert quantizer["name"] == "polar"
    q = quantizer["configuration"]
    amp_bits, phase_bits = q["amp_bits"], q["phase_bits"]
    m = coefficient_count(transform, n)
    assert block["coefficients"] == m
    alphabets = {"keep_mask": 2, "amp_codes": 1 << amp_bits, "phase_codes": 1 << phase_bits}
    streams = {key: coder(segment(seg), seg["count"], alphabets[key])
               for key, seg in block["streams"].items()}
    side = block["side"]
    kept = side["kept"]
    index = (np.flatnonzero(streams["keep_mask"]) if "keep_mask" in streams
             else np.arange(m))
    assert index.shape[0] == kept
    lo, hi = side["amp_scale"]
    amp_step = (hi - lo) / ((1 << amp_bits) - 1) if hi > lo else 0.0
    phase_step = 2.0 * np.pi / (1 << phase_bits)
    log_amp = lo + streams["amp_codes"] * amp_step
    phase = -np.pi + streams["phase_codes"] * phase_step
    if predictor is not None and kept:
        layers, arch = predictor
        bands = geometric_bands(m, c["codec"]["band_min"], c["codec"]["band_growth"])
        band_of = np.zeros(m, np.int64)
        for i, (s, e) in enumerate(bands):
            band_of[s:e] = i
        width = arch["bands"]
        amp_norm = (log_amp - lo) / (hi - lo) if hi > lo else np.zeros(kept)
        features = np.column_stack([
            index / max(1, m - 1), amp_norm, phase / np.pi,
            onehot(np.minimum(band_of[index], width - 1), width)])
        delta = np.clip(mlp(layers, features).astype(np.float64), -1.0, 1.0)
        log_amp = log_amp + delta[:, 0] * amp_step
        phase = wrap(phase + delta[:, 1] * phase_step)
    coefficients = np.zeros(m, np.complex128)
    coefficients[index] = np.exp(log_amp) * np.exp(1j * phase)
    return inverse_transform(transform, coefficients, n)


# -- §10 version 1 ------------------------------------------------------------------------------

def decode_v1(c: dict, predictor) -> np.ndarray:
    n = math.prod(c["original_shape"])
    p = c["payload"]
    index = np.frombuffer(base64.b64decode(p["indices"]), "<u4").astype(np.int64)
    amp = np.frombuffer(base64.b64decode(p["amp_codes"]), "<u2").astype(np.float64)
    pha = np.frombuffer(base64.b64decode(p["phase_codes"]), "<u2").astype(np.float64)

    def dequant(codes, bits, scale):
        lo, hi = scale
        levels = (1 << bits) - 1
        return np.full(codes.shape, lo) if hi <= lo else codes / levels * (hi - lo) + lo

    log_amp = dequant(amp, c["codec"]["quant_amp_bits"], p["amp_scale"])
    phase = dequant(pha, c["codec"]["quant_phase_bits"], p["phase_scale"])
    if predictor is not None and index.size:
        layers, arch = predictor
        band = np.zeros(index.shape[0], np.int64)
        for i, b in enumerate(c.get("bands") or []):
            band[(index >= b["start"]) & (index < b["end"])] = i
        features = np.column_stack([index / max(1, n - 1), log_amp, phase,
                                    onehot(band, arch["bands"])])
        delta = mlp(layers, features).astype(np.float64)
        log_amp = log_amp + delta[:, 0]
        phase = wrap(phase + delta[:, 1])
    y = np.zeros(n, np.complex128)
    y[index] = np.exp(log_amp) * (np.cos(phase) + 1j * np.sin(phase))
    k = np.arange(n, dtype=np.float64)
    factors = np.exp(1j * (np.pi * (k / n) * k + 2.0 * np.pi * np.mod(k / PHI, 1.0)))
    x = np.fft.ifft(np.conj(factors) * y, norm="ortho").real
    return x.reshape(c["original_shape"]).astype(np.float32)


# -- the reader ---------------------------------------------------------------------------------

def read_archive(path: Path, use_predictor: bool = True) -> dict[str, np.ndarray]:
    members = Members(path)
    raw_manifest = members.read(MANIFEST)
    manifest = json.loads(raw_manifest)
    assert manifest["type"] == "rft_hybrid_manifest_bundle"
    predictor = None
    if manifest.get("predictor") and use_predictor:
        raw = members.read(manifest["predictor"])
        if manifest.get("predictor_sha256"):
            assert hashlib.sha256(raw).hexdigest() == manifest["predictor_sha256"]
        predictor = load_predictor(json.loads(raw))
    out = {}
    for entry in manifest["tensors"]:
        if manifest["version"] == 1:
            out[entry["tensor_name"]] = decode_v1(json.loads(members.read(entry["file"])),
                                                  predictor)
        else:
            out[entry["tensor_name"]] = decode_v2(members, entry, predictor)
    return out


def _same(mine: np.ndarray, theirs: np.ndarray, exact: bool) -> None:
    assert mine.dtype == theirs.dtype and mine.shape == theirs.shape
    if exact or mine.size == 0:
        assert mine.tobytes() == theirs.tobytes()
        return
    a, b = mine.astype(np.float64), theirs.astype(np.float64)
    assert np.array_equal(np.isfinite(a), np.isfinite(b))
    assert np.array_equal(a[~np.isfinite(a)], b[~np.isfinite(b)], equal_nan=True)
    scale = max(1.0, float(np.max(np.abs(b[np.isfinite(b)]), initial=0.0)))
    np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("use_predictor", [True, False])
def test_spec_reader_matches_rftpack(format_archives, variant, use_predictor):
    path = format_archives[variant]
    mine = read_archive(path, use_predictor)
    with rftpack.open(path) as archive:
        assert list(mine) == archive.keys()
        for name, array in mine.items():
            exact = archive.entry(name)["mode"] == "exact"
            _same(array, archive.get_tensor(name, use_predictor=use_predictor), exact)


def test_variants_cover_row_classes_with_and_without_row_steps(format_archives):
    """The reader above is only checked on what the variants hold: make sure some blocks
    have row classes (§8.5), with row steps and without, for both quantizers."""
    seen = set()
    for variant in ("scalar", "scalar-rows", "dq", "dq-rows-8"):
        for doc in archive_documents(format_archives[variant]).values():
            for block in (doc.get("payload") or {}).get("blocks", []):
                side = block.get("side") or {}
                if "row_classes" in side:
                    assert len(block["streams"]) == side["row_classes"] + 1 + (
                        "row_length" in side)
                    seen.add((variant.split("-")[0], "row_length" in side))
    assert seen == {("scalar", False), ("scalar", True), ("dq", False), ("dq", True)}


def test_spec_reader_matches_rftpack_on_golden_archives(golden_v2):
    for path in golden_v2.values():
        mine = read_archive(path)
        with rftpack.open(path) as archive:
            for name, array in mine.items():
                exact = archive.entry(name)["mode"] == "exact"
                _same(array, archive.get_tensor(name), exact)


def test_spec_reader_applies_the_predictor(format_archives):
    with_p = read_archive(format_archives["predictor"], True)
    without = read_archive(format_archives["predictor"], False)
    assert any(not np.array_equal(with_p[k], without[k]) for k in with_p)


def test_spec_reader_decodes_the_reference_fixture(reference_v1):
    expected_path = reference_v1.parent / "reference_small_expected.npz"
    if not expected_path.exists():
        pytest.skip("reference_small_expected.npz is not available")
    expected = np.load(expected_path)
    coarse = read_archive(reference_v1, use_predictor=False)
    predicted = read_archive(reference_v1, use_predictor=True)
    for name in coarse:
        np.testing.assert_allclose(coarse[name], expected[f"coarse/{name}"], rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(predicted[name], expected[f"predicted/{name}"], rtol=1e-5,
                                   atol=1e-6)


def test_rans_table_formula_matches_the_coder():
    """FORMAT.md §7.1's integer table reproduces constriction's decoding on random data."""
    from rftpack.stages.rans import RansCoder, read_table

    rng = np.random.default_rng(7)
    coder = RansCoder()
    for alphabet in (2, 3, 32, 256, 1 << 16):
        for concentration in (0.05, 1.0):
            probabilities = rng.dirichlet(np.full(min(alphabet, 512), concentration))
            symbols = rng.choice(probabilities.shape[0], size=1500, p=probabilities)
            data = coder.encode(symbols.astype(np.int64), alphabet)
            assert rans_decode(data, symbols.shape[0], alphabet).tolist() == symbols.tolist()
    # a segment large enough for lanes (32 KiB of words or more), odd count: uneven lanes
    symbols = rng.integers(0, 256, 40_001)
    data = coder.encode(symbols, 256)
    assert data[read_table(memoryview(data), 256)[2]] == 2  # the lane count
    assert rans_decode(data, symbols.shape[0], 256).tolist() == symbols.tolist()


def test_raw_and_zstd_layouts_match_the_coders():
    from rftpack.stages.raw import RawCoder
    from rftpack.stages.zstd import ZstdCoder

    rng = np.random.default_rng(3)
    for alphabet in (1, 2, 5, 64, 256, 1000, 1 << 16, (1 << 16) + 1):
        symbols = rng.integers(0, alphabet, size=77)
        assert raw_decode(RawCoder().encode(symbols, alphabet), 77, alphabet).tolist() \
            == symbols.tolist()
        assert zstd_decode(ZstdCoder().encode(symbols, alphabet), 77, alphabet).tolist() \
            == symbols.tolist()


def test_inverse_rft_formula():
    """FORMAT.md §8.1's explicit inverse equals irfft, DC and Nyquist imaginary parts dropped."""
    rng = np.random.default_rng(5)
    for n in (1, 2, 7, 8, 33):
        m = n // 2 + 1
        y = rng.normal(size=m) + 1j * rng.normal(size=m)
        big_y = y * np.conj(phase_factors(n, m, 1.0, 1.0))
        t = np.arange(n)
        x = np.full(n, big_y[0].real)
        for k in range(1, (n - 1) // 2 + 1):
            x += 2.0 * (big_y[k] * np.exp(2j * np.pi * k * t / n)).real
        if n % 2 == 0:
            x += big_y[n // 2].real * (-1.0) ** t
        x /= math.sqrt(n)
        np.testing.assert_allclose(inverse_transform({"name": "rft", "configuration": {}}, y, n),
                                   x, atol=1e-12)


TWO_LANES = "02 00 02 01 01 1e 0e 02 00 00 00 00 02 5b ae be 01"

# FORMAT.md §13, byte for byte: (coder, format version, alphabet, symbols, segment, written
# by today's encoder — else decode only)
VECTORS = [
    ("rans", 3, 4, [0, 1, 1, 3, 1], "02 00 02 01 01 1e 0e 01 8b 8a 09 1f", True),
    ("rans", 3, 4, [0, 1, 1, 3, 1], "02 00 02 01 01 1e 0e 04 00 00 00 00 00 00 01 2d 57 5f 00 "
     "2d 57 5f 00 67 4f c7 00", False),  # four lanes: 0 1 / 1 / 1 / 3, a word each
    ("rans", 3, 4, [0, 1, 1, 3, 1], TWO_LANES, False),  # two lanes: 0 1 1 / 1 3
    ("rans", 3, 4, [2, 2, 2], "01 02 01 00", True),
    ("rans", 3, 4, [], "00", True),
    ("rans", 2, 4, [0, 1, 1, 3, 1], "02 00 02 01 01 1e 0e 8b 8a 09 1f", True),
    ("rans", 2, 4, [2, 2, 2], "01 02 01 00", True),
    ("rans", 2, 4, [], "00", True),
    ("rans", 2, 4, [2, 2, 2], "01 02 01 0f 01", False),  # an escape byte: z = 16, level 8
    ("rans", 2, 4, [2, 2, 2], "01 02 01 0f ff 00 00", False),  # a wide escape: level 135
    ("rans", 1, 4, [0, 1, 1, 3, 1], "03 00 b3 66 00 9a b3 02 01 b3 66 05 01 00 0d", False),
    ("rans", 1, 4, [2, 2, 2], "01 02 80 80 04", False),
    ("rans", 1, 4, [], "00", False),
    ("raw", 1, 8, [5, 0, 7, 2, 1], "c5 15", True),
    ("raw", 1, 2, [1, 0, 1, 1, 0, 0, 0, 1, 1, 1], "8d 03", True),
]


@pytest.mark.parametrize(("coder", "version", "alphabet", "symbols", "hex_bytes", "written"),
                         VECTORS)
def test_format_md_test_vectors(coder, version, alphabet, symbols, hex_bytes, written):
    from rftpack.plugins import get_stage

    stage = get_stage("coder", coder)().for_format_version(version)
    data = bytes.fromhex(hex_bytes)
    if written:
        assert stage.encode(np.array(symbols, np.uint8), alphabet).hex(" ") == hex_bytes
    assert stage.decode(data, len(symbols), alphabet).tolist() == symbols
    read = (rans_decode(data, len(symbols), alphabet, version) if coder == "rans"
            else CODERS[coder](data, len(symbols), alphabet))
    assert read.tolist() == symbols


def test_format_md_byte_shuffle_vector():
    raw = np.array([1, 2, 3], "<i4").view(np.uint8)
    shuffled = raw.reshape(-1, 4).T.reshape(-1)
    assert shuffled.tobytes().hex(" ") == "01 02 03 00 00 00 00 00 00 00 00 00"


def _container_with(format_archives, tmp_path, edit) -> tuple[Path, str]:
    """Copy the dir-binary archive, edit one container, refresh its manifest checksum."""
    import shutil

    target = tmp_path / "archive"
    shutil.copytree(format_archives["dir-binary"], target)
    manifest_path = target / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    entry = next(e for e in manifest["tensors"] if e["mode"] == "hybrid")
    container_path = target / entry["file"]
    container = json.loads(container_path.read_text())
    edit(container)
    data = json.dumps(container).encode()
    container_path.write_bytes(data)
    entry["container_sha256"] = hashlib.sha256(data).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    return target, entry["tensor_name"]


def test_unknown_stage_names_the_provider(format_archives, tmp_path):
    from rftpack.errors import UnknownStageError

    def edit(container):
        container["stages"][2].update(name="acme-coder", provider="acme-rftpack")

    path, name = _container_with(format_archives, tmp_path, edit)
    with rftpack.open(path) as archive, pytest.raises(UnknownStageError) as info:
        archive.get_tensor(name)
    assert "acme-coder" in str(info.value) and "acme-rftpack" in str(info.value)


def test_newer_stage_format_version_is_refused(format_archives, tmp_path):
    from rftpack.errors import StageError

    def edit(container):
        container["stages"][1]["format_version"] = 2

    path, name = _container_with(format_archives, tmp_path, edit)
    with rftpack.open(path) as archive, pytest.raises(StageError) as info:
        archive.get_tensor(name)
    assert "format version 2" in str(info.value) and "'rftpack'" in str(info.value)


def test_new_archives_record_rans_format_version_3(format_archives):
    container = next(doc for name, doc in archive_documents(format_archives["dir-binary"]).items()
                     if name.startswith("tensors/") and doc["codec"]["mode"] == "hybrid")
    assert container["stages"][2]["name"] == "rans"
    assert container["stages"][2]["format_version"] == 3


def test_stage_format_version_below_1_is_refused(format_archives, tmp_path):
    from rftpack.errors import FormatError

    def edit(container):
        container["stages"][2]["format_version"] = 0

    path, name = _container_with(format_archives, tmp_path, edit)
    with rftpack.open(path) as archive, pytest.raises(FormatError, match="format_version"):
        archive.get_tensor(name)


@pytest.mark.parametrize("version", [1, 2])
def test_rans_records_of_older_versions_read_their_own_layout(format_archives, tmp_path,
                                                              version):
    """A version 1 record makes the reader parse §7.1.1 tables, a version 2 one words without
    lanes: the (version 3) bytes of a current archive under such a record are refused or
    misread, never silently equal."""
    from rftpack.errors import RftpackError

    def edit(container):
        container["stages"][2]["format_version"] = version

    path, name = _container_with(format_archives, tmp_path, edit)
    with rftpack.open(format_archives["dir-binary"]) as archive:
        good = archive.get_tensor(name)
    with rftpack.open(path) as archive:
        try:
            misread = archive.get_tensor(name)
        except RftpackError:
            return
    assert not np.array_equal(misread, good)
