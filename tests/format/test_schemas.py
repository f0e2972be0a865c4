"""The JSON Schemas of formats/: valid Draft 2020-12, accept what rftpack writes and the
reference's version-1 files, and reject broken documents with a FormatError naming the path."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from conftest import VARIANTS, archive_documents, archive_members

import rftpack
from rftpack.archive.storage import check_member_path
from rftpack.errors import FormatError
from rftpack.format.schema import SCHEMAS, validate

REPO = Path(__file__).resolve().parents[2]
KINDS = sorted(SCHEMAS)


def _schema(kind: str) -> dict:
    text = resources.files("rftpack.format").joinpath("schemas", SCHEMAS[kind]).read_text()
    return json.loads(text)


def _kind_of(member: str) -> str:
    if member == "manifest_hybrid.json":
        return "manifest"
    return "predictor" if member.startswith("predictors/") else "tensor"


def _errors(kind: str, document: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(_schema(kind))
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


# -- the schemas themselves ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_valid_draft_2020_12(kind):
    schema = _schema(kind)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert jsonschema.validators.validator_for(schema) is jsonschema.Draft202012Validator


@pytest.mark.parametrize("kind", KINDS)
def test_formats_dir_holds_the_package_schemas(kind):
    shipped = REPO / "formats" / SCHEMAS[kind]
    packaged = REPO / "rftpack" / "format" / "schemas" / SCHEMAS[kind]
    assert shipped.exists(), f"{shipped} is missing"
    if shipped.is_symlink():
        assert shipped.resolve() == packaged.resolve()
    assert shipped.read_bytes() == packaged.read_bytes()


def test_formats_dir_has_no_other_schemas():
    shipped = {p.name for p in (REPO / "formats").glob("*.schema.json")}
    assert shipped == set(SCHEMAS.values())


def test_member_path_pattern_matches_the_reader_rule():
    """The manifest schema's path pattern accepts exactly what check_member_path accepts."""
    import re

    pattern = re.compile(_schema("manifest")["$defs"]["member_path"]["pattern"])
    cases = ["tensors/a.json", "a", "a b/c d", "tensors/\u00e4.json", ".hidden", "a/.hidden",
             "...", "a/...", "tensors/a..json", "x/..y", "..", "..a", "../a", "a/..", "a/../b",
             "./a", "a/./b", "a//b", "a/", "/a", "\\a", "a\\b", "a\x00b", "c:/x", "c:x",
             "a/c:x", "", "a/\n/b"]
    for case in cases:
        try:
            check_member_path(case)
            accepted = True
        except FormatError:
            accepted = False
        assert bool(pattern.search(case)) == accepted, repr(case)


# -- files rftpack writes -----------------------------------------------------------------------

@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_written_archives_validate(format_archives, variant):
    documents = archive_documents(format_archives[variant])
    assert "manifest_hybrid.json" in documents
    for member, document in documents.items():
        kind = _kind_of(member)
        validate(kind, document, member)  # the reader's own check
        assert _errors(kind, document) == [], member


def test_written_archives_cover_the_format(format_archives):
    """The archives above reach every container feature the schemas constrain."""
    seen = set()
    for path in format_archives.values():
        members = archive_members(path)
        documents = archive_documents(path)
        manifest = documents["manifest_hybrid.json"]
        assert list(members)[-1] == "manifest_hybrid.json" or path.is_dir()
        if manifest["predictor"]:
            seen.add("predictor-file")
            assert manifest["predictor"] in documents
            assert any(e["predictor"] for e in manifest["tensors"])
        for entry in manifest["tensors"]:
            container = documents[entry["file"]]
            payload = container["payload"]
            seen.add(f"{container['codec']['mode']}/{payload['encoding']}")
            seen.add(f"layout/{'directory' if path.is_dir() else 'zip'}")
            seen.update(f"stage/{s['name']}" for s in container["stages"])
            if "nonfinite" in payload:
                seen.add("nonfinite")
            if len(payload["blocks"]) > 1:
                seen.add("multi-block")
            if not payload["blocks"]:
                seen.add("no-blocks")
            for block in payload["blocks"]:
                if "keep_mask" in block["streams"]:
                    seen.add("keep_mask")
                if block.get("side", {}).get("kept") == 0:
                    seen.add("nothing-kept")
            if container.get("snr_db", 0) is None:
                seen.add("snr-null")
            if "-" in entry["file"]:
                seen.add("hashed-stem")
            if payload["encoding"] == "binary":
                assert payload["file"] in members
    assert seen >= {
        "predictor-file", "hybrid/binary", "hybrid/base64", "exact/binary", "exact/base64",
        "layout/directory", "layout/zip", "stage/rft", "stage/identity", "stage/dct", "stage/polar",
        "stage/rans", "stage/zstd", "stage/raw", "nonfinite", "multi-block", "no-blocks",
        "keep_mask", "nothing-kept", "snr-null", "hashed-stem",
    }, seen


