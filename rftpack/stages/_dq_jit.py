"""The ``dq`` encoder's Viterbi search compiled with numba (optional: ``pip install
rftpack[fast]``; decoders never need it: their replay is table lookups in numpy).

Same search, same arithmetic and the same tie-breaking as the numpy version in
:mod:`rftpack.stages.dq`, so both give identical indices (the tests check it); this one walks
one chain at a time in compiled code instead of all chains a step at a time in numpy, which
makes ``dq`` encoding about an order of magnitude faster. Imported only when ``dq`` encodes.
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


@numba.njit(cache=True)
def viterbi_chains(xs: np.ndarray, lam: float, rates: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Indices for ``xs`` (chains × steps, in units of Δ), each chain from state 0. ``edges``
    (states × 5): into state s from (A, its parity) or (B, its parity), with quantizer q;
    A wins ties."""
    width, steps = xs.shape
    states = edges.shape[0]
    top = rates.shape[0] - 1
    out = np.zeros((width, steps), np.int64)
    # Into state s from A = sa[s] with candidate ja[s], or from B = sb[s] with jb[s]; a
    # candidate is 2·quantizer + parity, one of the step's four best indices (kept per step,
    # so the traceback needs one bit per state and step).
    sa, sb = edges[:, 0].copy(), edges[:, 2].copy()
    ja, jb = 2 * edges[:, 4] + edges[:, 1], 2 * edges[:, 4] + edges[:, 3]
    came = np.zeros((steps, states), np.bool_)
    indices = np.zeros((steps, 4))
    cost = np.empty(states)
    new = np.empty(states)
    j = np.empty(4)
    k = np.empty(4)
    for c in range(width):
        cost[:] = np.inf
        cost[0] = 0.0
        for t in range(steps):
            x = xs[c, t]
            # Q0: levels 2k; the nearest index and its neighbour toward x.
            a = np.rint(x / 2.0)
            b = a + (1.0 if x >= 2.0 * a else -1.0)
            if (int(a) & 1) == 0:
                k0e, k0o = a, b
            else:
                k0e, k0o = b, a
            j[0], k[0], j[1], k[1] = _candidates(x, 2.0 * k0e, k0e, 2.0 * k0o, k0o,
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
            j[2], k[2], j[3], k[3] = _candidates(x, l1e, k1e, l1o, k1o, lam, rates, top)
            for i in range(4):
                indices[t, i] = k[i]
            for ns in range(states):
                via_a = cost[sa[ns]] + j[ja[ns]]
                via_b = cost[sb[ns]] + j[jb[ns]]
                from_b = via_b < via_a
                came[t, ns] = from_b
                new[ns] = via_b if from_b else via_a
            cost, new = new, cost
        state = 0
        for s in range(1, states):  # argmin: the first of equal costs
            if cost[s] < cost[state]:
                state = s
        for t in range(steps - 1, -1, -1):
            if came[t, state]:
                out[c, t] = int(indices[t, jb[state]])
                state = sb[state]
            else:
                out[c, t] = int(indices[t, ja[state]])
                state = sa[state]
    return out
