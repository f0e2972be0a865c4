"""Safe member names: the stem allocator and the member-path check."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rftpack.archive.names import NameAllocator, reference_stem
from rftpack.archive.storage import check_member_path
from rftpack.errors import FormatError

SAFE = re.compile(r"^[A-Za-z0-9_\-]+$")

HOSTILE = ["../x", "/abs", "a/b", "a.b", "A.B", "a_b", "", ".", "..", "...", "/", "//",
           "ü.weight", "权重", "emoji🙂", "a" * 300, "a" * 299 + "b", "CON", "con",
           "x\x00y", "a\\b", "C:x", "tensors/../../etc/passwd", "-rf", "  ", "\n",
           "layer.0.weight", "layer/0/weight", "layer_0_weight"]


def assert_safe(stem: str) -> None:
    assert SAFE.match(stem), stem
    assert not stem.startswith(".")
    assert len(stem) + len(".json") <= 255
    check_member_path(f"tensors/{stem}.json")


def test_hostile_names_get_unique_safe_stems() -> None:
    names = NameAllocator()
    stems = [names.stem(n) for n in HOSTILE]
    for stem in stems:
        assert_safe(stem)
    lowered = [s.lower() for s in stems]
    assert len(set(lowered)) == len(lowered)


def test_case_insensitive_collision() -> None:
    names = NameAllocator()
    first, second = names.stem("A.B"), names.stem("a.b")
    assert first == "A_B"
    assert second.lower() != first.lower()
    assert second.startswith("a_b-")


def test_reference_names_kept_when_possible() -> None:
    names = NameAllocator()
    assert names.stem("head/proj.weight") == "head__proj_weight"
    assert names.stem("layer0.bias") == "layer0_bias"
    assert reference_stem("head/proj.weight") == "head__proj_weight"


def test_long_names_truncated_and_distinct() -> None:
    names = NameAllocator()
    a, b = names.stem("a" * 300), names.stem("a" * 299 + "b")
    assert a != b
    assert len(a) < 160 and len(b) < 160


def test_stems_depend_only_on_order_and_names() -> None:
    first = [NameAllocator().stem(n) for n in HOSTILE]
    second = [NameAllocator().stem(n) for n in HOSTILE]
    assert first == second
    alloc_a, alloc_b = NameAllocator(), NameAllocator()
    assert [alloc_a.stem(n) for n in HOSTILE] == [alloc_b.stem(n) for n in HOSTILE]


def test_repeated_name_still_unique() -> None:
    names = NameAllocator()
    stems = {names.stem("w").lower() for _ in range(5)}
    assert len(stems) == 5


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=30))
def test_property_unique_and_safe(tensor_names: list[str]) -> None:
    names = NameAllocator()
    stems = [names.stem(n) for n in tensor_names]
    for stem in stems:
        assert_safe(stem)
    assert len({s.lower() for s in stems}) == len(stems)


# -- member paths ---------------------------------------------------------------------------------

@pytest.mark.parametrize("member", [
    "../x", "/x", "a/../../b", "a/../b", "C:x", "c:/x", "a\\b", "..\\x", "", "./x", "a//b",
    "tensors/", "x\x00", "..", "/", None, 3, b"tensors/a.json",
])
def test_member_path_rejected(member) -> None:
    with pytest.raises(FormatError):
        check_member_path(member)


@pytest.mark.parametrize("member", ["manifest_hybrid.json", "tensors/a.json",
                                    "predictors/global_residual_predictor.json",
                                    "tensors/a-b_c.bin", "x..y"])
def test_member_path_accepted(member: str) -> None:
    assert check_member_path(member) == member
