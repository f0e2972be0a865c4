"""``dq``: dependent scalar quantization — a trellis of 4 to 256 states (256 in the ``dq``
profile) over two interleaved quantizers, as in VVC (4 states) and NNCodec (8), chosen by a
Viterbi search (in rftpack's C extension where it is built, else compiled with numba when it
is installed, ``pip install rftpack[fast]``, else vectorised in numpy; the indices are the
same). A decoder replays the states (in the C extension, numba or numpy).

    Q0 reconstructs 2k·Δ, Q1 reconstructs (2k − sgn k)·Δ; the state picks the quantizer
    (quantizer[state]) and moves by each index's parity: next = trans[state][k & 1].

The union of both quantizers is a grid of step Δ, but each index only has to tell apart the
levels of one quantizer (step 2Δ): trellis-coded quantization. At equal rate on MiniLM, 4
states gain about 0.9 dB over plain rounding, 8 states (NNCodec's table) 0.08–0.12 dB more,
and Ungerboeck's larger trellises more again: over 8 states, 32 gain 0.12–0.13 dB, 64
0.16–0.20 and 256 (the ``dq`` profile's) 0.24–0.30, each doubling from 64 on costing the
compiled search about 1.4× the time (per million weights on one thread, numba's: 8 states
0.022 s, 64 0.032 s, 256 0.065 s; the C search's: 8 states 0.006 s, 64 0.007 s, 256 0.014 s).
The encoder minimises squared error + λ·bits along chains of ``chain`` weights (each
starting in state 0); the decoder replays the states, which is cheap and exact, whatever
their number.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rftpack import native, parallel
from rftpack.errors import FormatError, StageError
from rftpack.stages.base import Codes
from rftpack.stages.scalar import (
    MAX_CODE,
    RowSteps,
    SteppedQuantizer,
    narrowed,
    unzigzag,
    zigzag,
)

#: state transitions [state][parity] and each state's quantizer, per number of states
TRANS = np.array([[0, 2], [2, 0], [1, 3], [3, 1]], dtype=np.int16)

#: Ungerboeck's parity-check polynomials (h0, h1), octal, of his best trellis codes for
#: amplitude (one-dimensional) signals with 2^ν states (ν = 4 … 8), as used by trellis-coded
#: quantization. In :func:`ungerboeck_trellis`'s form, VVC's 4-state table below is (5, 2)
#: with states 1 and 2 swapped and NNCodec's 8-state table is (17, 04) exactly
UNGERBOECK = {16: (0o23, 0o04), 32: (0o45, 0o10), 64: (0o103, 0o024), 128: (0o235, 0o126),
              256: (0o515, 0o362)}


def ungerboeck_trellis(h0: int, h1: int) -> tuple[np.ndarray, np.ndarray]:
    """(transitions [state][parity], quantizer [state]) of the trellis code with parity-check
    polynomials ``h0``, ``h1`` in observer form: state bit i is register r_{i+1}, the state's
    quantizer is r_1, the parity p of the index is the code's input, and

        r_i ← r_{i+1} ⊕ h0_i·r_1 ⊕ h1_i·p   (i < ν),    r_ν ← h0_ν·r_1 ⊕ h1_ν·p

    >>> trans, quantizer = ungerboeck_trellis(0o5, 0o2)
    >>> trans.tolist(), quantizer.tolist()
    ([[0, 1], [2, 3], [1, 0], [3, 2]], [0, 1, 0, 1])
    """
    nu = h0.bit_length() - 1
    states = 1 << nu
    trans = np.zeros((states, 2), np.int16)
    quantizer = np.zeros(states, np.int16)
    for state in range(states):
        r1 = state & 1
        quantizer[state] = r1
        for parity in (0, 1):
            nxt = 0
            for i in range(1, nu + 1):
                above = (state >> i) & 1 if i < nu else 0
                bit = above ^ (((h0 >> i) & 1) & r1) ^ (((h1 >> i) & 1) & parity)
                nxt |= bit << (i - 1)
            trans[state, parity] = nxt
    return trans, quantizer


TRELLISES = {
    4: (TRANS, np.array([0, 0, 1, 1], np.int16)),
    8: (np.array([[0, 2], [7, 5], [1, 3], [6, 4], [2, 0], [5, 7], [3, 1], [4, 6]], np.int16),
        np.array([0, 1, 0, 1, 0, 1, 0, 1], np.int16)),
    **{states: ungerboeck_trellis(*polynomials) for states, polynomials in UNGERBOECK.items()},
}


def _edges(states: int) -> np.ndarray:
    """(states × 5): into each state from (A, its parity) or (B, its parity), A the lower
    state, and the quantizer both use (every state of these trellises has two inputs from
    states of one quantizer)."""
    trans, quantizer = TRELLISES[states]
    into: dict[int, list[tuple[int, int]]] = {s: [] for s in range(states)}
    for state in range(states):
        for parity in (0, 1):
            into[int(trans[state, parity])].append((state, parity))
    rows = []
    for s in range(states):
        (sa, pa), (sb, pb) = sorted(into[s])
        rows.append([sa, pa, sb, pb, int(quantizer[sa])])
    return np.array(rows, np.int64)


EDGES = {states: _edges(states) for states in TRELLISES}


def _padded(x: np.ndarray, chain: int, dtype: type) -> np.ndarray:
    """(chains, chain) copy of ``x`` in its own order, the last chain zero-padded."""
    count = -(-x.shape[0] // chain) if x.shape[0] else 0
    padded = np.zeros(count * chain, dtype)
    padded[: x.shape[0]] = x
    return padded.reshape(count, chain)


def _chains(x: np.ndarray, chain: int) -> np.ndarray:
    """(chain, C) view-copy: column c is weights [c·chain, (c+1)·chain), zero-padded."""
    return np.ascontiguousarray(_padded(x, chain, np.float64).T)


def _rate_table(scaled: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Bits of |k| (plus a sign bit), from rounding at the single-quantizer step 2Δ."""
    return _bits_of(np.rint(scaled / 2.0), weights)


