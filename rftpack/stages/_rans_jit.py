"""A numba-compiled decoder for the ``rans`` coder's streams, symbol for symbol what
constriction's ``AnsCoder(words).decode(Categorical(freqs / 2**bits, perfect=False), count)``
returns (optional: ``pip install rftpack[fast]``; imported only where numba is installed).

Why: constriction's Python binding decodes about 26 ns per symbol at 128 symbols and 39 ns
at 4096 (a binary search over the CDF for every symbol, behind a dynamically dispatched
model); this decoder looks the symbol up in a table of 2**k slots indexed by the top k bits of
the quantile (each slot packs the symbol at its start with that symbol's CDF entry and
frequency, so the common case is one load; slots holding symbol boundaries binary-search the
few symbols between their own and the next slot's) and decodes in about 5 ns per symbol at
128 symbols and 8 ns at 4096, table building included. The table is rebuilt per call, so k
shrinks with the number of symbols to decode (:func:`slot_bits`): a 300-symbol block costs
about 4 µs in all. Nothing in the format changes: the tests compare it with constriction on
the encoder's real streams. (numba's own start-up, about 0.45 s once per process, is paid by
whichever compiled function runs first; with the on-disk cache this module then loads in
about 10 ms; without it, compiling takes about 2.5 s, plus 1 s for read-only word arrays.)

Typical use, in place of constriction in ``RansCoder.decode``: ``decode(words, freqs, bits,
count)`` with the table's frequencies as read, turning ``ValueError`` into ``FormatError``.

What it replicates (constriction 0.5; the Rust source read is the copy of
``bamler-lab/constriction`` in a public code index, a 0.4-era commit; the tests check every
point below against the installed constriction):

* The model, ``src/pybindings/stream/model.rs`` (``Categorical.new`` →
  ``parameterize_categorical``): with ``perfect=False`` and ``lazy`` unset, a float64 array
  becomes ``DefaultContiguousCategoricalEntropyModel::from_floating_point_probabilities_fast``
  (``src/stream/model/categorical/contiguous.rs``; ``Default…`` = ``u32`` probabilities with
  ``PRECISION = 24``, whatever total the caller's frequencies had). Its CDF comes from
  ``fast_quantized_cdf`` (``src/stream/model/categorical.rs``): with ``n`` probabilities
  ``p`` (``n >= 2`` and ``n < 2**24 - 1``, else an error), ``normalization`` = their float
  sum left to right (an error unless it is a normal positive float), ``scale = (2**24 - n) /
  normalization``, and ``cdf[i] = u32(C_i · scale) + i`` where ``C_i = p_0 + … + p_{i-1}``
  summed left to right in float64 and ``u32(·)`` is Rust's saturating, truncating ``as``
  cast; ``cdf[n] = 2**24``. So every symbol gets a frequency >= 1 (the model is "leaky"):
  symbols absent from the table (probability 0) get 1 or so, and the present ones give up
  about ``n`` in total. It is not the identity even for probabilities that are exact multiples
  of 2**-24 (and bits = 16 tables are requantized to 2**24 too). :func:`quantized_frequencies`
  is this in numpy; the decoder does the same arithmetic compiled.
* The coder, ``src/stream/stack.rs`` (``DefaultAnsCoder`` = 32-bit words, 64-bit state) and
  ``src/pybindings/stream/stack.rs``. ``AnsCoder(words)`` is ``from_compressed``: the word
  array is a stack whose top is its *last* word. No words: state 0. Otherwise the last word
  must not be 0 (else ``ValueError: Invalid compressed data: ANS compressed data never ends in
  a zero word.`` — the only error constriction raises on any stream), state = that word, and
  while words remain and the state is below 2**32 the next word down is shifted in (so one
  word more when there are two or more words; a single word is the whole state). A decode step
  takes ``quantile = state mod 2**24``, finds the symbol ``s`` with ``cdf[s] <= quantile <
  cdf[s+1]``, sets ``state = (state >> 24) · (cdf[s+1] − cdf[s]) + quantile − cdf[s]``, and if
  the state fell below 2**32 and a word remains, pops it: ``state = state << 32 | word``.
* What constriction does *not* check: ``decode`` is infallible (``unwrap_infallible``: "ANS
  coding is surjective, and we (deliberately) allow decoding past EOF (in a deterministic
  way)"). Too few or too many words, random words, a wrong ``count``: constriction returns
  ``count`` symbols and raises nothing (past the words' end the state just shrinks; state 0
  decodes symbol 0 for ever). This decoder does the same, so it raises exactly where
  constriction raises. A stream that the encoder really wrote ends with every word consumed
  and state 0 (the encoder started from the empty coder, state 0); ``strict=True`` checks
  that, an extra check that constriction does not make (off by default, for parity). It
  cannot see everything: from state 0 every further decode gives symbol 0 and stays at 0, so
  a ``count`` too large by trailing 0 symbols, or too small by them, passes.

Differences, all outside what ``rans.py`` ever passes (documented, not replicated):
negative frequencies raise ``ValueError`` here (constriction's fast path does not look at
signs and builds a garbage, wrapping CDF), ``bits`` must be 1 … 62 here, and a CDF that is not
strictly increasing up to 2**24 raises ``ValueError`` (it cannot arise from non-negative
integer frequencies; constriction would build it silently). Errors constriction raises when
building the model (fewer than 2 symbols, 2**24 − 1 or more, a zero or non-finite sum) are
``ValueError`` here too.
"""

