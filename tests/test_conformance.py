"""Every built-in stage passes the conformance checks third-party plugins are held to."""

from __future__ import annotations

import pytest

from rftpack.plugins import Registry, new_manager
from rftpack.testing import check_stage

BUILTINS = sorted(Registry(new_manager(entry_points=False)).entries.values(),
                  key=lambda e: (e.kind, e.id))


@pytest.mark.parametrize("entry", BUILTINS, ids=lambda e: f"{e.kind}:{e.id}")
def test_builtin_stage_conforms(entry) -> None:
    stage = entry.cls(steps=50) if entry.kind == "predictor" else entry.cls()
    check_stage(stage)


def test_a_broken_coder_fails_conformance() -> None:
    import numpy as np

    from rftpack.stages.raw import RawCoder

    class Lossy(RawCoder):
        def decode(self, data, count, alphabet):
            return np.zeros(count, np.uint16)

    with pytest.raises(AssertionError, match="decode"):
        check_stage(Lossy())


def test_pipeline_refuses_a_coder_that_does_not_round_trip() -> None:
    from dataclasses import dataclass
    from typing import ClassVar

    import numpy as np

    from rftpack.codec import ExactPipeline, LossyPipeline, encode_exact, encode_lossy
    from rftpack.errors import StageError
    from rftpack.stages.base import Coder
    from rftpack.stages.identity import Identity
    from rftpack.stages.scalar import ScalarQuantizer

    @dataclass(frozen=True)
    class Forgetful(Coder):  # a "third-party" coder whose decode loses information
        id: ClassVar[str] = "acme.forgetful"

        def encode(self, symbols, alphabet):
            return np.asarray(symbols, np.uint16).tobytes()

        def decode(self, data, count, alphabet):
            return np.zeros(count, np.uint16)

    Forgetful.__module__ = "acme_codecs"
    x = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    with pytest.raises(StageError, match="acme.forgetful.*does not decode"):
        encode_lossy("w", x, LossyPipeline(Identity(), ScalarQuantizer(), Forgetful()))
    with pytest.raises(StageError, match="refusing"):
        encode_exact("ids", np.arange(10), ExactPipeline(Forgetful()))


def test_a_raising_stage_is_reported_with_the_tensor(tmp_path, monkeypatch) -> None:
    from dataclasses import dataclass
    from typing import ClassVar

    import numpy as np
    from safetensors.numpy import save_file

    import rftpack
    from rftpack.errors import StageError
    from rftpack.stages.identity import Identity

    @dataclass(frozen=True)
    class Broken(Identity):
        id: ClassVar[str] = "identity"  # stands in for a plugin transform that raises

        def forward(self, x):
            raise ValueError("boom")

    import rftpack.api as api

    source = tmp_path / "m.safetensors"
    save_file({"w": np.ones((64, 64), np.float32)}, str(source))
    original = api.build_stage

    def build(kind, config):
        return Broken() if kind == "transform" else original(kind, config)

    monkeypatch.setattr(api, "build_stage", build)
    with pytest.raises(StageError, match="tensor 'w'.*ValueError: boom"):
        rftpack.compress(source, tmp_path / "m.rftp", profile="scalar")
    assert not (tmp_path / "m.rftp").exists()
