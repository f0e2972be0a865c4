"""Archives end to end through ``rftpack.compress`` / ``open`` / ``extract``: both layouts, both
payload encodings, determinism, atomicity, and tamper detection."""

from __future__ import annotations

import math
import re
import shutil
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy

import rftpack
import rftpack.api
from rftpack.archive.storage import MANIFEST
from rftpack.errors import (
    ChecksumError,
    FormatError,
    IncompleteArchiveError,
    OutputError,
    StageError,
)

FAST = {"predictor": {"name": "mlp", "configuration": {"steps": 40}}}
LAYOUTS = ["zip", "directory"]
PAYLOADS = ["auto", "binary", "base64"]
LOSSY = {"encoder.layer.0.weight", "head/proj.weight", "emb.weight", "nan.weight"}


def make_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    nan_weight = (rng.normal(size=(32, 40)) * 0.1).astype(np.float32)
    nan_weight[0, 0], nan_weight[5, 7], nan_weight[31, 39] = np.nan, np.inf, -np.inf
    return {
        "encoder.layer.0.weight": (rng.normal(size=(64, 48)) * 0.05).astype(np.float32),
        "encoder.layer.0.bias": rng.normal(size=64).astype(np.float32),
        "Encoder.Layer.0.Weight": rng.normal(size=(3, 3)).astype(np.float32),
        "head/proj.weight": (rng.normal(size=(40, 40)) * 0.02).astype(np.float16),
        "emb.weight": rng.normal(size=(32, 64)).astype(ml_dtypes.bfloat16),
        "nan.weight": nan_weight,
        "ids": np.arange(-5, 5, dtype=np.int64),
        "mask": rng.integers(0, 2, (4, 4)).astype(bool),
        "scale": np.array(3.5, dtype=np.float64),
        "../escape": rng.normal(size=5).astype(np.float32),
    }


@pytest.fixture(scope="module")
def model() -> dict[str, np.ndarray]:
    return make_model()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, model) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    safetensors.numpy.save_file(model, str(path))
    return path


@pytest.fixture(scope="module")
def archives(tmp_path_factory, model_path) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("archives")
    out = {}
    for layout in LAYOUTS:
        for payload in PAYLOADS:
            path = root / f"{layout}-{payload}.rftp"
            rftpack.compress(model_path, path, layout=layout, payload=payload, **FAST)
            out[(layout, payload)] = path
    return out


def snr_db(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x.astype(np.float64), y.astype(np.float64)
    return 10 * math.log10(float(np.sum(x * x)) / float(np.sum((x - y) ** 2)))


def check_tensors(archive, model: dict[str, np.ndarray]) -> None:
    assert sorted(archive.keys()) == sorted(model)
    for name, original in model.items():
        restored = archive.get_tensor(name)
        assert restored.dtype == original.dtype, name
        assert restored.shape == original.shape, name
        if name in LOSSY:
            assert archive.entry(name)["mode"] == "hybrid", name
            finite = np.isfinite(original.astype(np.float64))
            a, b = original.astype(np.float64), restored.astype(np.float64)
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
            np.testing.assert_array_equal(a[np.isinf(a)], b[np.isinf(a)])
            assert np.all(np.isfinite(b[finite]))
            assert snr_db(a[finite], b[finite]) >= 20.0, name
        else:
            assert archive.entry(name)["mode"] == "exact", name
            assert restored.tobytes() == original.tobytes(), name


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_round_trip(archives, model, layout: str, payload: str) -> None:
    path = archives[(layout, payload)]
    assert path.is_file() if layout == "zip" else path.is_dir()
    with rftpack.open(path) as archive:
        assert archive.source.form == layout
        check_tensors(archive, model)
        assert len(archive) == len(model)
        assert "ids" in archive and "nope" not in archive
        for _name, restored in archive.items(use_predictor=False):
            assert isinstance(restored, np.ndarray)


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_members_on_disk(archives, layout: str, payload: str) -> None:
    path = archives[(layout, payload)]
    if layout == "zip":
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            members = [i.filename for i in infos]
            # payloads stored (readable at any offset), JSON deflated
            assert all(i.compress_type == zipfile.ZIP_STORED for i in infos
                       if i.filename.endswith(".bin"))
            assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in infos
                       if i.filename.endswith(".json"))
            assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos)
            assert members[-1] == MANIFEST  # the manifest is written last
    else:
        members = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
        assert not [m for m in members if "partial" in m]
    assert MANIFEST in members
    for member in members:
        assert member == MANIFEST or re.match(r"^(tensors|predictors)/[A-Za-z0-9_\-]+\.(json|bin)$",
                                              member), member
    bins = [m for m in members if m.endswith(".bin")]
    jsons = [m for m in members if m.startswith("tensors/") and m.endswith(".json")]
    assert len(jsons) == len(make_model())
    if payload == "auto":  # each payload where it takes fewer bytes: both kinds here
        assert 0 < len(bins) < len(jsons)
    else:
        assert (len(bins) == len(jsons)) if payload == "binary" else not bins


