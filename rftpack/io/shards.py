"""Read a sharded-checkpoint index (``*.index.json`` with a ``weight_map``)."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from rftpack.errors import InputError


def read_weight_map(index: Path) -> dict[str, str]:
    """Tensor name -> shard file name (relative to the index's directory), in index order.

    Example:
        >>> read_weight_map(Path("model.safetensors.index.json"))  # doctest: +SKIP
        {'embed.weight': 'model-00001-of-00002.safetensors', ...}
    """
    try:
        doc = json.loads(index.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{index}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{index}: not a valid JSON index ({exc})") from None
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise InputError(f"{index}: no 'weight_map' object naming the shard of each tensor")
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or not _is_plain_name(shard):
            raise InputError(f"{index}: tensor {tensor!r} has a bad shard name {shard!r}")
    return weight_map


def _is_plain_name(shard: str) -> bool:
    parts = PurePosixPath(shard).parts
    return bool(parts) and not shard.startswith("/") and ".." not in parts and "\\" not in shard
