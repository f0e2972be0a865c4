"""The plugin registry: built-ins, lookups, and what a misbehaving plugin gets."""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import ClassVar

import pytest

from rftpack.errors import PluginError, StageError, UnknownStageError
from rftpack.hookspecs import hookimpl
from rftpack.plugins import (
    Registry,
    get_stage,
    new_manager,
    registry,
    stage_from_config,
)
from rftpack.stages.base import Coder, Transform
from rftpack.stages.zstd import ZstdCoder

EXPECTED = {
    "transform": {"rft", "identity"},
    "quantizer": {"polar"},
    "coder": {"rans", "zstd", "raw"},
    "predictor": {"mlp"},
}


def fresh() -> Registry:
    return Registry(new_manager(entry_points=False))


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_builtins_listed(kind: str) -> None:
    assert EXPECTED[kind] <= set(fresh().ids(kind))
    assert EXPECTED[kind] <= set(registry().ids(kind))


def test_builtin_ids_map_to_matching_classes() -> None:
    reg = fresh()
    for kind, ids in EXPECTED.items():
        for stage_id in ids:
            entry = reg.get(kind, stage_id)
            assert entry.cls.id == stage_id
            assert entry.cls.kind == kind
            assert get_stage(kind, stage_id) is entry.cls


def test_ids_are_sorted() -> None:
    ids = fresh().ids("coder")
    assert ids == sorted(ids)


def test_unknown_id_message_names_kind_id_and_available() -> None:
    with pytest.raises(UnknownStageError) as info:
        get_stage("coder", "acme.nope")
    message = str(info.value)
    assert "coder" in message
    assert "acme.nope" in message
    for stage_id in EXPECTED["coder"]:
        assert stage_id in message
    assert "plugin" in message


def test_unknown_id_with_provider_hint_names_the_package() -> None:
    with pytest.raises(UnknownStageError) as info:
        get_stage("transform", "acme.wavelet", provider_hint="acme-rftpack")
    assert "acme-rftpack" in str(info.value)
    assert "acme.wavelet" in str(info.value)


def test_unknown_stage_error_is_a_stage_error() -> None:
    with pytest.raises(StageError):
        get_stage("quantizer", "zstd")  # an id of another kind


def test_unknown_kind() -> None:
    with pytest.raises(StageError) as info:
        get_stage("compressor", "zstd")
    assert "compressor" in str(info.value)


def test_stage_from_config() -> None:
    stage = stage_from_config("coder", {"name": "zstd", "configuration": {"level": 5}})
    assert stage == ZstdCoder(level=5)
    with pytest.raises(StageError):
        stage_from_config("coder", {"configuration": {}})
    with pytest.raises(StageError):
        stage_from_config("coder", "zstd")  # type: ignore[arg-type]
    with pytest.raises(UnknownStageError):
        stage_from_config("coder", {"name": "brotli", "configuration": {}})



def test_stage_recorded_as_rftpacks_own_is_found_without_scanning_plugins(monkeypatch) -> None:
    import rftpack.plugins as plugins

    def no_scan():
        raise AssertionError("the installed plugins were scanned")

    monkeypatch.setattr(plugins, "registry", no_scan)
    assert get_stage("coder", "zstd", provider_hint="rftpack") is ZstdCoder
    assert stage_from_config("coder", {"name": "zstd", "configuration": {"level": 5},
                                       "provider": "rftpack"}) == ZstdCoder(level=5)
    with pytest.raises(AssertionError, match="scanned"):  # anything else needs the registry
        get_stage("coder", "zstd")
    with pytest.raises(AssertionError, match="scanned"):
        get_stage("coder", "acme.coder", provider_hint="rftpack")


def test_builtin_fast_path_agrees_with_the_registry() -> None:
    for kind in EXPECTED:
        for stage_id in registry().ids(kind):
            entry = registry().get(kind, stage_id)
            if entry.provider == "rftpack":
                assert get_stage(kind, stage_id, provider_hint="rftpack") is entry.cls


