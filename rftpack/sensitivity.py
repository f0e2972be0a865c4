"""Measure how much each weight tensor matters to a model's output (needs torch).

For every floating-point parameter that rftpack compresses lossily (≥ 2 dims, ≥ 1024 values),
Gaussian noise of a small relative size is added, the model is run, and the output's
distortion is divided by the noise energy: sᵢ ≈ ∂ distortion / ∂ (squared error of tensor i).
These are the importance weights rate control uses (:mod:`rftpack.importance`): on
all-MiniLM-L6-v2 they span the floor 0.001 (the pooler, which sentence embeddings do not
use) to 14 (the last layer's value projection).

    >>> weights = measure(model, lambda m: m(**batch).last_hidden_state)  # doctest: +SKIP
    >>> rftpack.compress("model", "model.rftp", profile="dq", target_bpw=5,
    ...                  importance=weights)                               # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rftpack.errors import InputError

#: Calibration sentences for text encoders. Deliberately distinct from the benchmark's
#: evaluation sentences (rftpack.bench.models.SENTENCES), so bench figures are not fitted.
CALIBRATION_TEXTS = [
    "A man is playing a guitar on the street corner.",
    "The weather today is sunny with a light breeze.",
    "Machine learning models require large amounts of training data.",
    "She ordered a cup of coffee and a croissant.",
    "The committee will announce its decision next month.",
    "Quantum computers exploit superposition and entanglement.",
    "import numpy as np; x = np.zeros(10)",
    "El perro corre en el parque todos los días.",
    "What is the fastest way to learn a new language?",
    "The museum reopened after two years of renovation.",
    "Children were playing football in the schoolyard.",
    "Add two cups of flour and mix until smooth.",
    "The battery lasts about ten hours on a single charge.",
    "He missed the train and had to take a taxi.",
    "Global temperatures have risen over the last century.",
    "Please send me the report by Friday afternoon.",
    "La réunion a été reportée à la semaine prochaine.",
    "The algorithm runs in linear time and constant memory.",
    "Our flight was delayed by three hours because of fog.",
    "The novel tells the story of a family across generations.",
    "The river flooded the village after days of heavy rain.",
    "Can I pay with a credit card at the front desk?",
    "The new phone has a larger screen and a faster processor.",
    "Volunteers cleaned up the beach on Saturday morning.",
    "SELECT name, age FROM users WHERE age > 30;",
    "Ich habe gestern ein gutes Buch gelesen.",
    "The orchestra performed Beethoven's Ninth Symphony.",
    "My favourite season is autumn because of the colours.",
    "The company reported record profits in the third quarter.",
    "How many kilometres is it from Madrid to Lisbon?",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The detective found a hidden letter behind the painting.",
    "Regular exercise improves both mood and sleep quality.",
    "The bridge was closed for repairs until further notice.",
    "She won the chess tournament without losing a single game.",
    "for i in range(10): print(i * i)",
    "The restaurant serves fresh seafood and local wine.",
    "Scientists discovered a new species of frog in the rainforest.",
    "The meeting ran late, so we ordered pizza for everyone.",
    "Il fait très beau aujourd'hui, allons à la plage.",
    'The library stays open until nine on weekdays.',
    'A young woman is riding a bicycle along the canal.',
    'Prices for fresh vegetables rose again this week.',
    'The server returned an error after the update was installed.',
    'We hiked to the top of the hill to watch the sunrise.',
    'The vaccine was tested on thousands of volunteers.',
    'Turn left at the second traffic light and park behind the bank.',
    'His grandmother taught him how to knit a scarf.',
    'The football match ended in a draw after extra time.',
    'Solar panels convert sunlight directly into electricity.',
    'Where can I find a cheap hotel near the train station?',
    'The teacher asked the students to read the first chapter.',
    'A dog is chasing a ball across the green lawn.',
    'The startup raised ten million dollars in its first round.',
    'Remember to water the plants while I am away.',
    'The film won three awards at the international festival.',
    'Our internet connection has been slow since yesterday.',
    'The mountains were covered with snow in early November.',
    'git commit -m "fix off-by-one error in the parser"',
    'Mi hermana trabaja como enfermera en el hospital.',
    'The price of the apartment includes parking and storage.',
    'Two children are building a sandcastle on the beach.',
    'The president met foreign leaders at the summit.',
    'This laptop overheats when I run several programs at once.',
    'They celebrated their anniversary with dinner by the lake.',
    'Bees play a vital role in pollinating crops.',
    'The lecture on ancient history was surprisingly entertaining.',
    'Is there a pharmacy open on Sunday in this neighbourhood?',
    'The printer is out of paper again.',
    'Researchers measured the speed of the glacier over ten years.',
    'A chef is slicing onions in a busy kitchen.',
    'The airline lost my suitcase on the way to Rome.',
    'Le musée est fermé le lundi.',
    'The students protested against the rise in tuition fees.',
    'Our neighbours adopted a kitten from the animal shelter.',
    'Compile the project with optimisations enabled before profiling it.',
    'The storm knocked down power lines across the county.',
    'He practises the piano for an hour every evening.',
    'The hospital opened a new wing for children.',
    'Die Kinder spielen im Garten mit dem Hund.',
]

DISTORTIONS = ("cosine", "mse")


def _distortion(kind: str, reference: Any, output: Any) -> float:
    import torch

    a = reference.reshape(reference.shape[0], -1).double() if reference.ndim > 1 else \
        reference.reshape(1, -1).double()
    b = output.reshape(a.shape).double()
    if torch.equal(a, b):  # unchanged: exactly 0 (1 − cosine would leave rounding noise)
        return 0.0
    if kind == "cosine":  # mean (1 − cosine) over the rows (e.g. one per sentence)
        return float((1.0 - torch.nn.functional.cosine_similarity(a, b, dim=1)).mean())
    return float((a - b).pow(2).sum() / a.pow(2).sum().clamp_min(1e-300))


def measure(module: Any, run: Callable[[Any], Any], *, distortion: str = "mse",
            relative_noise: float = 0.03, repeats: int = 2, seed: int = 0,
            min_numel: int = 1024, floor: float = 1e-3,
            names: Sequence[str] | None = None) -> dict[str, float]:
    """Importance weight of every lossy-eligible parameter of a torch ``module``.

    ``run(module)`` returns the output to preserve (a tensor; rows = samples). ``distortion``
    is ``"mse"`` (relative squared error) or ``"cosine"`` (mean 1 − cosine of the rows, for
    embeddings). The weights are normalised to a weight-count-weighted mean of 1 and clipped
    to [``floor``, 1 / ``floor``] so no step is ever infinite. The module is put in eval mode
    while measuring and every parameter is restored exactly.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64))
        >>> x = torch.randn(32, 64)
        >>> w = measure(net, lambda m: m(x))
        >>> sorted(w) == ["0.weight", "1.weight"]
        True
    """
    import torch

    if distortion not in DISTORTIONS:
        raise InputError(f"distortion must be one of {', '.join(DISTORTIONS)}, "
                         f"got {distortion!r}")
    if not (0 < relative_noise < 1) or repeats < 1 or not (0 < floor < 1):
        raise InputError("relative_noise must be in (0, 1), repeats ≥ 1, floor in (0, 1)")
    wanted = set(names) if names is not None else None
    params = [(name, p) for name, p in module.named_parameters()
              if p.is_floating_point() and p.ndim >= 2 and p.numel() >= min_numel
              and (wanted is None or name in wanted)]
    if wanted is not None:
        unknown = sorted(wanted - {name for name, _ in params})
        if unknown:
            raise InputError(f"not lossy-eligible parameters of the module: "
                             f"{', '.join(unknown[:5])} (floating point, ≥ 2 dims and "
                             f"≥ {min_numel} values are)")
    if not params:
        raise InputError("the module has no parameter that rftpack compresses lossily "
                         f"(floating point, ≥ 2 dims, ≥ {min_numel} values)")
    generator = torch.Generator().manual_seed(seed)
    was_training = module.training
    module.eval()
    raw: dict[str, float] = {}
    try:
        with torch.no_grad():
            reference = run(module).detach()
            for name, p in params:
                original = p.detach().clone()
                rms = float(original.double().pow(2).mean().sqrt()) or 1.0
                per_unit = []
                for _ in range(repeats):
                    noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
                    noise *= relative_noise * rms
                    p.add_(noise.to(device=p.device, dtype=p.dtype))
                    try:
                        d = _distortion(distortion, reference, run(module).detach())
                    finally:
                        p.copy_(original)
                    per_unit.append(d / float(noise.pow(2).sum()))
                raw[name] = max(sum(per_unit) / len(per_unit), 0.0)
    finally:
        module.train(was_training)
    numel = {name: p.numel() for name, p in params}
    mean = sum(raw[n] * numel[n] for n in raw) / sum(numel.values())
    if not (mean > 0 and math.isfinite(mean)):
        raise InputError("the output did not change when any parameter was perturbed: "
                         "does run(module) use the module's weights?")
    return {n: float(f"{min(max(raw[n] / mean, floor), 1 / floor):.6g}") for n in raw}


def input_covariances(module: Any, run: Callable[[Any], Any], *,
                      row_mask: Any = None) -> dict[str, np.ndarray]:
    """H = E[x xᵀ] of the inputs x of every ``torch.nn.Linear`` while ``run(module)`` runs,
    keyed by the weight's parameter name: what :func:`rftpack.calibrated.calibrated_levels`
    needs. ``row_mask`` (bool, e.g. a tokenizer's attention mask of shape (batch, seq)) keeps
    padding positions out of inputs that have one row per position.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 4))
        >>> h = input_covariances(net, lambda m: m(torch.ones(3, 8)))
        >>> h["0.weight"].shape, float(h["0.weight"][0, 0])
        ((8, 8), 1.0)
    """
    import torch

    sums: dict[str, Any] = {}
    rows: dict[str, int] = {}
    handles = []

    def hook(name: str) -> Callable[..., None]:
        def collect(layer: Any, inputs: tuple[Any, ...], output: Any) -> None:
            x = inputs[0].detach()
            if row_mask is not None and x.ndim == 3 and tuple(x.shape[:2]) == tuple(
                    row_mask.shape):
                x = x[row_mask.bool()]
            x = x.reshape(-1, x.shape[-1]).double()
            sums[name] = sums.get(name, 0) + x.T @ x
            rows[name] = rows.get(name, 0) + x.shape[0]
        return collect

    for prefix, layer in module.named_modules():
        if isinstance(layer, torch.nn.Linear):
            name = f"{prefix}.weight" if prefix else "weight"
            handles.append(layer.register_forward_hook(hook(name)))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            run(module)
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    return {name: (total / max(rows[name], 1)).cpu().numpy() for name, total in sums.items()
            if rows[name]}


#: Calibrated rounding is kept for a linear layer only when, fitted on half of the calibration
#: texts, it brings the layer's output error on the other half below this fraction of plain
#: rounding's (with 40 texts, 4 of MiniLM's 37 layers missed it, one doing worse than plain
#: rounding out of sample; with the 80 built-in texts, one layer at 0.998).
HELDOUT_KEEP = 0.95


@dataclass
class Calibration:
    """What calibration measured: per-tensor importance weights, the input covariances of the
    linear layers worth rounding for their outputs, and each linear layer's held-out gain (its
    output error with calibrated rounding ÷ with plain rounding, cross-validated over two halves
    of the texts). ``CompressOptions(importance=c.importance, input_covariance=c.covariances)``
    uses both."""

    importance: dict[str, float]
    covariances: dict[str, np.ndarray] = field(default_factory=dict)
    heldout_gain: dict[str, float] = field(default_factory=dict)
    #: per-row weights of the token-embedding table (:func:`token_row_weights`), for
    #: ``CompressOptions(row_importance=...)``
    row_importance: dict[str, np.ndarray] = field(default_factory=dict)


#: Token rows: weight = (uses in the calibration texts + TOKEN_PRIOR), capped at TOKEN_CAP ×
#: the mean. The prior keeps unseen tokens (most of the vocabulary) near the mean; the cap
#: keeps the frequent ones' steps within 1.5 octaves of it (rarely used code ranges cost
#: coder table entries).
TOKEN_PRIOR = 2.0
TOKEN_CAP = 8.0


def token_row_weights(network: Any, input_ids: Any, mask: Any = None) -> dict[str, np.ndarray]:
    """{name of the input-embedding table: one weight per row}: a row's error reaches the
    output only where its token occurs, so rows count by how often ``input_ids`` (token ids
    of the calibration texts, padding left out by ``mask``) use them. Empty when the
    network has no ``get_input_embeddings()`` table among its parameters.

    Example:
        >>> ids, mask = batch["input_ids"], batch["attention_mask"]    # doctest: +SKIP
        >>> token_row_weights(model, ids, mask)                       # doctest: +SKIP
        {'embeddings.word_embeddings.weight': array([2., 2., ..., 2.])}
    """
    getter = getattr(network, "get_input_embeddings", None)
    table = getter() if callable(getter) else None
    weight = getattr(table, "weight", None)
    name = next((n for n, p in network.named_parameters() if p is weight), None)
    if name is None or weight.ndim != 2:
        return {}
    ids = input_ids if mask is None else input_ids[mask.bool()]
    counts = np.bincount(np.asarray(ids.detach().cpu()).reshape(-1),
                         minlength=weight.shape[0])[:weight.shape[0]].astype(np.float64)
    rows = counts + TOKEN_PRIOR
    return {name: np.minimum(rows, TOKEN_CAP * rows.mean())}


def _output_error(error: np.ndarray, covariance: np.ndarray) -> float:
    """tr(E H Eᵀ): the summed squared output error for inputs with second moments H."""
    return float(np.sum((error @ covariance) * error))


def heldout_gains(weights: dict[str, np.ndarray],
                  halves: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]
                  ) -> dict[str, float]:
    """For every weight with a covariance in both ``halves``: output error of calibrated
    rounding fitted on one half, measured on the other (both ways, averaged), divided by that
    of plain rounding, at a step of RMS/16 (about 5 bits per weight). Below 1 it helps.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> mix = rng.normal(size=(16, 16))
        >>> x1, x2 = (rng.normal(size=(2000, 16)) @ mix for _ in range(2))
        >>> w = {"w": rng.normal(size=(8, 16))}
        >>> g = heldout_gains(w, ({"w": x1.T @ x1 / 2000}, {"w": x2.T @ x2 / 2000}))
        >>> g["w"] < 0.9
        True
    """
    from rftpack.calibrated import calibrated_levels

    gains = {}
    for name, value in weights.items():
        first, second = halves[0].get(name), halves[1].get(name)
        if first is None or second is None:
            continue
        w = np.asarray(value, dtype=np.float64)
        step = float(np.sqrt(np.mean(w * w))) / 16 or 1.0
        plain = w - np.rint(w / step) * step
        ratios = []
        for fit, test in ((first, second), (second, first)):
            base = _output_error(plain, test)
            fitted = w - calibrated_levels(w, fit, step)
            ratios.append(_output_error(fitted, test) / base if base > 0 else 1.0)
        gains[name] = float(np.mean(ratios))
    return gains


def _text_model(model: str | os.PathLike) -> tuple[Any, Any]:
    """(network, tokenizer) of a Hugging Face model directory, from local files only."""
    try:
        import torch  # noqa: F401
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise InputError("measuring a text model's sensitivity needs torch and transformers: "
                         "pip install 'rftpack[test]' or pip install torch transformers"
                         ) from None
    path = Path(model)
    if not (path.is_dir() and (path / "config.json").is_file()):
        raise InputError(f"{model}: expected a Hugging Face model directory with config.json")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # Local files only: measuring must never reach for the network.
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return AutoModel.from_pretrained(path, local_files_only=True), tokenizer


def _embedder(tokenizer: Any, texts: Sequence[str]) -> tuple[Callable[[Any], Any], Any]:
    """(run = mean-pooled sentence embeddings of ``texts``, the tokenized batch)."""
    batch = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
    mask = batch["attention_mask"].unsqueeze(-1)

    def embed(m: Any) -> Any:
        hidden = m(**batch).last_hidden_state
        weights = mask.to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    return embed, batch


def _texts(texts: Sequence[str] | None) -> list[str]:
    chosen = list(CALIBRATION_TEXTS if texts is None else texts)
    if not chosen:
        raise InputError("no calibration texts")
    return chosen


def for_text_model(model: str | os.PathLike, texts: Sequence[str] | None = None,
                   **options: Any) -> dict[str, float]:
    """Importance weights of a Hugging Face text encoder (needs transformers): the output is
    the mean-pooled last hidden state of ``texts`` (default :data:`CALIBRATION_TEXTS`) and the
    distortion the mean 1 − cosine, i.e. sentence-embedding fidelity.

    >>> weights = for_text_model("all-MiniLM-L6-v2")                   # doctest: +SKIP
    """
    return text_model_weights(model, texts, **options).importance


def text_model_weights(model: str | os.PathLike, texts: Sequence[str] | None = None,
                       **options: Any) -> Calibration:
    """:func:`for_text_model`'s importance weights and the token-embedding table's row
    weights (:func:`token_row_weights`) on the same texts; no covariances.

    >>> c = text_model_weights("all-MiniLM-L6-v2")                    # doctest: +SKIP
    >>> sorted(c.row_importance)                                      # doctest: +SKIP
    ['embeddings.word_embeddings.weight']
    """
    chosen = _texts(texts)
    network, tokenizer = _text_model(model)
    embed, batch = _embedder(tokenizer, chosen)
    options.setdefault("distortion", "cosine")
    return Calibration(measure(network, embed, **options),
                       row_importance=token_row_weights(network, batch["input_ids"],
                                                        batch["attention_mask"]))


def calibrate_text_model(model: str | os.PathLike, texts: Sequence[str] | None = None,
                         **options: Any) -> Calibration:
    """:func:`for_text_model`'s importance weights plus the input covariances of the linear
    layers on the same texts (padding positions left out) and the token-embedding table's row
    weights (:func:`token_row_weights`). With 4 texts or more, each linear
    layer's calibrated rounding is cross-validated over two halves of the texts
    (:func:`heldout_gains`): layers where it does not pay out of sample (gain ≥
    :data:`HELDOUT_KEEP`) are left to plain rounding, and the importance of the others is
    multiplied by their gain, since their output error shrinks by that much.

    >>> c = calibrate_text_model("all-MiniLM-L6-v2")                    # doctest: +SKIP
    >>> rftpack.compress("all-MiniLM-L6-v2", "m.rftp", profile="scalar", target_bpw=5,
    ...                  importance=c.importance, input_covariance=c.covariances,
    ...                  row_importance=c.row_importance)                 # doctest: +SKIP
    """
    chosen = _texts(texts)
    network, tokenizer = _text_model(model)
    embed, batch = _embedder(tokenizer, chosen)
    options.setdefault("distortion", "cosine")
    importance = measure(network, embed, **options)
    covariances = input_covariances(network, embed, row_mask=batch["attention_mask"])
    rows = token_row_weights(network, batch["input_ids"], batch["attention_mask"])
    if len(chosen) < 4:
        return Calibration(importance, covariances, row_importance=rows)
    halves = []
    for half in (chosen[0::2], chosen[1::2]):
        run_half, batch_half = _embedder(tokenizer, half)
        halves.append(input_covariances(network, run_half,
                                        row_mask=batch_half["attention_mask"]))
    weights = {name: p.detach().double().cpu().numpy() for name, p in network.named_parameters()
               if name in covariances}
    gains = heldout_gains(weights, (halves[0], halves[1]))
    kept = {name: h for name, h in covariances.items() if gains.get(name, 1.0) < HELDOUT_KEEP}
    floor = options.get("floor", 1e-3)
    importance = {name: (min(max(w * gains[name], floor), 1 / floor) if name in kept else w)
                  for name, w in importance.items()}
    return Calibration(importance, kept, gains, rows)

