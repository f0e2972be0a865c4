"""Check an archive end to end and report every problem, not just the first."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rftpack.archive.reader import Archive
from rftpack.archive.storage import MANIFEST
from rftpack.dtypes import dtype_from_name
from rftpack.errors import RftpackError
from rftpack.format.schema import validate


@dataclass
class VerifyReport:
    """Result of :func:`verify_archive`: checked tensors and the problems found."""

    path: str
    tensors_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "ok": self.ok, "tensors_checked": self.tensors_checked,
                "problems": self.problems}


def verify_archive(path: str | os.PathLike, progress=None) -> VerifyReport:
    """Verify checksums, schemas and a full decode of every tensor.

    Example:
        >>> report = verify_archive("model.rftp")   # doctest: +SKIP
        >>> report.ok, report.problems              # doctest: +SKIP
        (True, [])
    """
    report = VerifyReport(str(path))
    try:
        archive = Archive(path)
    except RftpackError as exc:
        report.problems.append(str(exc))
        return report
    with archive:
        try:
            validate("manifest", archive.manifest, f"{path}/{MANIFEST}")
        except RftpackError as exc:
            report.problems.append(str(exc))
        if archive.manifest.get("predictor"):
            try:
                archive.predictor()
            except RftpackError as exc:
                report.problems.append(f"predictor: {exc}")
        names = archive.keys()
        with archive.plan_decoding(names):
            _check_tensors(archive, names, report, progress)
    return report


def _check_tensors(archive: Archive, names: list[str], report: VerifyReport,
                   progress: Any) -> None:
    for name in (progress(names) if progress else names):
        report.tensors_checked += 1
        try:
            array = archive.get_tensor(name)
            _check_against_manifest(archive.entry(name), array, report)
        except RftpackError as exc:
            report.problems.append(f"tensor {name!r}: {exc}")


def _check_against_manifest(entry: dict[str, Any], array: np.ndarray,
                            report: VerifyReport) -> None:
    name = entry["tensor_name"]
    if "shape" in entry and list(array.shape) != list(entry["shape"]):
        report.problems.append(f"tensor {name!r}: decoded shape {list(array.shape)} differs "
                               f"from the manifest's {entry['shape']}")
    if "dtype" in entry and array.dtype != dtype_from_name(entry["dtype"]):
        report.problems.append(f"tensor {name!r}: decoded dtype {array.dtype} differs from the "
                               f"manifest's {entry['dtype']}")
    if entry.get("mode") == "exact" or array.dtype.kind not in "fV":
        return
    finite = np.isfinite(array.astype(np.float64)) if array.size else np.ones(0, bool)
    if entry.get("mode") == "hybrid" and array.size and not math.isfinite(
            float(np.sum(array.astype(np.float64)[finite]))):
        report.problems.append(f"tensor {name!r}: decoded values overflow")
