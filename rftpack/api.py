"""The public functions: ``compress``, ``extract``, ``open``.

Example:
    >>> import rftpack
    >>> result = rftpack.compress("model.safetensors", "model.rftp")   # doctest: +SKIP
    >>> result.ratio, result.weight_snr_db                             # doctest: +SKIP
    (6.3, 24.4)
    >>> rftpack.extract("model.rftp", "restored.safetensors")          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

from rftpack import __version__, parallel
from rftpack._memory import release_after
from rftpack.archive.reader import Archive
from rftpack.archive.writer import ArchiveWriter, default_layout
from rftpack.calibrated import calibrated_levels
from rftpack.codec import (
    EncodedTensor,
    ExactPipeline,
    LossyPipeline,
    encode_exact,
    encode_lossy,
    encode_near_lossless,
    is_lossy_candidate,
)
from rftpack.dtypes import dtype_from_name
from rftpack.errors import InputError, OutputError, RftpackError, StageError
from rftpack.importance import lookup as lookup_importance
from rftpack.importance import validate as validate_importance
from rftpack.importance import validate_rows
from rftpack.io import TensorInfo, open_sink, open_source
from rftpack.profiles import Profile, build_stage, get_profile
from rftpack.ratecontrol import (
    Overhead,
    RateFeedback,
    RatePlan,
    TensorStats,
    entropy_bits,
    estimate,
    extremes_of,
    float_summary,
    plan,
    row_sample,
    sample_of,
)
from rftpack.residual import ResidualSampler, TrainedResidual
from rftpack.rounding import MIN_BITS, Candidate, mantissa_bits, plan_rounding, squared_errors
from rftpack.stages.base import Coder, Predictor, Quantizer, Transform
from rftpack.stages.dct import RowDCT, rows_pay
from rftpack.stages.rowclasses import row_levels
from rftpack.stages.scalar import RowSteps

logger = logging.getLogger(__name__)

#: pip-style progress: wraps an iterable of TensorInfo and yields the same items.
Progress = Callable[[Iterable[TensorInfo]], Iterable[TensorInfo]]


def _no_progress(items: Iterable[TensorInfo]) -> Iterable[TensorInfo]:
    return items


@dataclass
class CompressResult:
    """What ``compress`` did: the manifest it wrote and the figures measured on the way."""

    path: Path
    manifest: dict[str, Any]
    original_bytes: int
    archive_bytes: int
    seconds: float
    predictor_seconds: float = 0.0

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest["metrics"]

    @property
    def ratio(self) -> float:
        return self.original_bytes / self.archive_bytes if self.archive_bytes else math.inf

    @property
    def weight_snr_db(self) -> float | None:
        return self.metrics.get("weight_snr_db")


@dataclass
class CompressOptions:
    """Every setting of a compress run. ``None`` stage configs come from the profile."""

    profile: str = "hybrid"
    transform: dict[str, Any] | None = None
    quantizer: dict[str, Any] | None = None
    quantizer_overrides: dict[str, Any] = field(default_factory=dict)
    coder: dict[str, Any] | None = None
    exact_coder: dict[str, Any] | None = None
    predictor: dict[str, Any] | None | bool = True
    lossless: bool = False
    block_size: int | None = None
    min_lossy_numel: int = 1024
    lossy_1d: bool = False
    #: Under rate control, float32/float64 tensors off the lossy path (biases, norms, small
    #: tensors) are rounded near-losslessly (:mod:`rftpack.rounding`); True keeps them
    #: bit-exact.
    exact_small: bool = False
    #: ``scalar``/``dq`` on the identity transform: "auto" codes a matrix whose neighbouring
    #: rows are alike (a learned position-embedding table) through the ``dct`` transform
    #: where that saves bits (:func:`rftpack.stages.dct.rows_pay`); "off" (the default) never
    #: does. Off by default because a smaller squared error is not a better model there: at
    #: low rates the DCT's error gathers in the table's first rows, the positions every input
    #: uses (MiniLM, dq at 3.43 bpw: weight SNR +0.08 dB, but sentence-embedding cosine 0.961
    #: → 0.910; at 4.94 bpw +0.08 dB and 0.99509 → 0.99529).
    row_dct: str = "off"
    layout: str | None = None
    #: "auto": small payloads inline (base64) where that takes fewer bytes, the rest in .bin
    #: members; "binary": every payload in a .bin; "base64": all inline (the spec's layout)
    payload: str = "auto"
    overwrite: bool = False
    #: Threads for the kernels that split (the ``dq`` trellis search); None: the
    #: ``RFTPACK_THREADS`` environment variable, else every core. The archive is the same
    #: byte for byte at any count (:mod:`rftpack.parallel`).
    threads: int | None = None
    #: Rate control (scalar profile): at most one of these.
    target_bpw: float | None = None
    target_snr_db: float | None = None
    max_rel_error: float | None = None
    #: Rate control weighs the squared error of token-embedding tables by this: each row is
    #: used only when its token appears, so its errors reach the output far less than those
    #: of layers every token passes through (MiniLM at 5 bpw: embedding cosine 0.9934 with
    #: 1.0, 0.9977 with 0.1).
    embedding_weight: float = 0.1
    #: Per-tensor weights of squared error in rate control (name → weight > 0), e.g. measured
    #: by :func:`rftpack.sensitivity.measure`; they replace ``embedding_weight`` for the
    #: tensors they name (each tensor's step becomes Δ / √weight).
    importance: dict[str, float] | None = None
    #: Input second moments H = E[x xᵀ] of linear layers (weight name → (in, in) array, or
    #: an .npz file of them), from :func:`rftpack.sensitivity.calibrate_text_model`: the
    #: ``scalar`` quantizer then rounds those weights for small output error instead of small
    #: weight error (:mod:`rftpack.calibrated`). Needs rate control; decoding is unchanged.
    input_covariance: Any = None
    calibration_damp: float = 0.1
    #: Per-row weights of squared error (name → one weight > 0 per row of a 2-D+ tensor),
    #: e.g. a token-embedding table's rows by how often calibration text used each token
    #: (:func:`rftpack.sensitivity.calibrate_text_model`): each row gets its own step, about
    #: the tensor's step / √(row weight ÷ mean row weight), in quarter octaves (``scalar``
    #: or ``dq`` quantizer, identity transform, a rate target; a mapping or an .npz file).
    #: Such tensors are not also given calibrated rounding.
    row_importance: Any = None

    def weight_of(self, name: str) -> float:
        """How much the squared error of tensor ``name`` counts in rate control."""
        if self.importance:
            weight = lookup_importance(self.importance, name)
            if weight is not None:
                return weight
        return self.embedding_weight if is_token_embedding(name) else 1.0

    @property
    def rate_controlled(self) -> bool:
        return any(t is not None for t in (self.target_bpw, self.target_snr_db,
                                           self.max_rel_error))

    def build(self) -> tuple[Profile, LossyPipeline | None, ExactPipeline, Predictor | None]:
        if not isinstance(self.min_lossy_numel, int) or self.min_lossy_numel < 0:
            raise StageError(f"min_lossy_numel must be a non-negative integer, got "
                             f"{self.min_lossy_numel!r}")
        if self.importance is not None:
            self.importance = validate_importance(self.importance)
            if self.target_bpw is None and self.target_snr_db is None:
                raise StageError("importance weights steer rate control: give a target "
                                 "(--bpw or --snr-db) with them")
        if self.input_covariance is not None:
            self.input_covariance = _covariances(self.input_covariance)
            if self.target_bpw is None and self.target_snr_db is None:
                raise StageError("calibrated rounding (input covariances) needs a rate target "
                                 "(--bpw or --snr-db): it rounds onto the rate-controlled grid")
            if (isinstance(self.calibration_damp, bool)
                    or not isinstance(self.calibration_damp, int | float)
                    or not 0 < self.calibration_damp < 1e6):
                raise StageError(f"calibration_damp must be a positive number, got "
                                 f"{self.calibration_damp!r}")
        if self.row_importance is not None:
            self.row_importance = validate_rows(_npz_or_mapping(self.row_importance,
                                                                "row weights"))
            if self.target_bpw is None and self.target_snr_db is None:
                raise StageError("row weights steer rate control: give a target (--bpw or "
                                 "--snr-db) with them")
        if self.row_dct not in ("auto", "off"):
            raise StageError(f"row_dct must be 'auto' or 'off', got {self.row_dct!r}")
        if self.threads is not None:
            parallel.check_threads(self.threads)
        profile = get_profile(self.profile)
        transform = (self.transform or profile.transform or {}).get("name")
        quantizer = (self.quantizer or profile.quantizer or {}).get("name")
        if self.row_importance is not None and (
                self.lossless or transform != "identity" or quantizer not in ("scalar", "dq")):
            raise StageError("row weights need the scalar or dq quantizer on the identity "
                             "transform: use --profile scalar or --profile dq")
        if self.input_covariance is not None:
            if self.lossless or (transform, quantizer) != ("identity", "scalar"):
                raise StageError("calibrated rounding (input covariances) works with the "
                                 "scalar quantizer on the identity transform: use --profile "
                                 "scalar")
        # --lossless means the lossless profile's coder, whatever profile was named.
        default_exact = get_profile("lossless" if self.lossless else self.profile).exact_coder
        exact_coder = build_stage("coder", self.exact_coder or default_exact)
        assert isinstance(exact_coder, Coder)
        exact = ExactPipeline(exact_coder)
        if self.lossless or not profile.lossy:
            return profile, None, exact, None
        qconf = self.quantizer or profile.quantizer
        assert qconf is not None and profile.transform is not None and profile.coder is not None
        qconf = {"name": qconf["name"],
                 "configuration": {**qconf.get("configuration", {}), **self.quantizer_overrides}}
        transform = build_stage("transform", self.transform or profile.transform)
        quantizer = build_stage("quantizer", qconf)
        coder = build_stage("coder", self.coder or profile.coder)
        if not (isinstance(transform, Transform) and isinstance(quantizer, Quantizer)
                and isinstance(coder, Coder)):
            raise StageError("stages must be a transform, a quantizer and a coder, in that order")
        lossy = LossyPipeline(transform, quantizer, coder,
                              block_size=self.block_size or profile.block_size)
        predictor = None
        wanted = self.predictor
        if wanted and quantizer.refinable:
            config = wanted if isinstance(wanted, dict) else profile.predictor
            if config:
                stage = build_stage("predictor", config)
                assert isinstance(stage, Predictor)
                predictor = stage
        return profile, lossy, exact, predictor


def compress(source: str | os.PathLike, out: str | os.PathLike, *,
             options: CompressOptions | None = None, progress: Progress = _no_progress,
             **settings: Any) -> CompressResult:
    """Compress a checkpoint into an archive, one tensor at a time.

    ``source``: a .safetensors file, a sharded or Hugging Face model directory, a PyTorch
    .bin/.pt/.pth state dict, an .npz file, or a model id in the local Hugging Face cache.
    ``settings`` are :class:`CompressOptions` fields (``profile``, ``lossless``,
    ``quantizer_overrides={"amp_bits": 6}``, ``layout``, ``payload``, ``overwrite``, ...).

    Example:
        >>> result = compress("model.safetensors", "model.rftp")   # doctest: +SKIP
        >>> print(f"{result.ratio:.2f}x at {result.weight_snr_db:.1f} dB")  # doctest: +SKIP
    """
    options = options or CompressOptions(**settings)
    profile, lossy, exact, predictor = options.build()
    started = time.perf_counter()
    with parallel.limited_to(options.threads), open_source(source) as model:
        parallel.threads()  # a bad RFTPACK_THREADS fails now, not after the first pass
        infos = model.infos()
        if not infos:
            raise InputError(f"{model.path}: the model holds no tensors")
        sized: dict[str, EncodedTensor] = {}  # small tensors the first pass already encoded
        rate_plan = (_plan_rate(model, infos, lossy, exact, options, out, sized)
                     if options.rate_controlled else None)
        if rate_plan is not None:  # it read every tensor
            release_after(max((info.nbytes for info in infos), default=0))
        sampler = (ResidualSampler(band_count=lossy.max_bands())
                   if predictor is not None and lossy is not None else None)
        writer = ArchiveWriter(out, layout=options.layout, payload=options.payload,
                               overwrite=options.overwrite)
        feedback = RateFeedback(rate_plan, {i.name: i.numel for i in infos}) \
            if rate_plan is not None and rate_plan.planned else None
        try:
            entries, totals, row_weighted, calibrated = [], _Totals(), [], []
            moved: dict[str, float] = {}  # the feedback's factors on planned steps
            for info in progress(infos):
                array = model.read(info.name)
                rows = _row_steps(info.name, array, options)
                dct = None if rows is not None else row_dct(info.name, array, lossy, options)
                multiplier = feedback.multiplier(info.name) if feedback is not None else 1.0
                if multiplier != 1.0:
                    moved[info.name] = multiplier
                pipeline = _with_row_length(_with_row_dct(
                    _with_step(lossy, rate_plan, info.name, options, multiplier), dct), array,
                    options)
                rounded = None
                if rows is not None:
                    pipeline = _for_rows(pipeline, *rows)
                    row_weighted.append(info.name)
                else:
                    rounded = _calibrated(info.name, array, pipeline, options)
                if rounded is not None:  # already on the grid: no centroid shift on top
                    pipeline = dataclasses.replace(pipeline, quantizer=dataclasses.replace(
                        pipeline.quantizer, centroid=False))
                    calibrated.append(info.name)
                try:
                    encoded = _encode_one(info, array, pipeline, exact, options, sampler,
                                          rounded, rows[0] if rows is not None else None,
                                          rate_plan.mantissa_bits if rate_plan else None,
                                          sized.pop(info.name, None))
                except (RftpackError, MemoryError):
                    raise
                except Exception as exc:  # a stage (maybe a plugin) failed: say which tensor
                    raise StageError(f"tensor {info.name!r}: a pipeline stage failed: "
                                     f"{type(exc).__name__}: {exc}") from exc
                written = writer.add_tensor(encoded)
                if feedback is not None:
                    feedback.wrote(info.name, written["archive_bytes"])
                entries.append(_manifest_entry(info, encoded, written))
                totals.add(info, encoded, written)
                del array, encoded, rounded
                model.release(info.name)
                release_after(info.nbytes)
            trained, predictor_seconds = None, 0.0
            predictor_record = None
            if sampler is not None and predictor is not None:
                logger.info("training the residual predictor on %d samples", sampler.filled)
                t0 = time.perf_counter()
                trained = sampler.fit(predictor)  # type: ignore[arg-type]
                predictor_seconds = time.perf_counter() - t0
                predictor_record = _decide_predictor(trained, entries, writer)
            manifest = _manifest(model, profile, options, lossy, entries, totals, trained,
                                 predictor_record, rate_plan, row_weighted, calibrated, moved)
            writer.finish(manifest)
        except BaseException:
            writer.abort()
            raise
    archive_bytes = _path_bytes(Path(out))
    return CompressResult(Path(out), manifest, totals.original_bytes, archive_bytes,
                          time.perf_counter() - started, predictor_seconds)


#: the first pass keeps its encodings of small tensors up to this payload size for the second
SIZED_KEPT_BYTES = 1 << 20


def _plan_rate(model: Any, infos: list[TensorInfo], lossy: LossyPipeline | None,
               exact: ExactPipeline, options: CompressOptions,
               out: str | os.PathLike, sized: dict[str, EncodedTensor] | None = None
               ) -> RatePlan:
    """First pass of rate control: sample every lossy tensor, size every exact one (their
    near-lossless encodings go to ``sized``, for the second pass to reuse)."""
    if lossy is None or not hasattr(lossy.quantizer, "step"):
        raise StageError("rate control (--bpw / --snr-db / --max-rel-error) needs a quantizer "
                         "with a 'step' parameter: use --profile scalar or --profile dq")
    if options.target_bpw is not None and lossy.coder.id != "rans":
        # (--snr-db and --max-rel-error bound the error, which no coder changes)
        raise StageError(f"--bpw plans sizes with the rans coder's model; with coder "
                         f"{lossy.coder.id!r} the archive could miss the target (floatplanes' "
                         f"Huffman codes take ~2 % more bits): use the rans coder, or "
                         f"--snr-db / --max-rel-error")
    logger.info("rate control: first pass over %d tensors", len(infos))
    stats: list[TensorStats] = []
    candidates: list[Candidate] = []
    for info in infos:
        array = model.read(info.name)
        floating = array.dtype.kind == "f" or array.dtype.name == "bfloat16"
        signal, peak, all_finite = float_summary(array) if floating else (0.0, 0.0, True)
        if is_lossy_candidate(array, min_numel=options.min_lossy_numel,
                              lossy_1d=options.lossy_1d):
            weight = options.weight_of(info.name)
            # The weights themselves where all are finite (no float64 copy of the tensor);
            # else a float64 copy: the finite ones for the sample, zeros in place for rows.
            with np.errstate(invalid="ignore"):  # signalling NaNs
                values = array.reshape(-1) if all_finite else \
                    array.astype(np.float64).reshape(-1)
            finite = values if all_finite else values[np.isfinite(values)]
            precision = float(ml_dtypes.finfo(array.dtype).eps) / 2
            rows = _row_steps(info.name, array, options)
            length = class_row_length(array, lossy, options)
            dct = None if rows is not None else row_dct(info.name, array, lossy, options)
            if dct is not None:  # sampled as the encoder's quantizer will see it
                values = finite = _row_dct_coefficients(values.astype(np.float64), dct,
                                                        lossy.block_size)
                peak = float(np.max(np.abs(finite)))
            if rows is None:
                extremes, where = extremes_of(finite)
                stats.append(TensorStats(info.name, info.numel, True, signal, peak,
                                         sample_of(finite), weight=weight, extremes=extremes,
                                         extreme_positions=where, precision=precision))
                multipliers = None
            else:  # sample by position, so each sampled weight keeps its row's step
                steps, base = rows
                zeroed = values  # not needed whole any more: zero the non-finite in place
                if not all_finite:
                    zeroed[~np.isfinite(zeroed)] = 0.0
                sample, scale, represents, positions = row_sample(
                    zeroed, base * steps.per_row(), steps.length)
                extremes, where = extremes_of(zeroed, base * steps.per_row(), steps.length)
                stats.append(TensorStats(info.name, info.numel, True, signal, peak, sample,
                                         weight=weight, scale=scale, represents=represents,
                                         positions=positions, extremes=extremes,
                                         extreme_positions=where, precision=precision))
                multipliers = steps.per_row()
            if length:
                if not all_finite:
                    values[~np.isfinite(values)] = 0.0
                levels = row_levels(values, length)
                if multipliers is not None:  # the quantizer sees rows divided by their step
                    levels = levels - np.log2(multipliers)
                stats[-1].row_length = length
                stats[-1].row_levels = levels
            whole_rows = length or (rows[0].length if rows is not None
                                    else dct.row_length if dct is not None else 0)
            if whole_rows:  # the encoder's blocks: whole rows (as _with_row_dct, _for_rows …)
                stats[-1].block_size = whole_rows_block(lossy.block_size, whole_rows)
        else:
            width = mantissa_bits(array.dtype)
            if not options.exact_small and width is not None and width > MIN_BITS and array.size:
                # sized rounded only: each further mantissa bit costs a bit (exact: all of them)
                encoded = encode_near_lossless(info.name, array, MIN_BITS, exact)
                rounded = len(encoded.payload)
                if sized is not None and rounded <= SIZED_KEPT_BYTES:
                    sized[info.name] = encoded
                exact_size = min(math.ceil(rounded + (width - MIN_BITS) * info.numel / 8),
                                 array.nbytes + 64)
                stats.append(TensorStats(info.name, info.numel, False, signal, 0.0,
                                         exact_bytes=exact_size))
                candidates.append(Candidate(stats[-1], squared_errors(array, range(
                    MIN_BITS, width)), rounded, exact_size))
            else:
                size = len(encode_exact(info.name, array, exact).payload)
                stats.append(TensorStats(info.name, info.numel, False, signal, 0.0,
                                         exact_bytes=size))
        del array
        values = finite = None
        model.release(info.name)
    if options.importance:
        lossy_names = [s.name for s in stats if s.lossy]
        matched = [n for n in lossy_names
                   if lookup_importance(options.importance, n) is not None]
        if not matched:
            example = ", ".join(sorted(options.importance)[:3])
            raise InputError(f"none of the {len(options.importance)} tensors named by the "
                             f"importance weights (e.g. {example}) is a lossy tensor of this "
                             f"model: were they measured on another model?")
        logger.info("importance weights cover %d of %d lossy tensors", len(matched),
                    len(lossy_names))
    if options.row_importance:
        weighted = [s.name for s in stats if s.scale is not None]
        if not weighted:
            example = ", ".join(sorted(options.row_importance)[:3])
            raise InputError(f"none of the row weights (e.g. {example}) belongs to a lossy "
                             f"tensor of this model: were they measured on another model?")
        logger.info("row weights for %s", ", ".join(weighted))
    if options.input_covariance is not None:
        covered = [s.name for s in stats if s.lossy
                   and lookup_importance(options.input_covariance, s.name) is not None]
        if not covered:
            example = ", ".join(sorted(options.input_covariance.keys())[:3])
            raise InputError(f"none of the input covariances (e.g. {example}) belongs to a "
                             f"lossy tensor of this model: were they measured on another model?")
    settings = {"target_bpw": options.target_bpw, "target_snr_db": options.target_snr_db,
                "max_rel_error": options.max_rel_error, "block_size": lossy.block_size,
                "overhead": Overhead.for_layout(options.layout or default_layout(Path(out)),
                                                options.payload)}

    def planner() -> RatePlan:
        return plan(stats, lossy.quantizer, **settings)  # type: ignore[arg-type]

    rounding = {"signal": sum(s.signal for s in stats), "target_snr_db": options.target_snr_db,
                "max_rel_error": options.max_rel_error}
    first = plan_rounding(candidates, planner, **rounding)  # type: ignore[arg-type]
    if options.input_covariance is None or not _measure_rate_bias(model, stats, first, lossy,
                                                                  options):
        return first
    return dataclasses.replace(planner(), mantissa_bits=first.mantissa_bits)


#: rows of a linear layer that calibrated rounding is tried on to measure its extra rate,
#: and the planned rate (bits per weight) below which it is measured
RATE_BIAS_ROWS = 128
RATE_BIAS_BELOW_BPW = 4.0


def _measure_rate_bias(model: Any, stats: list[TensorStats], first: RatePlan,
                       lossy: LossyPipeline, options: CompressOptions) -> bool:
    """Calibrated rounding moves weights off their nearest level, which costs bits that plain
    rounding of the sample does not show: little at high rates (MiniLM's layers at 4–7 bits
    per weight: |Δ| ≤ 0.001 bit), more at low ones (its pooler at 0.2 bpw: +0.13 bit; 0.02
    at 2 bpw on strongly correlated inputs). For the layers planned below
    RATE_BIAS_BELOW_BPW, measure it on a subset of rows (each row is rounded independently)
    at the first plan's step, so the second plan counts it. True if any layer was measured."""
    covered = dict.fromkeys(options.input_covariance.keys(), True)  # names only: no loading
    measured = False
    for s in stats:
        step = first.step_for(s.name)
        if not s.lossy or s.scale is not None or step is None \
                or lookup_importance(covered, s.name) is None:
            continue
        quantizer = dataclasses.replace(lossy.quantizer, step=step)
        if estimate(s, quantizer, lossy.block_size)[0] / s.numel >= RATE_BIAS_BELOW_BPW:
            continue
        array = model.read(s.name)
        rows = array[::max(1, array.shape[0] // RATE_BIAS_ROWS)] if array.ndim == 2 else array
        rounded = _calibrated(s.name, rows, dataclasses.replace(lossy, quantizer=quantizer),
                              options)
        if rounded is not None:
            plain = np.rint(rows.astype(np.float64) / step)
            s.rate_bias = entropy_bits(np.rint(rounded / step)) - entropy_bits(plain)
            measured = True
        del array
        model.release(s.name)
    return measured


_TOKEN_EMBEDDING = re.compile(r"(word_embeddings|embed_tokens|tok_embeddings|\bwte\b|"
                              r"token_embedding|shared\.weight$)")


def is_token_embedding(name: str) -> bool:
    """Names of token-embedding tables in common model families.

    >>> is_token_embedding("embeddings.word_embeddings.weight"), is_token_embedding("lm_head")
    (True, False)
    """
    return bool(_TOKEN_EMBEDDING.search(name))


def _with_step(lossy: LossyPipeline | None, rate_plan: RatePlan | None, name: str,
               options: CompressOptions, multiplier: float = 1.0) -> LossyPipeline | None:
    """The lossy pipeline with the rate-controlled step of this tensor (× the feedback's
    ``multiplier``), if any."""
    step = rate_plan.step_for(name) if rate_plan is not None else None
    if lossy is None or step is None:
        return lossy
    changes: dict[str, Any] = {"step": step * multiplier}
    if options.max_rel_error is not None and hasattr(lossy.quantizer, "centroid"):
        changes["centroid"] = False  # centroid shifts would break the error bound
    return dataclasses.replace(lossy, quantizer=dataclasses.replace(lossy.quantizer, **changes))


def class_row_length(array: np.ndarray, lossy: LossyPipeline | None,
                     options: CompressOptions) -> int:
    """Weights per row of a lossy matrix (or higher-dimensional tensor) whose quantizer codes
    rows in classes (``row_classes`` > 1 on the identity or ``dct`` transform), else 0.

    >>> options = CompressOptions(profile="dq")
    >>> class_row_length(np.zeros((300, 64), np.float32), options.build()[1], options)
    64
    """
    if lossy is None or getattr(lossy.quantizer, "row_classes", 1) <= 1 \
            or lossy.transform.id not in ROW_TRANSFORMS or array.ndim < 2 or not array.shape[0] \
            or not is_lossy_candidate(array, min_numel=options.min_lossy_numel,
                                      lossy_1d=options.lossy_1d):
        return 0
    length = array.size // array.shape[0]
    # a block of fewer than 4 rows can have no classes (2 rows each, at least 2 classes)
    return length if lossy.block_size // length >= 4 else 0


#: transforms whose coefficients keep the weights' rows (row classes apply to them)
ROW_TRANSFORMS = ("identity", "dct")


def row_dct(name: str, array: np.ndarray, lossy: LossyPipeline | None,
            options: CompressOptions) -> RowDCT | None:
    """The ``dct`` transform for a tensor it pays on (``row_dct="auto"``, ``scalar``/``dq`` on
    the identity transform, a finite matrix whose neighbouring rows are alike), else None.
    Not with ``max_rel_error`` (an error bound on coefficients bounds no single weight), row
    weights or calibrated rounding (both work on the weights' own grid).

    >>> options = CompressOptions(profile="dq", row_dct="auto")
    >>> table = np.cumsum(np.random.default_rng(0).normal(size=(512, 64)), axis=0)
    >>> row_dct("pos.weight", table, options.build()[1], options)
    RowDCT(row_length=64)
    """
    if (options.row_dct != "auto" or lossy is None or lossy.transform.id != "identity"
            or not hasattr(lossy.quantizer, "row_classes") or options.max_rel_error is not None
            or array.ndim < 2 or array.shape[0] < 2
            or not is_lossy_candidate(array, min_numel=options.min_lossy_numel,
                                      lossy_1d=options.lossy_1d)
            or (options.row_importance is not None
                and lookup_importance(options.row_importance, name) is not None)
            or (options.input_covariance is not None
                and lookup_importance(options.input_covariance, name) is not None)):
        return None
    values = array.astype(np.float64).reshape(array.shape[0], -1)
    if not np.all(np.isfinite(values)):
        return None
    length = values.shape[1]
    if not rows_pay(values, whole_rows_block(lossy.block_size, length) // length):
        return None
    return RowDCT(row_length=length)


def _with_row_dct(lossy: LossyPipeline | None, dct: RowDCT | None) -> LossyPipeline | None:
    """The pipeline for a tensor coded through ``dct``: blocks of whole rows."""
    if lossy is None or dct is None:
        return lossy
    return dataclasses.replace(lossy, transform=dct,
                               block_size=whole_rows_block(lossy.block_size, dct.row_length))


def _row_dct_coefficients(values: np.ndarray, dct: RowDCT, block_size: int) -> np.ndarray:
    """The coefficients the encoder will quantize: ``dct`` over each block of whole rows."""
    block = whole_rows_block(block_size, dct.row_length)
    return np.concatenate([dct.forward(values[i:i + block])
                           for i in range(0, values.shape[0], block)])


def _with_row_length(lossy: LossyPipeline | None, array: np.ndarray, options: CompressOptions
                     ) -> LossyPipeline | None:
    """The pipeline for a tensor whose rows are coded in classes: its quantizer told the row
    length, its blocks made of whole rows."""
    length = class_row_length(array, lossy, options)
    if not length:
        return lossy
    assert lossy is not None
    quantizer = dataclasses.replace(lossy.quantizer, row_length=length)
    return dataclasses.replace(lossy, quantizer=quantizer,
                               block_size=whole_rows_block(lossy.block_size, length))


def whole_rows_block(block_size: int, length: int) -> int:
    """The block size for a tensor coded in whole rows of ``length``: the most whole rows
    within ``block_size``, at least one.

    >>> whole_rows_block(1 << 20, 384), whole_rows_block(1000, 1500)
    (1048320, 1500)
    """
    return max(length, block_size // length * length)


def _row_steps(name: str, array: np.ndarray, options: CompressOptions
               ) -> tuple[RowSteps, float] | None:
    """(row levels, base step multiplier) of a tensor with row weights, else None."""
    if not options.row_importance or array.ndim < 2 or not is_lossy_candidate(
            array, min_numel=options.min_lossy_numel, lossy_1d=options.lossy_1d):
        return None
    weights = lookup_importance(options.row_importance, name)
    if weights is None:
        return None
    if weights.shape[0] != array.shape[0]:
        raise InputError(f"tensor {name!r} has {array.shape[0]} rows but {weights.shape[0]} "
                         f"row weights: measured on another model?")
    levels, base = RowSteps.from_weights(weights)
    return RowSteps(levels, array.size // array.shape[0]), base


def _for_rows(lossy: LossyPipeline | None, rows: RowSteps, base: float
              ) -> LossyPipeline | None:
    """The pipeline for a tensor with row steps: its step scaled to the coarsest row's and
    blocks of whole rows."""
    if lossy is None or not getattr(lossy.quantizer, "step", 0) > 0:
        return lossy
    block = whole_rows_block(lossy.block_size, rows.length)
    quantizer = dataclasses.replace(lossy.quantizer, step=lossy.quantizer.step * base)
    return dataclasses.replace(lossy, quantizer=quantizer, block_size=block)


def _covariances(value: Any) -> Any:
    """A name → (in, in) array mapping, from a mapping or an .npz file (read lazily)."""
    value = _npz_or_mapping(value, "input covariances")
    if not hasattr(value, "keys") or not hasattr(value, "__getitem__"):
        raise InputError("input_covariance must map weight names to (in, in) arrays or be "
                         "the path of an .npz file of them")
    return value


def _npz_or_mapping(value: Any, what: str) -> Any:
    """``value`` itself, or the arrays of the .npz file it names (read lazily)."""
    if isinstance(value, str | os.PathLike):
        try:
            return np.load(value, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"{value}: not an .npz file of {what} ({exc})") from None
    return value


def _calibrated(name: str, array: np.ndarray, lossy: LossyPipeline | None,
                options: CompressOptions) -> np.ndarray | None:
    """Calibrated grid values for this tensor, or None where calibrated rounding does not
    apply (no covariance for it, not a finite 2-D lossy tensor, not scalar on identity)."""
    table = options.input_covariance
    if (table is None or lossy is None or lossy.quantizer.id != "scalar"
            or lossy.transform.id != "identity" or array.ndim != 2
            or not getattr(lossy.quantizer, "step", 0) > 0
            or not is_lossy_candidate(array, min_numel=options.min_lossy_numel,
                                      lossy_1d=options.lossy_1d)):
        return None
    found = lookup_importance(table, name)  # same name matching as importance weights
    if found is None:
        return None
    covariance = np.asarray(found)
    if covariance.shape != (array.shape[1], array.shape[1]):
        raise InputError(f"tensor {name!r} has {array.shape[1]} input columns but its input "
                         f"covariance is {covariance.shape}: measured on another model?")
    values = array.astype(np.float64)
    if not np.all(np.isfinite(values)):
        return None
    return calibrated_levels(values, covariance, lossy.quantizer.step,
                             damp=options.calibration_damp)


def _encode_one(info: TensorInfo, array: np.ndarray, lossy: LossyPipeline | None,
                exact: ExactPipeline, options: CompressOptions,
                sampler: ResidualSampler | None,
                rounded: np.ndarray | None = None,
                rows: RowSteps | None = None,
                mantissa: int | None = None,
                sized: EncodedTensor | None = None) -> EncodedTensor:
    if array.shape != info.shape:
        raise InputError(f"tensor {info.name!r}: read shape {array.shape}, header says "
                         f"{info.shape}")
    if lossy is not None and is_lossy_candidate(array, min_numel=options.min_lossy_numel,
                                                lossy_1d=options.lossy_1d):
        return encode_lossy(info.name, array, lossy, sampler, rounded=rounded, rows=rows)
    if mantissa is not None and array.size and (mantissa_bits(array.dtype) or 0) > mantissa:
        encoded = sized if sized is not None and \
            sized.container["codec"].get("mantissa_bits") == mantissa else \
            encode_near_lossless(info.name, array, mantissa, exact)
        bound = options.max_rel_error
        if bound is None or encoded.stats["max_error"] <= bound * encoded.stats["peak"]:
            return encoded  # (subnormal values can miss a relative bound: then stay exact)
    return encode_exact(info.name, array, exact)


@dataclass
class _Totals:
    original_bytes: int = 0
    stored_bytes: int = 0
    weights: int = 0
    lossy_weights: int = 0
    lossy_payload: int = 0
    lossy_tensors: int = 0
    exact_tensors: int = 0
    signal: float = 0.0
    error: float = 0.0
    kept: int = 0
    coefficients: int = 0
    tensor_snrs: list[float] = field(default_factory=list)
    rounded_tensors: int = 0
    rounded_signal: float = 0.0
    rounded_error: float = 0.0

    def add(self, info: TensorInfo, encoded: EncodedTensor, written: dict[str, Any]) -> None:
        container = encoded.container
        self.original_bytes += info.nbytes
        self.stored_bytes += written["stored_bytes"]
        self.weights += info.numel
        if container["codec"]["mode"] == "hybrid":
            self.lossy_tensors += 1
            self.lossy_weights += info.numel
            self.lossy_payload += len(encoded.payload)
            self.signal += encoded.stats["signal"]
            self.error += encoded.stats["error"]
            self.kept += container["kept_coeff"]
            self.coefficients += container["total_coeff"]
            if encoded.snr_db is not None and math.isfinite(encoded.snr_db):
                self.tensor_snrs.append(encoded.snr_db)
        elif "mantissa_bits" in container["codec"]:
            self.rounded_tensors += 1
            self.rounded_signal += encoded.stats["signal"]
            self.rounded_error += encoded.stats["error"]
        else:
            self.exact_tensors += 1


def _manifest_entry(info: TensorInfo, encoded: EncodedTensor,
                    written: dict[str, Any]) -> dict[str, Any]:
    c = encoded.container
    entry: dict[str, Any] = {
        "tensor_name": info.name,
        "file": written["file"],
        "dtype": c["dtype"],
        "shape": c["original_shape"],
        "mode": c["codec"]["mode"],
        "stored_bytes": written["stored_bytes"],
        "original_bytes": info.nbytes,
        "container_sha256": written["container_sha256"],
        "predictor": False,
    }
    if "mantissa_bits" in c["codec"]:
        entry["mantissa_bits"] = c["codec"]["mantissa_bits"]
    if c["codec"]["mode"] == "hybrid":
        entry.update({"kept_coeff": c["kept_coeff"], "total_coeff": c["total_coeff"],
                      "sparsity": c["sparsity"], "bitrate_coeff": c["bitrate_coeff"],
                      "snr_db": c.get("snr_db")})
    return entry


def _decide_predictor(trained: TrainedResidual | None, entries: list[dict[str, Any]],
                      writer: ArchiveWriter) -> dict[str, Any] | None:
    """Store the predictor only if it lowers the held-out error of at least one tensor."""
    if trained is None:
        return None
    applied = 0
    for entry in entries:
        if entry["mode"] != "hybrid" or entry["tensor_name"] not in trained.gains_db:
            continue
        gain = trained.gains_db[entry["tensor_name"]]
        entry["predictor_gain_db"] = round(gain, 4)
        if trained.helps(entry["tensor_name"]):
            entry["predictor"] = True
            applied += 1
    record = {"trained": True, "validation_gain_db": round(float(trained.stats["gain_db"]), 4),
              "holdout_gain_db": round(trained.holdout_gain_db, 4),
              "samples": int(trained.stats.get("samples", 0)), "tensors_applied": applied}
    if applied:
        stored = writer.add_predictor(trained.to_json())
        record.update(file=stored["file"], sha256=stored["sha256"])
    return record


def _manifest(model: Any, profile: Profile, options: CompressOptions,
              lossy: LossyPipeline | None, entries: list[dict[str, Any]], totals: _Totals,
              trained: TrainedResidual | None, predictor: dict[str, Any] | None,
              rate_plan: RatePlan | None = None, row_weighted: Iterable[str] = (),
              calibrated: Iterable[str] = (), step_feedback: dict[str, float] | None = None
              ) -> dict[str, Any]:
    codec: dict[str, Any] = {"mode": "hybrid" if lossy else "exact", "profile": profile.name,
                             "lossless": lossy is None,
                             "min_lossy_numel": options.min_lossy_numel,
                             "lossy_1d": options.lossy_1d}
    if lossy is not None:
        q = lossy.quantizer.to_config()["configuration"]
        codec.update({"prune_threshold": q.get("prune_threshold"),
                      "prune_mode": q.get("prune_mode"),
                      "quant_amp_bits": q.get("amp_bits"), "quant_phase_bits": q.get("phase_bits"),
                      "transform": lossy.transform.id, "quantizer": lossy.quantizer.id,
                      "coder": lossy.coder.id, "block_size": lossy.block_size})
    if rate_plan is not None:
        codec["rate_control"] = {
            "target_bpw": options.target_bpw, "target_snr_db": options.target_snr_db,
            "max_rel_error": options.max_rel_error, "step": rate_plan.step,
            "embedding_weight": options.embedding_weight,
            "importance_weighted": bool(options.importance),
            "importance": dict(sorted(options.importance.items())) if options.importance
            else None,
            "calibrated_rounding": bool(calibrated),
            "row_weighted": sorted(row_weighted),
            "estimated_bpw": round(rate_plan.estimated_bpw, 4),
            "estimated_snr_db": (round(rate_plan.estimated_snr_db, 4)
                                 if rate_plan.estimated_snr_db is not None else None),
            "mantissa_bits": rate_plan.mantissa_bits, "exact_small": options.exact_small}
        if step_feedback:
            codec["rate_control"]["step_feedback"] = dict(sorted(step_feedback.items()))
    snr = (10.0 * math.log10(totals.signal / totals.error)
           if totals.error > 0 and totals.signal > 0 else None)
    metrics: dict[str, Any] = {
        "total_tensors": len(entries),
        "encoded_tensors": len(entries),
        "lossy_tensors": totals.lossy_tensors,
        "exact_tensors": totals.exact_tensors,
        "rounded_tensors": totals.rounded_tensors,
        "rounded_snr_db": (round(10.0 * math.log10(totals.rounded_signal / totals.rounded_error), 4)
                           if totals.rounded_error > 0 and totals.rounded_signal > 0 else None),
        "weights": totals.weights,
        "original_bytes": totals.original_bytes,
        "stored_bytes": totals.stored_bytes,
        "compression_ratio": (round(totals.original_bytes / totals.stored_bytes, 4)
                              if totals.stored_bytes else None),
        "bits_per_weight": (round(8.0 * totals.stored_bytes / totals.weights, 4)
                            if totals.weights else None),
        "lossy_bits_per_weight": (round(8.0 * totals.lossy_payload / totals.lossy_weights, 4)
                                  if totals.lossy_weights else None),
        "weight_snr_db": round(snr, 4) if snr is not None else None,
        "mean_tensor_snr_db": (round(float(np.mean(totals.tensor_snrs)), 4)
                               if totals.tensor_snrs else None),
        "kept_coeff_total": totals.kept,
        "coeff_total": totals.coefficients,
        "avg_sparsity": 1.0 - totals.kept / totals.coefficients if totals.coefficients else 0.0,
        "predictor": predictor or {"trained": False},
        "predictor_gain_db": predictor["holdout_gain_db"] if predictor else None,
    }
    return {
        "type": "rft_hybrid_manifest_bundle",
        "version": 2,
        "generator": f"rftpack {__version__}",
        "model_name": model.name,
        "framework": model.framework,
        "profile": profile.name,
        "codec": codec,
        "tensors": entries,
        "predictor": predictor.get("file") if predictor else None,
        "predictor_sha256": predictor.get("sha256") if predictor else None,
        "metrics": metrics,
    }


def _path_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------

def open(path: str | os.PathLike | BinaryIO, *, framework: str = "numpy",  # noqa: A001
         device: Any = None, cache_bytes: int = 0) -> Archive:
    """Open an archive lazily: only the manifest is read until a tensor is asked for.

    ``framework="torch"`` returns torch tensors (on ``device``); ``cache_bytes`` keeps recently
    decoded tensors (LRU) so repeated reads do not decode again. Thread-safe.

    Example:
        >>> with rftpack.open("model.rftp") as archive:     # doctest: +SKIP
        ...     archive.keys()[:2], archive.info("embeddings.word_embeddings.weight").shape
        ...     w = archive.get_tensor("embeddings.word_embeddings.weight")
    """
    return Archive(path, framework=framework, device=device, cache_bytes=cache_bytes)


def archive_infos(archive: Archive) -> list[TensorInfo]:
    """Names, dtypes and shapes of an archive's tensors (v1: read from the containers)."""
    infos = []
    for name in archive.keys():
        entry = archive.entry(name)
        if "dtype" in entry and "shape" in entry:
            infos.append(TensorInfo(name, dtype_from_name(entry["dtype"]), tuple(entry["shape"])))
        else:
            record = archive.info(name)
            infos.append(TensorInfo(name, record.dtype, record.shape))
    return infos


def extract(archive: str | os.PathLike, out: str | os.PathLike, *, format: str | None = None,
            use_predictor: bool = True, overwrite: bool = False,
            progress: Progress = _no_progress) -> Path:
    """Decode every tensor of an archive into a checkpoint file (.safetensors by default).

    ``format``: ``"safetensors"``, ``"torch"`` (a ``torch.save`` state dict) or ``"npz"``;
    by default taken from ``out``'s suffix. The file appears only once complete.

    Example:
        >>> extract("model.rftp", "restored.safetensors")   # doctest: +SKIP
    """
    if Path(out).exists() and not overwrite:
        raise OutputError(f"{out} exists; pass --force (overwrite=True) to replace it")
    with Archive(archive) as reader, reader.plan_decoding():
        infos = archive_infos(reader)
        with open_sink(out, infos, format) as sink:
            decoded = reader.items(use_predictor=use_predictor)
            for _info in progress(infos):
                # Unpack and drop at once: no tuple may keep the previous tensor alive while
                # the next one is decoded (peak memory = one tensor, not two).
                name, array = next(decoded)
                sink.write(name, array)
                del array
    return Path(out)
