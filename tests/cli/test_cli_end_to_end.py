"""`rftpack compress` / `extract` / `info` / `verify` / `plugins` end to end, in subprocesses
and in-process, on a small mixed-dtype model made here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rftpack.cli.main import main
from rftpack.fidelity import snr_db


def mixed_model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "encoder.layer.0.weight": (rng.normal(size=(384, 256)) * 0.04).astype(np.float32),
        "encoder.layer.0.bias": (rng.normal(size=384) * 0.01).astype(np.float32),
        "decoder.half": (rng.normal(size=(128, 96)) * 0.1).astype(np.float16),
        "decoder.bf16": (rng.normal(size=(64, 96)) * 0.1).astype(ml_dtypes.bfloat16),
        "embeddings.position_ids": np.arange(512, dtype=np.int64).reshape(1, 512),
        "attention.mask": rng.random((8, 8)) > 0.5,
        "scale": np.array(0.125, dtype=np.float32),
        "empty": np.zeros((0, 16), dtype=np.float32),
    }


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    tensors = mixed_model(np.random.default_rng(7))
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_file(tensors, str(path))
    return path, tensors


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rftpack", *args], capture_output=True,
                          text=True, timeout=300)


def test_compress_extract_round_trip_every_dtype(model_file, tmp_path: Path) -> None:
    source, tensors = model_file
    archive, restored = tmp_path / "model.rftp", tmp_path / "restored.safetensors"
    done = run_cli("compress", str(source), "-o", str(archive), "--quiet")
    assert done.returncode == 0, done.stderr
    done = run_cli("extract", str(archive), "-o", str(restored), "--quiet")
    assert done.returncode == 0, done.stderr

    assert archive.stat().st_size < source.stat().st_size
    back = load_file(str(restored))
    assert list(back) == list(load_file(str(source)))  # same names, same stored order
    for name, original in tensors.items():
        got = back[name]
        assert got.dtype == original.dtype, name
        assert got.shape == original.shape, name
        if original.dtype.kind in "biu":
            np.testing.assert_array_equal(got, original)
        elif original.size:
            assert snr_db(original, got) >= 20.0, name


def test_json_output_reports_ratio_and_snr(model_file, tmp_path: Path) -> None:
    source, _ = model_file
    archive = tmp_path / "a.rftp"
    done = run_cli("compress", str(source), "-o", str(archive), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ratio"] > 1.0
    assert report["metrics"]["weight_snr_db"] >= 20.0
    assert report["metrics"]["lossy_tensors"] == 3
    assert report["metrics"]["exact_tensors"] == 5

    info = json.loads(run_cli("info", str(archive), "--json").stdout)
    assert info["tensors"] == 8
    assert info["stages"]["lossy"] == ["transform:rft", "quantizer:polar", "coder:rans"]
    assert 0 < info["bits_per_weight"] < 32

    verify = run_cli("verify", str(archive), "--json")
    assert verify.returncode == 0
    assert json.loads(verify.stdout)["ok"] is True


def test_errors_are_one_line_with_nonzero_exit(tmp_path: Path) -> None:
    done = run_cli("compress", str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "x"))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "error:" in done.stderr
    assert "Traceback" not in done.stderr

    garbage = tmp_path / "garbage.rftp"
    garbage.write_bytes(b"not an archive at all")
    done = run_cli("extract", str(garbage), "-o", str(tmp_path / "out.safetensors"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "out.safetensors").exists()


def test_threads_flag_is_checked_and_keeps_the_archive(model_file, tmp_path: Path,
                                                       capsys) -> None:
    source, _ = model_file
    assert main(["compress", str(source), "-o", str(tmp_path / "bad.rftp"), "-q",
                 "--threads", "0"]) == 1
    assert "threads must be an integer ≥ 1, got 0" in capsys.readouterr().err
    made = []
    for threads in ("1", "2"):
        out = tmp_path / f"t{threads}.rftp"
        assert main(["compress", str(source), "-o", str(out), "-q", "--profile", "dq",
                     "--bpw", "4", "--threads", threads]) == 0
        made.append(out.read_bytes())
    assert made[0] == made[1]


def test_existing_output_needs_force(model_file, tmp_path: Path) -> None:
    source, _ = model_file
    archive = tmp_path / "a.rftp"
    assert main(["compress", str(source), "-o", str(archive), "-q"]) == 0
    assert main(["compress", str(source), "-o", str(archive), "-q"]) == 1
    assert main(["compress", str(source), "-o", str(archive), "-q", "--force"]) == 0


def test_verify_reports_every_problem(model_file, tmp_path: Path, capsys) -> None:
    source, _ = model_file
    archive = tmp_path / "dir-archive"
    assert main(["compress", str(source), "-o", str(archive), "-q", "--layout", "directory"]) == 0
    bins = sorted((archive / "tensors").glob("*.bin"))
    for path in bins[:2]:  # corrupt two payloads: both must be reported
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    assert main(["verify", str(archive), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert len(report["problems"]) == 2
    assert all("checksum" in p for p in report["problems"])


def test_lossless_flag_is_bit_exact(model_file, tmp_path: Path) -> None:
    source, tensors = model_file
    archive, restored = tmp_path / "l.rftp", tmp_path / "l.safetensors"
    assert main(["compress", str(source), "-o", str(archive), "-q", "--lossless"]) == 0
    assert main(["extract", str(archive), "-o", str(restored), "-q"]) == 0
    back = load_file(str(restored))
    for name, original in tensors.items():
        assert back[name].tobytes() == original.tobytes(), name


def test_torch_output_and_input(model_file, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    source, tensors = model_file
    archive, restored = tmp_path / "t.rftp", tmp_path / "restored.bin"
    assert main(["compress", str(source), "-o", str(archive), "-q"]) == 0
    assert main(["extract", str(archive), "-o", str(restored), "-q"]) == 0
    state = torch.load(restored, weights_only=True)
    assert state["decoder.bf16"].dtype == torch.bfloat16
    assert torch.equal(state["embeddings.position_ids"],
                       torch.from_numpy(tensors["embeddings.position_ids"]))
    # ... and the torch file is itself a valid input
    again = tmp_path / "again.rftp"
    assert main(["compress", str(restored), "-o", str(again), "-q", "--lossless"]) == 0


def test_unknown_stage_lists_available(model_file, tmp_path: Path) -> None:
    source, _ = model_file
    done = run_cli("compress", str(source), "-o", str(tmp_path / "x.rftp"), "--coder", "nope")
    assert done.returncode == 1
    assert "'nope'" in done.stderr and "rans" in done.stderr and "zstd" in done.stderr


def test_plugins_lists_builtin_stages() -> None:
    done = run_cli("plugins", "--json")
    assert done.returncode == 0
    ids = {(s["kind"], s["id"]) for s in json.loads(done.stdout)["stages"]}
    assert {("transform", "rft"), ("quantizer", "polar"), ("coder", "rans"),
            ("predictor", "mlp")} <= ids


def test_plugins_says_which_compiled_code_is_there() -> None:
    from rftpack import native

    fast = json.loads(run_cli("plugins", "--json").stdout)["accelerators"]
    assert fast["c_extension"] is native.available()
    assert set(fast) == {"c_extension", "dq_kernel", "numba"}
    assert fast["dq_kernel"] == (native.dq_kernels()[-1] if native.available() else None)
    done = run_cli("plugins")  # (human output goes to stderr; stdout is for --json)
    said = " ".join(done.stderr.split())  # (as wrapped to the terminal's width)
    assert "compiled decoders and dq's trellis search" in said
    assert (f"rftpack._native): built (dq search kernel: {fast['dq_kernel']})"
            if native.available() else "not available") in said
    off = subprocess.run([sys.executable, "-m", "rftpack", "plugins", "--json"],
                         capture_output=True, text=True,
                         env={**os.environ, "RFTPACK_NO_NATIVE": "1"})
    assert json.loads(off.stdout)["accelerators"]["c_extension"] is False


def test_help_teaches() -> None:
    done = run_cli("--help")
    assert done.returncode == 0 and "examples:" in done.stdout
    done = run_cli("compress", "--help")
    assert "--quant-amp-bits" in done.stdout and "--lossless" in done.stdout


def test_import_rftpack_does_not_import_torch() -> None:
    code = ("import sys, rftpack, rftpack.api, rftpack.cli.main; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_demo_on_a_given_model(model_file, tmp_path: Path) -> None:
    source, _ = model_file
    done = run_cli("demo", "--model", str(source), "--workdir", str(tmp_path), "--json",
                   "--no-embeddings")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["names_dtypes_shapes_match"] and report["exact_tensors_equal"]
    assert report["ratio"] > 1 and report["weight_snr_db"] >= 20
    assert (tmp_path / "model.rftp").is_file() and (tmp_path / "restored.safetensors").is_file()


@pytest.mark.parametrize("native_built", [False, True])
@pytest.mark.parametrize("profile", ["dq", "scalar"])
def test_compress_says_how_to_speed_up_dq_without_compiled_search(
        model_file, tmp_path, capsys, monkeypatch, profile, native_built) -> None:
    """Neither the C extension nor numba: dq's search runs in numpy, and compress says so."""
    import importlib.util

    from rftpack import native

    if native_built and not native.available():
        pytest.skip("rftpack._native is not built here")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "numba" else real(name, *a))
    monkeypatch.setattr(native, "available", lambda: native_built)
    monkeypatch.setenv("RFTPACK_NO_JIT", "1")  # (numba is installed here: keep it out)
    path, _ = model_file
    assert main(["compress", str(path), "-o", str(tmp_path / "a.rftp"), "--profile", profile,
                 "--bpw", "4"]) == 0
    captured = capsys.readouterr()
    hinted = "searches in numpy" in captured.err + captured.out
    assert hinted == (profile == "dq" and not native_built)
    assert main(["compress", str(path), "-o", str(tmp_path / "b.rftp"), "--profile", profile,
                 "--bpw", "4", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "numpy" not in captured.err + captured.out


def test_set_passes_quantizer_parameters(model_file, tmp_path: Path, capsys) -> None:
    from rftpack.archive.reader import Archive

    path, _ = model_file
    out = tmp_path / "a.rftp"
    assert main(["compress", str(path), "-o", str(out), "--profile", "dq", "--bpw", "4",
                 "--set", "states=8", "--set", "chain=100", "--set", "lam=0.3",
                 "--set", "row_classes=1", "--quiet"]) == 0
    with Archive(out) as archive:
        record = next(s for s in archive.container("encoder.layer.0.weight")["stages"]
                      if s["kind"] == "quantizer")
    assert record["configuration"]["states"] == 8 and record["configuration"]["chain"] == 100
    assert record["configuration"]["lam"] == 0.3 and record["format_version"] == 2
    capsys.readouterr()
    for bad, expected in ((["--set", "nostates"], "KEY=VALUE"),
                          (["--set", "states=12"], "states must be one of 4, 8, 16"),
                          (["--set", "colour=blue"], "known: ['chain', 'lam'")):
        assert main(["compress", str(path), "-o", str(tmp_path / "b.rftp"), "--profile", "dq",
                     *bad]) == 1
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err


def test_exact_small_keeps_biases_bit_exact(model_file, tmp_path: Path, capsys) -> None:
    path, tensors = model_file
    bias = "encoder.layer.0.bias"
    for flags, exact in (([], False), (["--exact-small"], True)):
        out = tmp_path / f"{exact}.rftp"
        assert main(["compress", str(path), "-o", str(out), "--profile", "scalar", "--bpw",
                     "4", "--json", *flags]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["metrics"]["rounded_tensors"] == (0 if exact else 2)  # bias, scale
        restored = tmp_path / f"{exact}.safetensors"
        assert main(["extract", str(out), "-o", str(restored), "--quiet"]) == 0
        same = np.array_equal(load_file(str(restored))[bias], tensors[bias])
        assert same == exact
