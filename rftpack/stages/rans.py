"""``rans``: static-model rANS (constriction's ``AnsCoder``) over one block of symbols.

Segment layout, format version 3 (little-endian; FORMAT.md §7.1):

    varint  r: runs of consecutive present symbols (0 for an empty block)
    r ×     varint gap (first symbol of the run − end of the previous run), varint length
    ⌈d/2⌉   4-bit codes u_i, low nibble first, one per present symbol (d = Σ lengths)
    e ×     byte, one per u_i = 15; after them, a uint16 per such byte equal to 255
    rest    absent when d ≤ 1; else: byte L (lanes), L − 1 varints (the words of lanes
            0 … L − 2, as zigzagged differences from ⌊W / L⌋), then each lane's
            constriction AnsCoder words (uint32 LE) in turn; symbol i is lane i mod L's

The codes give each present symbol's level L_i ≈ −8·log2 p_i (eighths of a bit, 0 … 192) as
zigzagged differences from the previous level (the first from 0): z = u, or 15 + byte, or
270 + uint16. Levels become frequencies summing to 2**24 by integer arithmetic alone, so the
decoder rebuilds the encoder's model exactly. Against version 1 (each present symbol's gap and
16-bit frequency as varints, about 3 bytes per symbol) the table is about 3× smaller and the
probabilities finer: on MiniLM's scalar codes the coder's overhead over the codes' entropy
falls from 0.0066 to 0.0024 bit per weight at 5 bpw and from 0.038 to 0.012 at 8 bpw.
Version 2 segments (one stream, no lane byte) and version 1 segments (FORMAT.md §7.1.1) are
still read. Lanes (version 3) let a decoder step independent streams side by side.

Decoding is :mod:`rftpack.native`'s compiled loop where it is built (about 7× faster than
constriction on two lanes), else, lane by lane, constriction's, or — once numba's start-up
has paid for itself in the process — :mod:`rftpack.stages._rans_jit`'s compiled decoder
(:func:`_decoder_for`): the same symbols every way.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from rftpack import native
from rftpack.errors import FormatError, StageError
from rftpack.stages._varint import read_varint, write_varint
from rftpack.stages.base import Coder, symbol_dtype
from rftpack.stages.workload import current_plan

#: version 1 tables: frequencies sum to 2**16
PROBABILITY_BITS = 16
#: version 2 tables: frequencies sum to 2**24, from levels in eighths of a bit
TABLE_BITS = 24
LEVELS_PER_BIT = 8
MAX_LEVEL = 24 * LEVELS_PER_BIT
#: round(2**(32 − j/8)): a level L weighs POWERS[L mod 8] >> (L div 8), integers only
POWERS = np.array([4294967296, 3938502376, 3611622603, 3311872529, 3037000500, 2784941738,
                   2553802834, 2341847524], dtype=np.int64)
MAX_ALPHABET = 1 << 16
_ESCAPE, _WIDE = 15, 15 + 255


def quantize_frequencies(counts: np.ndarray, total: int = 1 << PROBABILITY_BITS) -> np.ndarray:
    """Integer frequencies summing to ``total``; every symbol with a count keeps ≥ 1.

    >>> quantize_frequencies(np.array([3, 1, 0])).tolist()
    [49152, 16384, 0]
    """
    counts = counts.astype(np.int64)
    present = counts > 0
    freqs = np.where(present, np.maximum(1, (counts * total) // max(1, counts.sum())), 0)
    # Give the rounding remainder to (or take it from) the most frequent symbols, in a fixed order.
    deficit = int(total - freqs.sum())
    order = np.argsort(-counts, kind="stable")
    i = 0
    while deficit != 0:
        sym = order[i % int(present.sum())]
        if deficit > 0:
            freqs[sym] += deficit
            deficit = 0
        elif freqs[sym] > 1:
            take = min(-deficit, int(freqs[sym]) - 1)
            freqs[sym] -= take
            deficit += take
        i += 1
    return freqs


def levels_of(counts: np.ndarray, approximate: bool = False) -> np.ndarray:
    """Table levels (−8·log2 p, rounded, within 0 … 192) of symbols with these counts (> 0).

    A rare symbol whose level is more than 7 from its predecessor's (an escape byte in the
    table) is moved to 7 from it when that costs its occurrences fewer than the 8 bits saved.
    ``approximate``: judge each against its predecessor's unmoved level, all at once (rate
    control's estimate of the table size, where the exact pass costs too much).

    >>> levels_of(np.array([1000, 500, 500])).tolist()
    [8, 16, 16]
    >>> levels_of(np.array([1 << 20, 1, 2])).tolist()   # ideal [0, 160, 152]
    [0, 160, 153]
    """
    p = counts / counts.sum()
    ideal = np.clip(np.rint(-LEVELS_PER_BIT * np.log2(p)), 0, MAX_LEVEL).astype(np.int64)
    rare = counts < 8 * LEVELS_PER_BIT
    if approximate:
        move = np.diff(ideal, prepend=0)
        by = move - np.sign(move) * 7
        shift = rare & (np.abs(move) > 7) & (counts * np.abs(by) < 8 * LEVELS_PER_BIT)
        return np.where(shift, ideal - by, ideal)
    # Only rare symbols far from their predecessor, and rare successors of moved ones, can move.
    todo = np.flatnonzero(rare & (np.abs(np.diff(ideal, prepend=0)) > 7)).tolist()
    if not todo:
        return ideal
    levels, occurrences = ideal.tolist(), counts.tolist()
    j, done = 0, -1
    while j < len(todo):
        i = todo[j]
        j += 1
        if i <= done:
            continue
        done = i
        move = levels[i] - (levels[i - 1] if i else 0)
        if abs(move) <= 7:
            continue
        by = move - (7 if move > 0 else -7)
        if occurrences[i] * abs(by) < 8 * LEVELS_PER_BIT:
            levels[i] -= by
            if i + 1 < len(levels) and rare[i + 1] and (j == len(todo) or todo[j] != i + 1):
                todo.insert(j, i + 1)
    return np.array(levels, np.int64)


def level_frequencies(levels: np.ndarray) -> np.ndarray:
    """Frequencies summing to 2**24 that a version 2 table's levels stand for.

    >>> level_frequencies(np.array([8, 16, 16])).tolist()
    [8388608, 4194304, 4194304]
    """
    weights = POWERS[levels % LEVELS_PER_BIT] >> (levels // LEVELS_PER_BIT)
    return quantize_frequencies(weights, 1 << TABLE_BITS)


def _runs(present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gap, length) of each run of consecutive symbols in sorted, non-empty ``present``, the
    gap counted from the end of the previous run (from 0 for the first)."""
    breaks = np.flatnonzero(np.diff(present) != 1) + 1
    starts, ends = np.r_[0, breaks], np.r_[breaks, present.shape[0]]
    return present[starts] - np.r_[0, present[ends[:-1] - 1] + 1], ends - starts


