"""One exception hierarchy for everything a user can cause.

Every message says what was wrong, where (file, tensor) and, where it helps, what to do.
The CLI prints ``str(error)`` on one line and exits non-zero.
"""

from __future__ import annotations


class RftpackError(Exception):
    """Base class of every error rftpack raises on purpose."""


class InputError(RftpackError):
    """The model given to ``compress`` cannot be read (missing, truncated, not a model)."""


class FormatError(RftpackError):
    """An archive, container or predictor file is malformed or inconsistent."""


class ChecksumError(FormatError):
    """Stored bytes do not match the SHA-256 recorded for them."""


class IncompleteArchiveError(FormatError):
    """The archive was not finished (no manifest / central directory): an interrupted run."""


class StageError(RftpackError):
    """A pipeline stage is misconfigured, missing, or returned something invalid."""


class UnknownStageError(StageError):
    """A container names a stage id that no installed plugin provides."""


class PluginError(RftpackError):
    """A plugin could not be loaded, or two plugins claim the same stage id."""


class OutputError(RftpackError):
    """The output path cannot be written (exists, not a directory, disk full, ...)."""


class ClosedArchiveError(RftpackError, ValueError):
    """An archive was used after ``close()`` (or after its ``with`` block ended)."""
