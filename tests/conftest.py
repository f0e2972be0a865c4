"""Shared fixtures: a tiny Hugging Face BERT directory built offline (config, random weights
and a WordPiece tokenizer over a small made-up vocabulary), for the sensitivity tests."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

TINY_BERT_VOCAB = list(dict.fromkeys(  # unique, in order
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list("abcdefghijklmnopqrstuvwxyz0123456789.,;:?!'=()_")
    + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    + "the a an is on in of and to for with was were by at cat man dog mat".split()))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BertModel (hidden 32, 2 layers) saved with ``save_pretrained`` plus its tokenizer."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    directory = tmp_path_factory.mktemp("tiny-bert")
    vocab = {token: i for i, token in enumerate(TINY_BERT_VOCAB)}
    (directory / "vocab.txt").write_text("\n".join(TINY_BERT_VOCAB) + "\n")
    # transformers ≥ 5 builds the fast tokenizer from a vocab mapping; 4.x from vocab_file.
    if "vocab" in inspect.signature(transformers.BertTokenizerFast.__init__).parameters:
        tokenizer = transformers.BertTokenizerFast(vocab=vocab, model_max_length=32)
    else:
        tokenizer = transformers.BertTokenizerFast(vocab_file=str(directory / "vocab.txt"),
                                                   model_max_length=32)
    assert tokenizer.tokenize("The cat") == ["the", "cat"]  # a real vocabulary, not all [UNK]
    tokenizer.save_pretrained(directory)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32,
                                     num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(directory)
    return directory
