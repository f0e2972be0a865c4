"""``open_source``: pick the right reader for a file, a model directory or a model id."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from rftpack.errors import InputError
from rftpack.io.npz_source import NpzSource
from rftpack.io.resolve import model_name, resolve_model
from rftpack.io.safetensors_source import SafetensorsSource
from rftpack.io.shards import read_weight_map
from rftpack.io.source import ModelSource
from rftpack.io.torch_source import TorchSource

#: Files a Hugging Face model directory is searched for, best first.
HF_CANDIDATES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TORCH_SUFFIXES = (".bin", ".pt", ".pth")


def open_source(path_or_id: str | os.PathLike[str]) -> ModelSource:
    """Open a checkpoint file, sharded index, model directory or cached Hugging Face model id.

    Example:
        >>> with open_source("org/tiny-bert") as src:  # doctest: +SKIP
        ...     print(src.framework, len(src.infos()))
        safetensors 201
    """
    path = resolve_model(path_or_id)
    name = model_name(path)
    if path.is_dir():
        path = find_model_file(path)
    return _open_file(path, name)


def find_model_file(directory: Path) -> Path:
    """The checkpoint file of a model directory, following Hugging Face naming.

    Prefers ``model.safetensors``, its index, ``pytorch_model.bin``, its index, then a single
    ``*.safetensors`` file; anything else is an ``InputError`` listing what is there.

    Example:
        >>> find_model_file(Path("tiny-bert"))  # doctest: +SKIP
        PosixPath('tiny-bert/model.safetensors')
    """
    for candidate in HF_CANDIDATES:
        if (directory / candidate).is_file():
            return directory / candidate
    try:
        found = sorted(p.name for p in directory.iterdir())
    except OSError as exc:
        raise InputError(f"{directory}: cannot list directory ({exc.strerror or exc})") from None
    loose = [n for n in found if n.endswith(".safetensors")]
    if len(loose) == 1:
        return directory / loose[0]
    shown = ", ".join(found[:20]) + (f", ... ({len(found)} entries)" if len(found) > 20 else "")
    why = "several .safetensors files but no index" if loose else "no model file"
    raise InputError(
        f"{directory}: {why} (looked for {', '.join(HF_CANDIDATES)} or one *.safetensors; "
        f"found: {shown or 'nothing'})"
    )


def _open_file(path: Path, name: str) -> ModelSource:
    lower = path.name.lower()
    if lower.endswith(".safetensors"):
        return SafetensorsSource(path, name)
    if lower.endswith(".npz"):
        return NpzSource(path, name)
    if lower.endswith(TORCH_SUFFIXES):
        return TorchSource(path, name)
    if lower.endswith(".json"):
        shards = set(read_weight_map(path).values())
        if all(s.lower().endswith(".safetensors") for s in shards):
            return SafetensorsSource(path, name)
        if all(s.lower().endswith(TORCH_SUFFIXES) for s in shards):
            return TorchSource(path, name)
        raise InputError(f"{path}: index lists shards of unknown or mixed kinds")
    kind = _sniff(path)
    if kind == "safetensors":
        return SafetensorsSource(path, name)
    if kind == "npz":
        return NpzSource(path, name)
    if kind == "pytorch":
        return TorchSource(path, name)
    raise InputError(
        f"{path}: unknown checkpoint type (expected .safetensors, .bin, .pt, .pth, .npz "
        "or a sharded *.index.json)"
    )


def _sniff(path: Path) -> str | None:
    """Guess the format of a file without a known suffix from its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            if head[:4] == b"PK\x03\x04":
                with zipfile.ZipFile(f) as zf:
                    names = zf.namelist()
                return "pytorch" if any(n.endswith("/data.pkl") for n in names) else "npz"
    except (OSError, zipfile.BadZipFile):
        return None
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80":  # a pickle protocol marker: legacy torch.save
        return "pytorch"
    return None