def test_reader_opens_written_archives(format_archives):
    """Opening and decoding runs the reader's schema checks on every document."""
    for path in format_archives.values():
        with rftpack.open(path) as archive:
            for name in archive.keys():
                archive.get_tensor(name)


def test_golden_v2_archives_validate(golden_v2):
    """Archives committed once must keep validating as the schemas are tightened."""
    for path in golden_v2.values():
        for member, document in archive_documents(path).items():
            kind = _kind_of(member)
            validate(kind, document, member)
            assert _errors(kind, document) == [], f"{path.name}/{member}"


# -- the reference implementation's files (version 1) -------------------------------------------

def test_reference_v1_files_validate(reference_v1):
    documents = archive_documents(reference_v1)
    assert documents["manifest_hybrid.json"]["version"] == 1
    kinds = set()
    for member, document in documents.items():
        kind = _kind_of(member)
        kinds.add(kind)
        validate(kind, document, member)
        assert _errors(kind, document) == [], member
    assert kinds == {"manifest", "tensor", "predictor"}


# -- broken documents ---------------------------------------------------------------------------

def _set(document: dict, path: list, value) -> None:
    *parents, last = path
    target = document
    for key in parents:
        target = target[key]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value


_DELETE = object()
_SEG = ["payload", "blocks", 0, "streams", "amp_codes"]

