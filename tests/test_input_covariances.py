"""rftpack.sensitivity.input_covariances (H = E[x xᵀ] of every nn.Linear's inputs, via forward
hooks) and calibrate_text_model on the tiny offline BERT (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rftpack import sensitivity  # noqa: E402
from rftpack.errors import InputError  # noqa: E402
from rftpack.sensitivity import Calibration, input_covariances  # noqa: E402


def by_hand(x: torch.Tensor) -> np.ndarray:
    x = x.detach().reshape(-1, x.shape[-1]).double().numpy()
    return x.T @ x / x.shape[0]


def hooks_of(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in module.modules())


def mlp() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 4, bias=False))


def test_values_match_x_transpose_x_over_n() -> None:
    net = mlp()
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(1)) + 0.5
    h = input_covariances(net, lambda m: m(x))
    assert set(h) == {"0.weight", "2.weight"}
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float64 for v in h.values())
    assert h["0.weight"].shape == (8, 8) and h["2.weight"].shape == (16, 16)
    np.testing.assert_allclose(h["0.weight"], by_hand(x), rtol=1e-12, atol=1e-12)
    hidden = torch.tanh(net[0](x))
    np.testing.assert_allclose(h["2.weight"], by_hand(hidden), rtol=1e-6, atol=1e-9)
    # A second moment, not a centred covariance: the mean of 0.5 shows on the diagonal.
    assert np.all(np.diag(h["0.weight"]) > 1.0)


def test_three_dimensional_inputs_pool_every_position() -> None:
    net = mlp()
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(2))
    h = input_covariances(net, lambda m: m(x))
    np.testing.assert_allclose(h["0.weight"], by_hand(x), rtol=1e-12, atol=1e-12)


def test_a_layer_called_twice_counts_every_row() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 6)  # the module itself is the Linear: its key is "weight"
    a = torch.randn(10, 6, generator=torch.Generator().manual_seed(3))
    b = 3.0 * torch.randn(30, 6, generator=torch.Generator().manual_seed(4))
    h = input_covariances(layer, lambda m: m(m(a)) + 0 * m(b).sum())
    rows = torch.cat([a, layer(a), b])
    assert set(h) == {"weight"}
    np.testing.assert_allclose(h["weight"], by_hand(rows), rtol=1e-6, atol=1e-9)


def test_row_mask_drops_padded_positions_of_three_dimensional_inputs() -> None:
    net = mlp()
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    x[mask == 0] = 1000.0  # padding: would dominate H if it were counted
    h = input_covariances(net, lambda m: m(x), row_mask=mask)
    kept = x[mask.bool()]
    assert kept.shape == (10, 8)
    np.testing.assert_allclose(h["0.weight"], by_hand(kept), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h["2.weight"], by_hand(torch.tanh(net[0](kept))), rtol=1e-6,
                               atol=1e-9)
    unmasked = input_covariances(net, lambda m: m(x))
    assert unmasked["0.weight"].max() > 1e5 > h["0.weight"].max()


def test_row_mask_leaves_inputs_of_another_shape_whole() -> None:
    class Pooled(torch.nn.Module):
        """A per-position layer, then mean pooling, then a per-sentence layer (like BERT's
        pooler): the mask fits the first one's inputs only."""

        def __init__(self) -> None:
            super().__init__()
            self.token = torch.nn.Linear(8, 8)
            self.sentence = torch.nn.Linear(8, 2)

        def forward(self, x):
            return self.sentence(self.token(x).mean(1))

    torch.manual_seed(0)
    net = Pooled()
    x = torch.randn(4, 6, 8, generator=torch.Generator().manual_seed(6))
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[1, 3:] = 0
    h = input_covariances(net, lambda m: m(x), row_mask=mask)
    np.testing.assert_allclose(h["token.weight"], by_hand(x[mask.bool()]), rtol=1e-12)
    pooled = net.token(x).mean(1)  # (4, 8): one row per sentence, no mask applies
    np.testing.assert_allclose(h["sentence.weight"], by_hand(pooled), rtol=1e-6, atol=1e-9)
    # A mask whose shape fits no input changes nothing.
    other = input_covariances(net, lambda m: m(x), row_mask=torch.ones(2, 2))
    np.testing.assert_allclose(other["token.weight"], by_hand(x), rtol=1e-12)


