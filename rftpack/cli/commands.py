"""The subcommands. Each returns a JSON-ready document (or ``(exit code, document)``) and
prints its human summary to the console unless ``--quiet``/``--json``."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rftpack.api import CompressOptions, archive_infos, compress, extract
from rftpack.archive.reader import Archive
from rftpack.cli.progress import tensor_progress
from rftpack.errors import InputError, OutputError
from rftpack.io import resolve_model


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000.0
    return f"{n:.2f} GB"


def _show(args: argparse.Namespace) -> bool:
    return not (args.quiet or args.json)


def _fmt(value: Any, spec: str = ".2f", missing: str = "—") -> str:
    return missing if value is None else format(value, spec)


# -- compress -------------------------------------------------------------------------------------

def compress_options(args: argparse.Namespace) -> CompressOptions:
    """Translate CLI flags into CompressOptions (flags left unset keep the profile's values)."""
    overrides = {key: value for key, value in (
        ("amp_bits", args.quant_amp_bits), ("phase_bits", args.quant_phase_bits),
        ("prune_threshold", args.prune_threshold), ("prune_mode", args.prune_mode),
    ) if value is not None}
    overrides.update(_key_values(args.quantizer_options))
    options = CompressOptions(
        profile=args.profile, lossless=args.lossless, quantizer_overrides=overrides,
        block_size=args.block_size, min_lossy_numel=args.min_lossy_numel,
        lossy_1d=args.lossy_1d, exact_small=args.exact_small, row_dct=args.row_dct,
        layout=args.layout,
        payload=args.payload, overwrite=args.force, threads=args.threads,
        target_bpw=args.target_bpw, target_snr_db=args.target_snr_db,
        max_rel_error=args.max_rel_error, embedding_weight=args.embedding_weight,
    )
    if args.importance:
        from rftpack.importance import load, load_rows

        options.importance = load(args.importance)
        options.row_importance = load_rows(args.importance) or None
    if args.calibration_texts and not args.calibrate:
        raise InputError("--calibration-texts goes with --calibrate")
    if args.transform:
        options.transform = {"name": args.transform, "configuration": {}}
    if args.quantizer:
        options.quantizer = {"name": args.quantizer, "configuration": {}}
    if args.coder:
        options.coder = {"name": args.coder, "configuration": {}}
    if args.no_predictor:
        options.predictor = False
    elif args.predictor:
        options.predictor = {"name": args.predictor, "configuration": {}}
    return options


def _key_values(pairs: list[str]) -> dict[str, Any]:
    """``["states=64", "lam=0.3", "mode=relative"]`` → {"states": 64, "lam": 0.3, "mode":
    "relative"}: each value read as JSON (numbers, true/false, null), else kept as text."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set takes KEY=VALUE, got {pair!r}")
        try:
            parsed[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            parsed[key.strip()] = text
    return parsed


def _read_texts(path: str) -> list[str]:
    try:
        texts = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the calibration texts ({exc})") from None
    if not texts:
        raise InputError(f"{path}: no calibration texts in the file")
    return texts


def _calibrate(args: argparse.Namespace, options: CompressOptions, source: str,
               console: Console) -> None:
    """--calibrate: importance weights (and input covariances for scalar) measured on the
    model itself before compressing."""
    from rftpack.sensitivity import calibrate_text_model

    if args.importance:
        raise InputError("give --importance or --calibrate, not both")
    if options.target_bpw is None and options.target_snr_db is None:
        raise InputError("--calibrate steers rate control: give --bpw or --snr-db with it")
    # Refuse what cannot use calibration before the slow measurement, not after it.
    _, lossy, _, _ = options.build()
    if lossy is None or not hasattr(lossy.quantizer, "step"):
        raise InputError("--calibrate needs a rate-controlled lossy profile: --profile scalar "
                         "or --profile dq (and no --lossless)")
    texts = _read_texts(args.calibration_texts) if args.calibration_texts else None
    started = time.perf_counter()
    with console.status("calibrating: measuring each tensor's effect on the model output",
                        spinner="dots") if _show(args) else nullcontext():
        calibration = calibrate_text_model(resolve_model(source), texts)
    options.importance = calibration.importance
    if lossy.transform.id == "identity" and lossy.quantizer.id in ("scalar", "dq"):
        options.row_importance = calibration.row_importance or None
    if calibration.covariances and (lossy.transform.id, lossy.quantizer.id) == (
            "identity", "scalar"):
        options.input_covariance = calibration.covariances
    if _show(args):
        rounded = (", linear layers rounded for their outputs"
                   if options.input_covariance is not None else "")
        rows = (", token-embedding rows weighted by use"
                if options.row_importance is not None else "")
        console.print(f"calibrated in {time.perf_counter() - started:.1f} s "
                      f"({len(calibration.importance)} tensors weighted{rows}{rounded})",
                      highlight=False)


def _hint_numba(options: CompressOptions, console: Console) -> None:
    """dq's trellis search without the C extension or numba is correct but slow: say how to
    speed it up."""
    import importlib.util

    from rftpack import native

    _, lossy, _, _ = options.build()
    if lossy is not None and lossy.quantizer.id == "dq" and not native.available() and \
            importlib.util.find_spec("numba") is None:
        console.print("dq: neither rftpack's C extension (built at install where a C compiler "
                      "is found) nor numba is here, so the trellis searches in numpy, 25–75× "
                      "slower (pip install 'rftpack[fast]' adds numba); the archive is the "
                      "same", highlight=False)


def default_archive_name(source: str) -> Path:
    path = Path(source.rstrip("/\\"))
    stem = path.stem if path.suffix else path.name
    return Path(f"{stem.replace('/', '__') or 'model'}.rftp")


def cmd_compress(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    source = args.input or args.model_id
    if not source:
        raise InputError("nothing to compress: give INPUT or --model-id")
    if args.input and args.model_id and args.input != args.model_id:
        raise InputError("give either INPUT or --model-id, not both")
    out = Path(args.out) if args.out else default_archive_name(source)
    options = compress_options(args)
    if _show(args):
        _hint_numba(options, console)
    if args.calibrate:
        _calibrate(args, options, source, console)
    progress = tensor_progress(console, "compress", enabled=_show(args))
    result = compress(source, out, options=options, progress=progress)
    m = result.metrics
    document = {
        "archive": str(result.path), "original_bytes": result.original_bytes,
        "archive_bytes": result.archive_bytes, "ratio": round(result.ratio, 4),
        "seconds": round(result.seconds, 3), "predictor_seconds": round(result.predictor_seconds,
                                                                        3),
        "metrics": m,
    }
    if _show(args):
        table = Table(title=f"{source} → {result.path}", show_header=False)
        rounded = ""
        if m.get("rounded_tensors"):
            bits = result.manifest["codec"]["rate_control"]["mantissa_bits"]
            rounded = (f", {m['rounded_tensors']} near-lossless: {bits} mantissa bits, "
                       f"{_fmt(m['rounded_snr_db'])} dB")
        table.add_row("tensors", f"{m['total_tensors']} ({m['lossy_tensors']} lossy, "
                                 f"{m['exact_tensors']} exact{rounded})")
        table.add_row("size", f"{_human(result.original_bytes)} → {_human(result.archive_bytes)} "
                              f"({result.ratio:.2f}×)")
        bpw = 8 * result.archive_bytes / max(1, m["weights"])
        lossy_bpw = _fmt(m["lossy_bits_per_weight"], ".3f")
        table.add_row("bits per weight", f"{bpw:.3f} (lossy tensors: {lossy_bpw})")
        table.add_row("weight SNR", f"{_fmt(m['weight_snr_db'])} dB aggregate, "
                                    f"{_fmt(m['mean_tensor_snr_db'])} dB mean per tensor")
        predictor = m["predictor"]
        if predictor.get("trained"):
            table.add_row("residual predictor",
                          f"held-out gain {predictor['holdout_gain_db']:+.3f} dB, applied to "
                          f"{predictor['tensors_applied']} tensors"
                          + ("" if predictor.get("file") else " (not stored)"))
        speed = result.original_bytes / 1e6 / max(result.seconds, 1e-9)
        table.add_row("time", f"{result.seconds:.2f} s ({speed:.1f} MB/s)")
        console.print(table)
    return document


# -- extract --------------------------------------------------------------------------------------

def cmd_extract(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    archive = Path(args.archive)
    suffix = {"torch": ".bin", "npz": ".npz"}.get(args.format or "", ".safetensors")
    out = Path(args.out) if args.out else Path(archive.name.split(".")[0] + suffix)
    started = time.perf_counter()
    extract(archive, out, format=args.format, use_predictor=not args.no_predictor,
            overwrite=args.force, progress=tensor_progress(console, "extract",
                                                            enabled=_show(args)))
    seconds = time.perf_counter() - started
    size = out.stat().st_size
    if _show(args):
        console.print(f"[green]wrote[/] {out} ({_human(size)}) in {seconds:.2f} s")
    return {"output": str(out), "bytes": size, "seconds": round(seconds, 3)}


# -- info -----------------------------------------------------------------------------------------

def cmd_info(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    with Archive(args.archive) as archive:
        manifest = archive.manifest
        infos = archive_infos(archive)
        entries = [archive.entry(name) for name in archive.keys()]
        stages = None
        if archive.version == 2:
            lossy = next((e for e in entries if e.get("mode") == "hybrid"), None)
            exact = next((e for e in entries if e.get("mode") == "exact"), None)
            stages = {kind: [f"{s['kind']}:{s['name']}" for s in archive.container(
                e["tensor_name"])["stages"]] for kind, e in (("lossy", lossy), ("exact", exact))
                if e is not None}
    archive_bytes = _path_bytes(Path(args.archive))
    original = sum(i.nbytes for i in infos)
    weights = sum(i.numel for i in infos)
    document = {
        "archive": str(args.archive), "version": manifest.get("version"),
        "model_name": manifest.get("model_name"), "profile": manifest.get("profile"),
        "tensors": len(infos), "weights": weights, "original_bytes": original,
        "archive_bytes": archive_bytes,
        "ratio": round(original / archive_bytes, 4) if archive_bytes else None,
        "bits_per_weight": round(8 * archive_bytes / weights, 4) if weights else None,
        "stages": stages, "codec": manifest.get("codec"), "metrics": manifest.get("metrics"),
        "predictor": manifest.get("predictor"),
    }
    if args.tensors or args.json:
        document["tensor_list"] = [
            {"name": i.name, "dtype": str(i.dtype), "shape": list(i.shape),
             **{k: e.get(k) for k in ("mode", "stored_bytes", "snr_db", "predictor")}}
            for i, e in zip(infos, entries, strict=True)]
    if _show(args):
        table = Table(title=f"{args.archive} (format version {document['version']})",
                      show_header=False)
        table.add_row("model", str(document["model_name"]))
        table.add_row("profile", str(document["profile"]))
        table.add_row("tensors", f"{len(infos)} ({weights:,} weights)")
        table.add_row("size", f"{_human(original)} → {_human(archive_bytes)} "
                              f"({_fmt(document['ratio'])}×)")
        table.add_row("bits per weight", _fmt(document["bits_per_weight"], ".3f"))
        metrics = manifest.get("metrics") or {}
        if metrics.get("weight_snr_db") is not None:
            table.add_row("weight SNR", f"{metrics['weight_snr_db']:.2f} dB")
        for kind, names in (stages or {}).items():
            table.add_row(f"stages ({kind})", " → ".join(names))
        table.add_row("predictor", str(manifest.get("predictor") or "none"))
        console.print(table)
        if args.tensors:
            t = Table("tensor", "dtype", "shape", "mode", "stored", "SNR dB")
            for row in document["tensor_list"]:
                t.add_row(row["name"], row["dtype"], str(row["shape"]), str(row["mode"] or "v1"),
                          _human(row["stored_bytes"]) if row["stored_bytes"] is not None else "—",
                          _fmt(row["snr_db"]))
            console.print(t)
    return document


def _path_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- verify ---------------------------------------------------------------------------------------

def cmd_verify(args: argparse.Namespace, console: Console) -> tuple[int, dict[str, Any]]:
    from rftpack.verify import verify_archive

    report = verify_archive(args.archive)
    if not args.json:
        for problem in report.problems:
            console.print(f"[red]✗[/] {problem}", highlight=False, soft_wrap=True)
        if report.ok:
            console.print(f"[green]✓[/] {args.archive}: {report.tensors_checked} tensors, "
                          f"all checksums and decodes OK")
        else:
            console.print(f"[red]{len(report.problems)} problem(s)[/] in {args.archive}")
    return (0 if report.ok else 1), report.to_json()


# -- plugins --------------------------------------------------------------------------------------

def cmd_plugins(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from rftpack.plugins import registry
    from rftpack.profiles import PROFILES

    entries = sorted(registry().entries.values(), key=lambda e: (e.kind, e.id))
    document = {
        "stages": [{"kind": e.kind, "id": e.id, "provider": e.provider,
                    "version": e.provider_version, "format_version": e.cls.format_version,
                    "description": e.cls.describe()} for e in entries],
        "profiles": {name: p.description for name, p in PROFILES.items()},
        "accelerators": _accelerators(),
    }
    if _show(args):
        table = Table("kind", "id", "provider", "version", "description", title="stages")
        for row in document["stages"]:
            table.add_row(row["kind"], row["id"], row["provider"], row["version"],
                          row["description"])
        console.print(table)
        profiles = Table("profile", "description", title="profiles")
        for name, description in document["profiles"].items():
            profiles.add_row(name, description)
        console.print(profiles)
        fast = document["accelerators"]
        if fast["c_extension"]:
            native_state = f"built (dq search kernel: {fast['dq_kernel']})"
        else:
            native_state = ("not available (no C compiler at install, or RFTPACK_NO_NATIVE is "
                            "set): decoding falls back to constriction, numba or numpy, dq's "
                            "search to numba or numpy, to the same values")
        numba_state = "installed" if fast["numba"] else "not installed (pip install rftpack[fast])"
        console.print(f"compiled decoders and dq's trellis search (C extension rftpack._native):"
                      f" {native_state}\n"
                      f"numba, for dq's trellis search without the C extension: {numba_state}",
                      highlight=False)
    return document


def _accelerators() -> dict[str, bool]:
    """Which optional compiled code this installation has, and the C search's kernel (the
    widest this CPU runs): the same archives either way."""
    import importlib.util

    from rftpack import native

    built = native.available()
    return {"c_extension": built,
            "dq_kernel": native.dq_kernels()[-1] if built else None,
            "numba": importlib.util.find_spec("numba") is not None}


# -- bench ----------------------------------------------------------------------------------------

def cmd_bench(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from rftpack.bench import BenchConfig, markdown_table, plot, run_bench, single_thread
    from rftpack.bench.report import footnotes, text_table

    single_thread()
    codecs = tuple(c.strip().lower() for c in args.codecs.split(",") if c.strip())
    config = BenchConfig(model=args.model, quick=args.quick, embeddings=not args.no_embeddings,
                         codecs=codecs, workdir=args.workdir, keep_files=bool(args.workdir),
                         nncodec_python=args.nncodec_python, decode_runs=args.decode_runs)
    show = _show(args)
    result = run_bench(config, log=(lambda line: console.print(line, highlight=False))
                       if show else (lambda line: None))
    document = result.to_json()
    try:
        document["plot"] = str(plot(result, args.plot))
    except ImportError:
        document["plot"] = None
        console.print("matplotlib is not installed: no plot (pip install matplotlib)")
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(result) + "\n")
        document["markdown"] = args.markdown
    if show:  # plain fixed-width text: never wrapped to the terminal, easy to paste
        console.print(f"\nrftpack bench ({'quick, ' if result.quick else ''}"
                      f"{result.seconds:.0f} s, single thread)", highlight=False)
        for line in [text_table(result), "", *footnotes(result)]:
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        if document["plot"]:
            console.print(f"plot: {document['plot']}", highlight=False, markup=False)
    return document


# -- sensitivity ----------------------------------------------------------------------------------

def cmd_sensitivity(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from rftpack import importance, sensitivity

    out = Path(args.out)
    if out.exists() and not args.force:
        raise OutputError(f"{out} exists (use -f to overwrite)")
    if not out.parent.is_dir():
        raise OutputError(f"{out.parent}: no such directory for --out")
    if not 0 < args.noise < 1:
        raise InputError(f"--noise must be in (0, 1), got {args.noise}")
    texts = _read_texts(args.texts) if args.texts else None
    model_path = resolve_model(args.input)
    started = time.perf_counter()
    with console.status("perturbing each tensor and re-embedding the calibration texts",
                        spinner="dots") if _show(args) else nullcontext():
        measured = sensitivity.text_model_weights(model_path, texts, relative_noise=args.noise)
    seconds = time.perf_counter() - started
    weights = measured.importance
    importance.save(weights, out, rows=measured.row_importance or None, distortion="cosine",
                    model=str(model_path),
                    text_count=len(texts or sensitivity.CALIBRATION_TEXTS),
                    relative_noise=args.noise)
    document = {"out": str(out), "tensors": len(weights), "seconds": round(seconds, 2),
                "weights": weights}
    if _show(args):
        ranked = sorted(weights.items(), key=lambda kv: kv[1])
        table = Table(title=f"importance weights ({len(weights)} tensors, {seconds:.1f} s)")
        table.add_column("tensor")
        table.add_column("weight", justify="right")
        shown = ranked if len(ranked) <= 12 else ranked[:6] + [("…", None)] + ranked[-6:]
        for name, value in shown:
            table.add_row(name, "" if value is None else f"{value:.4g}")
        console.print(table)
        console.print(f"wrote {out}: use it with rftpack compress … --bpw N --importance {out}",
                      highlight=False)
    return document


# -- demo -----------------------------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from rftpack.bench.models import default_model
    from rftpack.fidelity import compare_checkpoints

    model_path = resolve_model(args.model) if args.model else default_model()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="rftpack-"))
    workdir.mkdir(parents=True, exist_ok=True)
    archive, restored = workdir / "model.rftp", workdir / "restored.safetensors"
    show = _show(args)
    if show:
        console.rule(f"rftpack demo: {model_path}")
    result = compress(model_path, archive, overwrite=True,
                      progress=tensor_progress(console, "compress", enabled=show))
    started = time.perf_counter()
    extract(archive, restored, overwrite=True,
            progress=tensor_progress(console, "extract", enabled=show))
    decode_seconds = time.perf_counter() - started
    original_file = _weights_file(model_path)
    fidelity = compare_checkpoints(original_file, restored)
    m = result.metrics
    document: dict[str, Any] = {
        "model": str(model_path), "archive": str(archive),
        "original_bytes": result.original_bytes, "archive_bytes": result.archive_bytes,
        "ratio": round(result.ratio, 4),
        "bits_per_weight": round(8 * result.archive_bytes / m["weights"], 4),
        "lossy_bits_per_weight": m["lossy_bits_per_weight"],
        "weight_snr_db": fidelity.to_json()["weight_snr_db"],
        "predictor_gain_db": m["predictor_gain_db"],
        "encode_seconds": round(result.seconds, 3), "decode_seconds": round(decode_seconds, 3),
        "names_dtypes_shapes_match": not fidelity.mismatched,
        "exact_tensors_equal": fidelity.exact_tensors_equal,
    }
    if not args.no_embeddings:
        document["embedding_cosine"] = _embedding_cosine(model_path, restored)
    if show:
        table = Table(title="all-MiniLM-L6-v2 round trip" if not args.model else str(args.model),
                      show_header=False)
        table.add_row("size", f"{_human(result.original_bytes)} → "
                              f"{_human(result.archive_bytes)} ({result.ratio:.2f}×)")
        table.add_row("bits per weight", f"{document['bits_per_weight']:.3f} overall, "
                                         f"{_fmt(m['lossy_bits_per_weight'], '.3f')} lossy tensors")
        table.add_row("weight SNR", f"{_fmt(document['weight_snr_db'])} dB")
        table.add_row("predictor gain", f"{_fmt(m['predictor_gain_db'], '+.3f')} dB (held out)")
        table.add_row("encode / decode", f"{result.seconds:.2f} s / {decode_seconds:.2f} s")
        table.add_row("names, dtypes, shapes", "identical" if not fidelity.mismatched
                      else f"MISMATCH: {fidelity.mismatched[:5]}")
        cosine = document.get("embedding_cosine")
        if cosine is not None:
            table.add_row("sentence-embedding cosine", f"{cosine:.5f} (mean over test sentences)")
        table.add_row("files", f"{archive}\n{restored}")
        console.print(table)
    return document


def _weights_file(model_path: Path) -> Path:
    if model_path.is_file():
        return model_path
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (model_path / name).is_file():
            return model_path / name
    raise OutputError(f"cannot find the weights file in {model_path} to compare against")


def _embedding_cosine(model_path: Path, restored: Path) -> float | None:
    """Mean cosine between sentence embeddings of the original and the restored model."""
    from rftpack.bench.models import EmbeddingProbe, embeddings_unavailable

    if embeddings_unavailable(model_path) is not None:
        return None
    return round(EmbeddingProbe(model_path).cosine(restored), 6)
