"""`rftpack compress --importance FILE` and `rftpack sensitivity`, in-process through
rftpack.cli.main.main (the tiny BERT directory comes from tests/conftest.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from cli_checks import one_error_line
from safetensors.numpy import load_file, save_file

from rftpack import importance
from rftpack.archive.reader import Archive
from rftpack.cli.main import main

HEAVY = "model.layer2.weight"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(5)
    tensors = {f"model.layer{i}.weight": (rng.standard_normal((128, 64)) * 0.05)
               .astype(np.float32) for i in range(3)}
    tensors["model.layer0.bias"] = np.zeros(128, np.float32)
    path = tmp_path_factory.mktemp("cli-imp") / "model.safetensors"
    save_file(tensors, str(path))
    return path


def errors_db(source: Path, archive: Path, tmp_path: Path) -> dict[str, float]:
    """Per-tensor SNR (dB) of the archive's reconstruction."""
    restored = tmp_path / (archive.stem + ".restored.safetensors")
    assert main(["extract", str(archive), "-o", str(restored), "-q"]) == 0
    a, b = load_file(str(source)), load_file(str(restored))
    return {n: 10 * math.log10(float(np.sum(a[n].astype(np.float64) ** 2)
                                     / np.sum((a[n] - b[n]).astype(np.float64) ** 2)))
            for n in a if n.endswith(".weight")}


# -- compress --importance -------------------------------------------------------------------


