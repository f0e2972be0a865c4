"""Faults mid-write: kill -9 during compress never leaves an archive that looks complete, and a
full disk gives a clear error and leaves nothing under the final name."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import rftpack
from rftpack.errors import IncompleteArchiveError, OutputError, RftpackError
from rftpack.verify import verify_archive


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(9)
    tensors = {f"layers.{i}.weight": (rng.normal(size=(256, 256)) * 0.05).astype(np.float32)
               for i in range(48)}
    path = tmp_path_factory.mktemp("faults") / "model.safetensors"
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("layout", ["zip", "directory"])
@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5])
def test_kill_9_never_leaves_an_archive_that_looks_complete(model: Path, tmp_path: Path,
                                                             layout: str, delay: float) -> None:
    out = tmp_path / ("out.rftp" if layout == "zip" else "out_dir")
    process = subprocess.Popen([sys.executable, "-m", "rftpack", "compress", str(model), "-o",
                                str(out), "--layout", layout, "--quiet", "--no-predictor"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    if process.returncode == 0:  # it finished before the kill: then it must be whole
        assert verify_archive(out).ok
        return
    if out.exists():
        try:
            rftpack.open(out).close()
        except IncompleteArchiveError:
            report = verify_archive(out)
            assert not report.ok
            assert any("interrupted" in problem for problem in report.problems), \
                report.problems
        else:
            # Killed after the manifest landed (e.g. while syncing the directory): then the
            # archive must be whole, every tensor decoding against its checksum.
            assert verify_archive(out).ok


def test_stale_partial_files_of_dead_runs_are_removed(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.rftp"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".out.rftp.partial-{dead}"
    stale.write_bytes(b"half an archive")
    rftpack.compress(model, out, predictor=False)
    assert not stale.exists()
    assert verify_archive(out).ok


@pytest.mark.parametrize("layout", ["zip", "directory"])
def test_full_disk_during_compress(model: Path, tmp_path: Path, monkeypatch, layout: str) -> None:
    import zipfile

    budget = {"left": 200_000}

    def enospc_after_budget(size: int) -> None:
        budget["left"] -= size
        if budget["left"] < 0:
            raise OSError(errno.ENOSPC, "No space left on device")

    if layout == "zip":
        real_writestr = zipfile.ZipFile.writestr

        def writestr(self, info, data, *args, **kwargs):
            enospc_after_budget(len(data))
            return real_writestr(self, info, data, *args, **kwargs)

        monkeypatch.setattr(zipfile.ZipFile, "writestr", writestr)
    else:
        real_replace = os.replace

        def replace(src, dst):
            enospc_after_budget(Path(src).stat().st_size)
            return real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / ("out.rftp" if layout == "zip" else "out_dir")
    with pytest.raises(OutputError, match="No space left"):
        rftpack.compress(model, out, layout=layout, predictor=False)
    if layout == "zip":
        assert not out.exists()
        assert not list(tmp_path.glob(".out.rftp.partial-*"))
    else:
        assert not (out / "manifest_hybrid.json").exists()
        assert not [p for p in out.rglob("*") if p.is_file()]  # written members removed again


def test_full_disk_during_extract_leaves_no_output(model: Path, tmp_path: Path,
                                                   monkeypatch) -> None:
    archive = tmp_path / "a.rftp"
    rftpack.compress(model, archive, predictor=False)
    import rftpack.io.safetensors_sink as sink_module

    class Failing:
        def __init__(self, handle):
            self.handle, self.count = handle, 0

        def write(self, data) -> int:
            self.count += len(memoryview(data).cast("B"))
            if self.count > 1_000_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.handle.write(data)

        def __getattr__(self, name):
            return getattr(self.handle, name)

    real_start = sink_module.SafetensorsSink._start

    def start(self) -> None:
        real_start(self)
        self._file = Failing(self._file)

    monkeypatch.setattr(sink_module.SafetensorsSink, "_start", start)
    out = tmp_path / "restored.safetensors"
    with pytest.raises(RftpackError, match="No space left"):
        rftpack.extract(archive, out)
    assert not out.exists()
    assert not list(tmp_path.glob(".restored.safetensors.partial-*"))