def write_table(present: np.ndarray, levels: np.ndarray) -> bytes:
    """A version 2 table: the runs of ``present`` symbols and their ``levels``."""
    out = bytearray()
    if not present.size:
        write_varint(0, out)
        return bytes(out)
    gaps, lengths = _runs(present)
    write_varint(gaps.shape[0], out)
    for gap, length in zip(gaps.tolist(), lengths.tolist(), strict=True):
        write_varint(gap, out)
        write_varint(length, out)
    delta = np.diff(levels, prepend=0)
    z = np.where(delta >= 0, 2 * delta, -2 * delta - 1)
    u = np.minimum(z, _ESCAPE).astype(np.uint8)
    if u.shape[0] % 2:
        u = np.append(u, np.uint8(0))
    out += (u[0::2] | (u[1::2] << 4)).tobytes()
    escaped = z[z >= _ESCAPE] - _ESCAPE
    out += np.minimum(escaped, 255).astype(np.uint8).tobytes()
    out += (escaped[escaped >= 255] - 255).astype("<u2").tobytes()
    return bytes(out)


def _varint_sizes(values: np.ndarray) -> np.ndarray:
    return 1 + (values >= 1 << 7) + (values >= 1 << 14) + (values >= 1 << 21) \
        + (values >= 1 << 28)


