"""The decoders' compiled loops and ``dq``'s encoder search (the C extension
``rftpack._native``), with their checks.

The extension is built when rftpack is installed, where a C compiler is found; it is
optional. Without it (or with ``RFTPACK_NO_NATIVE=1`` set) :func:`available` is False and the
decoders use constriction, numba or numpy instead, and ``dq`` searches with numba or numpy;
all return the same values.

Why it exists: constriction decodes a rANS symbol in ~18 ns and numba's compiled decoder in
~5 ns, but numba's start-up costs ~0.75 s a process, more than it saves on a model of MiniLM's
size. This module loads in about a millisecond and decodes in numba's time; its ``dq`` search
takes ~0.014 s per million weights at 256 states, numba's 0.065 (numpy's ~1.8).

Example:
    >>> import numpy as np
    >>> from rftpack.stages.rans import RansCoder
    >>> s = np.array([0, 1, 1, 3, 1] * 20, dtype=np.uint8)
    >>> data = RansCoder().encode(s, 4)
    >>> not available() or RansCoder().decode(data, 100, 4).tolist() == s.tolist()
    True
"""

from __future__ import annotations

import functools
import operator
import os
from types import ModuleType

import numpy as np


@functools.cache
def _module() -> ModuleType | None:
    if os.environ.get("RFTPACK_NO_NATIVE"):
        return None
    try:
        from rftpack import _native
    except ImportError:
        return None
    return _native


def _required() -> ModuleType:
    native = _module()
    if native is None:
        raise RuntimeError("rftpack._native is not available (see rftpack.native.available)")
    return native


def available() -> bool:
    """True when the compiled loops are built and not switched off (``RFTPACK_NO_NATIVE``).

    >>> isinstance(available(), bool)
    True
    """
    return _module() is not None