def test_extract_round_trip(archives, model, tmp_path) -> None:
    out = tmp_path / "restored.safetensors"
    rftpack.extract(archives[("zip", "binary")], out)
    restored = safetensors.numpy.load_file(str(out))
    assert sorted(restored) == sorted(model)
    for name in model:
        if name not in LOSSY:
            assert restored[name].tobytes() == model[name].tobytes()
        assert restored[name].dtype == model[name].dtype
        assert restored[name].shape == model[name].shape


def test_a_whole_archive_decode_plans_its_lossy_weights(archives, model, tmp_path,
                                                        monkeypatch) -> None:
    """``plan_decoding`` plans the lossy tensors' weights (exact ones code no rANS symbols),
    and extract decodes every tensor inside that plan."""
    from rftpack.stages import workload

    lossy = sum(model[name].size for name in LOSSY)
    with rftpack.open(archives[("zip", "binary")]) as archive:
        with archive.plan_decoding():
            assert workload.planned_symbols() == lossy
        with archive.plan_decoding(["emb.weight", "ids"]):
            assert workload.planned_symbols() == model["emb.weight"].size
        assert workload.planned_symbols() is None
    seen = []
    real = rftpack.archive.reader.Archive.get_tensor

    def spy(self, name, **kwargs):
        seen.append((name, workload.planned_symbols()))
        return real(self, name, **kwargs)

    monkeypatch.setattr(rftpack.archive.reader.Archive, "get_tensor", spy)
    rftpack.extract(archives[("zip", "binary")], tmp_path / "planned.safetensors")
    assert sorted(name for name, _ in seen) == sorted(model)
    assert {plan for _, plan in seen} == {lossy}



def test_a_dq_archive_plans_its_replays_too(tmp_path) -> None:
    """The plan holds the lossy weights' coded bits, and for dq, the indices replayed after
    rANS decoding: the compiled decoders save more on both."""
    from safetensors.numpy import save_file

    from rftpack.stages import workload

    rng = np.random.default_rng(3)
    model = {"w": rng.normal(size=(96, 64)).astype(np.float32), "b": np.ones(64, np.float32)}
    save_file(model, str(tmp_path / "m.safetensors"))
    for profile in ("dq", "scalar"):
        out = tmp_path / f"{profile}.rftp"
        rftpack.compress(tmp_path / "m.safetensors", out, profile=profile, target_bpw=4.0)
        with rftpack.open(out) as archive, archive.plan_decoding():
            plan = workload.current_plan()
            assert plan.weights == model["w"].size
            assert plan.replays == (model["w"].size if profile == "dq" else 0)
            assert plan.coded_bits == 8 * archive.info("w").stored_bytes
            assert 0 < plan.coded_bits <= 4.5 * model["w"].size

def test_manifest_contents(archives, model) -> None:
    with rftpack.open(archives[("zip", "binary")]) as archive:
        meta = archive.metadata()
        assert meta["type"] == "rft_hybrid_manifest_bundle" and meta["version"] == 2
        assert "tensors" not in meta
        metrics = meta["metrics"]
        assert metrics["total_tensors"] == len(model)
        assert metrics["lossy_tensors"] == len(LOSSY)
        assert metrics["exact_tensors"] == len(model) - len(LOSSY)
        assert metrics["weight_snr_db"] >= 20.0
        with pytest.raises(KeyError) as info:
            archive.entry("encoder.layer.0.weigth")
        assert "encoder.layer.0.weight" in str(info.value)


def test_closed_archive(archives) -> None:
    archive = rftpack.open(archives[("zip", "binary")])
    archive.close()
    with pytest.raises(ValueError):
        archive.get_tensor("ids")


def test_deterministic_zip(model_path, tmp_path) -> None:
    # Default profile with the predictor trained (fewer steps than the default 2000 to keep the
    # suite fast; the training code path is the same): training must be deterministic too.
    first, second = tmp_path / "a.rftp", tmp_path / "b.rftp"
    options = {"predictor": {"name": "mlp", "configuration": {"steps": 300}}}
    r1 = rftpack.compress(model_path, first, **options)
    r2 = rftpack.compress(model_path, second, **options)
    assert r1.manifest["metrics"]["predictor"]["trained"] is True
    assert r1.manifest == r2.manifest
    assert first.read_bytes() == second.read_bytes()