def _bits_of(k: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Bits of each |k| (plus a sign bit) by the histogram of indices ``k``, each counted
    ``weights`` times when given (the share of a block that a sampled value stands for)."""
    index = np.abs(k).astype(np.int64)
    if weights is None:
        counts = np.bincount(index, minlength=2).astype(np.float64)
    else:  # in units of an average share, so that the prior below weighs as much
        counts = np.bincount(index, weights=weights, minlength=2) / float(np.mean(weights))
    counts += 0.5
    bits = -np.log2(counts / counts.sum()) + (np.arange(counts.shape[0]) > 0)
    return np.append(bits, bits[-1] + 2.0)  # anything larger: expensive


#: the search's rate table is refitted to what a first search over a strided sample of
#: about this many of the block's values chose (the trellis picks other indices than
#: rounding does): on MiniLM at 4.9 / 3.4 bpw +0.007 / +0.016 dB at equal rate. A fixed
#: size, not a fraction: rate control's estimate, which quantizes a sample of each block,
#: then refits from as many values as the block itself does
REFIT_SAMPLE = 1 << 14
#: the refit's search runs chains of at most this length: REFIT_SAMPLE values then fill the
#: compiled search's 32 lanes (in chains of 1024 they left half of them empty, and rate
#: control, which refits at every step it tries, spent ~0.7 s more on MiniLM); the statistics
#: of the indices do not depend on it (MiniLM's dq rows moved by < 0.001 dB)
REFIT_CHAIN = 512


def refitted_rates(scaled: np.ndarray, lam: float, chain: int, states: int,
                   weights: np.ndarray | None = None) -> np.ndarray:
    """The rate table for the search over ``scaled``: rounding's, refitted to the indices a
    search with it chooses on REFIT_SAMPLE values (strided, so that the sample spans the
    block's regions, e.g. the rows of a table of unequal scales; the whole of smaller blocks).

    >>> x = np.random.default_rng(0).laplace(size=1 << 14) * 3
    >>> _rate_table(x)[:3].round(2).tolist()      # bits of |k| = 0, 1, 2 by rounding
    [1.81, 2.53, 3.5]
    >>> refitted_rates(x, 0.25, 256, 8)[:3].round(2).tolist()   # the trellis uses 0 less
    [2.21, 2.46, 3.3]
    """
    rates = _rate_table(scaled, weights)
    stride = max(1, scaled.shape[0] // REFIT_SAMPLE)
    return _bits_of(viterbi(scaled[::stride], lam, rates, min(chain, REFIT_CHAIN), states),
                    None if weights is None else weights[::stride])


def _index(k: np.ndarray, top: int) -> np.ndarray:
    return np.minimum(np.abs(k), top).astype(np.intp)


def _compiled(name: str) -> Callable[..., np.ndarray] | None:
    """numba's compiled function ``name`` when numba is installed and RFTPACK_NO_JIT is not
    set."""
    if os.environ.get("RFTPACK_NO_JIT"):
        return None
    try:
        from rftpack.stages import _dq_jit
    except Exception:  # noqa: BLE001 - not installed, or numba cannot work here: use numpy
        return None
    return getattr(_dq_jit, name)


def viterbi(scaled: np.ndarray, lam: float, rates: np.ndarray, chain: int,
            states: int = 4) -> np.ndarray:
    """Indices k minimising Σ (x/Δ − level)² + lam·bits(k), per chain; ``scaled`` = x / Δ.
    In the C extension where it is built (:func:`rftpack.native.dq_viterbi`), else compiled
    with numba when it is installed, else vectorised over chains in numpy: the same indices
    every way."""
    n = scaled.shape[0]
    rates = np.ascontiguousarray(rates, np.float64)
    if native.available() and n:
        try:
            return _search_split(native.dq_viterbi, native.viterbi_lanes(), scaled, lam,
                                 rates, chain, states)
        except OverflowError:  # a weight beyond what the C search takes: numba or numpy's
            pass
    compiled = _compiled("viterbi_chains")
    if compiled is not None:
        from rftpack.stages._dq_jit import LANES
        return _search_split(compiled, LANES, scaled, lam, rates, chain, states)
    xs = _chains(scaled, chain)
    # Bounded memory: the traceback tables hold chain × states entries per chain.
    group = max(1, NUMPY_TRACEBACK_ENTRIES // (chain * states))
    costs = search_costs(lam, rates, states)
    out = np.concatenate([_viterbi_numpy(xs[:, c:c + group], lam, rates, EDGES[states], *costs)
                          for c in range(0, xs.shape[1], group)], axis=1) if xs.size else \
        np.zeros(xs.shape, np.int64)
    return out.T.reshape(-1)[:n]


def _search_split(search: Callable[..., np.ndarray], lanes: int, scaled: np.ndarray,
                  lam: float, rates: np.ndarray, chain: int, states: int) -> np.ndarray:
    """A compiled ``search(chains, lam, rates, edges, scale, cap, start)`` over the chains of
    ``scaled``, in parts of whole groups of ``lanes`` chains, on several threads when
    allowed."""
    padded = _padded(scaled, chain, np.float64)
    groups = max(1, min(parallel.threads(), padded.shape[0] // lanes))
    cuts = [lanes * (padded.shape[0] // lanes * i // groups) for i in range(groups)]
    parts = [padded[a:b] for a, b in zip(cuts, cuts[1:] + [padded.shape[0]], strict=True)]
    costs = search_costs(lam, rates, states)
    k = parallel.run_split(
        lambda part: search(part, float(lam), rates, EDGES[states], *costs), parts)
    return np.concatenate(k).reshape(-1)[:scaled.shape[0]]


#: the largest lam a dq stage takes (beyond it bits outweigh any error: every index is 0;
#: and lam × the rates' range must stay finite for search_costs)
MAX_LAM = 1e6

#: the largest spread of path costs the searches allow (below 2**15, see search_costs)
COST_SPREAD = (1 << 14) - 1


def search_costs(lam: float, rates: np.ndarray, states: int) -> tuple[float, int, int]:
    """(scale, cap, start) of the searches' path costs, which are 16-bit integers in units of
    1/scale step² (numpy, numba and C add and compare the same integers: the same indices).

    A step's four candidate costs enter as their excess over the cheapest, times ``scale``,
    rounded half to even and capped at ``cap``. Every state of these trellises reaches every
    other in exactly depth = log2(states) steps, so all states' costs lie within depth × cap
    ≤ COST_SPREAD of the lowest: the costs may wrap around 2**16, and the sign of a 16-bit
    difference still says which is lower, so they are never renormalised. A candidate's
    excess is at most 4 + lam × (highest − lowest rate) (its squared error is at most 4
    step²), so ``scale`` = cap ÷ that never caps a cost. States other than 0 start at
    ``start``, above every path from state 0 in its first depth steps, and below 2**15 with
    what they add in them.

    >>> scale, cap, start = search_costs(0.3, np.array([1.5, 2.5, 12.0]), 256)
    >>> round(scale, 1), cap, start      # 2047 / (4 + 0.3 × (12 − 1.5))
    (286.3, 2047, 16377)
    """
    depth = max(1, states.bit_length() - 1)
    cap = COST_SPREAD // depth
    bound = 4.0 + lam * (float(np.max(rates)) - float(np.min(rates)))
    if not (lam >= 0 and math.isfinite(bound)):  # (NaN fails both)
        raise ValueError("dq search: rates and lam must be finite, lam ≥ 0")
    return cap / bound, cap, depth * cap + 1


#: traceback entries (states × steps × chains) the numpy search keeps at once (~1 byte each)
NUMPY_TRACEBACK_ENTRIES = 1 << 26


def _viterbi_numpy(xs: np.ndarray, lam: float, rates: np.ndarray, edges: np.ndarray,
                   scale: float, cap: int, start: int, cost_dtype: type = np.int16
                   ) -> np.ndarray:
    """Indices (steps × chains) for ``xs`` (steps × chains), all chains a step at a time;
    integer path costs as :func:`search_costs` says (``cost_dtype`` int64: the same sums,
    never wrapping around, for tests of the argument)."""
    steps, width = xs.shape
    states = edges.shape[0]
    cost = np.full((states, width), start, cost_dtype)  # (numpy's int16 arrays wrap around)
    cost[0] = 0
    top = rates.shape[0] - 1
    # Into state s from A = sa[s] with candidate ja[s], or from B = sb[s] with jb[s]; a
    # candidate is 2·quantizer + parity, one of the step's four best indices.
    sa, sb = edges[:, 0], edges[:, 2]
    ja, jb = 2 * edges[:, 4] + edges[:, 1], 2 * edges[:, 4] + edges[:, 3]
    indices = np.zeros((steps, 4, width), np.int32)     # the four candidates' k at each step
    came = np.zeros((steps, states, width), np.bool_)   # into each state from B (else A)

    def candidates(levels_even, k_even, levels_odd, k_odd, x):
        # Best (cost, k) among the even-parity and the odd-parity indices of one quantizer.
        j_even = (x - levels_even) ** 2 + lam * rates[_index(k_even, top)]
        j_zero = x * x + lam * rates[0]
        zero_better = j_zero < j_even
        j_even = np.where(zero_better, j_zero, j_even)
        k_even = np.where(zero_better, 0, k_even)
        j_odd = (x - levels_odd) ** 2 + lam * rates[_index(k_odd, top)]
        return j_even, k_even, j_odd, k_odd

    for t in range(steps):
        x = xs[t]
        # Q0: levels 2k. Nearest index and its neighbour toward x have opposite parities.
        a = np.rint(x / 2.0)
        b = a + np.where(x >= 2.0 * a, 1.0, -1.0)
        a_even = (a.astype(np.int64) & 1) == 0
        k0e, k0o = np.where(a_even, a, b), np.where(a_even, b, a)
        q0 = candidates(2.0 * k0e, k0e, 2.0 * k0o, k0o, x)
        # Q1: levels 0, ±1, ±3, ±5 …; level L = 2k − sgn k. Take the two odd levels around x.
        o = 2.0 * np.floor((x - 1.0) / 2.0) + 1.0
        levels = (o, o + 2.0)
        ks = [np.where(lv > 0, (lv + 1.0) / 2.0, (lv - 1.0) / 2.0) for lv in levels]
        first_even = (ks[0].astype(np.int64) & 1) == 0
        # Between −1 and +1 both neighbours have odd k: the even choice is then 0 alone.
        straddles = o == -1.0
        nearer_first = np.abs(x - levels[0]) <= np.abs(x - levels[1])
        k1e = np.where(first_even, ks[0], ks[1])
        k1o = np.where(straddles, np.where(nearer_first, ks[0], ks[1]),
                       np.where(first_even, ks[1], ks[0]))
        l1e = np.where(straddles, np.inf, np.where(first_even, levels[0], levels[1]))
        l1o = np.where(straddles, np.where(nearer_first, levels[0], levels[1]),
                       np.where(first_even, levels[1], levels[0]))
        q1 = candidates(l1e, k1e, l1o, k1o, x)
        j = np.stack([q0[0], q0[2], q1[0], q1[2]])
        j = np.minimum(np.rint((j - j.min(axis=0)) * scale), cap).astype(cost_dtype)
        indices[t] = np.stack([q0[1], q0[3], q1[1], q1[3]])
        via_a, via_b = cost[sa] + j[ja], cost[sb] + j[jb]
        from_b = via_b - via_a < 0
        came[t] = from_b
        cost = np.where(from_b, via_b, via_a)
    # Trace back from the best final state of every chain (the first of equal costs).
    state = np.argmin(cost - cost[0], axis=0)
    out = np.zeros((steps, width), np.int64)
    columns = np.arange(width)
    for t in range(steps - 1, -1, -1):
        from_b = came[t, state, columns]
        out[t] = indices[t, np.where(from_b, jb[state], ja[state]), columns]
        state = np.where(from_b, sb[state], sa[state])
    return out


#: the decoder replays the state machine this many indices at a time (by table lookup)
REPLAY_GROUP = 8


@functools.cache
def _group_tables(states: int) -> tuple[np.ndarray, np.ndarray]:
    """(state after, quantizer bits) for every state and every REPLAY_GROUP parities in a row
    (bit j of the pattern: the parity of the j-th index): the replay then steps a group at a
    time, and the quantizer of each index comes from bit j of the second table."""
    trans, quantizer = TRELLISES[states]
    patterns = np.arange(1 << REPLAY_GROUP)
    state = np.repeat(np.arange(states), patterns.shape[0]).reshape(states, -1)
    bits = np.zeros(state.shape, np.uint8)
    for j in range(REPLAY_GROUP):
        bits |= (quantizer[state] << j).astype(np.uint8)
        state = trans[state, (patterns >> j) & 1]
    return state.astype(np.intp), bits


@functools.cache
def _replay_tables(states: int) -> tuple[np.ndarray, np.ndarray]:
    """(transitions, quantizer of each state) as the compiled replay takes them."""
    trans, quantizer = TRELLISES[states]
    return trans.astype(np.intp), quantizer.astype(np.intp)


def replay(k: np.ndarray, chain: int, states: int = 4) -> np.ndarray:
    """Reconstruction levels (in units of Δ) of indices ``k``, replaying the state machine
    (:func:`decode_symbols` on their zig-zag symbols).

    >>> replay(np.array([1, 2, -1, 0, 3]), chain=5, states=4).tolist()
    [2.0, 3.0, -2.0, 0.0, 6.0]
    """
    k = k.astype(np.int64)
    symbols = (k << 1) ^ (k >> 63)  # zig-zag, not narrowed to 16 bits
    alphabet = int(symbols.max()) + 1 if symbols.size else 1
    return decode_symbols(symbols, alphabet, chain, states, 1.0)


def _replay_values(alphabet: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """(parity of each symbol, value of (symbol s, quantizer q) at index 2s + q: Q0 2k·Δ,
    Q1 (2k − sgn k)·Δ)."""
    k = unzigzag(np.arange(alphabet))
    parity = (k & 1).astype(np.uint8)
    return parity, (np.stack([2 * k, 2 * k - np.sign(k)], axis=1) * step).reshape(-1)


def decode_symbols_into(symbols: np.ndarray, alphabet: int, chain: int, states: int,
                        step: float, out: np.ndarray) -> bool:
    """:func:`decode_symbols` written straight into the float32 array ``out``, each value
    cast (and clipped to float32's range) as the decoder casts the float64 ones, where
    :mod:`rftpack.native` is built and every value is finite; False (nothing written)
    otherwise. It skips the float64 copy of the tensor and the passes over it.

    >>> s = zigzag(np.array([1, 2, -1, 0, 3]))
    >>> out = np.empty(5, np.float32)
    >>> not native.available() or (decode_symbols_into(s, 7, 5, 4, 0.5, out)
    ...                            and out.tolist() == [1.0, 1.5, -1.0, 0.0, 3.0])
    True
    """
    if not native.available() or out.dtype != np.float32:
        return False
    parity, values = _replay_values(alphabet, step)
    narrow = narrowed(values, out.dtype)
    if narrow is None:  # (a corrupt step): the general path says which value
        return False
    trans, quantizer = _replay_tables(states)
    try:
        native.dq_replay(symbols, chain, trans, quantizer, parity, narrow, out=out)
    except ValueError as exc:
        raise FormatError(str(exc)) from exc
    return True


def decode_symbols(symbols: np.ndarray, alphabet: int, chain: int, states: int,
                   step: float) -> np.ndarray:
    """Decoded values of zig-zag ``symbols``: each chain of ``chain`` replays the state
    machine REPLAY_GROUP indices at a time (two table lookups per group, vectorised over
    chains), with small tables in place of passes over the indices: each symbol's parity by
    lookup, eight parities to a byte (the group patterns), and each value by one lookup of
    (symbol, quantizer) in a table of reconstruction values × ``step``. Where it is built,
    :func:`rftpack.native.dq_replay` does the same in compiled code, else, where numba is
    loaded anyway, :func:`rftpack.stages._dq_jit.replay_chains`.

    >>> s = zigzag(np.array([1, 2, -1, 0, 3]))
    >>> decode_symbols(s, 7, chain=5, states=4, step=0.5).tolist()
    [1.0, 1.5, -1.0, 0.0, 3.0]
    """
    n = symbols.shape[0]
    if n == 0:
        return np.zeros(0, np.float64)
    parity, values = _replay_values(alphabet, step)
    if native.available():  # compiled at install time: the same values, ~8× faster
        trans, quantizer = _replay_tables(states)
        try:
            return native.dq_replay(symbols, chain, trans, quantizer, parity, values)
        except ValueError as exc:
            raise FormatError(str(exc)) from exc
    compiled = _compiled("replay_chains") if "numba" in sys.modules else None
    if compiled is not None:  # numba is loaded anyway (rans decoding): ~4× faster, same values
        if int(symbols.min()) < 0 or int(symbols.max()) >= alphabet:  # no bounds checks there
            raise FormatError(f"dq: a symbol lies outside the alphabet of {alphabet}")
        trans, quantizer = _replay_tables(states)
        return compiled(np.ascontiguousarray(symbols, np.int64), int(chain), trans, quantizer,
                        parity, values)
    group = REPLAY_GROUP
    width = -(-chain // group) * group
    count = -(-n // chain)
    parities = np.zeros((count, width), np.uint8)
    flat = parities[:, :chain]
    full = n // chain
    flat[:full] = parity[symbols[:full * chain]].reshape(full, chain)
    if full < count:
        flat[full, :n - full * chain] = parity[symbols[full * chain:]]
    patterns = np.packbits(parities, axis=1, bitorder="little")
    after, quantizer_bits = _group_tables(states)
    # Flat tables indexed by (state << REPLAY_GROUP) | pattern; the state is kept shifted.
    after_flat = (after << REPLAY_GROUP).reshape(-1)
    bits_flat = quantizer_bits.reshape(-1)
    columns = np.ascontiguousarray(patterns.T)
    bits = np.empty(columns.shape, np.uint8)
    at = np.zeros(count, np.intp)
    for g in range(columns.shape[0]):
        at |= columns[g]
        bits_flat.take(at, out=bits[g])
        after_flat.take(at, out=at)
    q1 = np.unpackbits(np.ascontiguousarray(bits.T), axis=1,
                       bitorder="little")[:, :chain].reshape(-1)[:n]
    index = np.left_shift(symbols, 1, dtype=np.int32 if alphabet < 1 << 30 else np.intp)
    index |= q1
    return values.take(index)


@dataclass(frozen=True)
class DependentQuantizer(SteppedQuantizer):
    """Dependent (trellis-coded) scalar quantization, 4 … 256 states (8 by default here, 256 in
    the ``dq`` profile), Viterbi encoder.

    Example:
        >>> q = DependentQuantizer(step=0.05)
        >>> x = np.random.default_rng(0).normal(size=1000) * 0.1
        >>> streams, side = q.quantize(x, [])
        >>> y = q.dequantize({"codes": streams["codes"].symbols}, side, 1000)
        >>> bool(np.max(np.abs(x - y)) < 2 * side["step"])
        True
    """

    id: ClassVar[str] = "dq"
    #: 2: the ``states`` parameter (format version 1 records have 4 states); 3: trellises of
    #: 16 to 256 states (records of 4 or 8 states still say 2); 4: row classes
    format_version: ClassVar[int] = 4
    index_step: ClassVar[float] = 2.0
    rel_step: float = 0.06
    # The defaults are what a record without the parameter means (version 2 writers' defaults);
    # the ``dq`` profile asks for 256 states and chains of 8192.
    #: each chain restarts in state 0. On MiniLM at 5 bpw with 64 states, 1024 gains 0.04 dB
    #: over 256 and 4096 0.01 dB more (256 states at 4.9 / 3.4 bpw: +0.013 / +0.017 dB), and
    #: 8192 +0.002 dB more at every rate, for 5 % more encode time (a 384 × 384 matrix has
    #: 18 chains for the search's 32 lanes); the decoder's replay takes the same time at any
    #: length, numpy's search (without numba) about as long at 4096 as at 1024 (it keeps
    #: 64 MB of traceback, NUMPY_TRACEBACK_ENTRIES)
    chain: int = 256
    lam: float = 0.25
    states: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.lam, int | float) and not isinstance(self.lam, bool)
                and 0 <= self.lam <= MAX_LAM):
            raise StageError(f"dq: lam must be a number in [0, {MAX_LAM:g}], got {self.lam!r}")
        if type(self.chain) is not int or not 1 <= self.chain <= 1 << 16:
            raise StageError(f"dq: chain must be an integer in [1, 65536], got {self.chain!r}")
        if type(self.states) is not int or self.states not in TRELLISES:
            raise StageError(f"dq: states must be one of {', '.join(map(str, TRELLISES))}, "
                             f"got {self.states!r}")

    def min_step(self, peak: float) -> float:
        # |x|/Δ ≤ 2·(MAX_CODE − 2) keeps |k| ≤ |x|/(2Δ) + 1.5 < MAX_CODE (the search looks one
        # index beyond the nearest): codes within the 16-bit alphabet
        return peak / (2.0 * (MAX_CODE - 2))

    def record_format_version(self) -> int:
        return 4 if self.row_classes > 1 else 2 if self.states <= 8 else 3

    def for_format_version(self, version: int) -> DependentQuantizer:
        # version 1 knew one trellis, and its records do not name it
        return self if version >= 2 else dataclasses.replace(self, states=4)

    def quantize(self, coefficients: np.ndarray, bands: list[tuple[int, int]],
                 rows: RowSteps | None = None, shares: np.ndarray | None = None
                 ) -> tuple[dict[str, Codes], dict[str, Any]]:
        """Codes of a block. ``shares``: how many weights each value stands for, when the
        values are a sample (rate control's estimate) whose mix differs from the block's."""
        x, row_stream, row_side = self.scaled_input(
            np.real(coefficients).astype(np.float64, copy=False), rows)
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        step = max(self.block_step(x), self.min_step(peak), np.finfo(np.float64).tiny)
        scaled = x / step
        k = np.zeros(0, np.int64)
        if x.size:
            rates = refitted_rates(scaled, self.lam, self.chain, self.states, shares)
            k = viterbi(scaled, self.lam, rates, self.chain, self.states)
        symbols = zigzag(k)
        alphabet = int(symbols.max()) + 1 if symbols.size else 1
        code_streams, class_side = self.coded_streams(x, symbols, alphabet)
        return ({**code_streams, **row_stream},
                {"step": step, "alphabet": alphabet, **row_side, **class_side})

    def dequantize(self, streams: dict[str, np.ndarray], side: dict[str, Any], count: int,
                   refine: Any = None) -> np.ndarray:
        step, codes = self.checked_codes(streams, side, count)
        values = decode_symbols(codes, self.stream_alphabets(side)["codes"], self.chain,
                                self.states, step)
        multipliers = self.row_multipliers(streams, side, count)
        return values if multipliers is None else values * multipliers

    def dequantize_into(self, streams: dict[str, np.ndarray], side: dict[str, Any], count: int,
                        out: np.ndarray) -> bool:
        if "row_length" in side:  # row steps: the float64 values are scaled first
            return False
        step, codes = self.checked_codes(streams, side, count)
        return decode_symbols_into(codes, self.stream_alphabets(side)["codes"], self.chain,
                                   self.states, step, out)
