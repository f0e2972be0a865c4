#!/usr/bin/env python3
"""The spec's decoding script, as a thin wrapper over rftpack.

    python tools/rft_hybrid_decode.py --input-dir encoded/my_model_hybrid \\
        --output-file restored_model.bin [--no-predictor]

Reads archives written by rftpack (version 2) and by the reference implementation (version 1).
``.bin``/``.pt``/``.pth`` outputs are torch state dicts; ``.safetensors`` and ``.npz`` work too.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input-dir", required=True, help="archive directory (or zip file)")
    parser.add_argument("--output-file", required=True, help="restored checkpoint")
    parser.add_argument("--no-predictor", action="store_true",
                        help="disable the residual correction")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)

    from rftpack.api import extract
    from rftpack.errors import RftpackError

    try:
        out = extract(args.input_dir, args.output_file, use_predictor=not args.no_predictor,
                      overwrite=args.force)
    except RftpackError as exc:
        print(f"rft_hybrid_decode: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
