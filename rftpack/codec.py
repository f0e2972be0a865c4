"""One tensor through the pipeline: numpy array <-> container dict + payload bytes.

Two paths, both recorded in the container's ``stages`` list:

* **lossy** (``codec.mode == "hybrid"``): float tensors, cut into blocks of ``block_size``
  weights; per block transform → quantizer → coder, one coded segment per quantizer stream.
  Non-finite values are set aside and stored exactly.
* **exact** (``codec.mode == "exact"``): any dtype; the little-endian bytes of each block,
  optionally byte-shuffled (byte planes, as blosc does), go through the coder.

Segments are byte ranges of the tensor's payload: ``{"offset", "length"}``.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rftpack.dtypes import (
    LOSSY_CAPABLE,
    cast_float_into,
    dtype_from_name,
    dtype_name,
    to_little_endian,
)
from rftpack.errors import FormatError, StageError
from rftpack.plugins import provider_of, stage_from_config
from rftpack.rounding import round_mantissa
from rftpack.stages.bands import geometric_bands
from rftpack.stages.base import Coder, PolarView, Quantizer, Stage, Transform
from rftpack.stages.identity import Identity
from rftpack.stages.scalar import RowSteps, SteppedQuantizer

CONTAINER_TYPE = "rft_hybrid_tensor"
CONTAINER_VERSION = 2
MAX_BLOCK_SIZE = 1 << 26

#: refine factory: given a block's bands, returns a function correcting a PolarView.
Refine = Callable[[PolarView], tuple[np.ndarray, np.ndarray]]
RefineFactory = Callable[[list[tuple[int, int]]], Refine]
#: sampler: observes (tensor name, view, true coefficients, bands) while encoding.
Sampler = Callable[[str, PolarView, np.ndarray, list[tuple[int, int]]], None]


@dataclass(frozen=True)
class LossyPipeline:
    """transform → quantizer → coder on blocks of float weights.

    Example:
        >>> from rftpack.profiles import hybrid_pipeline
        >>> p = hybrid_pipeline()
        >>> [s.id for s in p.stages()]
        ['rft', 'polar', 'rans']
    """

    transform: Transform
    quantizer: Quantizer
    coder: Coder
    block_size: int = 1 << 20
    band_min: int = 64
    band_growth: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.block_size <= MAX_BLOCK_SIZE:
            raise StageError(f"block_size must be in [1, {MAX_BLOCK_SIZE}], got {self.block_size}")
        if self.band_min < 1 or not self.band_growth >= 1.0:
            raise StageError("bands: min_band must be ≥ 1 and growth ≥ 1.0")

    def stages(self) -> list[Stage]:
        return [self.transform, self.quantizer, self.coder]

    def bands(self, block_len: int) -> list[tuple[int, int]]:
        return geometric_bands(self.transform.coefficient_count(block_len), self.band_min,
                               self.band_growth)

    def max_bands(self) -> int:
        """Band count of a full block: the one-hot width a shared predictor needs."""
        return len(self.bands(self.block_size))


@dataclass(frozen=True)
class ExactPipeline:
    """Bit-exact storage: little-endian bytes (byte-shuffled by default) → coder."""

    coder: Coder
    byte_shuffle: bool = True
    block_size: int = 1 << 22

    def stages(self) -> list[Stage]:
        return [self.coder]


@dataclass
class EncodedTensor:
    """A container (JSON-ready dict) and the payload its segments point into."""

    container: dict[str, Any]
    payload: bytes | bytearray
    snr_db: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)


class _PayloadBuilder:
    """A tensor's payload, segment by segment, in one growing buffer: joining the segments
    at the end would hold the payload twice (a lossless 268 MB tensor: 220 MB more)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def add(self, data: bytes, count: int) -> dict[str, int]:
        seg = {"offset": len(self.buffer), "length": len(data), "count": count}
        self.buffer += data
        return seg

    def payload(self) -> bytearray:
        """The payload: the buffer itself, not a copy."""
        return self.buffer


