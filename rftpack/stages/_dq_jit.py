"""The ``dq`` encoder's Viterbi search compiled with numba (optional: ``pip install
rftpack[fast]``), and the decoder's replay (decoders never need numba: where it is not loaded
anyway, for the ``rans`` coder's compiled decoder, the replay is table lookups in numpy).

Same search, same arithmetic and the same tie-breaking as the numpy version in
:mod:`rftpack.stages.dq`, so both give identical indices (the tests check it); this one walks
LANES chains side by side in compiled code, the add-compare-select over the states vectorised
across them, instead of all chains a step at a time in numpy: the search is ~25× faster
than numpy's (per million weights on one thread here, with int16 path costs: 64 states
0.032 s, 256 states 0.065 s, against 1.7 s in numpy; one chain at a time with float64 costs,
as once, took 0.23 s at 64 states). It
releases the GIL, so :func:`rftpack.stages.dq.viterbi` runs groups of chains on several
threads. Imported only when ``dq`` encodes.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def _candidates(x, level_even, k_even, level_odd, k_odd, lam, rates, top):
    """Best (cost, k) among one quantizer's even-parity indices (or 0) and its odd one."""
    j_even = (x - level_even) ** 2 + lam * rates[min(abs(int(k_even)), top)]
    j_zero = x * x + lam * rates[0]
    if j_zero < j_even:
        j_even, k_even = j_zero, 0.0
    j_odd = (x - level_odd) ** 2 + lam * rates[min(abs(int(k_odd)), top)]
    return j_even, k_even, j_odd, k_odd


#: chains searched side by side: the add-compare-select over the states then runs on LANES
#: costs at once (SIMD), the traceback bits of a state and step packed into one 32-bit
#: integer (at most 32). 32 lanes: the search at 256 states took 0.12 s per million weights
#: here, 0.14 with 16 (float32 costs, then)
LANES = 32


@numba.njit(cache=True, inline="always")
def _step_candidates(x, lam, rates, top, j, k, w):
    """The step's four best (cost, k) — Q0 even, Q0 odd, Q1 even, Q1 odd parity — for the
    weight ``x`` of lane ``w``, into ``j[:, w]`` and ``k[:, w]``."""
    # Q0: levels 2k. The nearest index and its neighbour toward x.
    a = np.rint(x / 2.0)
    b = a + (1.0 if x >= 2.0 * a else -1.0)
    if (int(a) & 1) == 0:
        k0e, k0o = a, b
    else:
        k0e, k0o = b, a
    j[0, w], k[0, w], j[1, w], k[1, w] = _candidates(x, 2.0 * k0e, k0e, 2.0 * k0o, k0o,
                                                     lam, rates, top)
    # Q1: levels 0, ±1, ±3 …; the two odd levels around x.
    o = 2.0 * np.floor((x - 1.0) / 2.0) + 1.0
    lv0, lv1 = o, o + 2.0
    ks0 = (lv0 + 1.0) / 2.0 if lv0 > 0 else (lv0 - 1.0) / 2.0
    ks1 = (lv1 + 1.0) / 2.0 if lv1 > 0 else (lv1 - 1.0) / 2.0
    first_even = (int(ks0) & 1) == 0
    if o == -1.0:  # between −1 and +1: the even choice is 0 alone
        nearer_first = abs(x - lv0) <= abs(x - lv1)
        k1e = ks0 if first_even else ks1
        k1o = ks0 if nearer_first else ks1
        l1e = np.inf
        l1o = lv0 if nearer_first else lv1
    else:
        k1e, k1o = (ks0, ks1) if first_even else (ks1, ks0)
        l1e, l1o = (lv0, lv1) if first_even else (lv1, lv0)
    j[2, w], k[2, w], j[3, w], k[3, w] = _candidates(x, l1e, k1e, l1o, k1o, lam, rates, top)


@numba.njit(cache=True, inline="always")
def _integer_costs(j, jq, scale, cap):
    """The candidates' costs ``j`` (4 × LANES) as the search adds them (:func:`rftpack.stages.
    dq.search_costs`): each one's excess over its lane's cheapest, times ``scale``, rounded
    and capped, into the int16 ``jq``."""
    for w in range(j.shape[1]):
        low = min(min(j[0, w], j[1, w]), min(j[2, w], j[3, w]))
        for c in range(4):
            jq[c, w] = np.int16(min(np.rint((j[c, w] - low) * scale), cap))


