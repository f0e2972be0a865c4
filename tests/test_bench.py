"""`rftpack bench` on a tiny random model: rows, rates, SNRs, the PNG, and skipped peers."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from rftpack.bench import peers
from rftpack.bench.report import footnotes, markdown_table, text_table
from rftpack.bench.runner import BenchConfig, run_bench
from rftpack.bench.settings import all_settings
from rftpack.cli.main import main
from rftpack.errors import InputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("bench") / "model.safetensors"
    save_file({
        "embed.weight": (rng.normal(size=(300, 64)) * 0.05).astype(np.float32),
        "layer.0.dense.weight": (rng.normal(size=(128, 64)) * 0.04).astype(np.float32),
        "layer.0.dense.bias": (rng.normal(size=128) * 0.01).astype(np.float32),
        "layer.0.norm.weight": np.ones(64, np.float32),
        "layer.1.odd.weight": (rng.normal(size=(40, 30)) * 0.05).astype(np.float32),
        "position_ids": np.arange(64, dtype=np.int64).reshape(1, 64),
    }, str(path))
    return path


def test_cli_quick_run(tiny_model: Path, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    png, md = tmp_path / "rd.png", tmp_path / "table.md"
    code = main(["bench", "--model", str(tiny_model), "--quick", "--codecs", "rftpack,zstd",
                 "--plot", str(png), "--markdown", str(md), "--json"])
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    rows = document["rows"]
    assert rows, "the table has no rows"
    assert {r["family"] for r in rows} >= {"rftpack hybrid", "rftpack lossless", "zstd"}
    weights = 300 * 64 + 128 * 64 + 128 + 64 + 40 * 30 + 64
    assert document["weights"] == weights
    for row in rows:
        assert row["error"] is None, row
        assert row["bits_per_weight"] > 0
        assert row["encode_mweights_s"] > 0 and row["decode_mweights_s"] > 0
        if row["lossless"]:
            assert row["weight_snr_db"] == "inf" and row["exact"] is True
            assert row["mean_tensor_snr_db"] == "inf"
        else:
            assert isinstance(row["weight_snr_db"], float) and math.isfinite(
                row["weight_snr_db"]), row
            assert isinstance(row["mean_tensor_snr_db"], float)
            assert 0 < row["weight_snr_db"] < 200
            assert row["exact"] is False
        assert row["embedding_cosine"] is None  # --quick: no embeddings
    assert document["embeddings_skipped"] == "--quick"
    if importlib.util.find_spec("numba") is not None:  # compiled before anything is timed
        assert isinstance(document["jit_warmup"], float) and document["jit_warmup"] > 0
    else:
        assert "numba is not installed" in document["jit_warmup"]
    lossless = {r["family"]: r for r in rows if r["lossless"]}
    assert lossless["zstd"]["bits_per_weight"] < 40  # zstd on floats: not bigger than ~raw
    pytest.importorskip("matplotlib")
    assert document["plot"] == str(png)
    data = png.read_bytes()
    assert data[:8] == PNG_SIGNATURE and b"IHDR" in data[:32] and data.endswith(
        b"IEND\xaeB`\x82")
    assert md.read_text().startswith("| codec | setting | bits/weight")



def test_decode_speed_is_the_fastest_of_several_fresh_decodes(tiny_model: Path,
                                                             tmp_path: Path) -> None:
    result = run_bench(BenchConfig(model=str(tiny_model), embeddings=False, codecs=("zstd",),
                                   workdir=str(tmp_path / "w"), decode_runs=2))
    assert result.rows
    for row in result.rows:
        assert len(row.decode_runs_seconds) == 2
        assert row.decode_seconds == min(row.decode_runs_seconds)
        assert row.to_json()["decode_runs_seconds"] == row.decode_runs_seconds
    assert any("fastest of 2 decodes" in line for line in footnotes(result))
    quick = run_bench(BenchConfig(model=str(tiny_model), quick=True, codecs=("zstd",),
                                  workdir=str(tmp_path / "q")))
    assert all(len(row.decode_runs_seconds) == 1 for row in quick.rows)  # --quick: one
    asked = run_bench(BenchConfig(model=str(tiny_model), quick=True, codecs=("zstd",),
                                  workdir=str(tmp_path / "a"), decode_runs=2))
    assert all(len(row.decode_runs_seconds) == 2 for row in asked.rows)  # unless asked
    with pytest.raises(InputError, match="decode runs"):
        run_bench(BenchConfig(model=str(tiny_model), codecs=("zstd",), decode_runs=0))

def test_human_table_and_footnotes(tiny_model: Path, tmp_path: Path) -> None:
    result = run_bench(BenchConfig(model=str(tiny_model), quick=True, codecs=("zstd",),
                                   workdir=str(tmp_path / "w")))
    text = text_table(result)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["codec", "setting"]
    assert len(lines) == 2 + len(result.rows) and "lossless" in lines[2]
    assert "| zstd | level 3 |" in markdown_table(result)
    notes = footnotes(result)
    assert notes[0].startswith("model: ") and "embedding cosine: not measured (--quick)" in notes
    assert (tmp_path / "w").is_dir()  # a given workdir is kept
    assert result.jit_warmup is None  # no rftpack rows: nothing compiled
    assert not any(note.startswith("compiled code") for note in notes)
    warmed = dataclasses.replace(result, jit_warmup=3.25)
    assert any("compiled into their on-disk cache before the timed runs (3.2 s" in note
               for note in footnotes(warmed))


def test_settings_cover_every_profile_and_filter() -> None:
    from rftpack.profiles import PROFILES

    settings = all_settings(quick=False)
    families = {s.family for s in settings}
    assert {f"rftpack {name}" for name in PROFILES} <= families
    hybrid = [s for s in settings if s.family == "rftpack hybrid"]
    assert len(hybrid) == 5 and hybrid[0].params["quantizer_overrides"] == {
        "amp_bits": 6, "phase_bits": 5}
    if "scalar" in PROFILES:
        scalar = [s.params.get("target_bpw") for s in settings if s.family == "rftpack scalar"]
        assert scalar == [7.986, 6.388, 4.944, 3.432]
    only_peers = all_settings(quick=True, codecs=("gguf", "zstd"))
    assert {s.codec for s in only_peers} == {"gguf", "zstd"}
    from rftpack.errors import InputError

    with pytest.raises(InputError, match="unknown codec"):
        all_settings(codecs=("nope",))


def test_missing_peer_is_skipped_with_a_reason(tiny_model: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(peers.PEERS, "zipnn", ("no_such_module_rftpack_xyz", "zipnn", "x"))
    assert peers.peer_status("zipnn") == "not installed (pip install zipnn)"
    result = run_bench(BenchConfig(model=str(tiny_model), quick=True, codecs=("zipnn",),
                                   workdir=str(tmp_path)))
    assert result.rows == [] and "zipnn" in result.skipped
    assert any(line.startswith("ZipNN: not run") for line in footnotes(result))


def test_nncodec_probe_reports_a_missing_module(tmp_path: Path) -> None:
    fake = tmp_path / "python-without-nncodec"
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'nncodec'\" >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    reason = peers.peer_status("nncodec", str(fake))
    assert reason is not None and reason.startswith("not installed")


@pytest.mark.parametrize("peer", ["zipnn", "gguf"])
def test_optional_peers_round_trip(peer: str, tiny_model: Path, tmp_path: Path) -> None:
    pytest.importorskip(peers.PEERS[peer][0])
    result = run_bench(BenchConfig(model=str(tiny_model), quick=True, codecs=(peer,),
                                   workdir=str(tmp_path)))
    assert result.rows and all(r.error is None and r.bits_per_weight > 0 for r in result.rows)
    for row in result.rows:
        if peer == "zipnn":
            assert row.exact and math.isinf(row.weight_snr_db)
        else:
            assert math.isfinite(row.weight_snr_db) and row.weight_snr_db > 15


def test_calibrated_settings_sweep_the_rate_controlled_profiles() -> None:
    from rftpack.bench.settings import CALIBRATED_BPW, calibrated_settings

    weights = {"encoder.w": 2.0}
    settings = calibrated_settings(weights)
    families = {s.family for s in settings}
    assert families == {"rftpack scalar (calibrated)", "rftpack dq (calibrated)"}
    for family in families:
        rows = [s for s in settings if s.family == family]
        assert [s.params["target_bpw"] for s in rows] == CALIBRATED_BPW
        assert all(s.params["importance"] == weights for s in rows)


def test_plot_has_an_embedding_panel_when_cosines_were_measured(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from rftpack.bench.report import _curves, plot
    from rftpack.bench.runner import BenchResult, Row

    rows = [Row("rftpack scalar", f"target {b} bpw", "rftpack", False, bits_per_weight=b,
                weight_snr_db=6.0 * b, embedding_cosine=1 - 10 ** -b) for b in (3.0, 5.0)]
    rows.append(Row("zstd", "level 3", "zstd", True, bits_per_weight=29.0,
                    weight_snr_db=math.inf, embedding_cosine=1.0, exact=True))
    result = BenchResult("m", 10, 40, 1, rows, {}, False, None)
    cos = _curves(result, "cosine")
    assert list(cos) == ["rftpack scalar"]  # lossless rows have no finite error
    assert [round(v, 6) for _, v, _ in cos["rftpack scalar"]] == [1e-3, 1e-5]
    out = plot(result, tmp_path / "p.png")
    assert out.stat().st_size > 10_000


def test_rftpack_worker_imports_before_the_clock_and_runs_single_threaded() -> None:
    import os
    import subprocess
    import sys

    code = ("import os, sys\n"
            "from rftpack.bench import worker\n"
            "from rftpack import parallel\n"
            "worker.preload_rftpack()\n"
            "missing = [m for m in worker.RFTPACK_MODULES if m not in sys.modules]\n"
            "assert not missing, missing\n"
            "assert 'numba' not in sys.modules and 'torch' not in sys.modules\n"
            "assert parallel.threads() == 1, parallel.threads()\n")
    env = {k: v for k, v in os.environ.items() if k != "RFTPACK_THREADS"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
