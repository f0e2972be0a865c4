"""`rftpack compress --calibrate [--calibration-texts FILE]`, in-process through
rftpack.cli.main.main on the tiny offline BERT directory (tests/conftest.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from cli_checks import one_error_line
from safetensors.numpy import load_file

from rftpack import importance
from rftpack.archive.reader import Archive
from rftpack.cli.main import main

# The tiny BERT is mostly small exact tensors and per-tensor overhead (≈ 13.3 bits per weight
# before any lossy payload): 20 bits per weight leaves ≈ 6.7 for the lossy tensors.
BPW = "20"
LINEAR = "encoder.layer.1.attention.self.value.weight"
EMBEDDING = "embeddings.word_embeddings.weight"


def quantizer_config(archive: Archive, name: str) -> dict:
    return next(s for s in archive.container(name)["stages"]
                if s["kind"] == "quantizer")["configuration"]


@pytest.fixture
def measured(monkeypatch) -> list[dict]:
    """Offline, and a record of every calibrate_text_model call (the real one still runs)."""
    import rftpack.sensitivity

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls: list[dict] = []
    real = rftpack.sensitivity.calibrate_text_model

    def spy(model, texts=None, **options):
        calls.append({"model": Path(model), "texts": texts})
        return real(model, texts, **options)

    monkeypatch.setattr(rftpack.sensitivity, "calibrate_text_model", spy)
    return calls


@pytest.fixture
def no_measuring(monkeypatch) -> None:
    """Refusals must come before the (slow, on a real model) measurement."""
    import rftpack.sensitivity

    def must_not_run(*args, **kwargs):
        raise AssertionError("calibrated although the arguments were bad")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(rftpack.sensitivity, "calibrate_text_model", must_not_run)


def test_calibrate_scalar_end_to_end(tiny_bert_dir: Path, tmp_path: Path, capsys,
                                     measured: list[dict]) -> None:
    plain, calibrated = tmp_path / "plain.rftp", tmp_path / "calibrated.rftp"
    base = ["compress", str(tiny_bert_dir), "--profile", "scalar", "--bpw", BPW]
    assert main([*base, "-o", str(plain), "-q"]) == 0
    assert measured == []  # no --calibrate, no measuring
    assert main([*base, "-o", str(calibrated), "--calibrate", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # --json: nothing else on stdout
    assert len(measured) == 1 and measured[0]["texts"] is None  # the 80 built-in texts
    assert measured[0]["model"] == tiny_bert_dir
    assert 8 * report["archive_bytes"] / report["metrics"]["weights"] <= float(BPW) * 1.05

    with Archive(calibrated) as archive:
        rc = archive.manifest["codec"]["rate_control"]
        assert rc["calibrated_rounding"] is True
        assert rc["importance_weighted"] is True
        weights = rc["importance"]
        lossy = {n for n in archive.keys() if archive.container(n)["codec"]["mode"] == "hybrid"}
        # Linear weights were rounded for their outputs (no centroid shift on top); the
        # embedding table is no Linear layer and keeps plain rounding.
        assert quantizer_config(archive, LINEAR)["centroid"] is False
        assert quantizer_config(archive, EMBEDDING)["centroid"] is True
    assert set(weights) == lossy and EMBEDDING in weights
    assert weights["pooler.dense.weight"] == 1e-3
    with Archive(plain) as archive:
        rc = archive.manifest["codec"]["rate_control"]
        assert rc["calibrated_rounding"] is False and rc["importance_weighted"] is False

    # Decoding is unchanged: plain extract restores every tensor in shape and dtype.
    restored = tmp_path / "restored.safetensors"
    assert main(["extract", str(calibrated), "-o", str(restored), "-q"]) == 0
    original, back = load_file(str(tiny_bert_dir / "model.safetensors")), load_file(
        str(restored))
    assert back.keys() == original.keys()
    for name, value in original.items():
        assert back[name].shape == value.shape and back[name].dtype == value.dtype, name
    assert not np.array_equal(back[LINEAR], original[LINEAR])  # lossy, really


@pytest.fixture
def rftpack_logger():
    """A run without -q / --json installs a handler on the "rftpack" logger that outlives it
    (rftpack.cli.main._configure_logging): put the logger back for the tests after this one."""
    logger = logging.getLogger("rftpack")
    saved = logger.handlers[:], logger.level, logger.propagate
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def test_calibrate_prints_what_it_did(tiny_bert_dir: Path, tmp_path: Path, capsys,
                                      measured: list[dict], rftpack_logger) -> None:
    for profile, rounded in (("scalar", True), ("dq", False)):
        out = tmp_path / f"{profile}.rftp"
        assert main(["compress", str(tiny_bert_dir), "-o", str(out), "--profile", profile,
                     "--bpw", BPW, "--calibrate"]) == 0
        text = " ".join(capsys.readouterr().err.split())  # the console writes to stderr
        assert "calibrated in" in text and "tensors weighted" in text, text
        assert ("linear layers rounded for their outputs" in text) is rounded, text


def test_calibrate_with_dq_uses_importance_only(tiny_bert_dir: Path, tmp_path: Path,
                                                measured: list[dict]) -> None:
    out = tmp_path / "dq.rftp"
    assert main(["compress", str(tiny_bert_dir), "-o", str(out), "--profile", "dq",
                 "--bpw", BPW, "--calibrate", "-q"]) == 0
    assert len(measured) == 1
    with Archive(out) as archive:
        rc = archive.manifest["codec"]["rate_control"]
        assert rc["importance_weighted"] is True and rc["importance"]
        assert rc["calibrated_rounding"] is False


def test_calibration_texts_file(tiny_bert_dir: Path, tmp_path: Path,
                                measured: list[dict]) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("the cat is on the mat.\n\n   a man and a dog.  \nthe dog was at the mat.\n")
    out = tmp_path / "a.rftp"
    assert main(["compress", str(tiny_bert_dir), "-o", str(out), "--profile", "scalar",
                 "--bpw", BPW, "--calibrate", "--calibration-texts", str(texts), "-q"]) == 0
    assert measured[0]["texts"] == ["the cat is on the mat.", "a man and a dog.",
                                    "the dog was at the mat."]  # stripped, blanks skipped
    with Archive(out) as archive:
        assert archive.manifest["codec"]["rate_control"]["calibrated_rounding"] is True


@pytest.mark.parametrize("content, message", [
    ("\n  \n", "no calibration texts"),
    (None, "cannot read the calibration texts"),
])
def test_bad_calibration_texts_file(tiny_bert_dir: Path, tmp_path: Path, capsys,
                                    no_measuring, content: str | None, message: str) -> None:
    texts = tmp_path / "texts.txt"
    if content is None:
        texts.mkdir()  # a directory: unreadable as text
    else:
        texts.write_text(content)
    out = tmp_path / "a.rftp"
    assert main(["compress", str(tiny_bert_dir), "-o", str(out), "--profile", "scalar",
                 "--bpw", BPW, "--calibrate", "--calibration-texts", str(texts), "-q"]) == 1
    err = one_error_line(capsys)
    assert message in err and str(texts) in err
    assert not out.exists()


@pytest.mark.parametrize("extra", [[], ["--max-rel-error", "0.01"]])
def test_calibrate_without_a_target_is_one_error_line(tiny_bert_dir: Path, tmp_path: Path,
                                                      capsys, no_measuring,
                                                      extra: list[str]) -> None:
    out = tmp_path / "a.rftp"
    assert main(["compress", str(tiny_bert_dir), "-o", str(out), "--profile", "scalar",
                 "--calibrate", "-q", *extra]) == 1
    err = one_error_line(capsys)
    assert "--calibrate" in err and "--bpw" in err
    assert not out.exists()


def test_calibrate_with_importance_is_one_error_line(tiny_bert_dir: Path, tmp_path: Path,
                                                     capsys, no_measuring) -> None:
    weights = importance.save({"pooler.dense.weight": 2.0}, tmp_path / "imp.json")
    out = tmp_path / "a.rftp"
    assert main(["compress", str(tiny_bert_dir), "-o", str(out), "--profile", "scalar",
                 "--bpw", BPW, "--calibrate", "--importance", str(weights), "-q"]) == 1
    err = one_error_line(capsys)
    assert "--importance" in err and "--calibrate" in err
    assert not out.exists()


def test_calibration_texts_without_calibrate_is_one_error_line(tiny_bert_dir: Path,
                                                               tmp_path: Path, capsys,
                                                               no_measuring) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("the cat.\n")
    out = tmp_path / "a.rftp"
    assert main(["compress", str(tiny_bert_dir), "-o", str(out), "--profile", "scalar",
                 "--bpw", BPW, "--calibration-texts", str(texts), "-q"]) == 1
    assert "--calibration-texts goes with --calibrate" in one_error_line(capsys)
    assert not out.exists()


def test_calibrate_needs_a_model_directory(tiny_bert_dir: Path, tmp_path: Path, capsys,
                                           monkeypatch) -> None:
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "a.rftp"
    assert main(["compress", str(tiny_bert_dir / "model.safetensors"), "-o", str(out),
                 "--profile", "scalar", "--bpw", BPW, "--calibrate", "-q"]) == 1
    assert "config.json" in one_error_line(capsys)
    assert not out.exists()


def test_compress_help_documents_calibrate(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["compress", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert "--calibrate" in out and "--calibration-texts FILE" in out
    assert "80 built-in sentences" in out


@pytest.mark.parametrize("extra", [["--profile", "hybrid"], ["--profile", "scalar",
                                                             "--lossless"]])
def test_unusable_profiles_are_refused_before_measuring(tiny_bert_dir: Path, tmp_path: Path,
                                                        capsys, no_measuring,
                                                        extra: list[str]) -> None:
    out = tmp_path / "a.rftp"
    code = main(["compress", str(tiny_bert_dir), "-o", str(out), "--bpw", BPW, "--calibrate",
                 "-q", *extra])
    assert code == 1
    one_error_line(capsys)
    assert not out.exists()
