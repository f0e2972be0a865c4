"""tools/bench_search.py times every way dq's search runs here and says whether they chose the
same indices: on a small run every row must say they did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rftpack import native

ROOT = Path(__file__).resolve().parents[2]


def test_every_way_of_searching_agrees_and_is_timed() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_search.py"),
                           "--weights", "40000", "--reps", "1"],
                          capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    header, rows = lines[1].split(), lines[2:]
    assert "numpy" in header
    if native.available():
        assert f"{native.dq_kernels()[-1]}" in header
    assert len(rows) == 6
    for row in rows:
        cells = row.split()
        assert cells[-1] == "yes", row
        assert all(float(c) > 0 for c in cells[2:-1] if c != "-"), row
