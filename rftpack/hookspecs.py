"""pluggy hook specifications: how a package contributes pipeline stages.

A plugin is a module (or object) with any of these functions, exposed through the
entry-point group ``rftpack``::

    # pyproject.toml of a third-party package
    [project.entry-points.rftpack]
    acme = "acme_rftpack.stages"

    # acme_rftpack/stages.py
    from rftpack.hookspecs import hookimpl

    @hookimpl
    def rftpack_transforms():
        return [AcmeWavelet]        # Transform subclasses with id "acme.wavelet"

Ids of third-party stages are namespaced (``acme.wavelet``); un-namespaced ids are reserved
for rftpack's built-ins.

A plugin module declares the plugin API it was written for with ``RFTPACK_PLUGIN_API = 1``
(assumed 1 when absent); rftpack refuses, with a clear message, a plugin that needs a newer
API than it provides.
"""

from __future__ import annotations

import pluggy

PROJECT = "rftpack"
#: Version of the plugin API (hooks + stage base classes) this rftpack provides.
API_VERSION = 1
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def rftpack_transforms() -> list[type]:
    """Return Transform subclasses. Example: ``return [RFT, Identity]``."""


@hookspec
def rftpack_quantizers() -> list[type]:
    """Return Quantizer subclasses. Example: ``return [PolarQuantizer]``."""


@hookspec
def rftpack_coders() -> list[type]:
    """Return Coder subclasses. Example: ``return [RansCoder, ZstdCoder, RawCoder]``."""


@hookspec
def rftpack_predictors() -> list[type]:
    """Return Predictor subclasses. Example: ``return [MLPPredictor]``."""
