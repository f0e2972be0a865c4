"""NNCodec encode / decode for ``rftpack bench``, as a standalone script.

``nncodec`` 2.1 pins ``numpy<2``, so it often lives in its own interpreter; this file imports
only the standard library, numpy, torch and nncodec (never rftpack) so that any interpreter
with nncodec installed can run it:

    python nncodec_worker.py encode INPUT.npz OUT_PREFIX QP RESULT.json
    python nncodec_worker.py decode OUT_PREFIX RESTORED.npz RESULT.json

Float32 tensors (with at least one element and one dimension) go into one NNCodec bitstream
(``OUT_PREFIX.nnc``: DeepCABAC with dependent quantization at ``QP``; 1-D tensors get NNCodec's
own fine ``nonweight_qp``); the others are stored raw in ``OUT_PREFIX.rest.npz`` together with
the tensor order. Both files count toward the stored size. ``RESULT.json`` receives the
seconds (read + code + write, after imports), the stored bytes and the peak RSS (VmHWM).
"""

import json
import os
import sys
import time

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def _peak_rss_bytes():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _coded(array):
    import numpy as np

    return array.dtype == np.float32 and array.ndim >= 1 and array.size > 0


def encode(source, prefix, qp):
    import numpy as np
    from nncodec import nnc

    started = time.perf_counter()
    with np.load(source, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    coded = {k: np.ascontiguousarray(v) for k, v in arrays.items() if _coded(v)}
    rest = {f"t{i}": v for i, (k, v) in enumerate(arrays.items()) if not _coded(v)}
    bitstream = nnc.compress(coded, bitstream_path=None, qp=int(qp), use_dq=True,
                             return_bitstream=True, verbose=False) if coded else b""
    with open(prefix + ".nnc", "wb") as f:
        f.write(bitstream)
    names = np.array(list(arrays), dtype=np.str_)
    rest_names = np.array([k for k, v in arrays.items() if not _coded(v)], dtype=np.str_)
    np.savez(prefix + ".rest.npz", __order__=names, __rest__=rest_names, **rest)
    seconds = time.perf_counter() - started
    stored = os.path.getsize(prefix + ".nnc") + os.path.getsize(prefix + ".rest.npz")
    return {"seconds": seconds, "stored_bytes": stored}


def decode(prefix, out):
    import numpy as np
    from nncodec import nnc

    started = time.perf_counter()
    with open(prefix + ".nnc", "rb") as f:
        bitstream = bytearray(f.read())
    decoded = nnc.decompress(bitstream) if bitstream else {}
    with np.load(prefix + ".rest.npz", allow_pickle=False) as side:
        order = [str(n) for n in side["__order__"]]
        rest_names = [str(n) for n in side["__rest__"]]
        rest = {name: side[f"t{i}"] for i, name in enumerate(rest_names)}
    restored = {}
    for name in order:
        restored[name] = rest[name] if name in rest else np.asarray(decoded[name], np.float32)
    np.savez(out, **restored)
    return {"seconds": time.perf_counter() - started}


def main(argv):
    import torch

    torch.set_num_threads(1)
    if argv[0] == "encode":
        _, source, prefix, qp, result_path = argv
        result = encode(source, prefix, qp)
    elif argv[0] == "decode":
        _, prefix, out, result_path = argv
        result = decode(prefix, out)
    else:
        raise SystemExit(f"unknown phase {argv[0]!r}")
    result["peak_rss_bytes"] = _peak_rss_bytes()
    with open(result_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