def test_deterministic_directory(model_path, tmp_path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    rftpack.compress(model_path, first, layout="directory", **FAST)
    rftpack.compress(model_path, second, layout="directory", **FAST)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


def test_missing_manifest_is_incomplete(archives, tmp_path) -> None:
    copy = tmp_path / "dir"
    shutil.copytree(archives[("directory", "binary")], copy)
    (copy / MANIFEST).unlink()
    with pytest.raises(IncompleteArchiveError):
        rftpack.open(copy)


def test_zip_without_manifest_is_incomplete(archives, tmp_path) -> None:
    src = archives[("zip", "binary")]
    rebuilt = tmp_path / "nomanifest.rftp"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(rebuilt, "w") as zout:
        for info in zin.infolist():
            if info.filename != MANIFEST:
                zout.writestr(info, zin.read(info))
    with pytest.raises(IncompleteArchiveError):
        rftpack.open(rebuilt)


@pytest.mark.parametrize("keep", [0, 10, 0.5, -1, -22])
def test_truncated_zip_is_incomplete(archives, tmp_path, keep) -> None:
    data = archives[("zip", "binary")].read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else (keep % len(data) if keep else 0)
    truncated = tmp_path / "truncated.rftp"
    truncated.write_bytes(data[:cut])
    with pytest.raises(IncompleteArchiveError):
        rftpack.open(truncated)


def test_open_missing_path(tmp_path) -> None:
    with pytest.raises(FormatError):
        rftpack.open(tmp_path / "does-not-exist.rftp")


def test_open_non_archive_file(tmp_path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(IncompleteArchiveError):
        rftpack.open(path)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_existing_output_needs_overwrite(model_path, tmp_path, layout: str) -> None:
    out = tmp_path / "out.rftp"
    rftpack.compress(model_path, out, layout=layout, **FAST)
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) \
        if out.is_dir() else out.read_bytes()
    with pytest.raises(OutputError):
        rftpack.compress(model_path, out, layout=layout, lossless=True, **FAST)
    after = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) \
        if out.is_dir() else out.read_bytes()
    assert before == after  # the refused run touched nothing
    rftpack.compress(model_path, out, layout=layout, lossless=True, overwrite=True, **FAST)
    with rftpack.open(out) as archive:
        assert all(archive.entry(n)["mode"] == "exact" for n in archive.keys())
        assert archive.get_tensor("emb.weight").tobytes() == \
            make_model()["emb.weight"].tobytes()


def test_zip_output_over_directory_refused(model_path, tmp_path) -> None:
    out = tmp_path / "somedir"
    out.mkdir()
    (out / "file").write_text("x")
    with pytest.raises(OutputError):
        rftpack.compress(model_path, out, layout="zip", overwrite=True, **FAST)


# -- tampering ------------------------------------------------------------------------------------

def bump_numel(document: bytes) -> bytes:
    """Change a value inside a container while keeping it valid JSON."""
    changed, count = re.subn(rb'"numel": ?(\d+)', lambda m: b'"numel": ' +
                             str(int(m.group(1)) + 1).encode(), document, count=1)
    assert count == 1
    return changed


def tensor_member(archive_path: Path, name: str) -> str:
    with rftpack.open(archive_path) as archive:
        return archive.entry(name)["file"]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_tampered_container_directory(archives, tmp_path, payload: str) -> None:
    copy = tmp_path / "dir"
    shutil.copytree(archives[("directory", payload)], copy)
    member = copy / tensor_member(copy, "encoder.layer.0.weight")
    member.write_bytes(bump_numel(member.read_bytes()))
    with rftpack.open(copy) as archive:
        with pytest.raises(ChecksumError):
            archive.get_tensor("encoder.layer.0.weight")
        # Other tensors are unaffected.
        assert archive.get_tensor("ids").tolist() == list(range(-5, 5))


def test_tampered_base64_segment_directory(archives, tmp_path) -> None:
    copy = tmp_path / "dir"
    shutil.copytree(archives[("directory", "base64")], copy)
    member = copy / tensor_member(copy, "head/proj.weight")
    text = member.read_bytes()
    match = re.search(rb'"data": ?"([A-Za-z0-9+/]{4})', text)
    assert match is not None
    original = match.group(1)
    replacement = b"AAAA" if original != b"AAAA" else b"BBBB"
    member.write_bytes(text[:match.start(1)] + replacement + text[match.end(1):])
    with rftpack.open(copy) as archive, pytest.raises(ChecksumError):
        archive.get_tensor("head/proj.weight")