def stage_record(stage: Stage) -> dict[str, Any]:
    """How a container records one stage: enough to rebuild it, and to say what to install."""
    config = stage.to_config()
    return {"kind": stage.kind, "name": config["name"], "configuration": config["configuration"],
            "format_version": stage.record_format_version(),
            "provider": provider_of(stage.kind, stage.id)}


def _base_container(name: str, array: np.ndarray) -> dict[str, Any]:
    return {
        "type": CONTAINER_TYPE,
        "version": CONTAINER_VERSION,
        "name": name,
        "dtype": dtype_name(array.dtype),
        "original_shape": list(array.shape),
        "numel": int(array.size),
    }


def is_lossy_candidate(array: np.ndarray, *, min_numel: int = 1024, lossy_1d: bool = False) -> bool:
    """Default policy: floats with ≥ ``min_numel`` weights and ≥ 2 dims go through the lossy path.

    Biases, norms and other small tensors cost almost nothing and are sensitive: they take
    the exact path (bit-exact, or near-lossless under rate control: :mod:`rftpack.rounding`).
    """
    if dtype_name(array.dtype) not in LOSSY_CAPABLE or array.size < max(1, min_numel):
        return False
    return lossy_1d or array.ndim >= 2


def encode_exact(name: str, array: np.ndarray, pipeline: ExactPipeline) -> EncodedTensor:
    """Store ``array`` bit-exactly.

    Example:
        >>> from rftpack.profiles import exact_pipeline
        >>> enc = encode_exact("ids", np.arange(5), exact_pipeline())
        >>> enc.container["codec"]["mode"]
        'exact'
    """
    array = to_little_endian(np.asarray(array))
    flat = array.reshape(-1)
    itemsize = array.dtype.itemsize
    builder = _PayloadBuilder()
    blocks = []
    for start in range(0, flat.shape[0], pipeline.block_size):
        chunk = np.ascontiguousarray(flat[start:start + pipeline.block_size])
        raw = chunk.view(np.uint8)
        if _element_coder(pipeline.coder):  # the coder lays out whole elements itself
            data = pipeline.coder.encode_elements(chunk)  # type: ignore[attr-defined]
        else:
            if pipeline.byte_shuffle and itemsize > 1:
                raw = np.ascontiguousarray(raw.reshape(-1, itemsize).T).reshape(-1)
            data = pipeline.coder.encode(raw, 256)
            _check_coder_round_trip(pipeline.coder, data, raw, 256, name)
        blocks.append({"count": int(chunk.shape[0]),
                       "streams": {"bytes": builder.add(data, int(raw.shape[0]))}})
    payload = builder.payload()
    container = _base_container(name, array)
    container.update({
        "codec": {"mode": "exact",
                  "byte_shuffle": pipeline.byte_shuffle and not _element_coder(pipeline.coder)},
        "stages": [stage_record(pipeline.coder)],
        "block_size": pipeline.block_size,
        "payload": _payload_record(payload, blocks),
    })
    _add_size_stats(container, payload, array)
    return EncodedTensor(container, payload, snr_db=math.inf, stats={})


def encode_near_lossless(name: str, array: np.ndarray, bits: int,
                         pipeline: ExactPipeline) -> EncodedTensor:
    """Store a float32/float64 ``array`` rounded to ``bits`` mantissa bits
    (:mod:`rftpack.rounding`), with the exact path's coder; the container records
    ``codec.mantissa_bits`` (readers decode it like any exact tensor).

    Example:
        >>> from rftpack.profiles import exact_pipeline
        >>> x = np.linspace(-1, 1, 300, dtype=np.float32)
        >>> enc = encode_near_lossless("b", x, 10, exact_pipeline())
        >>> enc.container["codec"]["mantissa_bits"], enc.snr_db > 60
        (10, True)
    """
    rounded = round_mantissa(array, bits)
    encoded = encode_exact(name, rounded, pipeline)
    encoded.container["codec"]["mantissa_bits"] = bits
    with np.errstate(invalid="ignore"):  # signalling NaNs: only finite values count
        values = np.asarray(array, dtype=np.float64).reshape(-1)
        decoded = rounded.astype(np.float64).reshape(-1)
    finite = np.isfinite(values)
    diff = decoded[finite] - values[finite]
    signal, error = float(np.dot(values[finite], values[finite])), float(np.dot(diff, diff))
    encoded.stats = {"signal": signal, "error": error,
                     "max_error": float(np.max(np.abs(diff))) if diff.size else 0.0,
                     "peak": float(np.max(np.abs(values[finite]))) if diff.size else 0.0}
    encoded.snr_db = 10 * math.log10(signal / error) if error > 0 and signal > 0 else math.inf
    return encoded