#: (document, JSON pointer as a key list, new value or _DELETE, path the error must name)
BROKEN = [
    # missing required fields
    ("manifest", ["tensors"], _DELETE, "$"),
    ("manifest", ["tensors", 0, "container_sha256"], _DELETE, "$.tensors[0]"),
    ("manifest", ["predictor"], _DELETE, "$"),
    ("tensor", ["stages"], _DELETE, "$"),
    ("tensor", ["payload", "sha256"], _DELETE, "$.payload"),
    ("tensor", _SEG + ["length"], _DELETE, "$.payload.blocks[0].streams.amp_codes"),
    ("tensor", ["payload", "blocks", 0, "side", "kept"], _DELETE, "$.payload.blocks[0].side"),
    ("exact", ["codec", "byte_shuffle"], _DELETE, "$.codec"),
    ("predictor", ["checksum_sha256"], _DELETE, "$"),
    ("predictor", ["architecture", "output_dim"], _DELETE, "$.architecture"),
    ("v1-tensor", ["payload", "indices"], _DELETE, "$.payload"),
    # wrong types
    ("manifest", ["tensors", 0, "stored_bytes"], "12", "$.tensors[0].stored_bytes"),
    ("manifest", ["tensors", 0, "predictor"], 1, "$.tensors[0].predictor"),
    ("manifest", ["tensors", 0, "shape"], [2.5], "$.tensors[0].shape[0]"),
    ("tensor", ["original_shape"], "256x128", "$.original_shape"),
    ("tensor", ["block_size"], 1.5, "$.block_size"),
    ("tensor", ["payload", "blocks"], {}, "$.payload.blocks"),
    ("tensor", ["stages", 2, "format_version"], "1", "$.stages[2].format_version"),
    ("predictor", ["state", "W0", "shape"], [3], "$.state.W0.shape"),
    ("v1-manifest", ["tensors", 0, "kept_coeff"], "243", "$.tensors[0].kept_coeff"),
    ("v1-tensor", ["payload", "amp_scale"], [1.0], "$.payload.amp_scale"),
    # checksums that are not lower-case hex SHA-256
    ("manifest", ["tensors", 0, "container_sha256"], "ABC", "$.tensors[0].container_sha256"),
    ("manifest", ["predictor_sha256"], "0" * 63, "$.predictor_sha256"),
    ("tensor", ["payload", "sha256"], "F" * 64, "$.payload.sha256"),
    ("predictor", ["checksum_sha256"], "not-a-digest", "$.checksum_sha256"),
    # out-of-range integers
    ("tensor", _SEG + ["offset"], -1, "$.payload.blocks[0].streams.amp_codes.offset"),
    ("tensor", _SEG + ["count"], -5, "$.payload.blocks[0].streams.amp_codes.count"),
    ("tensor", ["block_size"], 1 << 27, "$.block_size"),
    ("tensor", ["payload", "blocks", 0, "count"], 0, "$.payload.blocks[0].count"),
    ("tensor", ["stages", 1, "configuration", "amp_bits"], 17,
     "$.stages[1].configuration.amp_bits"),
    # unknown enumerated values
    ("tensor", ["codec", "mode"], "lossy", "$.codec.mode"),
    ("manifest", ["tensors", 0, "mode"], "lossy", "$.tensors[0].mode"),
    ("manifest", ["codec", "mode"], "lossy", "$.codec.mode"),
    ("tensor", ["payload", "encoding"], "hex", "$.payload.encoding"),
    ("tensor", ["dtype"], "float128", "$.dtype"),
    ("tensor", ["stages", 0, "kind"], "predictor", "$.stages[0].kind"),
    ("manifest", ["version"], 3, "$.version"),
    # structure
    ("tensor", ["stages"], [], "$.stages"),
    ("tensor", _SEG + ["data"], "AAAA", "$.payload.blocks[0].streams.amp_codes"),
    ("tensor", ["payload", "blocks", 0, "streams", "bogus"],
     {"offset": 0, "length": 0, "count": 0}, "$.payload.blocks[0].streams"),
    ("tensor", ["stages", 2, "configuration", "level"], 3, "$.stages[2].configuration"),
    ("base64-tensor", _SEG + ["data"], _DELETE, "$.payload.blocks[0].streams.amp_codes"),
    ("base64-tensor", _SEG + ["data"], "not base64!", "$.payload.blocks[0].streams.amp_codes.data"),
    ("manifest", ["tensors", 0, "file"], "../outside.json", "$.tensors[0].file"),
    ("manifest", ["tensors", 0, "file"], "/etc/passwd", "$.tensors[0].file"),
    ("v1-manifest", ["tensors", 0, "file"], "tensors/../../x.json", "$.tensors[0].file"),
    ("tensor", ["payload", "file"], "tensors/../w.bin", "$.payload.file"),
    ("predictor", ["state", "W9x"], {"shape": [1, 1], "data": ""}, "$.state"),
]


@pytest.fixture(scope="module")
def base_documents(format_archives, reference_v1) -> dict[str, dict]:
    """One real document of each kind to break."""
    binary = archive_documents(format_archives["dir-binary"])
    base64 = archive_documents(format_archives["dir-base64"])
    with_predictor = archive_documents(format_archives["predictor"])
    v1 = archive_documents(reference_v1)

    def container(documents, mode):
        manifest = documents["manifest_hybrid.json"]
        return next(documents[e["file"]] for e in manifest["tensors"] if e["mode"] == mode
                    and documents[e["file"]]["payload"]["blocks"])

    return {
        "manifest": with_predictor["manifest_hybrid.json"],
        "tensor": container(binary, "hybrid"),
        "exact": container(binary, "exact"),
        "base64-tensor": container(base64, "hybrid"),
        "predictor": with_predictor["predictors/global_residual_predictor.json"],
        "v1-manifest": v1["manifest_hybrid.json"],
        "v1-tensor": next(d for m, d in v1.items() if m.startswith("tensors/")),
    }


def test_base_documents_are_valid(base_documents):
    for name, document in base_documents.items():
        kind = name.split("-")[-1] if "-" in name else name
        kind = "tensor" if kind == "exact" else kind
        assert _errors(kind, document) == [], name


@pytest.mark.parametrize(("base", "pointer", "value", "path"), BROKEN,
                         ids=[f"{b}:{'.'.join(map(str, p))}" for b, p, _, _ in BROKEN])
def test_broken_documents_are_rejected(base_documents, base, pointer, value, path):
    document = copy.deepcopy(base_documents[base])
    _set(document, pointer, value)
    kind = {"v1-manifest": "manifest", "v1-tensor": "tensor", "exact": "tensor",
            "base64-tensor": "tensor"}.get(base, base)
    with pytest.raises(FormatError) as info:
        validate(kind, document, "doc.json")
    message = str(info.value)
    assert message.startswith(f"doc.json: does not match the {kind} schema at {path}: "), message


