"""rftpack.importance: validating, saving, loading and looking up per-tensor importance
weights (no torch)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rftpack import importance
from rftpack.errors import InputError

# -- validate --------------------------------------------------------------------------------


def test_validate_returns_a_float_copy() -> None:
    source = {"a.weight": 2, "b.weight": 0.5}
    checked = importance.validate(source)
    assert checked == {"a.weight": 2.0, "b.weight": 0.5}
    assert all(type(v) is float for v in checked.values())
    checked["a.weight"] = 9.0
    assert source["a.weight"] == 2  # a copy, not the caller's mapping


@pytest.mark.parametrize("weights", [None, [("a", 1.0)], "a=1", 3.0, {}])
def test_validate_rejects_non_mappings_and_empty(weights) -> None:
    with pytest.raises(InputError, match="non-empty mapping"):
        importance.validate(weights)


@pytest.mark.parametrize("name", [1, None, ("a", "b"), ""])
def test_validate_rejects_bad_names(name) -> None:
    with pytest.raises(InputError, match="tensor names must be non-empty strings"):
        importance.validate({"ok.weight": 1.0, name: 1.0})


@pytest.mark.parametrize("value", [True, False, math.nan, math.inf, -math.inf, 0, 0.0, -1.5,
                                   "2", None, [1.0]])
def test_validate_rejects_bad_weights_naming_the_tensor(value) -> None:
    with pytest.raises(InputError, match=r"'layer\.3\.weight' must be a finite number > 0"):
        importance.validate({"ok.weight": 1.0, "layer.3.weight": value})


def test_validate_names_where_the_weights_came_from() -> None:
    with pytest.raises(InputError, match=r"^imp\.json: the weight of 'w'"):
        importance.validate({"w": -1}, "imp.json")


# -- save / load -----------------------------------------------------------------------------


def test_save_load_round_trip_with_details(tmp_path: Path) -> None:
    weights = {"encoder.layer.0.attention.self.value.weight": 0.88,
               "embeddings.word_embeddings.weight": 1e-3, "pooler.dense.weight": 14}
    path = importance.save(weights, tmp_path / "imp.json", distortion="cosine", text_count=20)
    assert path == tmp_path / "imp.json"
    document = json.loads(path.read_text())
    assert document["format"] == importance.FORMAT and document["version"] == importance.VERSION
    assert document["distortion"] == "cosine" and document["text_count"] == 20
    assert importance.load(path) == {name: float(v) for name, v in weights.items()}
    assert importance.load(str(path)) == importance.load(path)


def test_save_refuses_invalid_weights_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'w'"):
        importance.save({"w": 0.0}, tmp_path / "imp.json")
    assert not (tmp_path / "imp.json").exists()


def test_load_plain_name_to_weight_object(tmp_path: Path) -> None:
    path = tmp_path / "plain.json"
    path.write_text(json.dumps({"a.weight": 3, "b.weight": 0.25}))
    assert importance.load(path) == {"a.weight": 3.0, "b.weight": 0.25}


def test_load_document_without_format_or_version(tmp_path: Path) -> None:
    path = tmp_path / "bare.json"
    path.write_text(json.dumps({"weights": {"a.weight": 2}}))
    assert importance.load(path) == {"a.weight": 2.0}


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(InputError, match="no such importance file") as info:
        importance.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"{not json", b"", b"\xff\xfe\x00garbage"])
def test_load_bad_json(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match="not a JSON importance file") as info:
        importance.load(path)
    assert str(path) in str(info.value)


def test_load_directory_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        importance.load(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_load_wrong_format(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"format": "something-else", "version": 1,
                                "weights": {"a": 1.0}}))
    with pytest.raises(InputError, match="'something-else' is not 'rftpack-importance'") as info:
        importance.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("version", [importance.VERSION + 1, "1", 1.0, None])
def test_load_newer_or_odd_version(tmp_path: Path, version) -> None:
    path = tmp_path / "future.json"
    path.write_text(json.dumps({"format": importance.FORMAT, "version": version,
                                "weights": {"a": 1.0}}))
    with pytest.raises(InputError, match="version .* newer than this rftpack reads") as info:
        importance.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("document", [[1, 2], {"weights": {}}, {"weights": {"a": -2}},
                                      {"a": "heavy"}, 3])
def test_load_invalid_content_names_the_file(tmp_path: Path, document) -> None:
    path = tmp_path / "invalid.json"
    path.write_text(json.dumps(document))
    with pytest.raises(InputError) as info:
        importance.load(path)
    assert str(info.value).startswith(str(path))


# -- lookup ----------------------------------------------------------------------------------


def test_lookup_exact() -> None:
    weights = {"encoder.x.weight": 2.0, "x.weight": 5.0}
    assert importance.lookup(weights, "encoder.x.weight") == 2.0
    assert importance.lookup(weights, "x.weight") == 5.0


def test_lookup_checkpoint_name_with_a_prefix() -> None:
    assert importance.lookup({"encoder.x": 2.0}, "bert.encoder.x") == 2.0
    assert importance.lookup({"encoder.x": 2.0}, "model.bert.encoder.x") == 2.0


def test_lookup_longest_match_wins_whatever_the_order() -> None:
    for weights in ({"x": 1.0, "encoder.x": 2.0, "bert.encoder.x": 3.0},
                    {"bert.encoder.x": 3.0, "encoder.x": 2.0, "x": 1.0}):
        assert importance.lookup(weights, "model.bert.encoder.x") == 3.0
        assert importance.lookup(weights, "other.encoder.x") == 2.0
        assert importance.lookup(weights, "y.x") == 1.0


def test_lookup_only_matches_at_a_dot_boundary() -> None:
    weights = {"encoder.x": 2.0}
    assert importance.lookup(weights, "xencoder.x") is None
    assert importance.lookup(weights, "bert_encoder.x") is None
    assert importance.lookup(weights, "encoder.x.bias") is None  # no suffix stripping
    assert importance.lookup(weights, "encoder") is None
    assert importance.lookup(weights, "y") is None


def test_lookup_does_not_match_a_longer_entry_name() -> None:
    # The entry is more specific than the checkpoint name: no match the other way round.
    assert importance.lookup({"bert.encoder.x": 2.0}, "encoder.x") is None


def test_save_into_a_missing_directory_is_an_rftpack_error(tmp_path: Path) -> None:
    from rftpack.errors import RftpackError

    with pytest.raises(RftpackError):
        importance.save({"w": 1.0}, tmp_path / "no-such-dir" / "imp.json")
