"""Row weights on the command line: `rftpack compress --importance FILE` with a "rows" section,
`rftpack sensitivity` writing one for the token-embedding table, and `compress --calibrate`
passing them on; plus rftpack.sensitivity.token_row_weights itself. In-process through
rftpack.cli.main.main (the tiny BERT directory comes from tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_checks import one_error_line
from safetensors.numpy import load_file, save_file

from rftpack import importance
from rftpack.archive.reader import Archive
from rftpack.cli.main import main

EMB, OTHER = "model.emb.weight", "model.other.weight"
ROWS, HEAVY = 256, 16
# The tiny BERT's token table and a linear layer of 32 × 32 (see test_cli_calibrate.py).
BERT_BPW = "20"
EMBEDDING = "embeddings.word_embeddings.weight"
LINEAR = "encoder.layer.1.attention.self.value.weight"
TEXTS = ["the cat is on the mat.", "a man and a dog.", "the dog was at the mat with a cat."]


def row_weights() -> np.ndarray:
    weights = np.ones(ROWS)
    weights[:HEAVY] = 64.0
    return weights


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(8)
    tensors = {EMB: (rng.standard_normal((ROWS, 64)) * 0.05).astype(np.float32),
               OTHER: (rng.standard_normal((64, 64)) * 0.05).astype(np.float32),
               "model.other.bias": np.zeros(64, np.float32)}
    path = tmp_path_factory.mktemp("cli-rows") / "model.safetensors"
    save_file(tensors, str(path))
    return path


def compress(model: Path, out: Path, weights: Path, *extra: str) -> int:
    return main(["compress", str(model), "-o", str(out), "--profile", "scalar", "--bpw", "4",
                 "--importance", str(weights), "-q", *extra])


def heavy_and_light_mse(model: Path, archive: Path, tmp_path: Path) -> tuple[float, float]:
    restored = tmp_path / (archive.stem + ".restored.safetensors")
    assert main(["extract", str(archive), "-o", str(restored), "-q"]) == 0
    a, b = load_file(str(model))[EMB], load_file(str(restored))[EMB]
    error = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    return float(error[:HEAVY].mean()), float(error[HEAVY:].mean())


# -- compress --importance with rows ---------------------------------------------------------


def test_rows_in_the_importance_file_reach_compress(model_file: Path, tmp_path: Path,
                                                    capsys) -> None:
    weights = importance.save({"other.weight": 1.0}, tmp_path / "imp.json",
                              rows={"emb.weight": row_weights()})
    plain_weights = importance.save({"other.weight": 1.0}, tmp_path / "plain.json")
    weighted, plain = tmp_path / "weighted.rftp", tmp_path / "plain.rftp"
    assert compress(model_file, plain, plain_weights) == 0
    assert compress(model_file, weighted, weights, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert 8 * report["archive_bytes"] / report["metrics"]["weights"] <= 4.0

    with Archive(weighted) as archive:
        rc = archive.manifest["codec"]["rate_control"]
        assert rc["row_weighted"] == [EMB] and rc["importance_weighted"] is True
        assert archive.container(EMB)["payload"]["blocks"][0]["side"]["row_length"] == 64
    with Archive(plain) as archive:
        assert archive.manifest["codec"]["rate_control"]["row_weighted"] == []
    heavy, light = heavy_and_light_mse(model_file, weighted, tmp_path)
    assert heavy < light / 30
    heavy, light = heavy_and_light_mse(model_file, plain, tmp_path)
    assert heavy == pytest.approx(light, rel=0.3)


def entry(**changes) -> dict:
    return {"count": ROWS, "default": 1.0, "weights": {"0": 64.0}, **changes}


@pytest.mark.parametrize("rows, message", [
    ({"emb.weight": entry(count="256")}, "'count' must be a positive integer"),
    ({"emb.weight": entry(weights={"x": 2.0})}, "not a row number below 256"),
    ({"emb.weight": entry(weights={"256": 2.0})}, "not a row number below 256"),
    ({"emb.weight": entry(weights={"3": -2.0})}, "finite numbers > 0"),
    ({"emb.weight": entry(default=0)}, "finite numbers > 0"),
    ({"emb.weight": {"count": ROWS, "weights": {}}}, "expected"),
    ({"emb.weight": [1.0, 2.0]}, "expected"),
    ([1.0, 2.0], "'rows' must map"),
])
def test_malformed_rows_are_one_error_line(model_file: Path, tmp_path: Path, capsys,
                                           rows, message: str) -> None:
    weights = tmp_path / "imp.json"
    weights.write_text(json.dumps({"format": importance.FORMAT, "version": importance.VERSION,
                                   "weights": {"other.weight": 1.0}, "rows": rows}))
    out = tmp_path / "a.rftp"
    assert compress(model_file, out, weights) == 1
    err = one_error_line(capsys)
    assert message in err and str(weights) in err
    assert not out.exists()


@pytest.mark.parametrize("rows, extra, message", [
    ({"emb.weight": np.ones(100)}, [], "256 rows but 100 row weights"),
    ({"decoder.emb.weight": row_weights()}, [], "none of the row weights"),
    ({"emb.weight": row_weights()}, ["--profile", "hybrid"], "--profile scalar or --profile dq"),
])
def test_rows_that_cannot_be_used_are_one_error_line(model_file: Path, tmp_path: Path, capsys,
                                                     rows, extra: list[str],
                                                     message: str) -> None:
    weights = importance.save({"other.weight": 1.0}, tmp_path / "imp.json", rows=rows)
    out = tmp_path / "a.rftp"
    assert compress(model_file, out, weights, *extra) == 1
    assert message in one_error_line(capsys)
    assert not out.exists()


def test_rows_without_a_target_are_one_error_line(model_file: Path, tmp_path: Path,
                                                  capsys) -> None:
    weights = importance.save({"other.weight": 1.0}, tmp_path / "imp.json",
                              rows={"emb.weight": row_weights()})
    out = tmp_path / "a.rftp"
    assert main(["compress", str(model_file), "-o", str(out), "--profile", "scalar",
                 "--importance", str(weights), "-q"]) == 1
    assert "--bpw" in one_error_line(capsys)
    assert not out.exists()


# -- token rows from calibration texts -------------------------------------------------------


def test_token_row_weights_counts_unmasked_tokens_only() -> None:
    torch = pytest.importorskip("torch")
    from rftpack.sensitivity import TOKEN_CAP, TOKEN_PRIOR, token_row_weights

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = torch.nn.Embedding(10, 4)
            self.out = torch.nn.Linear(4, 2)

        def get_input_embeddings(self):
            return self.tok

    ids = torch.tensor([[1, 2, 3, 0], [1, 2, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    rows = token_row_weights(Tiny(), ids, mask)
    assert list(rows) == ["tok.weight"]
    counts = np.array([0, 2, 2, 1, 0, 0, 0, 0, 0, 0])  # the padding id 0 is masked out
    assert rows["tok.weight"].tolist() == (counts + TOKEN_PRIOR).tolist()
    unmasked = token_row_weights(Tiny(), ids)["tok.weight"]
    assert unmasked[0] == 3 + TOKEN_PRIOR
    assert unmasked[1:].tolist() == rows["tok.weight"][1:].tolist()
    # A token used everywhere is capped at TOKEN_CAP × the mean row weight.
    frequent = token_row_weights(Tiny(), torch.ones(1, 1000, dtype=torch.long))["tok.weight"]
    mean = (1000 + 10 * TOKEN_PRIOR) / 10
    assert frequent[1] == pytest.approx(TOKEN_CAP * mean) and frequent[0] == TOKEN_PRIOR
    # No input-embedding table: no row weights.
    assert token_row_weights(torch.nn.Linear(4, 2), ids, mask) == {}


@pytest.fixture
def quick_measure(monkeypatch) -> None:
    """Offline, and the noise-injection measurement limited to one small linear layer (the
    row weights come from the texts' tokens, not from it)."""
    import rftpack.sensitivity

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    real = rftpack.sensitivity.measure

    def one_tensor(network, run, **options):
        return real(network, run, **{**options, "names": [LINEAR]})

    monkeypatch.setattr(rftpack.sensitivity, "measure", one_tensor)


def test_sensitivity_writes_token_rows(tiny_bert_dir: Path, tmp_path: Path, capsys,
                                       quick_measure) -> None:
    from rftpack.sensitivity import TOKEN_PRIOR

    vocab = (tiny_bert_dir / "vocab.txt").read_text().splitlines()
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")  # of different lengths: the batch is padded
    out = tmp_path / "imp.json"
    assert main(["sensitivity", str(tiny_bert_dir), "-o", str(out), "--texts", str(texts),
                 "-q"]) == 0
    assert capsys.readouterr().err == ""
    sparse = json.loads(out.read_text())["rows"][EMBEDDING]
    assert sparse["count"] == len(vocab) and sparse["default"] == TOKEN_PRIOR  # unseen tokens
    rows = importance.load_rows(out)[EMBEDDING]
    assert rows.shape == (len(vocab),)
    for token in ("[CLS]", "[SEP]"):  # once per text
        assert rows[vocab.index(token)] == len(TEXTS) + TOKEN_PRIOR > sparse["default"]
    assert rows[vocab.index("the")] == 4 + TOKEN_PRIOR
    assert rows[vocab.index("[PAD]")] == TOKEN_PRIOR  # padding does not count
    assert str(vocab.index("[PAD]")) not in sparse["weights"]
    assert importance.load(out) == {LINEAR: 1.0}  # the one measured tensor, normalised

    # The file feeds compress: the token table gets row steps.
    archive = tmp_path / "bert.rftp"
    assert main(["compress", str(tiny_bert_dir), "-o", str(archive), "--profile", "scalar",
                 "--bpw", BERT_BPW, "--importance", str(out), "-q"]) == 0
    with Archive(archive) as opened:
        assert opened.manifest["codec"]["rate_control"]["row_weighted"] == [EMBEDDING]


@pytest.fixture
def quick_calibration(monkeypatch) -> list[str]:
    """compress --calibrate with token rows and importance from the texts, measured on one
    layer and without covariances; records each call's model."""
    import rftpack.sensitivity

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls: list[str] = []
    real = rftpack.sensitivity.text_model_weights

    def calibrate(model, texts=None, **options):
        calls.append(str(model))
        return real(model, TEXTS, names=[LINEAR], **options)

    monkeypatch.setattr(rftpack.sensitivity, "calibrate_text_model", calibrate)
    return calls


@pytest.mark.parametrize("profile", ["scalar", "dq"])
def test_calibrate_passes_token_rows(tiny_bert_dir: Path, tmp_path: Path, profile: str,
                                     quick_calibration: list[str]) -> None:
    out = tmp_path / "a.rftp"
    assert main(["compress", str(tiny_bert_dir), "-o", str(out), "--profile", profile,
                 "--bpw", BERT_BPW, "--calibrate", "-q"]) == 0
    assert quick_calibration == [str(tiny_bert_dir)]
    with Archive(out) as archive:
        rc = archive.manifest["codec"]["rate_control"]
        assert rc["row_weighted"] == [EMBEDDING]
        assert rc["importance_weighted"] is True and rc["calibrated_rounding"] is False
        side = archive.container(EMBEDDING)["payload"]["blocks"][0]["side"]
    assert side["row_length"] == 32 and side["row_levels"] > 1