from __future__ import annotations

import operator

import numba
import numpy as np

#: constriction's default model precision: every CDF totals 2**24, whatever the table's total
PRECISION = 24
_WORD_BITS = 32
#: the decoder's packed slot entries hold a symbol in 16 bits; wider alphabets binary-search
_PACKED_ALPHABET = 1 << 16
#: at most 2**14 slots (128 KiB of table): more stops paying on this machine
_MAX_SLOT_BITS = 14

_MASK = np.uint64((1 << PRECISION) - 1)
_LOW = np.uint64(1 << (64 - _WORD_BITS))
_P = np.uint64(PRECISION)
_W = np.uint64(_WORD_BITS)
_SYMBOL_MASK = np.uint64(0xFFFF)
_FIELD_MASK = np.uint64((1 << PRECISION) - 1)
_LO_SHIFT = np.uint64(16)
_FREQ_SHIFT = np.uint64(16 + PRECISION)


def _check_model_input(n: int, bits: int) -> None:
    if n < 2 or n >= (1 << PRECISION) - 1:
        raise ValueError(f"rans model: {n} symbols; constriction's categorical model needs "
                         f"2 … 2**{PRECISION} − 2")
    if not 1 <= bits <= 62:
        raise ValueError(f"rans model: table total 2**{bits} is not supported (bits 1 … 62)")


def quantized_frequencies(freqs: np.ndarray, bits: int) -> np.ndarray:
    """The integer frequencies (int64, summing to 2**24) of constriction's
    ``Categorical(freqs / 2**bits, perfect=False)``, computed as its
    ``fast_quantized_cdf`` computes them (see the module docstring).

    >>> quantized_frequencies(np.array([8, 0, 4, 4]), 4).tolist()
    [8388607, 1, 4194304, 4194304]
    """
    freqs = np.asarray(freqs)
    if freqs.ndim != 1 or not np.issubdtype(freqs.dtype, np.integer):
        raise ValueError("rans model: frequencies must be a 1-d integer array")
    n = freqs.shape[0]
    _check_model_input(n, bits)
    if (freqs < 0).any():
        raise ValueError("rans model: negative frequency")
    probabilities = freqs.astype(np.float64) / float(1 << bits)  # as rans._model divides
    cumulative = np.cumsum(probabilities)  # sequential, as Rust's left-to-right sum
    normalization = cumulative[-1]
    if not (np.isfinite(normalization) and normalization >= np.finfo(np.float64).tiny):
        raise ValueError("rans model: frequencies sum to zero")
    scale = float((1 << PRECISION) - n) / normalization
    scaled = np.concatenate(([0.0], cumulative[:-1])) * scale
    # Rust's `f64 as u32`: truncation, saturating at both ends, NaN to 0; then a wrapping add.
    scaled = np.where(np.isnan(scaled), 0.0, np.clip(scaled, 0.0, float(2**32 - 1)))
    left = (np.floor(scaled).astype(np.int64) + np.arange(n)) & 0xFFFFFFFF
    quantized = np.diff(np.append(left, 1 << PRECISION))
    if (quantized < 1).any():
        raise ValueError("rans model: quantized CDF is not increasing")
    return quantized