def test_unused_layers_are_left_out() -> None:
    net = mlp()
    x = torch.randn(4, 8)
    assert set(input_covariances(net, lambda m: m[0](x))) == {"0.weight"}
    assert input_covariances(net, lambda m: None) == {}


@pytest.mark.parametrize("training", [True, False])
def test_hooks_are_removed_and_training_mode_restored(training: bool) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(8, 8))
    net.train(training)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(7))
    modes = []

    def run(m):
        modes.append((m.training, m[0].training))
        return m(x)

    assert hooks_of(net) == 0
    h = input_covariances(net, run)
    assert modes == [(False, False)]  # measured in eval mode: dropout off
    np.testing.assert_allclose(h["1.weight"], by_hand(x), rtol=1e-12)
    assert hooks_of(net) == 0
    assert net.training is training and net[0].training is training and \
        net[1].training is training
    assert all(p.grad is None for p in net.parameters())


def test_hooks_are_removed_when_run_fails() -> None:
    net = mlp()
    net.train()

    def run(m):
        m(torch.randn(2, 8))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        input_covariances(net, run)
    assert hooks_of(net) == 0
    assert net.training


def test_the_calibration_feeds_calibrated_levels() -> None:
    from rftpack.calibrated import calibrated_levels

    net = mlp()
    x = torch.randn(200, 8, generator=torch.Generator().manual_seed(8))
    h = input_covariances(net, lambda m: m(x))
    w = net[2].weight.detach().double().numpy()
    q = calibrated_levels(w, h["2.weight"], 0.05)
    assert q.shape == w.shape and np.all(np.isfinite(q))


# -- text encoders ---------------------------------------------------------------------------


def test_there_are_eighty_unique_calibration_texts_apart_from_the_benchmarks() -> None:
    from rftpack.bench.models import SENTENCES

    texts = sensitivity.CALIBRATION_TEXTS
    assert len(texts) == 80
    assert all(isinstance(t, str) and t.strip() == t and t for t in texts)
    assert len({t.lower() for t in texts}) == 80
    assert not {t.lower() for t in texts} & {s.strip().lower() for s in SENTENCES}


TEXTS = ["the cat is on the mat.", "a man and a dog were at the mat with the cat.",
         "the dog.", "is the man on the mat?"]  # different lengths: padding happens


@pytest.fixture(scope="module")
def calibration(tiny_bert_dir: Path) -> Calibration:
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    try:
        return sensitivity.calibrate_text_model(tiny_bert_dir, TEXTS, repeats=1)
    finally:
        mp.undo()


def test_calibrate_text_model_covers_every_linear_weight(tiny_bert_dir: Path,
                                                         calibration: Calibration,
                                                         monkeypatch) -> None:
    import transformers

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = transformers.AutoModel.from_pretrained(tiny_bert_dir, local_files_only=True)
    linears = {f"{name}.weight": m.in_features for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear)}
    assert len(linears) == 2 * 6 + 1  # q, k, v, attention out, intermediate, out; pooler
    assert set(calibration.heldout_gain) == set(linears)  # every linear layer was assessed
    kept = {n for n, g in calibration.heldout_gain.items() if g < sensitivity.HELDOUT_KEEP}
    assert set(calibration.covariances) == kept and kept  # the ones that pay are rounded
    params = dict(model.named_parameters())
    for name, h in calibration.covariances.items():
        assert h.shape == (linears[name], linears[name]) == (params[name].shape[1],) * 2
        assert np.all(np.isfinite(h))
        np.testing.assert_allclose(h, h.T, rtol=1e-10, atol=1e-12)
        assert np.linalg.eigvalsh(h).min() > -1e-8 * np.trace(h)  # positive semi-definite
    eligible = {n for n, p in params.items() if p.ndim >= 2 and p.numel() >= 1024}
    assert set(calibration.importance) == eligible
    assert "embeddings.word_embeddings.weight" in calibration.importance
    assert "embeddings.word_embeddings.weight" not in calibration.covariances  # not Linear
    assert calibration.importance["pooler.dense.weight"] == 1e-3  # unused by the embedding


