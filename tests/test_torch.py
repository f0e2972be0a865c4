"""rftpack.torch: load_state_dict (strict and not) and lazy_load (layer by layer), including a
Hugging Face BERT built from a config — the same code path as MiniLM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rftpack  # noqa: E402
import rftpack.torch as rt  # noqa: E402


def make_net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 128),
        torch.nn.LayerNorm(128), torch.nn.Linear(128, 16))


def save_module(module: torch.nn.Module, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def net_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("torch")
    source = save_module(make_net(), directory / "net.safetensors")
    archive = directory / "net.rftp"
    rftpack.compress(source, archive, predictor=False)
    return archive


def eager(archive: Path) -> torch.nn.Module:
    model = make_net().eval()
    rt.load_state_dict(model, archive)
    return model


def test_load_state_dict_copies_decoded_values(net_archive: Path) -> None:
    model = make_net()
    result = rt.load_state_dict(model, net_archive)
    assert result.missing_keys == [] and result.unexpected_keys == []
    with rftpack.open(net_archive) as reader:
        for name, tensor in model.state_dict().items():
            assert np.array_equal(tensor.numpy(), reader.get_tensor(name)), name


def test_strict_and_non_strict(net_archive: Path) -> None:
    bigger = torch.nn.Sequential(*make_net(), torch.nn.Linear(16, 2))
    with pytest.raises(rt.LoadError, match="5.weight"):
        rt.load_state_dict(bigger, net_archive)
    result = rt.load_state_dict(bigger, net_archive, strict=False)
    assert result.missing_keys == ["5.weight", "5.bias"] and result.unexpected_keys == []
    smaller = torch.nn.Sequential(torch.nn.Linear(64, 128))
    result = rt.load_state_dict(smaller, net_archive, strict=False)
    assert "4.weight" in result.unexpected_keys
    wrong_shape = torch.nn.Sequential(torch.nn.Linear(64, 64))
    with pytest.raises(rt.LoadError, match="shape"):
        rt.load_state_dict(wrong_shape, net_archive, strict=False)


def test_load_into_other_dtype(net_archive: Path) -> None:
    model = make_net().to(torch.bfloat16)
    rt.load_state_dict(model, net_archive)
    reference = eager(net_archive)
    diff = (model[0].weight.float() - reference[0].weight).abs().max()
    assert diff <= 2 ** -7 * reference[0].weight.abs().max()


@pytest.mark.parametrize("meta", [False, True])
def test_lazy_load_equals_eager_and_releases(net_archive: Path, meta: bool) -> None:
    x = torch.randn(7, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = eager(net_archive)(x)
    if meta:
        with torch.device("meta"):
            model = make_net()
    else:
        model = make_net()
    handle = rt.lazy_load(model.eval(), net_archive)
    assert handle.resident_bytes() == 0
    assert all(p.numel() == 0 for p in model.parameters())  # nothing decoded yet
    seen = []
    model[2].register_forward_pre_hook(lambda m, a: seen.append(handle.resident_bytes()))
    with torch.no_grad():
        got = model(x)
    assert torch.equal(got, want)
    # while layer 2 ran, only its own weights were resident (128×128 + 128 floats)
    assert seen == [(128 * 128 + 128) * 4]
    assert handle.resident_bytes() == 0  # released after each forward
    assert handle.materializations == 4 * 2
    handle.remove()
    with torch.no_grad():
        assert torch.equal(model(x), want)  # usable on its own again


def test_lazy_load_keep_resident_decodes_once(net_archive: Path) -> None:
    x = torch.randn(3, 64)
    model = make_net().eval()
    handle = rt.lazy_load(model, net_archive, keep_resident=True)
    with torch.no_grad():
        first = model(x)
        second = model(x)
    assert torch.equal(first, second)
    assert handle.materializations == 8  # once per parameter, not per call
    assert handle.resident_bytes() == sum(p.numel() * 4 for p in model.parameters())


def test_lazy_load_strict_mismatch(net_archive: Path) -> None:
    with pytest.raises(rt.LoadError):
        rt.lazy_load(torch.nn.Linear(3, 3), net_archive)


def test_huggingface_bert_round_trip(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=128,
                                     max_position_embeddings=64)
    torch.manual_seed(0)
    original = transformers.BertModel(config).eval()
    source = save_module(original, tmp_path / "bert.safetensors")
    archive = tmp_path / "bert.rftp"
    rftpack.compress(source, archive, predictor=False)
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(3))

    eager_model = transformers.BertModel(config).eval()
    rt.load_state_dict(eager_model, archive, strict=False)
    lazy_model = transformers.BertModel(config).eval()
    rt.lazy_load(lazy_model, archive, strict=False)
    with torch.no_grad():
        reference = original(input_ids=ids).last_hidden_state
        a = eager_model(input_ids=ids).last_hidden_state
        b = lazy_model(input_ids=ids).last_hidden_state
    assert (a - b).abs().max() <= 1e-6
    cosine = torch.nn.functional.cosine_similarity(a.flatten(1), reference.flatten(1)).min()
    assert cosine > 0.95  # lossy weights, same network

    # Built on the meta device, BERT's non-persistent buffers have no values anywhere:
    # lazy_load says so instead of running on garbage.
    with torch.device("meta"):
        meta_model = transformers.BertModel(config).eval()
    with pytest.raises(rt.LoadError, match="token_type_ids"):
        rt.lazy_load(meta_model, archive, strict=False)


def test_non_persistent_buffers_in_the_archive_are_loaded(tmp_path: Path) -> None:
    class WithPositions(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(8, 8)
            self.register_buffer("positions", torch.zeros(8, dtype=torch.int64),
                                 persistent=False)

        def forward(self, x):
            return self.linear(x) + self.positions

    from safetensors.torch import save_file

    source = tmp_path / "p.safetensors"
    save_file({"linear.weight": torch.randn(8, 8), "linear.bias": torch.randn(8),
               "positions": torch.arange(8)}, str(source))
    archive = tmp_path / "p.rftp"
    rftpack.compress(source, archive, predictor=False)
    model = WithPositions()
    result = rt.load_state_dict(model, archive)  # strict: positions is known, not unexpected
    assert result.unexpected_keys == [] and torch.equal(model.positions, torch.arange(8))
    with torch.device("meta"):
        lazy = WithPositions()
    rt.lazy_load(lazy, archive)
    x = torch.randn(2, 8)
    with torch.no_grad():
        assert torch.equal(lazy(x), model(x))
