"""Hostile and broken archives: each row of docs/hostile-inputs.md is one case here. Every
case must raise rftpack's own exception (never a raw IndexError/ValueError/MemoryError)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import rftpack
from rftpack.errors import (
    ChecksumError,
    FormatError,
    IncompleteArchiveError,
    RftpackError,
    StageError,
    UnknownStageError,
)

MANIFEST = "manifest_hybrid.json"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    rng = np.random.default_rng(5)
    source = tmp_path_factory.mktemp("src") / "m.safetensors"
    save_file({"w": (rng.normal(size=(64, 64)) * 0.05).astype(np.float32),
               "ids": np.arange(6, dtype=np.int64)}, str(source))
    root = tmp_path_factory.mktemp("archives")
    binary, b64 = root / "binary", root / "base64"
    rftpack.compress(source, binary, layout="directory", predictor=False)
    rftpack.compress(source, b64, layout="directory", payload="base64", predictor=False)
    return {"binary": binary, "base64": b64}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def save(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj))


def edit_container(archive: Path, name: str, change: Callable[[dict], None]) -> None:
    """Change a container and re-sign it in the manifest, so only the change is wrong."""
    manifest = load(archive / MANIFEST)
    entry = next(e for e in manifest["tensors"] if e["tensor_name"] == name)
    container = load(archive / entry["file"])
    change(container)
    raw = json.dumps(container).encode()
    (archive / entry["file"]).write_bytes(raw)
    entry["container_sha256"] = hashlib.sha256(raw).hexdigest()
    save(archive / MANIFEST, manifest)


def edit_manifest(archive: Path, change: Callable[[dict], None]) -> None:
    manifest = load(archive / MANIFEST)
    change(manifest)
    save(archive / MANIFEST, manifest)


def payload_path(archive: Path, name: str = "w") -> Path:
    manifest = load(archive / MANIFEST)
    entry = next(e for e in manifest["tensors"] if e["tensor_name"] == name)
    return archive / load(archive / entry["file"])["payload"]["file"]


def stage(container: dict, kind: str) -> dict:
    return next(s for s in container["stages"] if s["kind"] == kind)


# (case id, layout, mutation, expected error, text the message must contain)
CASES = [
    ("manifest-malformed-json", "binary",
     lambda a: (a / MANIFEST).write_text("{not json"), FormatError, "malformed JSON"),
    ("manifest-not-an-object", "binary",
     lambda a: (a / MANIFEST).write_text("[1, 2]"), FormatError, "JSON object"),
    ("manifest-wrong-type", "binary",
     lambda a: edit_manifest(a, lambda m: m.update(type="zip")), FormatError, "type"),
    ("manifest-future-version", "binary",
     lambda a: edit_manifest(a, lambda m: m.update(version=99)), FormatError, "upgrade"),
    ("manifest-tensors-not-a-list", "binary",
     lambda a: edit_manifest(a, lambda m: m.update(tensors={})), FormatError, "$.tensors"),
    ("manifest-entry-missing-name", "binary",
     lambda a: edit_manifest(a, lambda m: m["tensors"][0].pop("tensor_name")), FormatError,
     "tensor_name"),
    ("manifest-shape-negative", "binary",
     lambda a: edit_manifest(a, lambda m: m["tensors"][0].update(shape=[-1, 64])),
     FormatError, "shape"),
    ("manifest-file-escapes", "binary",
     lambda a: edit_manifest(a, lambda m: m["tensors"][0].update(file="../../etc/passwd")),
     FormatError, "escapes"),
    ("manifest-file-absolute", "binary",
     lambda a: edit_manifest(a, lambda m: m["tensors"][0].update(file="/etc/passwd")),
     FormatError, "escapes"),
    ("manifest-duplicate-names", "binary",
     lambda a: edit_manifest(a, lambda m: m["tensors"].append(dict(m["tensors"][0]))),
     FormatError, "twice"),
    ("manifest-predictor-escapes", "binary",
     lambda a: edit_manifest(a, lambda m: m.update(predictor="../p.json")), FormatError,
     "escapes"),
    ("manifest-missing", "binary",
     lambda a: (a / MANIFEST).unlink(), IncompleteArchiveError, "interrupted"),
    ("container-missing", "binary",
     lambda a: next((a / "tensors").glob("w*.json")).unlink(), FormatError, "missing"),
    ("container-tampered", "binary",
     lambda a: next((a / "tensors").glob("w*.json")).write_text("{}"), ChecksumError,
     "checksum"),
    ("container-wrong-type", "binary",
     lambda a: edit_container(a, "w", lambda c: c.update(type="other")), FormatError, "type"),
    ("container-missing-field", "binary",
     lambda a: edit_container(a, "w", lambda c: c.pop("stages")), FormatError, "stages"),
    ("container-shape-vs-numel", "binary",
     lambda a: edit_container(a, "w", lambda c: c.update(numel=5)), FormatError, "numel"),
    ("container-name-mismatch", "binary",
     lambda a: edit_container(a, "w", lambda c: c.update(name="other")), FormatError,
     "manifest lists it"),
    ("container-bomb-shape", "binary",
     lambda a: edit_container(a, "w", lambda c: c.update(original_shape=[1 << 30, 1 << 20],
                                                          numel=1 << 50)),
     FormatError, "refusing"),
    ("stage-unknown-id", "binary",
     lambda a: edit_container(a, "w", lambda c: stage(c, "coder").update(
         name="acme.magic", provider="acme-codecs")), UnknownStageError, "acme-codecs"),
    ("stage-newer-format", "binary",
     lambda a: edit_container(a, "w", lambda c: stage(c, "coder").update(format_version=9)),
     StageError, "upgrade"),
    ("stage-bad-parameter", "binary",
     lambda a: edit_container(a, "w", lambda c: stage(c, "quantizer")["configuration"].update(
         amp_bits=99)), RftpackError, "amp_bits"),
    ("stages-wrong-order", "binary",
     lambda a: edit_container(a, "w", lambda c: c["stages"].reverse()), FormatError,
     "schema at $.stages[0].kind"),
    ("payload-missing", "binary",
     lambda a: payload_path(a).unlink(), FormatError, "missing"),
    ("payload-truncated", "binary",
     lambda a: payload_path(a).write_bytes(payload_path(a).read_bytes()[:-7]), FormatError,
     "declared"),
    ("payload-too-long", "binary",
     lambda a: payload_path(a).write_bytes(payload_path(a).read_bytes() + b"extra"),
     FormatError, "declared"),
    ("payload-bit-flip", "binary",
     lambda a: payload_path(a).write_bytes(bytes([payload_path(a).read_bytes()[0] ^ 1])
                                           + payload_path(a).read_bytes()[1:]),
     ChecksumError, "checksum"),
    ("segment-outside-payload", "binary",
     lambda a: edit_container(a, "w", lambda c: next(iter(
         c["payload"]["blocks"][0]["streams"].values())).update(offset=10 ** 9)),
     FormatError, "outside"),
    ("segment-negative-count", "binary",
     lambda a: edit_container(a, "w", lambda c: next(iter(
         c["payload"]["blocks"][0]["streams"].values())).update(count=-3)),
     FormatError, "count"),
    ("blocks-do-not-cover", "binary",
     lambda a: edit_container(a, "w", lambda c: c["payload"]["blocks"][0].update(count=7)),
     FormatError, "cover"),
    ("side-info-garbage", "binary",
     lambda a: edit_container(a, "w", lambda c: c["payload"]["blocks"][0]["side"].update(
         amp_scale=["x", None])), FormatError, "amp_scale"),
    ("bad-base64", "base64",
     lambda a: edit_container(a, "w", lambda c: next(iter(
         c["payload"]["blocks"][0]["streams"].values())).update(data="!!not base64!!")),
     FormatError, "base64"),
    ("base64-wrong-length", "base64",
     lambda a: edit_container(a, "w", lambda c: next(iter(
         c["payload"]["blocks"][0]["streams"].values())).update(
         data=base64.b64encode(b"xyz").decode())), FormatError, "declared"),
    ("symlink-outside", "binary", None, FormatError, "outside the archive"),
]


@pytest.mark.parametrize("case, layout, mutate, error, text", CASES,
                         ids=[c[0] for c in CASES])
def test_hostile_archive(pristine, tmp_path: Path, case, layout, mutate, error, text) -> None:
    archive = tmp_path / "archive"
    shutil.copytree(pristine[layout], archive)
    if case == "symlink-outside":
        secret = tmp_path / "secret.json"
        secret.write_text("{}")
        target = next((archive / "tensors").glob("w*.json"))
        target.unlink()
        os.symlink(secret, target)
    else:
        mutate(archive)
    with pytest.raises(error) as caught:
        with rftpack.open(archive) as reader:
            for name in reader.keys():
                reader.get_tensor(name)
    assert text.lower() in str(caught.value).lower(), str(caught.value)