def encode_lossy(name: str, array: np.ndarray, pipeline: LossyPipeline,
                 sampler: Sampler | None = None, *,
                 rounded: np.ndarray | None = None,
                 rows: RowSteps | None = None) -> EncodedTensor:
    """Encode a float tensor through transform → quantizer → coder, block by block.

    ``rounded`` (same shape, finite) is what the pipeline encodes instead of ``array`` when an
    encoder-side search (calibrated rounding) has already chosen the values; the error
    statistics are still measured against ``array``. ``rows`` gives every row of the
    tensor its own step level (``scalar``/``dq`` on the identity transform; blocks then hold
    whole rows).

    Example:
        >>> from rftpack.profiles import hybrid_pipeline
        >>> x = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
        >>> enc = encode_lossy("w", x, hybrid_pipeline())
        >>> enc.snr_db > 20
        True
    """
    array = to_little_endian(np.asarray(array))
    if dtype_name(array.dtype) not in LOSSY_CAPABLE:
        raise StageError(f"tensor {name!r}: dtype {array.dtype} cannot take the lossy path")
    flat = array.reshape(-1)
    if rounded is not None and rounded.shape != array.shape:
        raise StageError(f"tensor {name!r}: rounded values of shape {rounded.shape} for a "
                         f"tensor of shape {array.shape}")
    chosen = None if rounded is None else np.asarray(rounded, np.float64).reshape(-1)
    if rows is not None:
        _check_rows(name, flat.shape[0], pipeline, rows)
    builder = _PayloadBuilder()
    blocks: list[dict[str, Any]] = []
    nonfinite_index: list[np.ndarray] = []
    signal = error = 0.0
    kept_total = coeff_total = 0
    quantizer, coder = pipeline.quantizer, pipeline.coder
    for start in range(0, flat.shape[0], pipeline.block_size):
        x = flat[start:start + pipeline.block_size].astype(np.float64)
        bad = ~np.isfinite(x)
        if bad.any():
            nonfinite_index.append(np.flatnonzero(bad) + start)
            x[bad] = 0.0
        coefficients = pipeline.transform.forward(
            x if chosen is None else chosen[start:start + pipeline.block_size])
        count = int(coefficients.shape[0])
        bands = pipeline.bands(x.shape[0])
        if rows is None:
            streams, side = quantizer.quantize(coefficients, bands)
        else:
            first = start // rows.length
            block_rows = RowSteps(rows.levels[first:first - (-count // rows.length)], rows.length)
            streams, side = quantizer.quantize(  # type: ignore[call-arg]
                coefficients, bands, rows=block_rows)
        symbols = {key: codes.symbols for key, codes in streams.items()}
        _check_streams(quantizer, streams, side)
        record = {"count": int(x.shape[0]), "coefficients": count, "side": side, "streams": {}}
        for key in sorted(streams):
            data = coder.encode(streams[key].symbols, streams[key].alphabet)
            _check_coder_round_trip(coder, data, streams[key].symbols, streams[key].alphabet,
                                    name)
            record["streams"][key] = builder.add(data, int(streams[key].symbols.shape[0]))
        blocks.append(record)
        if sampler is not None and quantizer.refinable:
            sampler(name, quantizer.view(symbols, side, count), coefficients, bands)
        rebuilt = pipeline.transform.inverse(quantizer.dequantize(symbols, side, count), x.shape[0])
        if rebuilt.shape != x.shape or not np.all(np.isfinite(rebuilt)):
            raise StageError(f"tensor {name!r}: stages {[s.id for s in pipeline.stages()]} "
                             f"returned a reconstruction of shape {rebuilt.shape} with non-finite "
                             f"values or the wrong length (expected {x.shape})")
        signal += float(np.dot(x, x))
        difference = x - rebuilt  # (once: a block's transient memory is rate control's peak)
        error += float(np.dot(difference, difference))
        kept_total += int(side.get("kept", count)) if isinstance(side.get("kept"), int) else count
        coeff_total += count
    container = _base_container(name, array)
    q = quantizer.to_config()["configuration"]
    container["codec"] = {
        "mode": "hybrid",
        "quant_amp_bits": q.get("amp_bits"),
        "quant_phase_bits": q.get("phase_bits"),
        "prune_threshold": q.get("prune_threshold"),
        "prune_mode": q.get("prune_mode"),
        "residual_predictor_ref": None,
        "band_min": pipeline.band_min,
        "band_growth": pipeline.band_growth,
    }
    container["stages"] = [stage_record(s) for s in pipeline.stages()]
    container["block_size"] = pipeline.block_size
    first_len = min(pipeline.block_size, int(flat.shape[0]))
    container["bands"] = [{"id": i, "start": s, "end": e}
                          for i, (s, e) in enumerate(pipeline.bands(first_len))]
    container["kept_coeff"] = kept_total
    container["total_coeff"] = coeff_total
    container["sparsity"] = 1.0 - kept_total / coeff_total if coeff_total else 0.0
    extra = {}
    if nonfinite_index:
        index = np.concatenate(nonfinite_index).astype("<u8")
        values = np.ascontiguousarray(flat[index])
        extra["nonfinite"] = {
            "count": int(index.shape[0]),
            "index": builder.add(index.tobytes(), int(index.shape[0])),
            "values": builder.add(values.tobytes(), int(index.shape[0])),
        }
    payload = builder.payload()
    container["payload"] = _payload_record(payload, blocks, extra)
    _add_size_stats(container, payload, array)
    container["bitrate_coeff"] = 8.0 * len(payload) / coeff_total if coeff_total else 0.0
    snr = (10.0 * math.log10(signal / error) if error > 0 and signal > 0
           else math.inf if error == 0 else -math.inf)
    container["snr_db"] = round(snr, 4) if math.isfinite(snr) else None
    return EncodedTensor(container, payload, snr_db=snr,
                         stats={"signal": signal, "error": error})


def _check_rows(name: str, count: int, pipeline: LossyPipeline, rows: RowSteps) -> None:
    """Row steps need a quantizer that takes them, the identity transform (rows of weights,
    not of coefficients), blocks of whole rows and one level per row."""
    if not isinstance(pipeline.quantizer, SteppedQuantizer) \
            or pipeline.transform.id != "identity":
        raise StageError(f"tensor {name!r}: row steps need the scalar or dq quantizer on the "
                         f"identity transform, not {pipeline.transform.id} + "
                         f"{pipeline.quantizer.id}")
    if pipeline.block_size % rows.length:
        raise StageError(f"tensor {name!r}: block size {pipeline.block_size} does not hold "
                         f"whole rows of {rows.length}")
    if rows.levels.shape != (-(-count // rows.length),):
        raise StageError(f"tensor {name!r}: {rows.levels.shape[0]} row levels for "
                         f"{-(-count // rows.length)} rows")


def _check_coder_round_trip(coder: Coder, data: Any, symbols: np.ndarray, alphabet: int,
                            name: str) -> None:
    """A third-party coder must give back exactly what it was given: checked on every stream
    it writes (built-in coders are covered by rftpack's own tests and skip this cost)."""
    if not isinstance(data, bytes):
        raise StageError(f"tensor {name!r}: coder {coder.id!r} returned {type(data).__name__}, "
                         f"not bytes")
    if type(coder).__module__.startswith("rftpack."):
        return
    try:
        back = coder.decode(data, int(symbols.shape[0]), alphabet)
    except Exception as exc:
        raise StageError(f"tensor {name!r}: coder {coder.id!r} cannot decode what it just "
                         f"encoded ({type(exc).__name__}: {exc})") from exc
    if not (isinstance(back, np.ndarray) and back.shape == symbols.shape
            and np.array_equal(back, symbols)):
        raise StageError(f"tensor {name!r}: coder {coder.id!r} does not decode to what it "
                         f"encoded; refusing to write a corrupt archive")


def _check_streams(quantizer: Quantizer, streams: dict[str, Any], side: dict[str, Any]) -> None:
    for key, codes in streams.items():
        symbols = codes.symbols
        if symbols.ndim != 1 or symbols.dtype.kind not in "ui":
            raise StageError(f"quantizer {quantizer.id!r} returned stream {key!r} that is not a "
                             f"1-D integer array ({symbols.dtype}, ndim {symbols.ndim})")
        if symbols.size and (int(symbols.min()) < 0 or int(symbols.max()) >= codes.alphabet):
            raise StageError(f"quantizer {quantizer.id!r} returned stream {key!r} with symbols "
                             f"outside its alphabet [0, {codes.alphabet})")


def _payload_record(payload: bytes, blocks: list[dict[str, Any]],
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"encoding": "binary", "size": len(payload),
                              "sha256": hashlib.sha256(payload).hexdigest(), "blocks": blocks}
    record.update(extra or {})
    return record


def _add_size_stats(container: dict[str, Any], payload: bytes, array: np.ndarray) -> None:
    container["stored_bytes"] = len(payload)
    container["bits_per_weight"] = 8.0 * len(payload) / array.size if array.size else 0.0


# ----------------------------------------------------------------------------------------------
# decoding

def iter_segments(container: dict[str, Any]):
    """Every segment record of a container (for checks and base64 conversion)."""
    payload = container.get("payload") or {}
    for block in payload.get("blocks") or []:
        yield from (block.get("streams") or {}).values()
    nonfinite = payload.get("nonfinite")
    if nonfinite:
        yield nonfinite["index"]
        yield nonfinite["values"]


def pipeline_of(container: dict[str, Any]) -> LossyPipeline | ExactPipeline:
    """Rebuild the pipeline a container was written with, from its recorded stages alone."""
    codec = container.get("codec") or {}
    records = container.get("stages")
    if not isinstance(records, list) or not records:
        raise FormatError("container has no 'stages' list")
    for record in records:
        if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
            raise FormatError(f"stage record must be an object with a 'kind': {record!r}")
    stages = [stage_from_config(r["kind"], r) for r in records]
    for index, (record, stage) in enumerate(zip(records, stages, strict=True)):
        version = record.get("format_version", 1)
        if not isinstance(version, int) or isinstance(version, bool):
            raise FormatError(f"{stage.kind} stage {stage.id!r}: format_version must be an "
                              f"integer, got {version!r}")
        if version > stage.format_version:
            raise StageError(f"{stage.kind} stage {stage.id!r} wrote format version {version}, "
                             f"but the installed one reads up to {stage.format_version}: upgrade "
                             f"the package {record.get('provider', 'rftpack')!r}")
        if version < 1:
            raise FormatError(f"stage format_version must be ≥ 1, got {version}")
        stages[index] = stage.for_format_version(version)
    block_size = container.get("block_size")
    if not isinstance(block_size, int) or not 1 <= block_size <= MAX_BLOCK_SIZE:
        raise FormatError(f"block_size must be an integer in [1, {MAX_BLOCK_SIZE}]")
    kinds = [s.kind for s in stages]
    mode = codec.get("mode")
    if mode not in ("exact", "hybrid"):
        raise FormatError(f"codec.mode must be 'exact' or 'hybrid', got {mode!r}")
    if mode == "exact":
        if kinds != ["coder"]:
            raise FormatError(f"exact containers take exactly one coder stage, found {kinds}")
        if not isinstance(codec.get("byte_shuffle"), bool):
            raise FormatError("exact containers must say codec.byte_shuffle: true or false")
        return ExactPipeline(stages[0], codec["byte_shuffle"], block_size)
    if kinds != ["transform", "quantizer", "coder"]:
        raise FormatError(f"lossy containers take transform, quantizer, coder in order; "
                          f"found {kinds}")
    try:
        return LossyPipeline(*stages, block_size=block_size,  # type: ignore[arg-type]
                             band_min=codec.get("band_min", 64),
                             band_growth=codec.get("band_growth", 2.0))
    except (StageError, TypeError) as exc:
        raise FormatError(f"container pipeline is invalid: {exc}") from exc


def decode_container(container: dict[str, Any], read_segment: Callable[[dict[str, Any]], bytes],
                     refine: RefineFactory | None = None) -> np.ndarray:
    """Decode a version-2 container; ``read_segment(seg)`` returns a segment's bytes.

    ``refine`` (a residual predictor) is applied to polar quantizers only.
    """
    dtype = dtype_from_name(container.get("dtype"))
    shape = container.get("original_shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise FormatError(f"original_shape must be a list of non-negative integers: {shape!r}")
    numel = math.prod(shape)
    if container.get("numel", numel) != numel:
        raise FormatError(f"numel {container.get('numel')} disagrees with shape {shape}")
    limit = decoded_bytes_limit()
    if numel * dtype.itemsize > limit:
        raise FormatError(f"tensor of shape {shape} would need {numel * dtype.itemsize:,} bytes, "
                          f"more than this machine's memory ({limit:,}): refusing to decode it")
    pipeline = pipeline_of(container)
    blocks = (container.get("payload") or {}).get("blocks")
    if not isinstance(blocks, list):
        raise FormatError("payload.blocks must be a list")
    counts = [b.get("count") if isinstance(b, dict) else None for b in blocks]
    if not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in counts):
        raise FormatError(f"every payload block's count must be a positive integer, got "
                          f"{counts}")
    if any(c > pipeline.block_size for c in counts):  # type: ignore[operator]
        raise FormatError(f"a payload block holds {max(counts)} weights, more than the "
                          f"container's block_size {pipeline.block_size}")
    if sum(counts) != numel:  # type: ignore[arg-type]
        raise FormatError(f"payload blocks cover {sum(counts)} weights, but the tensor has "
                          f"{numel}")
    out = np.empty(numel, dtype=dtype)
    start = 0
    for block, count in zip(blocks, counts, strict=True):
        if isinstance(pipeline, ExactPipeline):
            target = out[start:start + count]
            values = _decode_exact_block(block, count, dtype, pipeline, read_segment, target)
            if values is not target:
                target[...] = values
        else:
            target = out[start:start + count]
            with np.errstate(over="ignore", invalid="ignore"):  # corrupt values: checked next
                x = _decode_lossy_block(block, count, pipeline, read_segment, refine, target)
            if x is None:  # the quantizer wrote the target itself
                start += count
                continue
            if not np.isfinite(x).all():  # stored non-finite values come back separately
                raise FormatError("decoded weights are not finite: the block's side info or "
                                  "stage parameters are corrupt")
            cast_float_into(x, target)
        start += count
    nonfinite = (container.get("payload") or {}).get("nonfinite")
    if nonfinite:
        _restore_nonfinite(out, nonfinite, dtype, read_segment)
    return out.reshape(shape)


def decoded_bytes_limit() -> int:
    """The most bytes one decoded tensor may take: physical memory (a declared size beyond
    it is a decompression bomb or a corrupt container, refused before allocating)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return 1 << 40


def _stream_bytes(block: dict[str, Any], key: str, read_segment) -> tuple[bytes, int]:
    streams = block.get("streams")
    if not isinstance(streams, dict) or not isinstance(streams.get(key), dict):
        raise FormatError(f"block is missing stream {key!r}")
    seg = streams[key]
    count = seg.get("count")
    if not isinstance(count, int) or count < 0:
        raise FormatError(f"stream {key!r} has no valid symbol count")
    return read_segment(seg), count


def _element_coder(coder: Coder) -> bool:
    """Coders with ``encode_elements(values) -> bytes`` and ``decode_elements(data, count,
    dtype, out=None) -> values`` (filling ``out`` when given) see whole typed elements on the
    exact path instead of (shuffled) bytes."""
    return hasattr(coder, "encode_elements") and hasattr(coder, "decode_elements")


def _decode_exact_block(block, count, dtype, pipeline: ExactPipeline, read_segment,
                        out: np.ndarray | None = None) -> np.ndarray:
    itemsize = dtype.itemsize
    data, symbols = _stream_bytes(block, "bytes", read_segment)
    if symbols != count * itemsize:
        raise FormatError(f"exact block declares {symbols} bytes for {count} × {itemsize}")
    if _element_coder(pipeline.coder):
        values = pipeline.coder.decode_elements(  # type: ignore[attr-defined]
            data, count, dtype, out=out)
        if not isinstance(values, np.ndarray) or values.shape != (count,) \
                or values.dtype != dtype:
            raise StageError(f"coder {pipeline.coder.id!r} returned elements of the wrong "
                             f"shape or dtype (expected {count} × {dtype})")
        return values
    raw = np.asarray(pipeline.coder.decode(data, symbols, 256), dtype=np.uint8)
    if raw.shape != (symbols,):
        raise StageError(f"coder {pipeline.coder.id!r} returned {raw.shape[0]} bytes, "
                         f"expected {symbols}")
    if pipeline.byte_shuffle and itemsize > 1:
        raw = np.ascontiguousarray(raw.reshape(itemsize, count).T).reshape(-1)
    return raw.view(dtype.newbyteorder("<") if dtype.byteorder != "|" else dtype).astype(dtype)


def _decode_lossy_block(block, count, pipeline: LossyPipeline, read_segment,
                        refine: RefineFactory | None, target: np.ndarray | None = None
                        ) -> np.ndarray | None:
    """The block's decoded values (float64), or None when the quantizer wrote them into
    ``target`` itself (:meth:`Quantizer.dequantize_into`: identity transform, no refining)."""
    coefficients_count = pipeline.transform.coefficient_count(count)
    if block.get("coefficients", coefficients_count) != coefficients_count:
        raise FormatError("block coefficient count disagrees with its transform")
    side = block.get("side")
    if not isinstance(side, dict):
        raise FormatError("lossy block has no side info")
    alphabets = pipeline.quantizer.stream_alphabets(side)
    streams = {}
    for key in sorted(block.get("streams") or {}):
        if key not in alphabets:
            raise FormatError(f"block has stream {key!r}, unknown to quantizer "
                              f"{pipeline.quantizer.id!r}")
        data, symbols = _stream_bytes(block, key, read_segment)
        if symbols > coefficients_count:
            raise FormatError(f"stream {key!r} declares {symbols} symbols for "
                              f"{coefficients_count} coefficients")
        decoded = pipeline.coder.decode(data, symbols, alphabets[key])
        if decoded.shape != (symbols,):
            raise StageError(f"coder {pipeline.coder.id!r} returned {decoded.shape} symbols for "
                             f"stream {key!r}, expected {symbols}")
        streams[key] = decoded
    corrector = None
    if refine is not None and pipeline.quantizer.refinable:
        corrector = refine(pipeline.bands(count))
    if (target is not None and corrector is None and isinstance(pipeline.transform, Identity)
            and coefficients_count == count
            and pipeline.quantizer.dequantize_into(streams, side, count, target)):
        return None
    coefficients = pipeline.quantizer.dequantize(streams, side, coefficients_count, corrector)
    return pipeline.transform.inverse(coefficients, count)


def _restore_nonfinite(out: np.ndarray, record: dict[str, Any], dtype: np.dtype,
                       read_segment) -> None:
    count = record.get("count")
    if not isinstance(count, int) or not 0 <= count <= out.shape[0]:
        raise FormatError("nonfinite.count is invalid")
    index = np.frombuffer(read_segment(record["index"]), dtype="<u8")
    values = np.frombuffer(read_segment(record["values"]), dtype=dtype.newbyteorder("<")
                           if dtype.byteorder != "|" else dtype)
    if index.shape[0] != count or values.shape[0] != count:
        raise FormatError("nonfinite index/values do not hold the declared count")
    if count and int(index.max()) >= out.shape[0]:
        raise FormatError("nonfinite index points outside the tensor")
    out[index.astype(np.int64)] = values
