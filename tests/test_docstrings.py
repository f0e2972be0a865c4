"""Every example in rftpack's docstrings runs and prints what it says (examples that need a
model or a network carry ``# doctest: +SKIP``)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import rftpack

MODULES = sorted(info.name for info in pkgutil.walk_packages(rftpack.__path__, "rftpack.")
                 if not info.name.endswith("__main__"))  # (importing it runs the CLI)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if (error.name or "rftpack").startswith("rftpack"):
            raise
        pytest.skip(f"{name} needs {error.name}, which is optional and not installed")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
