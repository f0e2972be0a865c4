"""Every built-in stage passes the conformance checks third-party plugins are held to."""

from __future__ import annotations

import pytest

from rftpack.plugins import Registry, new_manager
from rftpack.testing import check_stage

BUILTINS = sorted(Registry(new_manager(entry_points=False)).entries.values(),
                  key=lambda e: (e.kind, e.id))


@pytest.mark.parametrize("entry", [e for e in BUILTINS if e.kind != "predictor"],
                         ids=lambda e: f"{e.kind}:{e.id}")
def test_builtin_stage_conforms(entry) -> None:
    check_stage(entry.cls())


def test_a_broken_coder_fails_conformance() -> None:
    import numpy as np

    from rftpack.stages.raw import RawCoder

    class Lossy(RawCoder):
        def decode(self, data, count, alphabet):
            return np.zeros(count, np.uint16)

    with pytest.raises(AssertionError, match="decode"):
        check_stage(Lossy())