@numba.njit(cache=True, nogil=True, inline="never")
def _add_compare_select(cost, new, j, sa, sb, ja, jb, came_row, lanes):
    """One step of every state for ``lanes`` chains: into state s the cheaper of A and B
    (A on ties), and bit w of ``came_row[s]`` set where lane w came from B; int16 costs,
    wrapping around, compared by the sign of their difference. A function of its own, with
    the lane count a run-time value: so LLVM vectorises the loop over the lanes (with the
    count a compile-time constant it unrolled it into scalar code instead: the whole search
    took 1.6–1.8× as long)."""
    for ns in range(sa.shape[0]):
        a, b, ia, ib = sa[ns], sb[ns], ja[ns], jb[ns]
        bits = np.uint32(0)
        for w in range(lanes):
            via_a = np.int16(cost[a, w] + j[ia, w])
            via_b = np.int16(cost[b, w] + j[ib, w])
            from_b = np.int16(via_b - via_a) < 0
            new[ns, w] = via_b if from_b else via_a
            bits |= np.uint32(from_b) << np.uint32(w)
        came_row[ns] = bits


@numba.njit(cache=True, nogil=True)
def viterbi_chains(xs: np.ndarray, lam: float, rates: np.ndarray, edges: np.ndarray,
                   scale: float, cap: int, start: int) -> np.ndarray:
    """Indices for ``xs`` (chains × steps, in units of Δ), each chain from state 0. ``edges``
    (states × 5): into state s from (A, its parity) or (B, its parity), with quantizer q;
    A wins ties; path costs as :func:`rftpack.stages.dq.search_costs` says. LANES chains at
    a time (the last group padded with zero weights, whose indices are dropped): each
    chain's search is the same as alone, so are its indices."""
    width, steps = xs.shape
    states = edges.shape[0]
    top = rates.shape[0] - 1
    out = np.zeros((width, steps), np.int64)
    # Into state s from A = sa[s] with candidate ja[s], or from B = sb[s] with jb[s]; a
    # candidate is 2·quantizer + parity, one of the step's four best indices (kept per step,
    # so the traceback needs one bit per state and step: bit w of came[t, s], lane w).
    sa, sb = edges[:, 0].copy(), edges[:, 2].copy()
    ja, jb = 2 * edges[:, 4] + edges[:, 1], 2 * edges[:, 4] + edges[:, 3]
    came = np.zeros((steps, states), np.uint32)
    indices = np.zeros((steps, 4, LANES))
    cost = np.empty((states, LANES), np.int16)
    new = np.empty((states, LANES), np.int16)
    j = np.empty((4, LANES))
    jq = np.empty((4, LANES), np.int16)
    k = np.empty((4, LANES))
    state = np.zeros(LANES, np.int64)
    for first in range(0, width, LANES):
        lanes = min(LANES, width - first)
        cost[:, :] = start
        cost[0, :] = 0
        for t in range(steps):
            for w in range(LANES):
                _step_candidates(xs[first + w, t] if w < lanes else 0.0, lam, rates, top,
                                 j, k, w)
            indices[t, :, :] = k
            _integer_costs(j, jq, scale, cap)
            _add_compare_select(cost, new, jq, sa, sb, ja, jb, came[t], cost.shape[1])
            cost, new = new, cost
        for w in range(lanes):
            best = 0
            for s in range(1, states):  # argmin: the first of equal costs
                if np.int16(cost[s, w] - cost[best, w]) < 0:
                    best = s
            state[w] = best
        # All lanes step back together: one pass over the traceback, which at long chains
        # (4096 steps × 256 states: 4 MB) no longer fits in cache for a pass per lane.
        for t in range(steps - 1, -1, -1):
            for w in range(lanes):
                s = state[w]
                if (came[t, s] >> w) & 1:
                    out[first + w, t] = int(indices[t, jb[s], w])
                    state[w] = sb[s]
                else:
                    out[first + w, t] = int(indices[t, ja[s], w])
                    state[w] = sa[s]
    return out


@numba.njit(cache=True, nogil=True)
def replay_chains(symbols: np.ndarray, chain: int, trans: np.ndarray, quantizer: np.ndarray,
                  parity: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The decoder's replay (:func:`rftpack.stages.dq.decode_symbols`) one symbol at a time:
    each chain of ``chain`` symbols starts in state 0; a symbol's value is
    ``values[2 * symbol + quantizer[state]]`` and its parity moves the state on."""
    n = symbols.shape[0]
    out = np.empty(n, np.float64)
    for start in range(0, n, chain):
        state = 0
        for i in range(start, min(n, start + chain)):
            s = symbols[i]
            out[i] = values[2 * s + quantizer[state]]
            state = trans[state, parity[s]]
    return out