def test_rejection_names_the_first_problem_only_once(base_documents):
    document = copy.deepcopy(base_documents["manifest"])
    document["tensors"][1]["original_bytes"] = -1
    document["tensors"][0]["dtype"] = 7
    with pytest.raises(FormatError, match=r"at \$\.tensors\[0\]\.dtype: "):
        validate("manifest", document, "m.json")


def test_predictor_flag_needs_a_stored_predictor(base_documents):
    document = copy.deepcopy(base_documents["manifest"])
    document["predictor"] = None
    document["predictor_sha256"] = None
    assert any(e.startswith("$.predictor:") for e in _errors("manifest", document))
    for entry in document["tensors"]:
        entry["predictor"] = False
    assert _errors("manifest", document) == []


def test_stored_predictor_needs_a_checksum(base_documents):
    document = copy.deepcopy(base_documents["manifest"])
    document["predictor_sha256"] = None
    assert any(e.startswith("$.predictor_sha256:") for e in _errors("manifest", document))


def test_third_party_stage_configuration_is_free(base_documents):
    """Stage configurations and quantizer side info of non-built-in stages are arbitrary JSON."""
    document = copy.deepcopy(base_documents["tensor"])
    document["stages"][1] = {"kind": "quantizer", "name": "acme-vq", "format_version": 3,
                             "provider": "acme-rftpack",
                             "configuration": {"codebook": [[1, 2], [3, 4]], "x": None}}
    document["codec"].update(quant_amp_bits=None, quant_phase_bits=None, prune_threshold=None,
                             prune_mode={"any": "thing"})
    block = document["payload"]["blocks"][0]
    block["side"] = {"centroids": [0.5, -1], "meta": {"k": "v"}}
    block["streams"] = {"acme_indices": block["streams"]["amp_codes"]}
    assert _errors("tensor", document) == []


def test_unknown_top_level_members_are_ignored(base_documents):
    """Open objects: later minor revisions may add members without breaking readers."""
    for name in ("manifest", "tensor", "predictor"):
        document = copy.deepcopy(base_documents[name])
        document["x_future_field"] = {"anything": [1, 2]}
        assert _errors(name, document) == []


# -- the compiled fast path (jsonschema-rs) agrees with the reference validator -------------------

def _kind(base: str) -> str:
    return {"v1-manifest": "manifest", "v1-tensor": "tensor", "exact": "tensor",
            "base64-tensor": "tensor"}.get(base, base)


def test_fast_validator_agrees_on_valid_and_broken_documents(base_documents):
    from rftpack.format.schema import _fast_validator

    pytest.importorskip("jsonschema_rs")
    for name, document in base_documents.items():
        assert _fast_validator(_kind(name)).is_valid(document), name
    for base, pointer, value, _ in BROKEN:
        document = copy.deepcopy(base_documents[base])
        _set(document, pointer, value)
        assert not _fast_validator(_kind(base)).is_valid(document), (base, pointer)


@pytest.mark.parametrize(("base", "pointer", "value", "path"), BROKEN[:8],
                         ids=[f"{b}:{'.'.join(map(str, p))}" for b, p, _, _ in BROKEN[:8]])
def test_broken_documents_are_rejected_without_the_fast_validator(
        base_documents, monkeypatch, base, pointer, value, path):
    import rftpack.format.schema as schema

    monkeypatch.setattr(schema, "_fast_validator", lambda kind: None)
    document = copy.deepcopy(base_documents[base])
    _set(document, pointer, value)
    with pytest.raises(FormatError) as info:
        validate(_kind(base), document, "doc.json")
    assert str(info.value).startswith(
        f"doc.json: does not match the {_kind(base)} schema at {path}: "), str(info.value)
    validate(_kind(base), base_documents[base], "doc.json")  # valid still passes


def test_a_disagreeing_fast_validator_is_not_trusted(base_documents, monkeypatch):
    import rftpack.format.schema as schema

    class Refuses:
        def is_valid(self, document):
            return False

        def iter_errors(self, document):
            yield "compiled validator says no"

    monkeypatch.setattr(schema, "_fast_validator", lambda kind: Refuses())
    with pytest.raises(FormatError, match="compiled validator says no"):
        validate("manifest", base_documents["manifest"], "m.json")
