"""The plugin manager (built lazily, cached) and the one stage lookup.

Example:
    >>> from rftpack.plugins import get_stage
    >>> get_stage("coder", "zstd").id
    'zstd'
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pluggy

from rftpack import hookspecs
from rftpack.errors import PluginError, StageError, UnknownStageError
from rftpack.stages.base import KINDS, Stage

_HOOKS = {
    "transform": "rftpack_transforms",
    "quantizer": "rftpack_quantizers",
    "coder": "rftpack_coders",
    "predictor": "rftpack_predictors",
}
BUILTIN_PROVIDER = "rftpack"


@dataclass(frozen=True)
class StageEntry:
    """One installed stage: which class, and which distribution provides it."""

    kind: str
    id: str
    cls: type[Stage]
    provider: str
    provider_version: str


class Registry:
    """All stages the installed plugins provide, indexed by (kind, id)."""

    def __init__(self, manager: pluggy.PluginManager) -> None:
        self.manager = manager
        self.entries: dict[tuple[str, str], StageEntry] = {}
        for kind in KINDS:
            hook = getattr(manager.hook, _HOOKS[kind])
            for impl in hook.get_hookimpls():
                provider, version = _provider_of(manager, impl.plugin)
                _check_api(impl.plugin, impl.plugin_name, provider)
                try:
                    classes = impl.function() or []
                except Exception as exc:  # a broken plugin must not hide the others' errors
                    raise PluginError(f"plugin {impl.plugin_name!r} failed listing {kind} "
                                      f"stages: {exc}") from exc
                for cls in classes:
                    self._add(kind, cls, provider, version)

    def _add(self, kind: str, cls: Any, provider: str, version: str) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Stage) and cls.kind == kind and cls.id):
            raise PluginError(f"{provider} offers {cls!r} as a {kind} stage, but it is not a "
                              f"{kind} Stage subclass with an id")
        key = (kind, cls.id)
        if key in self.entries and self.entries[key].cls is not cls:
            other = self.entries[key]
            raise PluginError(f"{kind} stage id {cls.id!r} is claimed twice: by "
                              f"{other.provider} ({other.cls.__module__}) and by {provider} "
                              f"({cls.__module__}); uninstall one of them")
        self.entries[key] = StageEntry(kind, cls.id, cls, provider, version)

    def ids(self, kind: str) -> list[str]:
        return sorted(i for k, i in self.entries if k == kind)

    def get(self, kind: str, stage_id: str, provider_hint: str | None = None) -> StageEntry:
        if kind not in KINDS:
            raise StageError(f"unknown stage kind {kind!r}; kinds are {', '.join(KINDS)}")
        try:
            return self.entries[(kind, stage_id)]
        except KeyError:
            hint = (f"install the package {provider_hint!r}, which provides it"
                    if provider_hint and provider_hint != BUILTIN_PROVIDER
                    else "a plugin providing it may be missing")
            raise UnknownStageError(
                f"unknown {kind} stage {stage_id!r}: {hint}; available: "
                f"{', '.join(self.ids(kind)) or '(none)'}"
            ) from None


def _check_api(plugin: object, name: str, provider: str) -> None:
    wanted = getattr(plugin, "RFTPACK_PLUGIN_API", 1)
    if not isinstance(wanted, int) or not 1 <= wanted <= hookspecs.API_VERSION:
        raise PluginError(f"plugin {name!r} from {provider} needs rftpack plugin API "
                          f"{wanted!r}, but this rftpack provides API {hookspecs.API_VERSION}: "
                          f"upgrade rftpack (or install an older release of {provider})")


def _provider_of(manager: pluggy.PluginManager, plugin: object) -> tuple[str, str]:
    for registered, dist in manager.list_plugin_distinfo():
        if registered is plugin:
            return dist.project_name, dist.version
    from rftpack import __version__

    return BUILTIN_PROVIDER, __version__


def new_manager(*, entry_points: bool = True) -> pluggy.PluginManager:
    """A fresh plugin manager: built-ins always, third parties from entry points if asked."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    if entry_points:
        try:
            manager.load_setuptools_entrypoints(hookspecs.PROJECT)
        except Exception as exc:
            raise PluginError(f"a plugin in entry-point group 'rftpack' failed to load: {exc}") \
                from exc
    from rftpack.stages import builtin

    if not manager.is_registered(builtin) and not any(
        getattr(p, "__name__", None) == builtin.__name__ for p in manager.get_plugins()
    ):
        # Running from a source tree without installed metadata: register the built-ins directly.
        manager.register(builtin, name="builtin")
    return manager


@functools.lru_cache(maxsize=1)
def registry() -> Registry:
    """The cached registry of every installed stage (built on first use, not at import)."""
    return Registry(new_manager())


@functools.lru_cache(maxsize=1)
def _builtin_stages() -> dict[tuple[str, str], type[Stage]]:
    from rftpack.stages import builtin

    return {(kind, cls.id): cls for kind in KINDS for cls in getattr(builtin, _HOOKS[kind])()}


def get_stage(kind: str, stage_id: str, provider_hint: str | None = None) -> type[Stage]:
    """The stage class for ``kind``/``stage_id``; unknown ids raise ``UnknownStageError``.

    A stage recorded as rftpack's own (``provider_hint="rftpack"``, as in every container
    rftpack's stages write) is rftpack's, found without loading the installed plugins (that
    scan is a tenth of a small archive's extract time).
    """
    if provider_hint == BUILTIN_PROVIDER:
        cls = _builtin_stages().get((kind, stage_id))
        if cls is not None:
            return cls
    return registry().get(kind, stage_id, provider_hint).cls


def stage_from_config(kind: str, config: dict[str, Any]) -> Stage:
    """Rebuild a stage from its recorded config ``{"name", "configuration", ["provider"]}``."""
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        raise StageError(f"{kind} stage config must be an object with a string 'name': {config!r}")
    cls = get_stage(kind, config["name"], config.get("provider"))
    return cls.from_config({"name": config["name"],
                            "configuration": config.get("configuration", {})})


def provider_of(kind: str, stage_id: str) -> str:
    """Distribution that provides a stage (recorded in containers for helpful errors)."""
    return registry().get(kind, stage_id).provider

