"""PyTorch adapters over the numpy core: decode straight into a module, or lazily, layer by
layer, while it runs. torch is imported when this module is.

Example:
    >>> import rftpack.torch
    >>> model = MyModel()                                          # doctest: +SKIP
    >>> rftpack.torch.load_state_dict(model, "model.rftp")         # doctest: +SKIP
    >>> handle = rftpack.torch.lazy_load(model, "model.rftp")      # doctest: +SKIP
    >>> model(inputs)   # each submodule's weights decoded as it runs  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from rftpack.archive.reader import Archive
from rftpack.errors import RftpackError

_TORCH_DTYPES = {
    "float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
    "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32,
    "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
    "float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2,
}
# Same-width integer views for dtypes torch.from_numpy does not know (ml_dtypes types).
_VIEW_AS = {"bfloat16": np.int16, "float8_e4m3fn": np.uint8, "float8_e5m2": np.uint8}


class LoadError(RftpackError):
    """The archive does not fit the module (missing/unexpected names, wrong shapes)."""


class IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


def numpy_to_torch(array: np.ndarray, device: Any = None) -> torch.Tensor:
    """A torch tensor of the same dtype (bfloat16 and float8 included) sharing memory if it can.

    Example:
        >>> numpy_to_torch(np.ones(2, np.float32)).dtype
        torch.float32
    """
    name = array.dtype.name
    if name in _VIEW_AS:
        tensor = torch.from_numpy(np.ascontiguousarray(array).view(_VIEW_AS[name]))
        tensor = tensor.view(_TORCH_DTYPES[name])
    elif name in ("uint16", "uint32", "uint64"):
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    else:
        if not array.flags.writeable:  # torch warns on read-only arrays (e.g. cached tensors)
            array = array.copy()
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.to(device) if device is not None else tensor


def _open(archive: Archive | str | os.PathLike) -> tuple[Archive, bool]:
    if isinstance(archive, Archive):
        return archive, False
    return Archive(archive), True


def load_state_dict(module: torch.nn.Module, archive: Archive | str | os.PathLike, *,
                    strict: bool = True, use_predictor: bool = True) -> IncompatibleKeys:
    """Decode an archive tensor by tensor straight into ``module``'s parameters and buffers.

    Peak memory is the module plus one decoded tensor (no second copy of the model). With
    ``strict=True`` the archive's names must match ``module.state_dict()`` exactly; otherwise
    the mismatches are returned, as ``torch.nn.Module.load_state_dict`` does. Values are cast
    to each parameter's dtype and device.

    Example:
        >>> model = torch.nn.Linear(4, 4)
        >>> load_state_dict(model, "linear.rftp")   # doctest: +SKIP
        IncompatibleKeys(missing_keys=[], unexpected_keys=[])
    """
    reader, owned = _open(archive)
    try:
        targets = {**non_persistent_buffers(module), **module.state_dict(keep_vars=True)}
        names = reader.keys()
        missing = [k for k in module.state_dict() if k not in reader]
        unexpected = [k for k in names if k not in targets]
        if strict and (missing or unexpected):
            raise LoadError(_mismatch_message(reader, missing, unexpected))
        with torch.no_grad(), reader.plan_decoding([k for k in names if k in targets]):
            for name in names:
                if name not in targets:
                    continue
                target = targets[name]
                shape = tuple(reader.entry(name).get("shape") or reader.info(name).shape)
                if tuple(target.shape) != shape:
                    raise LoadError(f"{name}: archive holds shape {list(shape)}, the module "
                                    f"expects {list(target.shape)}")
                value = reader.get_tensor(name, use_predictor=use_predictor)
                target.copy_(numpy_to_torch(value) if isinstance(value, np.ndarray) else value)
                del value
        return IncompatibleKeys(missing, unexpected)
    finally:
        if owned:
            reader.close()


def non_persistent_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Buffers a state dict leaves out (e.g. BERT's position_ids) but checkpoints often hold."""
    found = {}
    for module_name, submodule in module.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for attribute in submodule._non_persistent_buffers_set:
            buffer = submodule._buffers.get(attribute)
            if buffer is not None:
                found[f"{prefix}{attribute}"] = buffer
    return found


def _mismatch_message(reader: Archive, missing: list[str], unexpected: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} name(s) the module has but the archive lacks: "
                     f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if unexpected:
        parts.append(f"{len(unexpected)} name(s) in the archive the module lacks: "
                     f"{', '.join(unexpected[:5])}{' …' if len(unexpected) > 5 else ''}")
    return (f"{reader.path} does not match the module ({'; '.join(parts)}); "
            f"pass strict=False to load what matches")


@dataclass
class _Slot:
    """One parameter or buffer managed by lazy_load."""

    module: torch.nn.Module
    attribute: str
    archive_name: str
    is_parameter: bool


