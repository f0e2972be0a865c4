"""Byte streams as standard Zstandard frames of Huffman-coded literal blocks, built in numpy.

zstd's own match finder is harmful on low-entropy, match-free data such as float exponents
(level 3 spends ~3.3 bits on an exponent byte whose entropy is ~2.6), and ``python-zstandard``
offers no entropy-only mode. So this module writes the frames itself (RFC 8878): every block is
a *Compressed_Block* whose literals section is Huffman-coded (4 streams, direct weights) and
whose sequences section is empty, or an RLE block (constant runs) or Raw block when that is
smaller. Huffman weights are written directly (4 bits each) for alphabets up to 129 symbols and
FSE-compressed above. Decoding is plain ``zstandard`` decompression, i.e. zstd's native Huffman
decoder (~1.5 G symbols/s on one core), one-shot or streamed.

Example:
    >>> s = np.frombuffer(b"abracadabra" * 50, dtype=np.uint8)
    >>> bool((decode_frame(encode_frame(s), s.size) == s).all())
    True
"""

from __future__ import annotations

import heapq

import numpy as np

from rftpack import native
from rftpack.errors import FormatError

MAGIC = b"\x28\xb5\x2f\xfd"
BLOCK_MAX = 1 << 17
MAX_BITS = 11
MAX_DIRECT_SYMBOL = 128
#: Window descriptor: 2**17 bytes (no matches are ever emitted, blocks are ≤ 128 KiB).
_WINDOW_DESCRIPTOR = (17 - 10) << 3