def test_compress_with_importance_file_end_to_end(model_file: Path, tmp_path: Path,
                                                  capsys) -> None:
    weights = tmp_path / "imp.json"
    importance.save({"layer2.weight": 100.0}, weights, distortion="cosine")
    plain, weighted = tmp_path / "plain.rftp", tmp_path / "weighted.rftp"
    base = ["compress", str(model_file), "--profile", "scalar", "--bpw", "6", "-q"]
    assert main([*base, "-o", str(plain)]) == 0
    assert main([*base, "-o", str(weighted), "--importance", str(weights), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 8 * report["archive_bytes"] / report["metrics"]["weights"] <= 6.0 * 1.02

    with Archive(weighted) as archive:
        assert archive.manifest["codec"]["rate_control"]["importance_weighted"] is True
    with Archive(plain) as archive:
        assert archive.manifest["codec"]["rate_control"]["importance_weighted"] is False
    snr_plain = errors_db(model_file, plain, tmp_path)
    snr_weighted = errors_db(model_file, weighted, tmp_path)
    assert snr_weighted[HEAVY] > snr_plain[HEAVY] + 6.0  # finer step for the weighted one
    assert snr_weighted[HEAVY] - snr_weighted["model.layer0.weight"] == pytest.approx(20.0,
                                                                                      abs=2.0)


@pytest.mark.parametrize("content, message", [
    (None, "no such importance file"),
    ("{oops", "not a JSON importance file"),
    ('{"format": "rftpack-importance", "version": 99, "weights": {"a": 1}}', "newer"),
    ('{"layer2.weight": -3}', "finite number > 0"),
    ('{"decoder.other.weight": 3}', "another model"),
])
def test_bad_importance_file_is_one_error_line(model_file: Path, tmp_path: Path, capsys,
                                               content: str | None, message: str) -> None:
    weights = tmp_path / "imp.json"
    if content is not None:
        weights.write_text(content)
    out = tmp_path / "a.rftp"
    code = main(["compress", str(model_file), "-o", str(out), "--profile", "scalar",
                 "--bpw", "6", "-q", "--importance", str(weights)])
    assert code == 1
    err = one_error_line(capsys, "compress")
    assert message in err
    if message != "another model":
        assert str(weights) in err
    assert not out.exists()


def test_importance_without_a_target_is_refused(model_file: Path, tmp_path: Path,
                                                capsys) -> None:
    weights = importance.save({"layer2.weight": 100.0}, tmp_path / "imp.json")
    out = tmp_path / "a.rftp"
    for extra in ([], ["--max-rel-error", "0.01"]):
        code = main(["compress", str(model_file), "-o", str(out), "--profile", "scalar", "-q",
                     "--importance", str(weights), *extra])
        assert code == 1
        assert "--bpw" in one_error_line(capsys, "compress")
        assert not out.exists()


def test_compress_help_documents_importance(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["compress", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert "--importance FILE per-tensor importance weights" in out
    assert "rftpack sensitivity" in out


# -- sensitivity -----------------------------------------------------------------------------


def test_sensitivity_help_shows_the_workflow(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["sensitivity", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "rftpack sensitivity MODEL_DIR -o importance.json" in out
    assert "--importance importance.json" in out
    for option in ("--texts", "--noise", "--force", "--out"):
        assert option in out, option


def test_sensitivity_writes_a_loadable_file(tiny_bert_dir: Path, model_file: Path,
                                            tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = tmp_path / "texts.txt"
    texts.write_text("the cat is on the mat.\n\n  a man and a dog.  \nthe dog was at the mat.\n")
    out = tmp_path / "imp.json"
    out.write_text("keep me")
    args = ["sensitivity", str(tiny_bert_dir), "-o", str(out), "--texts", str(texts)]

    assert main([*args, "-q"]) == 1  # exists: not overwritten without -f
    assert "-f" in one_error_line(capsys, "sensitivity")
    assert out.read_text() == "keep me"

    assert main([*args, "-f", "--json", "--noise", "0.05"]) == 0
    report = json.loads(capsys.readouterr().out)
    weights = importance.load(out)
    assert weights == report["weights"] and report["tensors"] == len(weights)
    assert "embeddings.word_embeddings.weight" in weights
    assert weights["pooler.dense.weight"] == 1e-3  # unused by the pooled embedding
    document = json.loads(out.read_text())
    assert document["distortion"] == "cosine"
    assert document["text_count"] == 3  # blank lines skipped
    assert document["relative_noise"] == 0.05

    # The file feeds compress: the BERT's own safetensors, rate-controlled with it (an SNR
    # target: a model this small is mostly per-tensor overhead at any useful bpw).
    archive = tmp_path / "bert.rftp"
    assert main(["compress", str(tiny_bert_dir), "-o", str(archive), "--profile", "scalar",
                 "--snr-db", "30", "--importance", str(out), "-q"]) == 0
    with Archive(archive) as opened:
        assert opened.manifest["codec"]["rate_control"]["importance_weighted"] is True


@pytest.mark.parametrize("texts_content, message", [
    ("\n   \n", "no calibration texts"),
    (None, "cannot read the calibration texts"),
])
def test_sensitivity_bad_texts_file(tiny_bert_dir: Path, tmp_path: Path, capsys,
                                    texts_content: str | None, message: str) -> None:
    texts = tmp_path / "texts.txt"
    if texts_content is None:
        texts.mkdir()  # a directory: unreadable as text
    else:
        texts.write_text(texts_content)
    out = tmp_path / "imp.json"
    assert main(["sensitivity", str(tiny_bert_dir), "-o", str(out), "--texts", str(texts),
                 "-q"]) == 1
    err = one_error_line(capsys, "sensitivity")
    assert message in err and str(texts) in err
    assert not out.exists()


def test_sensitivity_needs_a_model_directory(model_file: Path, tmp_path: Path, capsys,
                                             monkeypatch) -> None:
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "imp.json"
    assert main(["sensitivity", str(model_file), "-o", str(out), "-q"]) == 1
    assert "config.json" in one_error_line(capsys, "sensitivity")
    assert main(["sensitivity", str(tmp_path / "missing"), "-o", str(out), "-q"]) == 1
    assert "no such file or directory" in one_error_line(capsys, "sensitivity")
    assert not out.exists()


@pytest.mark.parametrize("out_name, extra, message", [
    ("no-such-dir/imp.json", [], "no such directory for --out"),
    ("imp.json", ["--noise", "1.5"], "--noise must be in (0, 1)"),
])
def test_sensitivity_refuses_bad_output_or_noise_before_measuring(
        tiny_bert_dir: Path, tmp_path: Path, capsys, monkeypatch, out_name: str,
        extra: list[str], message: str) -> None:
    import rftpack.sensitivity

    def must_not_run(*args, **kwargs):
        raise AssertionError("measured although the arguments were bad")

    monkeypatch.setattr(rftpack.sensitivity, "for_text_model", must_not_run)
    out = tmp_path / out_name
    assert main(["sensitivity", str(tiny_bert_dir), "-o", str(out), *extra, "-q"]) == 1
    assert message in one_error_line(capsys, "sensitivity")
    assert not out.exists()