@numba.njit(cache=True)
def _quantized_cdf(freqs, bits):
    """``cdf`` (uint64, n + 1 entries, 0 … 2**24) of :func:`quantized_frequencies`, compiled:
    the same float64 operations in the same order."""
    n = freqs.shape[0]
    # x / 2**bits, computed as x · 2**-bits: both are exact (no subnormals for bits <= 62).
    inverse = 1.0 / float(np.int64(1) << bits)
    cumulative = np.empty(n)  # before symbol i, summed left to right
    normalization = 0.0
    for i in range(n):
        if freqs[i] < 0:
            raise ValueError("rans model: negative frequency")
        cumulative[i] = normalization
        normalization += float(freqs[i]) * inverse
    if not (normalization >= 2.2250738585072014e-308 and normalization < np.inf):
        raise ValueError("rans model: frequencies sum to zero")
    scale = float((1 << PRECISION) - n) / normalization
    cdf = np.empty(n + 1, np.uint64)
    previous = -1
    for i in range(n):
        x = cumulative[i] * scale
        if x != x:
            left = 0
        elif x >= 4294967295.0:
            left = 4294967295
        else:
            left = int(x)  # x >= 0: truncation is floor
        left = (left + i) & 0xFFFFFFFF
        if left <= previous:
            raise ValueError("rans model: quantized CDF is not increasing")
        cdf[i] = np.uint64(left)
        previous = left
    if previous >= 1 << PRECISION:
        raise ValueError("rans model: quantized CDF is not increasing")
    cdf[n] = np.uint64(1 << PRECISION)
    return cdf


@numba.njit(cache=True)
def _slot_table(cdf, slot_bits):
    """Entry j (of 2**slot_bits, plus one for the end): the symbol s whose interval holds
    quantile j << (24 − slot_bits), packed as s | cdf[s] << 16 | frequency << 40."""
    n = cdf.shape[0] - 1
    slots = 1 << slot_bits
    shift = PRECISION - slot_bits
    table = np.empty(slots + 1, np.uint64)
    j = 0
    for s in range(n):
        end = (np.int64(cdf[s + 1]) + (1 << shift) - 1) >> shift  # first slot past symbol s
        if end > j:
            lo = cdf[s]
            entry = np.uint64(s) | (lo << _LO_SHIFT) | ((cdf[s + 1] - lo) << _FREQ_SHIFT)
            for k in range(j, end):
                table[k] = entry
            j = end
    lo = cdf[n - 1]
    table[slots] = np.uint64(n - 1) | (lo << _LO_SHIFT) | ((cdf[n] - lo) << _FREQ_SHIFT)
    return table


@numba.njit(cache=True)
def _initial_state(words):
    """(state, words left) of constriction's ``AnsCoder(words)`` (``from_compressed``)."""
    pos = words.shape[0]
    state = np.uint64(0)
    if pos:
        pos -= 1
        state = np.uint64(words[pos])
        if state == 0:
            raise ValueError("rans: invalid compressed data: ANS compressed data never ends "
                             "in a zero word")
        if pos:
            pos -= 1
            state = (state << _W) | np.uint64(words[pos])
    return state, pos


