"""Mutation fuzzing of archives: whatever a container or payload holds, opening and decoding
raises only rftpack's own errors (or succeeds). Mutated files are re-signed, so the fuzzer
gets past the checksums into the parser and every stage decoder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

import rftpack
from rftpack.errors import RftpackError

MANIFEST = "manifest_hybrid.json"
PROFILES = [{"profile": "hybrid"}, {"profile": "scalar"}, {"profile": "dq"},
            {"profile": "lossless"}, {"profile": "hybrid", "coder": {"name": "zstd"}},
            {"profile": "hybrid", "coder": {"name": "raw"}}]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    rng = np.random.default_rng(8)
    source = tmp_path_factory.mktemp("fz") / "m.safetensors"
    weight = (rng.normal(size=(48, 40)) * 0.05).astype(np.float32)
    weight[1, 2] = np.nan
    save_file({"w": weight, "h": rng.normal(size=(32, 32)).astype(np.float16),
               "i": np.arange(9, dtype=np.int32)}, str(source))
    archives = []
    for n, settings_ in enumerate(PROFILES):
        out = source.parent / f"a{n}"
        rftpack.compress(source, out, layout="directory", predictor=False, **settings_)
        archives.append(out)
    return archives


def resign(archive: Path) -> None:
    """Recompute every checksum so that only the mutation itself is wrong."""
    manifest = json.loads((archive / MANIFEST).read_text())
    for entry in manifest["tensors"]:
        path = archive / entry["file"]
        try:
            container = json.loads(path.read_text())
            payload = container.get("payload", {})
            if isinstance(payload, dict) and isinstance(payload.get("file"), str):
                blob = (archive / payload["file"]).read_bytes()
                payload["sha256"] = hashlib.sha256(blob).hexdigest()
                payload["size"] = len(blob)
                path.write_text(json.dumps(container))
        except (ValueError, OSError, AttributeError, TypeError):
            pass
        entry["container_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (archive / MANIFEST).write_text(json.dumps(manifest))


def decode_all(archive: Path) -> None:
    try:
        with rftpack.open(archive) as reader:
            for name in reader.keys():
                reader.get_tensor(name)
    except RftpackError:
        pass


FUZZ = settings(max_examples=int(os.environ.get("RFTPACK_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(which=st.integers(0, len(PROFILES) - 1), data=st.data())
def test_payload_byte_mutations(corpus, tmp_path_factory, which: int, data) -> None:
    archive = fresh_copy(corpus, tmp_path_factory, which)
    bins = sorted((archive / "tensors").glob("*.bin"))
    target = bins[data.draw(st.integers(0, len(bins) - 1))]
    blob = bytearray(target.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        if blob:
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    target.write_bytes(bytes(blob))
    resign(archive)
    decode_all(archive)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=4),
    max_leaves=8)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _paths(value, (*prefix, index))


def mutate_json_file(path: Path, data, *, allow_delete: bool) -> None:
    """Replace (or delete) one randomly chosen nested field of a JSON file."""
    document = json.loads(path.read_text())
    paths = [p for p in _paths(document) if p]
    chosen = paths[data.draw(st.integers(0, len(paths) - 1))]
    parent = document
    for key in chosen[:-1]:
        parent = parent[key]
    if allow_delete and isinstance(parent, dict) and data.draw(st.booleans()):
        del parent[chosen[-1]]
    else:
        parent[chosen[-1]] = data.draw(json_values)
    path.write_text(json.dumps(document))


def fresh_copy(corpus: list[Path], tmp_path_factory, which: int) -> Path:
    archive = tmp_path_factory.mktemp("m") / "a"
    shutil.copytree(corpus[which], archive)
    return archive


@FUZZ
@given(which=st.integers(0, len(PROFILES) - 1), data=st.data())
def test_container_field_mutations(corpus, tmp_path_factory, which: int, data) -> None:
    archive = fresh_copy(corpus, tmp_path_factory, which)
    containers = sorted((archive / "tensors").glob("*.json"))
    mutate_json_file(containers[data.draw(st.integers(0, len(containers) - 1))], data,
                     allow_delete=True)
    resign(archive)
    decode_all(archive)


@FUZZ
@given(which=st.integers(0, len(PROFILES) - 1), data=st.data())
def test_manifest_field_mutations(corpus, tmp_path_factory, which: int, data) -> None:
    archive = fresh_copy(corpus, tmp_path_factory, which)
    mutate_json_file(archive / MANIFEST, data, allow_delete=False)
    decode_all(archive)
