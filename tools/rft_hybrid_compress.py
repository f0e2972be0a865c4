#!/usr/bin/env python3
"""The spec's compression script, as a thin wrapper over rftpack.

Writes the spec's layout: a directory with ``manifest_hybrid.json``, ``tensors/<name>.json``
(payload base64 inside the JSON) and, with ``--train-residual``, the residual predictor in
``predictors/global_residual_predictor.json`` when it lowers the error.

    python tools/rft_hybrid_compress.py --model-id <model or path> --out encoded/my_model_hybrid \\
        --prune-threshold 1e-4 --quant-amp-bits 6 --quant-phase-bits 5 \\
        --train-residual --residual-hidden 32 --residual-epochs 5

``--prune-threshold`` keeps the reference's meaning (absolute |c|) unless ``--prune-mode
relative`` is given; ``rftpack compress`` defaults to relative pruning.
"""

from __future__ import annotations

import argparse
import sys

#: One epoch = one pass over the predictor's 65,536-sample reservoir in batches of 512.
STEPS_PER_EPOCH = 128


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model-id", required=True,
                        help="model file, directory, or id in the local Hugging Face cache")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--prune-threshold", type=float, default=1e-4)
    parser.add_argument("--prune-mode", choices=["absolute", "relative"], default="absolute")
    parser.add_argument("--quant-amp-bits", type=int, default=6)
    parser.add_argument("--quant-phase-bits", type=int, default=5)
    parser.add_argument("--train-residual", action="store_true",
                        help="train the residual predictor (kept only if it helps)")
    parser.add_argument("--residual-hidden", type=int, default=32)
    parser.add_argument("--residual-epochs", type=int, default=5)
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)

    from rftpack.api import CompressOptions, compress
    from rftpack.errors import RftpackError

    predictor = ({"name": "mlp", "configuration": {
        "hidden_dim": args.residual_hidden,
        "steps": max(1, args.residual_epochs) * STEPS_PER_EPOCH}}
        if args.train_residual else False)
    options = CompressOptions(
        quantizer_overrides={"amp_bits": args.quant_amp_bits, "phase_bits": args.quant_phase_bits,
                             "prune_threshold": args.prune_threshold,
                             "prune_mode": args.prune_mode},
        predictor=predictor, layout="directory", payload="base64", overwrite=args.force)
    try:
        result = compress(args.model_id, args.out, options=options)
    except RftpackError as exc:
        print(f"rft_hybrid_compress: error: {exc}", file=sys.stderr)
        return 1
    m = result.metrics
    print(f"wrote {result.path}: {m['total_tensors']} tensors, "
          f"{result.original_bytes / 1e6:.2f} MB -> {result.archive_bytes / 1e6:.2f} MB "
          f"({result.ratio:.2f}x), weight SNR {m['weight_snr_db']} dB, "
          f"predictor gain {m['predictor_gain_db']} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