@dataclass
class LazyHandle:
    """What ``lazy_load`` returns: the hooks it installed, and how to undo them."""

    archive: Archive
    owned: bool
    keep_resident: bool
    slots: dict[torch.nn.Module, list[_Slot]] = field(default_factory=dict)
    hooks: list[Any] = field(default_factory=list)
    resident: set[torch.nn.Module] = field(default_factory=set)
    materializations: int = 0

    def before_forward(self, module: torch.nn.Module, args: Any) -> None:
        if module not in self.resident:
            self.materialize(module)

    def after_forward(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if not self.keep_resident:
            self.release(module)

    def materialize(self, module: torch.nn.Module) -> None:
        """Decode a submodule's own weights into it."""
        self.resident.add(module)
        for slot in self.slots.get(module, []):
            value = numpy_to_torch(self.archive.get_tensor(slot.archive_name))
            current = getattr(module, slot.attribute)
            if current is not None and current.device.type != "meta":
                value = value.to(device=current.device)
            if current is not None and current.dtype != value.dtype:
                value = value.to(current.dtype)
            _assign(module, slot, value)
            self.materializations += 1

    def release(self, module: torch.nn.Module) -> None:
        """Drop a submodule's decoded weights (empty placeholders keep dtype and device)."""
        self.resident.discard(module)
        for slot in self.slots.get(module, []):
            current = getattr(module, slot.attribute)
            placeholder = torch.empty(0, dtype=current.dtype,
                                      device="cpu" if current.device.type == "meta"
                                      else current.device)
            _assign(module, slot, placeholder)

    def remove(self, materialize: bool = True) -> None:
        """Remove the hooks; by default decode every managed weight once so the module works
        on its own again."""
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()
        if materialize:
            for module in self.slots:
                if module not in self.resident:
                    self.materialize(module)
        if self.owned:
            self.archive.close()

    def resident_bytes(self) -> int:
        """Bytes of managed weights currently decoded in memory."""
        return sum(getattr(m, s.attribute).numel() * getattr(m, s.attribute).element_size()
                   for m in self.resident for s in self.slots.get(m, []))


def _assign(module: torch.nn.Module, slot: _Slot, value: torch.Tensor) -> None:
    if slot.is_parameter:
        parameter = getattr(module, slot.attribute)
        if parameter.device.type == "meta" or parameter.device != value.device:
            module._parameters[slot.attribute] = torch.nn.Parameter(
                value, requires_grad=parameter.requires_grad)
        else:
            parameter.data = value
    else:
        module._buffers[slot.attribute] = value


def _direct_tensors(module: torch.nn.Module, prefix: str) -> Iterator[tuple[str, str, bool]]:
    for attribute, _ in module.named_parameters(recurse=False):
        yield attribute, f"{prefix}{attribute}", True
    for attribute, buffer in module.named_buffers(recurse=False):
        if buffer is not None:
            yield attribute, f"{prefix}{attribute}", False


def _all_tensors(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from module.named_parameters()
    yield from module.named_buffers()


def lazy_load(module: torch.nn.Module, archive: Archive | str | os.PathLike, *,
              keep_resident: bool = False, strict: bool = True) -> LazyHandle:
    """Keep ``module``'s weights compressed until each submodule runs.

    A forward pre-hook decodes a submodule's own parameters and buffers just before its
    forward; with ``keep_resident=False`` a forward hook releases them right after, so a model
    runs layer by layer with only the current layer decoded. The module may be built on the
    ``meta`` device (no memory for weights at all). Results equal eager inference with the
    decoded weights. Weights a module uses without calling the submodule that owns them
    (e.g. ``F.linear(x, self.child.weight)``) are not covered: load those eagerly.

    Example:
        >>> handle = lazy_load(model, "model.rftp")      # doctest: +SKIP
        >>> output = model(inputs)                       # doctest: +SKIP
        >>> handle.remove()                              # doctest: +SKIP
    """
    reader, owned = _open(archive)
    handle = LazyHandle(reader, owned, keep_resident)
    try:
        names = set(reader.keys())
        managed: set[str] = set()
        for module_name, submodule in module.named_modules(remove_duplicate=False):
            prefix = f"{module_name}." if module_name else ""
            slots = [_Slot(submodule, attribute, full, is_parameter)
                     for attribute, full, is_parameter in _direct_tensors(submodule, prefix)
                     if full in names]
            if not slots or submodule in handle.slots:
                continue
            handle.slots[submodule] = slots
            managed.update(s.archive_name for s in slots)
        expected = set(module.state_dict().keys())
        missing = sorted(expected - names)
        unexpected = sorted(names - expected - set(non_persistent_buffers(module)))
        if strict and (missing or unexpected):
            raise LoadError(_mismatch_message(reader, missing, unexpected))
        stranded = [name for name, tensor in _all_tensors(module)
                    if tensor.device.type == "meta" and name not in managed]
        if stranded:
            raise LoadError(f"{len(stranded)} tensor(s) are on the meta device and not in "
                            f"{reader.path}: {', '.join(stranded[:5])}; build the model on the "
                            f"CPU (lazy_load releases its weights at once) or fill them first")
        for submodule in handle.slots:
            handle.release(submodule)
            handle.hooks.append(submodule.register_forward_pre_hook(handle.before_forward))
            handle.hooks.append(submodule.register_forward_hook(handle.after_forward))
    except BaseException:
        for hook in handle.hooks:
            hook.remove()
        if owned:
            reader.close()
        raise
    return handle