# -- misbehaving plugins --------------------------------------------------------------------------

@dataclass(frozen=True)
class ClashingZstd(Coder):
    """A third-party coder that wrongly claims the built-in id."""

    id: ClassVar[str] = "zstd"


@dataclass(frozen=True)
class AcmeCoder(Coder):
    """A well-behaved namespaced coder."""

    id: ClassVar[str] = "acme.coder"


@dataclass(frozen=True)
class AcmeTransform(Transform):
    """A transform offered under the coder hook."""

    id: ClassVar[str] = "acme.transform"


def plugin(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, classes in hooks.items():
        def impl(classes=classes):
            return classes
        impl.__name__ = hook_name
        setattr(module, hook_name, hookimpl(impl))
    return module


def test_third_party_stage_registered() -> None:
    manager = new_manager(entry_points=False)
    manager.register(plugin("acme_plugin", rftpack_coders=[AcmeCoder]))
    reg = Registry(manager)
    assert "acme.coder" in reg.ids("coder")
    assert reg.get("coder", "acme.coder").cls is AcmeCoder
    assert EXPECTED["coder"] <= set(reg.ids("coder"))


def test_two_plugins_claiming_one_id_is_an_error_naming_both() -> None:
    manager = new_manager(entry_points=False)
    manager.register(plugin("clash_plugin", rftpack_coders=[ClashingZstd]))
    with pytest.raises(PluginError) as info:
        Registry(manager)
    message = str(info.value)
    assert "'zstd'" in message or "zstd" in message
    assert ClashingZstd.__module__ in message
    assert ZstdCoder.__module__ in message


def test_same_class_listed_twice_is_not_a_clash() -> None:
    manager = new_manager(entry_points=False)
    manager.register(plugin("again", rftpack_coders=[ZstdCoder]))
    assert Registry(manager).get("coder", "zstd").cls is ZstdCoder


@pytest.mark.parametrize("offered", [
    object,                # a class, but not a Stage
    42,                    # not a class at all
    ZstdCoder(),           # an instance, not a class
    AcmeTransform,         # a Stage of the wrong kind
    Coder,                 # a Stage subclass without an id
], ids=["object", "int", "instance", "wrong-kind", "no-id"])
def test_plugin_returning_non_stage_is_plugin_error(offered) -> None:
    manager = new_manager(entry_points=False)
    manager.register(plugin("bad_plugin", rftpack_coders=[offered]))
    with pytest.raises(PluginError) as info:
        Registry(manager)
    assert "coder" in str(info.value)


def test_plugin_whose_hook_raises_is_plugin_error() -> None:
    module = types.ModuleType("broken_plugin")

    def rftpack_transforms():
        raise RuntimeError("boom")

    module.rftpack_transforms = hookimpl(rftpack_transforms)
    manager = new_manager(entry_points=False)
    manager.register(module)
    with pytest.raises(PluginError) as info:
        Registry(manager)
    assert "boom" in str(info.value)


def test_new_manager_registers_builtins_once() -> None:
    from rftpack.stages import builtin

    manager = new_manager(entry_points=False)
    assert manager.is_registered(builtin)
    assert sum(1 for p in manager.get_plugins() if p is builtin) == 1
    assert new_manager(entry_points=False) is not manager  # fresh each call


def test_registry_is_cached() -> None:
    assert registry() is registry()


def test_plugin_needing_a_newer_api_is_refused() -> None:
    from rftpack.stages.identity import Identity

    class Future(Identity):
        id = "future.identity"

    module = types.ModuleType("future_plugin")
    module.RFTPACK_PLUGIN_API = 99
    module.rftpack_transforms = hookimpl(lambda: [Future])
    manager = new_manager(entry_points=False)
    manager.register(module, name="future-plugin")
    with pytest.raises(PluginError, match="needs rftpack plugin API 99.*upgrade rftpack"):
        Registry(manager)
