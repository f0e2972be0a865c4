"""Turn ``--model-id`` into a local path: a path as given, or a Hugging Face cache snapshot.

Never touches the network: only the local Hugging Face hub cache is searched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from rftpack.errors import InputError

_FILE_SUFFIXES = (".safetensors", ".json", ".bin", ".pt", ".pth", ".npz")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")


def hf_cache_dir() -> Path:
    """The hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``.

    Example:
        >>> hf_cache_dir()  # doctest: +SKIP
        PosixPath('/home/me/.cache/huggingface/hub')
    """
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def resolve_model(path_or_id: str | os.PathLike[str]) -> Path:
    """An existing local path as is; else the cached snapshot of Hugging Face model ``org/name``.

    The snapshot is the one ``refs/main`` points to, else the only (or newest) snapshot.

    Example:
        >>> resolve_model("org/tiny-bert").relative_to(hf_cache_dir())  # doctest: +SKIP
        PosixPath('models--org--tiny-bert/snapshots/c9745ed1d9f2')
    """
    text = os.fspath(path_or_id)
    local = Path(text).expanduser()
    if local.exists():
        return local
    if not _MODEL_ID.match(text) or _looks_like_path(text):
        raise InputError(
            f"{text}: no such file or directory (and not a Hugging Face model id 'org/name')"
        )
    repo = hf_cache_dir() / ("models--" + text.replace("/", "--"))
    snapshot = _snapshot(repo)
    if snapshot is None:
        raise InputError(
            f"{text!r} is neither a local path nor a model in the local Hugging Face cache "
            f"(looked for {repo}; download it first, e.g. `huggingface-cli download {text}`)"
        )
    return snapshot


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "~")) or text.lower().endswith(_FILE_SUFFIXES)


def _snapshot(repo: Path) -> Path | None:
    snapshots = repo / "snapshots"
    try:
        ref = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:
        ref = ""
    if ref and (snapshots / ref).is_dir():
        return snapshots / ref
    try:
        candidates = [p for p in snapshots.iterdir() if p.is_dir()]
    except OSError:
        return None
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.stat().st_mtime, p.name))


def model_name(path: Path) -> str:
    """Name for a manifest: the repo name for a cache snapshot, else directory name or file stem.

    Example:
        >>> model_name(Path("hub/models--org--tiny-bert/snapshots/abc123"))
        'tiny-bert'
        >>> model_name(Path("/data/ckpt/model.safetensors.index.json"))
        'ckpt'
    """
    for part in reversed(path.parts):
        if part.startswith("models--") and "snapshots" in path.parts:
            return part.split("--")[-1]
    if path.name.endswith(".index.json"):
        return path.parent.name
    if path.is_dir():
        return path.resolve().name
    return path.stem