def test_calibrate_text_model_leaves_padding_out(tiny_bert_dir: Path, calibration: Calibration,
                                                 monkeypatch) -> None:
    import transformers

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_bert_dir, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(tiny_bert_dir, local_files_only=True).eval()
    batch = tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
    mask = batch["attention_mask"].bool()
    assert not mask.all()  # there is padding to leave out
    with torch.no_grad():
        embedded = model(**batch, output_hidden_states=True).hidden_states[0]
    # The first layer's query, key and value all read the embeddings' output.
    for part in ("query", "key", "value"):
        h = calibration.covariances[f"encoder.layer.0.attention.self.{part}.weight"]
        np.testing.assert_allclose(h, by_hand(embedded[mask]), rtol=1e-5, atol=1e-7)
        assert not np.allclose(h, by_hand(embedded), rtol=1e-3)


def test_calibrate_text_model_refuses_what_for_text_model_refuses(tiny_bert_dir: Path,
                                                                  tmp_path: Path,
                                                                  monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="no calibration texts"):
        sensitivity.calibrate_text_model(tiny_bert_dir, [])
    with pytest.raises(InputError, match="config.json"):
        sensitivity.calibrate_text_model(tmp_path)
    with pytest.raises(InputError, match="distortion"):
        sensitivity.calibrate_text_model(tiny_bert_dir, TEXTS, distortion="l2")


def test_calibration_defaults() -> None:
    c = Calibration({"a.weight": 1.0})
    assert c.covariances == {}
    assert Calibration({}).covariances is not c.covariances  # no shared default


def test_calibration_keeps_rounding_only_where_it_pays_out_of_sample(tiny_bert_dir: Path,
                                                                     monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    worse, better = "encoder.layer.0.attention.self.query.weight", "pooler.dense.weight"
    chosen = {worse: 1.2, better: 0.5}

    def fake_gains(weights, halves):
        assert set(weights) == set(halves[0]) == set(halves[1])  # fitted per half
        return {name: chosen.get(name, 0.9) for name in weights}

    plain = sensitivity.for_text_model(tiny_bert_dir, TEXTS, repeats=1)
    monkeypatch.setattr(sensitivity, "heldout_gains", fake_gains)
    c = sensitivity.calibrate_text_model(tiny_bert_dir, TEXTS, repeats=1)
    assert worse not in c.covariances and better in c.covariances
    assert c.importance[worse] == plain[worse]  # left to plain rounding: weight unchanged
    layer = "encoder.layer.1.output.dense.weight"
    assert c.importance[layer] == pytest.approx(plain[layer] * 0.9)  # its error shrinks
    assert c.importance[better] == pytest.approx(max(plain[better] * 0.5, 1e-3))
    # Fewer than 4 texts: no halves to cross-validate over, every layer is kept.
    few = sensitivity.calibrate_text_model(tiny_bert_dir, TEXTS[:3], repeats=1)
    assert few.heldout_gain == {} and set(few.covariances) == set(c.covariances) | {worse}


def test_heldout_gains_see_overfitting() -> None:
    rng = np.random.default_rng(3)
    w = {"w": rng.normal(size=(16, 64))}
    # Each half has fewer samples than inputs: a fit to one half is noise for the other.
    x1, x2 = rng.normal(size=(20, 64)), rng.normal(size=(20, 64))
    h1, h2 = x1.T @ x1 / 20, x2.T @ x2 / 20
    assert sensitivity.heldout_gains(w, ({"w": h1}, {"w": h2}))["w"] > 1.0
    assert sensitivity.heldout_gains(w, ({"w": h1}, {})) == {}  # needs both halves