def table_size(present: np.ndarray, levels: np.ndarray) -> int:
    """``len(write_table(present, levels))``, without writing it."""
    if not present.size:
        return 1
    gaps, lengths = _runs(present)
    delta = np.diff(levels, prepend=0)
    z = np.where(delta >= 0, 2 * delta, -2 * delta - 1)
    return int(_varint_sizes(np.array([gaps.shape[0]]))[0] + _varint_sizes(gaps).sum()
               + _varint_sizes(lengths).sum() + (present.shape[0] + 1) // 2
               + np.count_nonzero(z >= _ESCAPE) + 2 * np.count_nonzero(z >= _WIDE))


def table_bytes(counts: np.ndarray, approximate: bool = False) -> int:
    """Size of the version 2 table for a block whose symbols have ``counts`` (``approximate``:
    see :func:`levels_of`; what rate control charges a block's table).

    >>> table_bytes(np.array([5, 3, 0, 1]))
    7
    """
    present = np.flatnonzero(counts)
    return table_size(present, levels_of(counts[present], approximate))


def read_table(view: memoryview, alphabet: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(present symbols, their frequencies summing to 2**24, end of the table) of a version 2
    segment; every inconsistency is a FormatError."""
    runs, pos = read_varint(view, 0)
    if runs > (min(alphabet, MAX_ALPHABET) + 1) // 2:
        raise FormatError(f"rans: table has {runs} runs for alphabet {alphabet}")
    pieces, end = [], 0
    for index in range(runs):
        gap, pos = read_varint(view, pos)
        length, pos = read_varint(view, pos)
        if length < 1 or (index and gap < 1) or end + gap + length > alphabet:
            raise FormatError("rans: table runs overlap, are empty or leave the alphabet")
        pieces.append(np.arange(end + gap, end + gap + length))
        end += gap + length
    present = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    if not present.size:
        return present, present, pos
    d = present.shape[0]
    packed = np.frombuffer(view, np.uint8, (d + 1) // 2, pos) if pos + (d + 1) // 2 <= \
        len(view) else None
    if packed is None:
        raise FormatError("rans: segment ends inside the table's level codes")
    pos += packed.shape[0]
    z = np.stack([packed & 15, packed >> 4], axis=1).reshape(-1)[:d].astype(np.int64)
    escaped = np.flatnonzero(z == _ESCAPE)
    if pos + escaped.shape[0] > len(view):
        raise FormatError("rans: segment ends inside the table's escape bytes")
    extra = np.frombuffer(view, np.uint8, escaped.shape[0], pos).astype(np.int64)
    pos += escaped.shape[0]
    wide = np.flatnonzero(extra == 255)
    if pos + 2 * wide.shape[0] > len(view):
        raise FormatError("rans: segment ends inside the table's wide escapes")
    extra[wide] += np.frombuffer(view, "<u2", wide.shape[0], pos).astype(np.int64)
    pos += 2 * wide.shape[0]
    z[escaped] += extra
    levels = np.cumsum(np.where(z % 2, -(z + 1) // 2, z // 2))
    if levels.min() < 0 or levels.max() > MAX_LEVEL:
        raise FormatError(f"rans: table level outside [0, {MAX_LEVEL}]")
    return present, level_frequencies(levels), pos


#: symbols constriction decodes in a process before the compiled decoder takes over, unless
#: numba is already loaded: numba's start-up (import and first call, ~0.7 s here) costs what
#: constriction spends on about this many symbols more than the compiled decoder (~21 ns each)
COMPILED_AFTER_SYMBOLS = 32_000_000
#: numba's start-up (import ~0.3 s, first call of a cached function ~0.45 s): a planned job
#: takes the compiled decoders when they save more (:meth:`workload.Plan.compiled_saving`)
COMPILED_STARTUP_SECONDS = 0.75
_decoded_by_constriction = 0


def _decoder_for(count: int) -> Callable[..., np.ndarray] | None:
    """The compiled decoder where it pays, else None (constriction).

    It pays once numba is loaded. Inside a planned job (:mod:`rftpack.stages.workload`: a
    whole-archive decode) it is chosen for the whole job, when it would save more than
    numba's start-up (COMPILED_STARTUP_SECONDS): switching midway would pay both
    constriction's slower symbols and numba's start-up (MiniLM's ``hybrid`` archive did:
    0.6 s more than constriction alone). Once numba is loaded, ``dq`` replays its indices in
    compiled code too. Outside a plan (lazy loading), once constriction has decoded
    COMPILED_AFTER_SYMBOLS symbols in the process.
    """
    global _decoded_by_constriction
    if "numba" in sys.modules:
        return _compiled_decoder()
    plan = current_plan()
    if plan is not None:
        pays = plan.compiled_saving() >= COMPILED_STARTUP_SECONDS
        return _compiled_decoder() if pays else None
    if _decoded_by_constriction < COMPILED_AFTER_SYMBOLS:
        _decoded_by_constriction += count
        return None
    return _compiled_decoder()


@functools.cache
def _compiled_decoder() -> Callable[..., np.ndarray] | None:
    """The numba-compiled decoder of :mod:`rftpack.stages._rans_jit` (the same symbols as
    constriction's, about 5× faster) when numba is installed and RFTPACK_NO_JIT is not set."""
    if os.environ.get("RFTPACK_NO_JIT"):
        return None
    try:
        from rftpack.stages import _rans_jit
    except Exception:  # noqa: BLE001 - not installed, or numba cannot work here
        return None
    return _rans_jit.decode


def _model(freqs: np.ndarray, bits: int):
    import constriction

    return constriction.stream.model.Categorical(
        freqs.astype(np.float64) / float(1 << bits), perfect=False
    )


#: lanes of a large segment (format version 3): independent streams that the compiled
#: decoder steps side by side. Two lanes: 4.1 → 2.6 ns a symbol here; four: 2.2 ns, but each
#: lane past the first costs ~6 bytes (its final state, its length), and on MiniLM's ``dq``
#: archive at 4.94 bpw four lanes in every large segment cost 0.004 dB at equal rate
LANES = 2
#: a segment is split into lanes once its words are estimated (from the table's levels) at
#: this many bytes or more, where a lane's ~6 bytes are at most 0.02 % of it
LANES_FROM_BYTES = 32768


def lanes_for(counts: np.ndarray, levels: np.ndarray) -> int:
    """How many lanes a segment is written in: LANES when its words (Σ count × level / 8
    bits) come to LANES_FROM_BYTES or more, else 1.

    >>> lanes_for(np.array([10**6, 10**6]), np.array([8, 8]))
    2
    >>> lanes_for(np.array([9, 3]), np.array([3, 17]))
    1
    """
    bits = float(np.dot(counts.astype(np.float64), levels)) / LEVELS_PER_BIT
    return LANES if bits >= 8 * LANES_FROM_BYTES else 1


def write_lanes(words: list[np.ndarray]) -> bytes:
    """Format version 3's words: the lane count L, then for each lane but the last how far its
    word count is from ⌊W / L⌋ (a zigzagged varint: lanes of like symbols come out about as
    long, so this is a byte or two), then the lanes' words one after the other."""
    lanes = len(words)
    share = sum(lane.shape[0] for lane in words) // lanes
    head = bytearray([lanes])
    for lane in words[:-1]:
        delta = lane.shape[0] - share
        write_varint(2 * delta if delta >= 0 else -2 * delta - 1, head)
    return bytes(head) + b"".join(lane.astype("<u4").tobytes() for lane in words)


def read_lanes(view: memoryview, pos: int) -> tuple[np.ndarray, int]:
    """(word offsets [0, …, W] of each lane, where the words begin) of a version 3 segment's
    ``rest``; FormatError when it does not hold whole words or the lengths do not fit them."""
    if pos >= len(view):
        raise FormatError("rans: segment ends before its lane count")
    lanes = view[pos]
    pos += 1
    if lanes < 1:
        raise FormatError("rans: a segment has at least one lane")
    deltas = []
    for _ in range(lanes - 1):
        z, pos = read_varint(view, pos)
        deltas.append(-(z + 1) // 2 if z % 2 else z // 2)
    body = len(view) - pos
    if body % 4 or not body:
        raise FormatError("rans: compressed body is not a whole (non-zero) number of 32-bit "
                          "words")
    total = body // 4
    lengths = [total // lanes + delta for delta in deltas]
    if any(length < 0 for length in lengths) or sum(lengths) > total:
        raise FormatError("rans: the lanes' lengths do not fit the segment's words")
    bounds = np.zeros(lanes + 1, np.int64)
    bounds[1:lanes] = np.cumsum(lengths, dtype=np.int64) if lengths else []
    bounds[lanes] = total
    return bounds, pos


@dataclass(frozen=True)
class RansCoder(Coder):
    """rANS entropy coder (constriction) with a stored per-block frequency table.

    Example:
        >>> c = RansCoder()
        >>> s = np.array([0, 1, 1, 3, 1], dtype=np.uint8)
        >>> c.decode(c.encode(s, 4), 5, 4).tolist()
        [0, 1, 1, 3, 1]
    """

    id: ClassVar[str] = "rans"
    format_version: ClassVar[int] = 3
    #: the layout read and written (see :meth:`for_format_version`): 1 is read only, 2 has
    #: no lanes, 3 (the default) has them
    version: int = field(default=3, repr=False)

    def __post_init__(self) -> None:
        if type(self.version) is not int or not 1 <= self.version <= self.format_version:
            raise StageError(f"rans: format version {self.version!r} is not 1 … "
                             f"{self.format_version}")

    def to_config(self) -> dict:
        return {"name": self.id, "configuration": {}}

    @classmethod
    def from_config(cls, config: dict) -> RansCoder:
        if config.get("configuration"):
            raise StageError(f"stage 'rans' takes no parameters, got {config['configuration']}")
        return super().from_config({"name": config.get("name"), "configuration": {}})

    def record_format_version(self) -> int:
        return self.version

    def for_format_version(self, version: int) -> RansCoder:
        return dataclasses.replace(self, version=version)

    def encode(self, symbols: np.ndarray, alphabet: int) -> bytes:
        if self.version < 2:
            raise StageError("rans: writes format versions 2 and 3 (version 1 is read-only)")
        if alphabet > MAX_ALPHABET:
            raise StageError(f"rans: alphabet {alphabet} exceeds {MAX_ALPHABET}; use zstd or raw")
        if symbols.size == 0:
            return bytes([0])
        try:
            counts = native.histogram(symbols, alphabet) if native.available() else \
                np.bincount(symbols.astype(np.int64), minlength=alphabet)
        except ValueError as error:  # a negative symbol, or (in C) one beyond the alphabet
            raise StageError(f"rans: symbols {int(symbols.min())} … {int(symbols.max())} "
                             f"outside alphabet {alphabet}") from error
        if counts.shape[0] > alphabet:
            raise StageError(f"rans: symbol {int(symbols.max())} outside alphabet {alphabet}")
        present = np.flatnonzero(counts)
        levels = levels_of(counts[present])
        header = write_table(present, levels)
        if present.size == 1:
            return header
        freqs = np.zeros(alphabet, np.int64)
        freqs[present] = level_frequencies(levels)
        lanes = lanes_for(counts[present], levels) if self.version >= 3 else 1
        if native.available():  # constriction's words, ~2.5× faster
            words = native.rans_encode(symbols, freqs, TABLE_BITS, lanes)
        else:
            import constriction

            model = _model(freqs, TABLE_BITS)
            words = []
            for lane in range(lanes):
                coder = constriction.stream.stack.AnsCoder()
                coder.encode_reverse(symbols[lane::lanes].astype(np.int32), model)
                words.append(coder.get_compressed())
        if self.version < 3:
            return header + words[0].astype("<u4").tobytes()
        return header + write_lanes(words)

    def decode(self, data: bytes, count: int, alphabet: int) -> np.ndarray:
        if alphabet > MAX_ALPHABET:
            raise FormatError(f"rans: alphabet {alphabet} exceeds {MAX_ALPHABET}")
        out_dtype = symbol_dtype(alphabet)
        view = memoryview(data)
        if self.version < 2:
            freqs, distinct, symbol, pos = _read_table_v1(view, alphabet)
            bits = PROBABILITY_BITS
        else:
            present, table, pos = read_table(view, alphabet)
            distinct = present.shape[0]
            symbol = int(present[-1]) if distinct else -1
            freqs = np.zeros(alphabet, np.int64)
            freqs[present] = table
            bits = TABLE_BITS
        if count == 0 or distinct == 0:
            if count:
                raise FormatError("rans: empty frequency table for a non-empty block")
            return np.zeros(0, out_dtype)
        if distinct == 1:
            return np.full(count, symbol, out_dtype)
        if self.version >= 3:
            bounds, pos = read_lanes(view, pos)
        else:
            bounds = np.array([0, (len(view) - pos) // 4], np.int64)
            if (len(view) - pos) % 4 or len(view) == pos:
                raise FormatError("rans: compressed body is not a whole (non-zero) number of "
                                  "32-bit words")
        body = view[pos:]
        if native.available():
            try:
                return native.rans_decode(body, freqs, bits, count, dtype=out_dtype,
                                          lanes=bounds)
            except ValueError as exc:
                raise FormatError(f"rans: corrupt stream ({exc})") from exc
        words = np.frombuffer(body, dtype="<u4").astype(np.uint32)
        lanes = bounds.shape[0] - 1
        out = np.empty(count, out_dtype)
        for lane in range(lanes):  # symbols lane, lane + L, … of the whole block
            out[lane::lanes] = _decode_lane(words[bounds[lane]:bounds[lane + 1]], freqs, bits,
                                            len(range(lane, count, lanes)))
        return out


def _decode_lane(words: np.ndarray, freqs: np.ndarray, bits: int, count: int) -> np.ndarray:
    """One lane's symbols by numba's compiled decoder where it pays, else constriction's."""
    compiled = _decoder_for(count)
    if compiled is not None:
        try:
            return compiled(words, freqs, bits, count)
        except ValueError as exc:
            raise FormatError(f"rans: corrupt stream ({exc})") from exc
    import constriction

    try:
        decoder = constriction.stream.stack.AnsCoder(words)
        return decoder.decode(_model(freqs, bits), count)
    except Exception as exc:  # constriction raises plain errors on corrupt input
        raise FormatError(f"rans: corrupt stream ({exc})") from exc


def _read_table_v1(view: memoryview, alphabet: int) -> tuple[np.ndarray, int, int, int]:
    """(frequencies over the alphabet, distinct symbols, last symbol, end of the table) of a
    format version 1 segment."""
    distinct, pos = read_varint(view, 0)
    if distinct > min(alphabet, MAX_ALPHABET):
        raise FormatError(f"rans: table has {distinct} symbols for alphabet {alphabet}")
    freqs = np.zeros(alphabet, np.int64)
    symbol = -1
    for _ in range(distinct):
        gap, pos = read_varint(view, pos)
        freq, pos = read_varint(view, pos)
        symbol += gap + 1
        if symbol >= alphabet:
            raise FormatError("rans: frequency table names a symbol outside the alphabet")
        if not 0 < freq <= 1 << PROBABILITY_BITS:
            raise FormatError(f"rans: frequency {freq} outside (0, 2**16]")
        freqs[symbol] = freq
    if distinct and int(freqs.sum()) != 1 << PROBABILITY_BITS:
        raise FormatError("rans: frequency table does not sum to 2**16")
    return freqs, distinct, symbol, pos