def _plain_huffman(counts: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Unlimited Huffman code lengths of the present symbols (heap of merged subtrees)."""
    if native.available():  # the same lengths
        return native.huffman_depths(counts[present])
    n = present.size
    parent = np.zeros(2 * n - 1, np.int64)
    heap = [(int(counts[s]), i) for i, s in enumerate(present.tolist())]
    heapq.heapify(heap)
    node = n
    while len(heap) > 1:
        c1, a = heapq.heappop(heap)
        c2, b = heapq.heappop(heap)
        parent[a] = parent[b] = node
        heapq.heappush(heap, (c1 + c2, node))
        node += 1
    depth = np.zeros(2 * n - 1, np.int64)
    for i in range(2 * n - 3, -1, -1):  # parents have larger ids: walk from the root down
        depth[i] = depth[parent[i]] + 1
    return depth[:n]


def huffman_lengths(counts: np.ndarray, max_bits: int | None = None) -> np.ndarray:
    """Optimal code lengths (0 for absent symbols) limited to ``max_bits`` (package-merge).

    >>> huffman_lengths(np.array([5, 3, 1, 1])).tolist()
    [1, 2, 3, 3]
    >>> int(huffman_lengths(2 ** np.arange(16), max_bits=11).max())
    11
    """
    if max_bits is None:
        max_bits = MAX_BITS
    counts = np.asarray(counts, dtype=np.int64)
    present = np.flatnonzero(counts)
    lengths = np.zeros(counts.shape[0], np.int64)
    if present.size <= 1:
        lengths[present] = 1
        return lengths
    n = present.size
    plain = _plain_huffman(counts, present)
    if plain.max() <= max_bits:
        lengths[present] = plain
        return lengths
    if (1 << max_bits) < n:
        raise ValueError(f"{n} symbols cannot take codes of at most {max_bits} bits")
    order = np.argsort(counts[present], kind="stable")
    leaves = counts[present][order]
    # Each level lists leaves and packages (pairs of the previous level's list), by weight.
    levels = [(leaves, np.ones(n, bool), np.arange(n))]
    for _ in range(max_bits - 1):
        w_prev = levels[-1][0]
        m = w_prev.shape[0] // 2
        packages = w_prev[0:2 * m:2] + w_prev[1:2 * m:2]
        weights = np.concatenate([leaves, packages])
        is_leaf = np.concatenate([np.ones(n, bool), np.zeros(m, bool)])
        ref = np.concatenate([np.arange(n), np.arange(m)])
        o = np.argsort(weights, kind="stable")
        levels.append((weights[o], is_leaf[o], ref[o]))
    depth = np.zeros(n, np.int64)
    selected = np.zeros(levels[-1][0].shape[0], bool)
    selected[:2 * n - 2] = True
    for index in range(len(levels) - 1, -1, -1):
        _, is_leaf, ref = levels[index]
        depth += np.bincount(ref[is_leaf & selected], minlength=n)
        if index:
            below = np.zeros(levels[index - 1][0].shape[0], bool)
            chosen = ref[~is_leaf & selected]
            below[2 * chosen] = True
            below[2 * chosen + 1] = True
            selected = below
    lengths[present[order]] = depth
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """zstd's canonical code values: longest codes first, then by symbol value.

    >>> canonical_codes(np.array([1, 2, 3, 0, 4, 4])).tolist()
    [1, 1, 1, 0, 0, 1]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(lengths.shape[0], np.int64)
    present = np.flatnonzero(lengths)
    if present.size == 0:
        return codes
    table_log = int(lengths[present].max())
    weights = table_log + 1 - lengths[present]
    order = np.lexsort((present, weights))
    spans = np.left_shift(1, weights[order] - 1)
    starts = np.concatenate([[0], np.cumsum(spans)[:-1]])
    codes[present[order]] = starts >> (weights[order] - 1)
    return codes


def _pack_stream(lengths: np.ndarray, codes: np.ndarray) -> bytes:
    """One backward bitstream: symbol 0 is read first; a 1-bit end mark closes it."""
    csum = np.cumsum(lengths, dtype=np.int64)
    total = int(csum[-1]) if csum.size else 0
    pos = total - csum  # bits after symbol i's code = sum of later codes' lengths
    nwords = (total >> 5) + 2
    word = pos >> 5
    value = codes.astype(np.uint64) << (pos & 31).astype(np.uint64)
    lo = (value & np.uint64(0xFFFFFFFF)).astype(np.float64)
    hi = (value >> np.uint64(32)).astype(np.float64)
    # Fields never overlap, so sums are ORs; float64 holds sums below 2**32 exactly.
    words = np.bincount(word, lo, nwords) + np.bincount(word + 1, hi, nwords)
    out = words.astype(np.uint64).astype("<u4")
    out[total >> 5] |= np.uint32(1 << (total & 31))
    return out.tobytes()[: (total >> 3) + 1]


def _tree_description(lengths: np.ndarray) -> bytes | None:
    """Huffman weights of symbols 0..last-1 (the last one is implied): direct 4-bit weights
    when last ≤ 128, else FSE-compressed (None if that does not fit its 127-byte limit)."""
    present = np.flatnonzero(lengths)
    last = int(present[-1])
    table_log = int(lengths[present].max())
    weights = np.where(lengths[:last] > 0, table_log + 1 - lengths[:last], 0).astype(np.uint8)
    if last <= MAX_DIRECT_SYMBOL:
        if weights.size % 2:
            weights = np.append(weights, np.uint8(0))
        packed = (weights[0::2] << 4) | weights[1::2]
        return bytes([127 + last]) + packed.tobytes()
    body = _fse_weights(weights.tolist())
    if body is None or len(body) > 127:
        return None
    return bytes([len(body)]) + body


def _normalize(counts: list[int], table_log: int) -> list[int]:
    """Counts scaled to sum to 2**table_log, every present symbol ≥ 1 (largest remainder)."""
    total = sum(counts)
    size = 1 << table_log
    norm = [max(1, (c * size) // total) if c else 0 for c in counts]
    order = sorted(range(len(counts)), key=lambda s: (-counts[s], s))
    diff = size - sum(norm)
    i = 0
    while diff != 0:
        s = order[i % len(order)]
        if counts[s]:
            if diff > 0:
                norm[s] += 1
                diff -= 1
            elif norm[s] > 1:
                norm[s] -= 1
                diff += 1
        i += 1
    return norm


def _fse_ncount(norm: list[int], table_log: int) -> tuple[int, int]:
    """FSE table description (RFC 8878 4.1.1) as (little-endian bit value, bit count)."""
    value, nbits = table_log - 5, 4
    remaining = (1 << table_log) + 1
    threshold = 1 << table_log
    width = table_log + 1
    symbol = 0
    previous_zero = False
    last = max(s for s, c in enumerate(norm) if c)
    while symbol <= last and remaining > 1:
        if previous_zero:
            start = symbol
            while norm[symbol] == 0:
                symbol += 1
            while symbol >= start + 3:
                start += 3
                value |= 3 << nbits
                nbits += 2
            value |= (symbol - start) << nbits
            nbits += 2
        count = norm[symbol]
        symbol += 1
        top = (2 * threshold - 1) - remaining
        remaining -= count
        count += 1
        if count >= threshold:
            count += top
        value |= count << nbits
        nbits += width - (1 if count < top else 0)
        previous_zero = count == 1
        while remaining < threshold:
            width -= 1
            threshold >>= 1
    if remaining != 1:
        raise AssertionError("FSE counts do not sum to the table size")
    return value, nbits


def _fse_table(norm: list[int], table_log: int) -> list[tuple[int, int, int]]:
    """Decoding table: state -> (symbol, bits to read, base of the next state)."""
    size = 1 << table_log
    step = (size >> 1) + (size >> 3) + 3
    symbols = [0] * size
    position = 0
    for s, c in enumerate(norm):
        for _ in range(c):
            symbols[position] = s
            position = (position + step) & (size - 1)
    following = list(norm)
    table = []
    for state in range(size):
        s = symbols[state]
        nxt = following[s]
        following[s] += 1
        bits = table_log - (nxt.bit_length() - 1)
        table.append((s, bits, (nxt << bits) - size))
    return table


def _fse_weights(weights: list[int]) -> bytes | None:
    """Huffman weights as an FSE stream with two interleaved states (zstd's HUF_readStats)."""
    n = len(weights)
    counts = [0] * (max(weights) + 1)
    for w in weights:
        counts[w] += 1
    if sum(1 for c in counts if c) < 2:
        return None
    for table_log in (6, 5):
        norm = _normalize(counts, table_log)
        table = _fse_table(norm, table_log)
        states_of: dict[int, list[int]] = {}
        # encoder lookup: (symbol, next state) -> the state that emits symbol and leads there
        leads_to: dict[int, list[int]] = {}
        for state, (s, bits, base) in enumerate(table):
            states_of.setdefault(s, []).append(state)
            row = leads_to.setdefault(s, [-1] * (1 << table_log))
            for target in range(base, base + (1 << bits)):
                row[target] = state
        # Decoder: state1, state2 = read(log), read(log); symbol i comes from state i % 2, then
        # that state is updated with table bits. The stream ends inside the update that follows
        # symbol n-2, so the decoder emits symbol n-1 from the other state and stops.
        final_candidates = [st for st in states_of[weights[n - 2]] if table[st][1] > 0]
        if not final_candidates:
            continue
        state_of_symbol = [0] * n
        state_of_symbol[n - 2] = final_candidates[0]
        state_of_symbol[n - 1] = states_of[weights[n - 1]][0]
        updates: list[tuple[int, int]] = [(0, 0)] * max(0, n - 2)
        ok = True
        for i in range(n - 3, -1, -1):
            target = state_of_symbol[i + 2]
            found = leads_to[weights[i]][target]
            if found < 0:
                ok = False
                break
            _, bits, base = table[found]
            updates[i] = (target - base, bits)
            state_of_symbol[i] = found
        if not ok:
            continue
        reads = [(state_of_symbol[0], table_log), (state_of_symbol[1], table_log)] + updates
        total = sum(b for _, b in reads)
        stream = 1 << total  # end mark above the payload
        pos = total
        for v, b in reads:
            pos -= b
            stream |= v << pos
        body = stream.to_bytes(total // 8 + 1, "little")
        header, hbits = _fse_ncount(norm, table_log)
        return header.to_bytes((hbits + 7) // 8, "little") + body
    return None


def _literals_header(regenerated: int, compressed: int, streams: int) -> bytes:
    if streams == 1:
        value, size = 2 | (0 << 2) | (regenerated << 4) | (compressed << 14), 3
    elif regenerated < 1 << 10 and compressed < 1 << 10:
        value, size = 2 | (1 << 2) | (regenerated << 4) | (compressed << 14), 3
    elif regenerated < 1 << 14 and compressed < 1 << 14:
        value, size = 2 | (2 << 2) | (regenerated << 4) | (compressed << 18), 4
    else:
        value, size = 2 | (3 << 2) | (regenerated << 4) | (compressed << 22), 5
    return value.to_bytes(size, "little")


def _frame_header(n: int) -> bytes:
    """Frame_Header_Descriptor, Window_Descriptor and the smallest Frame_Content_Size field."""
    if 256 <= n < 256 + (1 << 16):
        flag, field = 1, (n - 256).to_bytes(2, "little")
    elif n < 1 << 32:
        flag, field = 2, n.to_bytes(4, "little")
    else:
        flag, field = 3, n.to_bytes(8, "little")
    return bytes([flag << 6, _WINDOW_DESCRIPTOR]) + field


def _block_header(last: bool, kind: int, size: int) -> bytes:
    return (int(last) | (kind << 1) | (size << 3)).to_bytes(3, "little")


def _huffman_block(block: np.ndarray, max_ratio: float = 1.0) -> bytes | None:
    """Literals section + empty sequences section, or None when Huffman does not pay
    (coded size above ``max_ratio`` × raw size)."""
    n = block.shape[0]
    counts = native.histogram(block, 256) if native.available() else \
        np.bincount(block, minlength=256)
    p = counts[counts > 0] / n
    if -(p * np.log2(p)).sum() >= 8 * max_ratio:  # no prefix code beats the entropy
        return None
    lengths = huffman_lengths(counts)
    if int((lengths * counts).sum()) >= 8 * n * max_ratio:
        return None
    tree = _tree_description(lengths)
    if tree is None:
        return None
    codes = canonical_codes(lengths).astype(np.uint16)
    if native.available():  # the same bits, ~20x faster
        def pack(part: slice) -> bytes:
            return native.huffman_pack(block[part], lengths, codes)
    else:
        sym_len = lengths.astype(np.uint8)[block]
        sym_code = codes[block]

        def pack(part: slice) -> bytes:
            return _pack_stream(sym_len[part], sym_code[part])
    if n < 1024:
        body = pack(slice(0, n))
        if len(tree) + len(body) >= min(n, 1023):
            return None
        streams = 1
    else:
        seg = (n + 3) // 4
        parts = [pack(slice(i, i + seg)) for i in range(0, 4 * seg, seg)]
        if max(len(p) for p in parts[:3]) > 0xFFFF:
            return None
        jump = b"".join(len(p).to_bytes(2, "little") for p in parts[:3])
        body = jump + b"".join(parts)
        streams = 4
    compressed = len(tree) + len(body)
    if compressed + 8 >= n * max_ratio:
        return None
    return _literals_header(n, compressed, streams) + tree + body + b"\x00"


def _runs(data: np.ndarray, segment: int, min_segments: int) -> list[tuple[int, int]]:
    """Split ``data`` into runs ``(start, end)`` where its local statistics change: segments
    are classed by the trailing zero bits common to all their bytes (8: all zero); a class
    lasting fewer than ``min_segments`` segments joins the run before it."""
    n = data.shape[0]
    nseg = n // segment
    if nseg < 2 * min_segments:
        return [(0, n)]
    ored = np.bitwise_or.reduce(data[:nseg * segment].reshape(nseg, segment), axis=1)
    low = ored & (~ored + np.uint8(1))  # lowest set bit; 0 for all-zero segments
    cls = np.where(ored == 0, 8, np.log2(np.maximum(low, 1)).astype(np.int64))
    edges = (np.flatnonzero(np.diff(cls)) + 1).tolist()
    starts = [a * segment for a, b in zip([0, *edges], [*edges, nseg], strict=True)
              if a and b - a >= min_segments]
    bounds = [0, *starts, n]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def encode_frame(symbols: np.ndarray, block_size: int = BLOCK_MAX, max_ratio: float = 1.0,
                 segment: int = 1024, min_segments: int = 8) -> bytes:
    """A zstd frame holding ``symbols`` (uint8): runs of all-zero bytes as RLE blocks, the
    rest Huffman-coded in blocks of ≤ ``block_size`` split where local statistics change,
    or stored raw where Huffman saves less than ``1 - max_ratio``."""
    data = np.ascontiguousarray(symbols, dtype=np.uint8).reshape(-1)
    n = data.shape[0]
    block_size = max(1, min(int(block_size), BLOCK_MAX))
    out = [MAGIC, _frame_header(n)]
    if n == 0:
        out.append(_block_header(True, 0, 0))
        return b"".join(out)
    pieces: list[tuple[int, int]] = []
    for a, b in _runs(data, segment, min_segments):
        parts = -(-(b - a) // block_size)
        cuts = [a + ((b - a) * i) // parts for i in range(parts + 1)]
        pieces += list(zip(cuts[:-1], cuts[1:], strict=True))
    for index, (start, end) in enumerate(pieces):
        block = data[start:end]
        last = index == len(pieces) - 1
        first = block[0]
        if not (block != first).any():
            out += [_block_header(last, 1, block.shape[0]), bytes([int(first)])]
            continue
        coded = _huffman_block(block, max_ratio)
        if coded is None:
            out += [_block_header(last, 0, block.shape[0]), block.tobytes()]
        else:
            out += [_block_header(last, 2, len(coded)), coded]
    return b"".join(out)


def stored_blocks(frame: bytes | memoryview) -> list[tuple[int, int, int]] | None:
    """``(kind, offset, size)`` of every block of a frame made only of Raw (kind 0: ``size``
    bytes at ``offset``) and RLE blocks (kind 1: the byte at ``offset``, ``size`` times), so
    that a reader can take its bytes without zstd's copy; ``None`` for any other frame (a
    Huffman block, a dictionary, a checksum, anything irregular: zstd decodes those).

    >>> stored_blocks(encode_frame(np.zeros(5, np.uint8)))
    [(1, 13, 5)]
    """
    view = memoryview(frame)
    end = len(view)
    if end < 6 or view[:4] != MAGIC:
        return None
    descriptor = view[4]
    if descriptor & 0x0F:  # reserved bit, checksum, dictionary
        return None
    single, fcs_flag = descriptor & 0x20, descriptor >> 6
    pos = 5 + (0 if single else 1)
    width = 1 if single and fcs_flag == 0 else (0, 2, 4, 8)[fcs_flag]
    if not width or pos + width > end:
        return None
    declared = int.from_bytes(view[pos:pos + width], "little") + (256 if width == 2 else 0)
    pos += width
    blocks = []
    while pos + 3 <= end:
        header = int.from_bytes(view[pos:pos + 3], "little")
        kind, size = (header >> 1) & 3, header >> 3
        pos += 3
        if kind == 0:
            blocks.append((0, pos, size))
            pos += size
        elif kind == 1:
            blocks.append((1, pos, size))
            pos += 1
        else:
            return None
        if header & 1:
            regular = pos == end and sum(size for _, _, size in blocks) == declared
            return blocks if regular else None
    return None


def decode_frame(data: bytes | memoryview, count: int) -> np.ndarray:
    """Decode one frame that must hold exactly ``count`` bytes (any valid zstd frame)."""
    import zstandard

    try:
        declared = zstandard.frame_content_size(data)
        if declared != count:
            raise FormatError(f"zstd frame declares {declared} bytes, expected {count}")
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=max(count, 1))
    except zstandard.ZstdError as exc:
        raise FormatError(f"corrupt zstd frame ({exc})") from exc
    if len(raw) != count:
        raise FormatError(f"zstd frame holds {len(raw)} bytes, expected {count}")
    return np.frombuffer(raw, dtype=np.uint8)
