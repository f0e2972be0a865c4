"""How far can any weight codec go? The memoryless Shannon lower bound of a checkpoint.

Treat each lossy tensor (float, ≥ 2 dims, ≥ 1024 weights: the tensors rftpack quantizes) as a
memoryless source with its own density. No coder that ignores the dependence between weights
can beat the Shannon lower bound D ≥ 2^(2(h − R)) / (2πe) (h: differential entropy per weight,
in bits), and with one distortion per weight across tensors (reverse water-filling at high
rate) the whole checkpoint's best weight SNR at R bits per weight is

    SNR_max = 10·log10( Σx² / (N · 2^(2(h̄ − R)) / (2πe)) ),   h̄ = mean of h over the weights.

The rate here is generous: every bit of an archive of the given bits per weight (counted over
all weights, like ``rftpack bench``) is given to the lossy weights, and the SNR is taken over
all float weights (the others are assumed exact). h is estimated per tensor from a histogram
with bins of σ/200 (Miller–Madow corrected; σ/50 … σ/400 agree within 0.001 bit).

    python tools/rd_bound.py                      # MiniLM at NNCodec's four bench rates
    python tools/rd_bound.py model.safetensors 4 5 6
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from rftpack.io import open_source

#: NNCodec 2.1.3's four rates on MiniLM in `rftpack bench` (bits per weight, weight SNR dB)
NNCODEC_MINILM = ((7.987, 47.50), (6.388, 38.00), (4.945, 29.59), (3.433, 20.39))


def differential_entropy_bits(x: np.ndarray, bins_per_sigma: int = 200) -> float:
    """Histogram estimate of h(X) in bits per value.

    >>> x = np.random.default_rng(0).normal(size=200_000)
    >>> round(differential_entropy_bits(x), 2)   # ½·log2(2πe) = 2.047
    2.05
    """
    width = float(x.std()) / bins_per_sigma
    q = np.floor(x / width).astype(np.int64)
    counts = np.bincount(q - q.min())
    counts = counts[counts > 0]
    p = counts / x.size
    plug_in = float(-(p * np.log2(p)).sum()) + (counts.size - 1) / (2 * x.size * math.log(2))
    return plug_in + math.log2(width)


def bound(path: str | Path) -> tuple[float, float, int, int]:
    """(mean differential entropy of the lossy weights, Σx² over all float weights, lossy
    weights, all weights) of a checkpoint."""
    entropy = signal = 0.0
    lossy = total = 0
    with open_source(path) as model:
        for info in model.infos():
            total += info.numel
            array = np.asarray(model.read(info.name))
            if array.dtype.kind == "f" or array.dtype.name == "bfloat16":
                values = array.astype(np.float64).reshape(-1)
                signal += float(values @ values)
                if array.ndim >= 2 and array.size >= 1024:
                    entropy += differential_entropy_bits(values) * values.size
                    lossy += values.size
            model.release(info.name)
    return entropy / lossy, signal, lossy, total


def main(argv: list[str]) -> int:
    if argv:
        path, rates = Path(argv[0]), [(float(r), None) for r in argv[1:]]
    else:
        from rftpack.bench.models import default_model

        path, rates = Path(default_model()), list(NNCODEC_MINILM)
    h, signal, lossy, total = bound(path)
    print(f"{path}: {lossy:,} lossy weights of {total:,}; mean differential entropy "
          f"{h:.4f} bits")
    for bpw, measured in rates:
        rate = bpw * total / lossy
        distortion = 2 ** (2 * (h - rate)) / (2 * math.pi * math.e) * lossy
        best = 10 * math.log10(signal / distortion)
        line = f"  {bpw:.3f} bits/weight: memoryless bound {best:.2f} dB"
        if measured is not None:
            line += (f"; NNCodec {measured:.2f} dB is {best - measured:.2f} dB below it, so "
                     f"+0.5 dB over NNCodec needs a coder within {best - measured - 0.5:.2f} dB "
                     f"of the bound")
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