def rans_decode(words: np.ndarray | memoryview | bytes, freqs: np.ndarray, bits: int,
                count: int, *, strict: bool = False, dtype: np.dtype | type = np.int32,
                lanes: np.ndarray | None = None) -> np.ndarray:
    """``count`` symbols of a ``rans`` stream: what constriction's
    ``AnsCoder(words).decode(Categorical(freqs / 2**bits, perfect=False), count)`` returns,
    with the contract of :func:`rftpack.stages._rans_jit.decode` (``ValueError`` where
    constriction raises; ``strict`` also checks that the stream ends where the encoder began).

    ``words``: the stream's little-endian 32-bit words (any bytes-like object: nothing is
    copied); ``freqs``: the table's integer frequencies over the whole alphabet; ``dtype``: the
    symbols' integer dtype, written directly (int32, or an unsigned one the alphabet fits);
    ``lanes``: word offsets ``[0, …, len(words)]`` that split the words into independent
    streams of the same model, symbol ``i`` decoded from lane ``i % L`` (``rans`` format
    version 3; default: one lane).
    """
    native = _required()
    freqs = np.ascontiguousarray(freqs)
    if freqs.ndim != 1 or freqs.dtype.kind not in "iu":
        raise ValueError("rans: frequencies must be a 1-d integer array")
    if isinstance(words, np.ndarray):
        if words.ndim != 1 or words.dtype.kind not in "iu" or words.dtype.itemsize != 4:
            raise ValueError("rans: words must be a 1-d array of 32-bit integers")
        words = np.ascontiguousarray(words, dtype="<u4")
    bounds = np.array([0, memoryview(words).nbytes // 4] if lanes is None else lanes, np.int64)
    dtype = np.dtype(dtype)
    if dtype != np.int32 and (dtype.kind != "u" or dtype.itemsize > 4):
        raise ValueError(f"rans: symbols are written as int32 or uint8/16/32, not {dtype}")
    out = np.empty(operator.index(count), dtype)
    state, left = native.rans_decode(words, freqs.astype(np.int64, copy=False),
                                     operator.index(bits), out.shape[0], out, dtype.itemsize,
                                     bounds)
    if strict and (left or state):
        raise ValueError(f"rans: stream does not end after {count} symbols ({left} words "
                         f"unread, final state {state:#x}, expected 0)")
    return out


def rans_encode(symbols: np.ndarray, freqs: np.ndarray, bits: int, lanes: int = 1
                ) -> list[np.ndarray]:
    """Each lane's little-endian 32-bit words: what constriction's
    ``AnsCoder().encode_reverse(symbols[lane::lanes], Categorical(freqs / 2**bits,
    perfect=False))`` leaves in ``get_compressed()``, word for word (~2.5× faster), lane ``l``
    holding symbols ``l, l + lanes, …`` (``rans`` format version 3). ``ValueError`` for a
    symbol outside the table.

    >>> freqs = np.array([1 << 23, 1 << 22, 1 << 22])
    >>> words = [[46137342]]   # one lane's words, the state's low word (the high one is 0)
    >>> not available() or [w.tolist() for w in rans_encode(np.array([1, 2]), freqs, 24)] == words
    True
    """
    native = _required()
    symbols = _unsigned(np.asarray(symbols), "rans: a symbol lies outside the model")
    freqs = np.ascontiguousarray(freqs, np.int64)
    body, lengths = native.rans_encode(symbols, symbols.dtype.itemsize, freqs,
                                       operator.index(bits), operator.index(lanes))
    ends = np.cumsum((0, *lengths))
    words = np.frombuffer(body, "<u4")
    return [words[a:b] for a, b in zip(ends[:-1], ends[1:], strict=True)]


def histogram(symbols: np.ndarray, bins: int, row_class: np.ndarray | None = None,
              length: int = 1) -> np.ndarray:
    """``np.bincount(symbols, minlength=bins)`` (~5× faster), or with ``row_class`` (one class
    per row of ``length`` symbols) a (classes × bins) table, row c counting the symbols of
    class c's rows. ``ValueError`` for a symbol outside ``bins``.

    >>> symbols = np.array([0, 2, 2, 0, 2])
    >>> not available() or histogram(symbols, 3).tolist() == [2, 0, 3]
    True
    >>> rows = np.array([0, 1, 0], np.uint8)   # rows [0, 2], [2, 0], [2] of classes 0, 1, 0
    >>> not available() or histogram(symbols, 3, rows, 2).tolist() == [[1, 0, 2], [1, 0, 1]]
    True
    """
    native = _required()
    symbols = _unsigned(np.asarray(symbols), "histogram: a symbol lies outside the bins")
    bins = operator.index(bins)
    if row_class is None:
        out = np.zeros(bins, np.int64)
        native.histogram(symbols, symbols.dtype.itemsize, bins, b"", 1, out)
        return out
    row_class = np.ascontiguousarray(row_class, np.uint8)
    out = np.zeros((int(row_class.max()) + 1 if row_class.size else 1, bins), np.int64)
    native.histogram(symbols, symbols.dtype.itemsize, bins, row_class, operator.index(length),
                     out)
    return out


def huffman_depths(counts: np.ndarray) -> np.ndarray:
    """Unlimited Huffman code lengths of symbols with these positive ``counts`` (two or
    more), as :func:`rftpack.stages._zhuff._plain_huffman` builds them, tie for tie (~35×
    faster).

    >>> not available() or huffman_depths(np.array([5, 3, 1, 1])).tolist() == [1, 2, 3, 3]
    True
    """
    counts = np.ascontiguousarray(counts, np.int64)
    out = np.empty(counts.shape[0], np.int64)
    _required().huffman_depths(counts, out)
    return out


def huffman_pack(symbols: np.ndarray, lengths: np.ndarray, codes: np.ndarray) -> bytes:
    """zstd's backward Huffman bitstream of the bytes ``symbols`` under the code ``lengths``
    and ``codes`` of each byte value: what :func:`rftpack.stages._zhuff._pack_stream` writes
    from their per-symbol lengths and codes, bit for bit (~20× faster).

    >>> lengths, codes = np.array([1, 1] + [0] * 254), np.array([1, 0] + [0] * 254)
    >>> not available() or huffman_pack(np.array([0, 1, 1], np.uint8), lengths, codes) == b"\\x0c"
    True
    """
    return _required().huffman_pack(np.ascontiguousarray(symbols, np.uint8),
                                    np.ascontiguousarray(lengths, np.uint8),
                                    np.ascontiguousarray(codes, np.uint16))


def _unsigned(symbols: np.ndarray, outside: str) -> np.ndarray:
    """1-d integer ``symbols`` as a contiguous array of uint8, uint16 or uint32 (the C loops'
    types); ``ValueError(outside)`` for a negative one or one of 2**32 or more."""
    if symbols.ndim != 1 or symbols.dtype.kind not in "iu":
        raise ValueError("symbols must be a 1-d integer array")
    if symbols.dtype.kind != "u" or symbols.dtype.itemsize > 4:
        if symbols.size and (int(symbols.min()) < 0 or int(symbols.max()) >= 1 << 32):
            raise ValueError(outside)
        symbols = symbols.astype(np.uint32)
    return np.ascontiguousarray(symbols)


def dq_replay(symbols: np.ndarray, chain: int, trans: np.ndarray, quantizer: np.ndarray,
              parity: np.ndarray, values: np.ndarray, out: np.ndarray | None = None
              ) -> np.ndarray:
    """``dq``'s decoder replay, as :func:`rftpack.stages._dq_jit.replay_chains`: each chain of
    ``chain`` symbols starts in state 0; symbol ``s`` decodes to
    ``values[2 * s + quantizer[state]]`` and moves the state to ``trans[state, parity[s]]``.
    ``symbols``: any integer dtype; ``ValueError`` for a symbol outside ``parity``'s alphabet.
    ``values`` float64 (the result is a new float64 array), or float32 written into ``out``
    (a contiguous float32 array of one value per symbol).
    """
    native = _required()
    symbols = np.ascontiguousarray(symbols)
    if symbols.ndim != 1 or symbols.dtype.kind not in "iu":
        raise ValueError("dq replay: symbols must be a 1-d integer array")
    if symbols.dtype.kind == "i":  # the loop reads them unsigned
        if symbols.size and int(symbols.min()) < 0:
            raise ValueError("dq replay: a symbol lies outside the alphabet")
        symbols = symbols.view(symbols.dtype.str.replace("i", "u"))
    trans = np.ascontiguousarray(trans, np.int64)
    quantizer = np.ascontiguousarray(quantizer, np.int64)
    if trans.shape != (quantizer.shape[0], 2):
        raise ValueError("dq replay: transitions must be (states, 2)")
    parity = np.ascontiguousarray(parity, np.uint8)
    if values.dtype != np.float32:
        values = np.ascontiguousarray(values, np.float64)
    if values.shape != (2 * parity.shape[0],) or not values.flags.c_contiguous:
        raise ValueError("dq replay: two values per symbol of the alphabet, contiguous")
    if out is None:
        if values.dtype == np.float32:
            raise ValueError("dq replay: float32 values are written into an `out` array")
        out = np.empty(symbols.shape[0], np.float64)
    elif (out.dtype != values.dtype or out.shape != symbols.shape
          or not out.flags.c_contiguous or not out.flags.writeable):
        raise ValueError("dq replay: `out` must be a writable contiguous array of the values' "
                         "dtype, one per symbol")
    native.dq_replay(symbols, symbols.dtype.itemsize, operator.index(chain), trans, quantizer,
                     parity, values, out, values.dtype.itemsize)
    return out


def viterbi_lanes() -> int:
    """Chains :func:`dq_viterbi` searches side by side (callers split work in such groups)."""
    return int(_required().VITERBI_LANES)


def dq_viterbi(xs: np.ndarray, lam: float, rates: np.ndarray, edges: np.ndarray, scale: float,
               cap: int, start: int, kernel: str | None = None) -> np.ndarray:
    """``dq``'s encoder search, as :func:`rftpack.stages._dq_jit.viterbi_chains` (the same
    indices): ``xs`` (chains × steps, in units of the step), each chain from state 0, minimising
    squared error + ``lam`` · ``rates[min(|k|, top)]`` over the trellis ``edges`` (states × 5:
    into state s from (A, its parity) or (B, its parity), with quantizer q; A wins ties), in
    integer path costs (``scale``, ``cap``, ``start``: :func:`rftpack.stages.dq.search_costs`).
    ``kernel``: one of :func:`dq_kernels` (default: the widest). Returns the int64 indices,
    shaped as ``xs``. ``OverflowError`` for a weight that is not finite or beyond 10⁹ steps
    (callers then search in numba or numpy), ``ValueError`` for malformed tables.

    >>> from rftpack.stages.dq import EDGES, search_costs
    >>> xs, rates = np.array([[0.2, 1.1, -2.4, 3.9]]), np.zeros(8)
    >>> costs = search_costs(0.0, rates, 4)
    >>> not available() or dq_viterbi(xs, 0.0, rates, EDGES[4], *costs).tolist() == [[0, 1, -2, 2]]
    True
    """
    native = _required()
    xs = np.ascontiguousarray(xs, np.float64)
    rates = np.ascontiguousarray(rates, np.float64)
    edges = np.ascontiguousarray(edges, np.int64)
    if xs.ndim != 2 or rates.ndim != 1 or not rates.size or edges.ndim != 2 \
            or edges.shape[1] != 5 or not edges.shape[0]:
        raise ValueError("dq search: xs (chains, steps), 1-d rates, edges (states, 5)")
    out = np.empty(xs.shape, np.int64)
    if xs.size:
        native.dq_viterbi(xs, xs.shape[1], float(lam), rates, edges, out, float(scale),
                          operator.index(cap), operator.index(start), kernel)
    return out


def dq_kernels() -> list[str]:
    """The add-compare-select kernels of :func:`dq_viterbi` this CPU runs, the widest last
    (``portable``, and on x86-64 ``avx2`` and ``avx512bw``): each finds the same indices."""
    return list(_required().dq_kernels())


def planes_assemble(a: np.ndarray, b: np.ndarray, rest: list[np.ndarray], r: int,
                    out: np.ndarray) -> None:
    """Write ``floatplanes``' elements into ``out`` (contiguous unsigned integers of 2, 4 or 8
    bytes) from their byte planes (FORMAT.md §7.4): the top 16 bits are ``a << 8 | b``
    rotated right by ``r``, the bytes below them the ``rest`` planes, lowest byte first.

    >>> out = np.empty(1, np.uint32)
    >>> planes = [np.array([v], np.uint8) for v in (0x3f, 0x80, 0x01, 0x02)]
    >>> (not available() or planes_assemble(*planes[:2], planes[2:], 0, out)
    ...  or hex(out[0]) == '0x3f800201')
    True
    """
    native = _required()
    if out.dtype.kind != "u" or out.ndim != 1 or not out.flags.c_contiguous:
        raise ValueError("planes_assemble: out must be a contiguous 1-d unsigned array")
    native.planes_assemble(a, b, tuple(rest), operator.index(r), out, out.dtype.itemsize)