@pytest.mark.parametrize("name", ["encoder.layer.0.weight", "ids", "nan.weight"])
def test_tampered_payload_directory(archives, tmp_path, name: str) -> None:
    copy = tmp_path / "dir"
    shutil.copytree(archives[("directory", "binary")], copy)
    member = copy / tensor_member(copy, name).replace(".json", ".bin")
    data = bytearray(member.read_bytes())
    data[len(data) // 2] ^= 0x01
    member.write_bytes(bytes(data))
    with rftpack.open(copy) as archive, pytest.raises(ChecksumError):
        archive.get_tensor(name)


def rewrite_zip(src: Path, dst: Path, member: str, edit) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info, edit(data) if info.filename == member else data)


def flip_middle(data: bytes) -> bytes:
    out = bytearray(data)
    out[len(out) // 2] ^= 0x01
    return bytes(out)


def test_tampered_container_zip(archives, tmp_path) -> None:
    src = archives[("zip", "binary")]
    dst = tmp_path / "tampered.rftp"
    rewrite_zip(src, dst, tensor_member(src, "encoder.layer.0.weight"), bump_numel)
    with rftpack.open(dst) as archive, pytest.raises(ChecksumError):
        archive.get_tensor("encoder.layer.0.weight")


def test_tampered_payload_zip(archives, tmp_path) -> None:
    src = archives[("zip", "binary")]
    dst = tmp_path / "tampered.rftp"
    member = tensor_member(src, "encoder.layer.0.weight").replace(".json", ".bin")
    rewrite_zip(src, dst, member, flip_middle)
    with rftpack.open(dst) as archive, pytest.raises(ChecksumError):
        archive.get_tensor("encoder.layer.0.weight")


def test_flipped_byte_inside_zip_file_is_detected(archives, tmp_path) -> None:
    # A raw flip (zip CRC no longer matches) must still be reported as a corruption error.
    src = archives[("zip", "binary")]
    member = tensor_member(src, "encoder.layer.0.weight").replace(".json", ".bin")
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo(member)
    data = bytearray(src.read_bytes())
    header = 30 + len(info.filename.encode()) + len(info.extra)
    data[info.header_offset + header + info.file_size // 2] ^= 0x01
    dst = tmp_path / "flipped.rftp"
    dst.write_bytes(bytes(data))
    with rftpack.open(dst) as archive, pytest.raises(FormatError):
        archive.get_tensor("encoder.layer.0.weight")


def test_tampered_manifest_entry_checksum(archives, tmp_path) -> None:
    copy = tmp_path / "dir"
    shutil.copytree(archives[("directory", "binary")], copy)
    manifest = copy / MANIFEST
    text = manifest.read_text()
    text = re.sub(r'"container_sha256": "([0-9a-f])', lambda m: '"container_sha256": "' +
                  ("0" if m.group(1) != "0" else "1"), text, count=1)
    manifest.write_text(text)
    with rftpack.open(copy) as archive:
        first = archive.keys()[0]
        with pytest.raises(ChecksumError):
            archive.get_tensor(first)


# -- atomicity ------------------------------------------------------------------------------------

class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("layout", LAYOUTS)
def test_abort_mid_stream_leaves_nothing(model_path, tmp_path, monkeypatch, layout: str) -> None:
    real = rftpack.api.encode_lossy
    calls = []

    def failing(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise Boom("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(rftpack.api, "encode_lossy", failing)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "model.rftp"
    # A stage that raises is reported as StageError (naming the tensor), caused by the original.
    with pytest.raises(StageError, match="disk on fire") as caught:
        rftpack.compress(model_path, out, layout=layout, **FAST)
    assert isinstance(caught.value.__cause__, Boom)
    assert len(calls) == 2
    leftovers = [p for p in out_dir.rglob("*") if p.is_file()]
    assert leftovers == []
    if layout == "zip":
        assert not out.exists()
    else:
        assert not (out / MANIFEST).exists()
        if out.exists():
            with pytest.raises(IncompleteArchiveError):
                rftpack.open(out)
    # A later run to the same name succeeds.
    monkeypatch.setattr(rftpack.api, "encode_lossy", real)
    rftpack.compress(model_path, out, layout=layout, overwrite=True, **FAST)
    with rftpack.open(out) as archive:
        assert len(archive) == len(make_model())


def test_abort_keeps_previous_zip(model_path, tmp_path, monkeypatch) -> None:
    out = tmp_path / "model.rftp"
    rftpack.compress(model_path, out, **FAST)
    before = out.read_bytes()

    def failing(*args, **kwargs):
        raise Boom("fail")

    monkeypatch.setattr(rftpack.api, "encode_lossy", failing)
    with pytest.raises(StageError, match="fail") as caught:
        rftpack.compress(model_path, out, overwrite=True, **FAST)
    assert isinstance(caught.value.__cause__, Boom)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.rftp"]
