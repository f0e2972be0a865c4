"""rftpack.sensitivity: noise-injection importance weights of torch modules and of a tiny
Hugging Face text encoder built offline (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from rftpack import sensitivity  # noqa: E402
from rftpack.errors import InputError  # noqa: E402


class TwoBranches(torch.nn.Module):
    """out = 10·loud(x) + quiet(x): per unit of squared error, ``loud`` moves the output
    100× more than ``quiet`` (both 64×64, so both are lossy-eligible)."""

    def __init__(self) -> None:
        super().__init__()
        self.loud = torch.nn.Linear(64, 64, bias=False)
        self.quiet = torch.nn.Linear(64, 64, bias=False)

    def forward(self, x):
        return 10.0 * self.loud(x) + self.quiet(x)


def two_branches() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    net = TwoBranches()
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    return net, x


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in module.state_dict().items()}


def assert_bit_exact(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = module.state_dict()
    assert after.keys() == before.keys()
    for name, t in before.items():
        assert after[name].dtype == t.dtype, name
        assert torch.equal(after[name].view(torch.uint8) if t.dtype.is_floating_point
                           else after[name], t.view(torch.uint8) if t.dtype.is_floating_point
                           else t), name


@pytest.mark.parametrize("distortion", ["mse", "cosine"])
def test_the_influential_tensor_ranks_higher(distortion: str) -> None:
    net, x = two_branches()
    weights = sensitivity.measure(net, lambda m: m(x), distortion=distortion)
    assert set(weights) == {"loud.weight", "quiet.weight"}
    ratio = weights["loud.weight"] / weights["quiet.weight"]
    assert 50 < ratio < 200, ratio  # ≈ 10² by construction


def test_weights_have_a_numel_weighted_mean_of_one() -> None:
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(),
                              torch.nn.Linear(64, 64), torch.nn.Tanh(),
                              torch.nn.Linear(64, 16))
    x = torch.randn(48, 32, generator=torch.Generator().manual_seed(3))
    weights = sensitivity.measure(net, lambda m: m(x), floor=1e-6)
    numel = dict(net.named_parameters())
    assert set(weights) == {"0.weight", "2.weight", "4.weight"}  # biases and 1-D excluded
    assert all(1e-6 < w < 1e6 for w in weights.values())  # no clipping happened
    mean = (sum(w * numel[n].numel() for n, w in weights.items())
            / sum(numel[n].numel() for n in weights))
    assert mean == pytest.approx(1.0, rel=1e-5)
    assert len(set(weights.values())) == 3  # not trivially all equal


def test_floor_clips_both_ends() -> None:
    net, x = two_branches()
    free = sensitivity.measure(net, lambda m: m(x), floor=1e-6)
    assert free["quiet.weight"] == pytest.approx(0.02, rel=0.3)
    assert free["loud.weight"] == pytest.approx(1.98, rel=0.05)

    low = sensitivity.measure(net, lambda m: m(x), floor=0.05)
    assert low["quiet.weight"] == 0.05  # raised to the floor
    assert low["loud.weight"] == free["loud.weight"]  # under 1 / floor: untouched

    both = sensitivity.measure(net, lambda m: m(x), floor=0.8)
    assert both == {"loud.weight": 1.25, "quiet.weight": 0.8}


def test_an_unused_tensor_gets_the_floor() -> None:
    net, x = two_branches()
    weights = sensitivity.measure(net, lambda m: m.loud(x), floor=1e-3)
    assert weights["quiet.weight"] == 1e-3
    assert weights["loud.weight"] == pytest.approx(2.0, rel=1e-4)


@pytest.mark.parametrize("training", [True, False])
def test_parameters_and_training_mode_are_restored(training: bool) -> None:
    net, x = two_branches()
    net.loud.register_buffer("running", torch.randn(4))
    net.train(training)
    before = snapshot(net)
    modes = []

    def run(m):
        modes.append((m.training, m.loud.training))
        return m(x)

    sensitivity.measure(net, run, repeats=3)
    assert_bit_exact(net, before)
    assert net.training is training and net.loud.training is training
    assert modes and set(modes) == {(False, False)}  # measured in eval mode
    assert all(p.grad is None for p in net.parameters())


def test_restored_even_when_run_fails_midway() -> None:
    net, x = two_branches()
    net.train()
    before = snapshot(net)
    calls = []

    def run(m):
        calls.append(1)
        if len(calls) == 3:  # while a tensor is perturbed
            raise RuntimeError("boom")
        return m(x)

    with pytest.raises(RuntimeError, match="boom"):
        sensitivity.measure(net, run)
    assert_bit_exact(net, before)
    assert net.training


def test_half_precision_parameters_are_restored_bit_exactly() -> None:
    net, x = two_branches()
    net = net.to(torch.bfloat16)
    before = snapshot(net)
    weights = sensitivity.measure(net, lambda m: m(x.to(torch.bfloat16)))
    assert weights["loud.weight"] > weights["quiet.weight"]
    assert_bit_exact(net, before)


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    net, x = two_branches()
    first = sensitivity.measure(net, lambda m: m(x), seed=7)
    again = sensitivity.measure(net, lambda m: m(x), seed=7)
    other = sensitivity.measure(net, lambda m: m(x), seed=8)
    assert first == again
    assert first != other
    assert other["loud.weight"] == pytest.approx(first["loud.weight"], rel=0.05)


def test_names_restricts_the_measured_tensors() -> None:
    net, x = two_branches()
    weights = sensitivity.measure(net, lambda m: m(x), names=["quiet.weight"])
    assert list(weights) == ["quiet.weight"]
    assert weights["quiet.weight"] == pytest.approx(1.0)  # normalised over itself


def test_min_numel_decides_eligibility() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    x = torch.randn(4, 8)
    with pytest.raises(InputError, match="no parameter that rftpack compresses lossily"):
        sensitivity.measure(net, lambda m: m(x))  # 64 values < 1024
    assert set(sensitivity.measure(net, lambda m: m(x), min_numel=64)) == {"0.weight",
                                                                            "1.weight"}


@pytest.mark.parametrize("options, message", [
    ({"distortion": "l1"}, "distortion must be one of"),
    ({"distortion": "MSE"}, "distortion must be one of"),
    ({"relative_noise": 0.0}, "relative_noise"),
    ({"relative_noise": 1.0}, "relative_noise"),
    ({"repeats": 0}, "repeats"),
    ({"floor": 0.0}, "floor"),
    ({"floor": 1.0}, "floor"),
    ({"names": ["nope.weight"]}, "not lossy-eligible parameters of the module: nope.weight"),
    ({"names": ["loud.weight", "quiet.bias"]}, "not lossy-eligible parameters of the module: "
                                               "quiet.bias"),
    ({"names": []}, "no parameter"),
])
def test_bad_arguments_are_input_errors(options: dict, message: str) -> None:
    net, x = two_branches()
    with pytest.raises(InputError, match=message):
        sensitivity.measure(net, lambda m: m(x), **options)


def test_no_eligible_parameter_is_an_input_error() -> None:
    net = torch.nn.Sequential(torch.nn.LayerNorm(2048))  # 1-D parameters only
    x = torch.randn(2, 2048)
    with pytest.raises(InputError, match="no parameter"):
        sensitivity.measure(net, lambda m: m(x))


@pytest.mark.parametrize("distortion", ["mse", "cosine"])
def test_output_that_ignores_the_weights_is_an_input_error(distortion: str) -> None:
    net, x = two_branches()
    before = snapshot(net)
    with pytest.raises(InputError, match="did not change"):
        sensitivity.measure(net, lambda m: x * 2, distortion=distortion)
    assert_bit_exact(net, before)


def test_cosine_ignores_a_pure_change_of_scale() -> None:
    # A tensor that only rescales the output moves the MSE but not the cosine distortion.
    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Linear(64, 64, bias=False)
            self.gain = torch.nn.Parameter(torch.ones(32, 32))

        def forward(self, x):
            return self.body(x) * self.gain.mean()

    torch.manual_seed(0)
    net, x = Scaled(), torch.randn(16, 64)
    mse = sensitivity.measure(net, lambda m: m(x), distortion="mse", floor=1e-9)
    cosine = sensitivity.measure(net, lambda m: m(x), distortion="cosine", floor=1e-9)
    assert mse["gain"] > 1e-7
    assert cosine["gain"] < 1e-7
    assert cosine["body.weight"] > 1.0


# -- text encoders ---------------------------------------------------------------------------


def test_calibration_texts_are_not_the_benchmark_sentences() -> None:
    from rftpack.bench.models import SENTENCES

    assert len(sensitivity.CALIBRATION_TEXTS) == 80
    assert len(set(sensitivity.CALIBRATION_TEXTS)) == len(sensitivity.CALIBRATION_TEXTS)
    normalise = {s.strip().lower() for s in SENTENCES}
    assert not normalise & {s.strip().lower() for s in sensitivity.CALIBRATION_TEXTS}


def lossy_eligible(directory: Path) -> dict[str, int]:
    import transformers

    model = transformers.AutoModel.from_pretrained(directory)
    return {n: p.numel() for n, p in model.named_parameters()
            if p.ndim >= 2 and p.numel() >= 1024}


def test_for_text_model_on_a_tiny_bert(tiny_bert_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    weights = sensitivity.for_text_model(tiny_bert_dir, texts=sensitivity.CALIBRATION_TEXTS[:4],
                                         repeats=1)
    eligible = lossy_eligible(tiny_bert_dir)
    assert set(weights) == set(eligible)
    assert "embeddings.word_embeddings.weight" in weights
    # The pooler does not touch last_hidden_state, the mean-pooled embedding: floor weight.
    assert weights["pooler.dense.weight"] == 1e-3
    assert all(1e-3 <= w <= 1e3 for w in weights.values())
    assert max(weights.values()) > 1.0  # something matters more than average


def test_for_text_model_passes_options_through(tiny_bert_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["the cat is on the mat.", "a man and a dog."]
    weights = sensitivity.for_text_model(tiny_bert_dir, texts,
                                         names=["encoder.layer.1.output.dense.weight"])
    assert weights == {"encoder.layer.1.output.dense.weight": 1.0}
    with pytest.raises(InputError, match="distortion"):
        sensitivity.for_text_model(tiny_bert_dir, texts, distortion="l2")


def test_for_text_model_needs_a_model_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pytest.importorskip("transformers")
    with pytest.raises(InputError, match="config.json"):
        sensitivity.for_text_model(tmp_path)
    with pytest.raises(InputError, match="config.json"):
        sensitivity.for_text_model(tmp_path / "missing")


def test_for_text_model_refuses_an_empty_text_list(tiny_bert_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="no calibration texts"):
        sensitivity.for_text_model(tiny_bert_dir, [], names=["pooler.dense.weight"])
