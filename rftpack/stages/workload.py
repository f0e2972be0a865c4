"""How much the job under way will decode: a hint for decoders whose per-process choice
depends on it (the ``rans`` coder's compiled decoder, and with it ``dq``'s compiled replay,
cost numba's start-up, ~0.75 s, and pay only over tens of millions of weights).

A whole-archive decode (``extract``, ``verify``, loading a whole state dict) plans its lossy
weights up front, so that choice is made once for the job instead of midway through it.
The plan is per thread (a context variable).

Example:
    >>> with planned(40_000_000):
    ...     planned_symbols()
    40000000
    >>> with planned(20_000_000, coded_bits=160_000_000, replays=20_000_000):
    ...     round(current_plan().compiled_saving(), 2)   # seconds
    0.84
    >>> planned_symbols() is None
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

#: what the compiled decoders save, in ns, against constriction and numpy's replay (measured
#: on MiniLM's dq archives: constriction takes 23 ns per symbol at 3.4 bits and 36 at 8.0,
#: the compiled rANS decoder 5 at both; numpy's replay 15.5 ns per index, the compiled 4.9)
RANS_NS_PER_WEIGHT = 8.0
RANS_NS_PER_BIT = 2.9
REPLAY_NS = 10.6


@dataclass(frozen=True)
class Plan:
    """A job's lossy weights, their coded bits, and how many of them are ``dq`` indices
    (replayed through its state machine after rANS decoding)."""

    weights: int
    coded_bits: int = 0
    replays: int = 0

    def compiled_saving(self) -> float:
        """Seconds the compiled decoders would save on this job (numba's start-up aside)."""
        return 1e-9 * (RANS_NS_PER_WEIGHT * self.weights + RANS_NS_PER_BIT * self.coded_bits
                       + REPLAY_NS * self.replays)


_planned: ContextVar[Plan | None] = ContextVar("rftpack_planned_decoding", default=None)


@contextmanager
def planned(weights: int, coded_bits: int = 0, replays: int = 0) -> Iterator[None]:
    """Within the block, about ``weights`` lossy weights (``coded_bits`` bits of payload) will
    be decoded, ``replays`` of them ``dq`` indices."""
    token = _planned.set(Plan(max(0, int(weights)), max(0, int(coded_bits)),
                              max(0, int(replays))))
    try:
        yield
    finally:
        _planned.reset(token)


def current_plan() -> Plan | None:
    """The innermost :func:`planned` block's plan, or ``None`` outside one."""
    return _planned.get()


def planned_symbols() -> int | None:
    """The lossy weights planned by the innermost :func:`planned` block, or ``None``."""
    plan = _planned.get()
    return None if plan is None else plan.weights