@numba.njit(cache=True)
def _decode_packed(words, cdf, count, slot_bits, out):
    state, pos = _initial_state(words)
    table = _slot_table(cdf, slot_bits)
    shift = np.uint64(PRECISION - slot_bits)
    for i in range(count):
        quantile = state & _MASK
        slot = quantile >> shift
        entry = table[slot]
        symbol = np.int64(entry & _SYMBOL_MASK)
        lo = (entry >> _LO_SHIFT) & _FIELD_MASK
        frequency = entry >> _FREQ_SHIFT
        if quantile - lo >= frequency:
            # The slot holds symbol boundaries: the symbol is in symbol + 1 … the next slot's.
            a = symbol + 1
            b = np.int64(table[slot + np.uint64(1)] & _SYMBOL_MASK)
            while a < b:
                mid = (a + b + 1) >> 1
                if cdf[mid] <= quantile:
                    a = mid
                else:
                    b = mid - 1
            symbol = a
            lo = cdf[a]
            frequency = cdf[a + 1] - lo
        state = (state >> _P) * frequency + (quantile - lo)
        if state < _LOW and pos > 0:
            pos -= 1
            state = (state << _W) | np.uint64(words[pos])
        out[i] = symbol
    return state, pos


@numba.njit(cache=True)
def _decode_wide(words, cdf, count, out):
    """Alphabets over 2**16 symbols: a binary search per symbol (constriction's own way)."""
    state, pos = _initial_state(words)
    n = cdf.shape[0] - 1
    for i in range(count):
        quantile = state & _MASK
        a = 0
        b = n - 1
        while a < b:
            mid = (a + b + 1) >> 1
            if cdf[mid] <= quantile:
                a = mid
            else:
                b = mid - 1
        lo = cdf[a]
        state = (state >> _P) * (cdf[a + 1] - lo) + (quantile - lo)
        if state < _LOW and pos > 0:
            pos -= 1
            state = (state << _W) | np.uint64(words[pos])
        out[i] = a
    return state, pos


@numba.njit(cache=True)
def _bit_length(x):
    length = 0
    while x > 0:
        x >>= 1
        length += 1
    return length


@numba.njit(cache=True)
def slot_bits(alphabet, count):
    """Slot table size (log2) for decoding ``count`` symbols of ``alphabet``: about 8 slots a
    symbol, but no more slots than symbols to decode (the table is built per call), and at
    most 2**14."""
    return max(1, min(_MAX_SLOT_BITS, _bit_length(alphabet) + 3, _bit_length(count)))


@numba.njit(cache=True)
def _decode(words, freqs, bits, count):
    n = freqs.shape[0]
    if n < 2 or n >= (1 << PRECISION) - 1:
        raise ValueError("rans model: constriction's categorical model needs 2 … 2**24 − 2 "
                         "symbols")
    if bits < 1 or bits > 62:
        raise ValueError("rans model: table totals 2**1 … 2**62 are supported")
    if count < 0:
        raise ValueError("rans: cannot decode a negative number of symbols")
    cdf = _quantized_cdf(freqs, bits)
    out = np.empty(count, np.int32)
    if n <= _PACKED_ALPHABET:
        state, pos = _decode_packed(words, cdf, count, slot_bits(n, count), out)
    else:
        state, pos = _decode_wide(words, cdf, count, out)
    return out, state, pos


def decode(words: np.ndarray, freqs: np.ndarray, bits: int, count: int, *,
           strict: bool = False) -> np.ndarray:
    """``count`` symbols (int32) that constriction's
    ``AnsCoder(words).decode(Categorical(freqs / 2**bits, perfect=False), count)`` returns.

    ``words``: the stream as uint32 (last word = top of the stack); ``freqs``: the table's
    integer frequencies over the whole alphabet (0 for absent symbols), summing to ``2**bits``
    as ``rans.py`` stores them (any non-negative total works, as it does for constriction).
    Raises ``ValueError`` where constriction raises (a last word of 0; a model it cannot build)
    and, with ``strict``, also when the stream does not end exactly where the encoder began
    (all words consumed, state 0).
    """
    words = np.ascontiguousarray(words, dtype=np.uint32)
    freqs = np.ascontiguousarray(freqs)
    if words.ndim != 1 or freqs.ndim != 1 or freqs.dtype.kind not in "iu":
        raise ValueError("rans: words and frequencies must be 1-d arrays, frequencies integers")
    symbols, state, pos = _decode(words, freqs.astype(np.int64, copy=False),
                                  operator.index(bits), operator.index(count))
    if strict and (pos or state):
        raise ValueError(f"rans: stream does not end after {count} symbols ({pos} words "
                         f"unread, final state {int(state):#x}, expected 0)")
    return symbols
