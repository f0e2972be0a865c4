"""``floatplanes``: bit-exact float storage — exponent-aligned byte planes, Huffman-coded.

For the exact path this coder sees whole elements (``encode_elements``), not shuffled bytes,
so it can cut floats where their statistics differ:

* the top 16 bits of each element (sign, exponent, top mantissa bits) are rotated left by
  ``r`` bits and split into two byte planes: **A** (high byte) gathers the exponent and, for
  ``r > 1``, the top mantissa bits — whose skew given the exponent is then coded jointly with
  it — and **B** (low byte) the remaining bits; ``r`` is chosen per block by the planes'
  entropy on a sample (with ``fast_decode``, the default, among rotations that leave B raw:
  bfloat16/float32 then get A = exponent, B = mantissa top 7 bits + sign, as ZipNN does);
* the lower bytes (float32: 2, float64: 6) are one plane each, mostly incompressible but
  all-zero or short in runs of reduced-precision weights (fp16/bf16-exact rows);
* every plane is a standard Zstandard frame of Huffman-coded literal blocks (built by
  :mod:`rftpack.stages._zhuff`), RLE blocks for zero runs, raw blocks where Huffman would
  save < 3 %; so decoding is zstd's native Huffman decoder plus a few numpy passes over
  cache-sized chunks.

Integers, bools and 1-byte floats take ``zstd`` level 3 over byte-shuffled bytes (what the
``zstd`` coder does on the default exact path).

Element segment layout (all frames are complete zstd frames of exactly ``count`` bytes each;
``varint`` is LEB128):

    u8 layout: 0 empty, 1 float planes, 2 zstd-3 over byte-shuffled bytes
    layout 1:  u8 rotation r (0..15); then itemsize × (varint length, frame): A, B, then the
               byte planes 0 .. itemsize-3 of the little-endian elements (least significant
               first). Element bits: top16 = rotr16((A << 8) | B, r); the other bytes verbatim.
    layout 2:  one zstd frame of the byte-shuffled little-endian bytes (itemsize planes).

Symbol segments (``encode``/``decode``, e.g. as a lossy coder): u8 plane count p (1, 2 or 4:
bytes per symbol), then p × (varint length, frame), the little-endian byte planes of the
symbols, least significant first.

Example:
    >>> c = FloatPlanesCoder()
    >>> x = np.array([1.5, -0.0, np.inf, np.nan], dtype=np.float32)
    >>> c.decode_elements(c.encode_elements(x), 4, x.dtype).tobytes() == x.tobytes()
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import ml_dtypes
import numpy as np

from rftpack import native
from rftpack.errors import FormatError, StageError
from rftpack.stages import _zhuff
from rftpack.stages._varint import read_varint, write_varint
from rftpack.stages.base import Coder, symbol_dtype

EMPTY, FLOAT_PLANES, SHUFFLED_ZSTD = 0, 1, 2
#: element dtypes coded as float planes (itemsize ≥ 2, IEEE-like sign/exponent/mantissa)
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16), np.dtype(np.float32),
                np.dtype(np.float64))
#: elements per reassembly chunk: small enough that a chunk's temporaries stay in cache
CHUNK = 1 << 17
SAMPLE = 1 << 16
#: a Huffman block must be ≤ this fraction of its raw size, else it is stored raw
MAX_RATIO = 0.97
#: float planes smaller than this fraction of the raw bytes, or of tensors up to SMALL bytes
#: (where frame headers weigh), are also tried against zstd; the smaller one is kept
TRY_ZSTD_BELOW = 0.4
SMALL = 1 << 14


def _is_float(dtype: np.dtype) -> bool:
    return any(np.dtype(dtype) == f and np.dtype(dtype).name == f.name for f in FLOAT_DTYPES)


def _unsigned(itemsize: int) -> np.dtype:
    return np.dtype(f"<u{itemsize}")


def _top16(words: np.ndarray, itemsize: int) -> np.ndarray:
    """Top 16 bits of each little-endian element (a strided view)."""
    half = words.view("<u2")
    step = itemsize // 2
    return half[step - 1::step]


def _rotl16(h: np.ndarray, r: int) -> np.ndarray:
    if r == 0:
        return h.astype(np.uint16)
    return ((h << np.uint16(r)) | (h >> np.uint16(16 - r))).astype(np.uint16)


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return min(8.0, float(-(p * np.log2(p)).sum()))


def choose_rotation(h: np.ndarray, fast_decode: bool = True) -> int:
    """Rotation of the top-16-bit words minimising the two planes' order-0 entropy (a plane
    that would save < 3 % counts as raw, 8 bits), measured on a few contiguous slices. With
    ``fast_decode`` only rotations leaving at most one plane Huffman-coded are considered
    (when there is one), as each Huffman plane costs a pass of zstd's decoder.

    >>> import ml_dtypes
    >>> w = np.random.default_rng(0).normal(0, 0.05, 50000).astype(ml_dtypes.bfloat16)
    >>> choose_rotation(w.view("<u2"))  # the exponent whole in the high byte, sign to the low
    1
    """
    n = h.shape[0]
    if n > SAMPLE:
        step = n // 4
        h = np.concatenate([h[i * step:i * step + SAMPLE // 4] for i in range(4)])
    limit = 8.0 * MAX_RATIO
    histogram = np.bincount(h, minlength=1 << 16)
    present = np.flatnonzero(histogram)
    weights = histogram[present]
    options = []
    for r in range(16):
        rot = ((present << r) | (present >> (16 - r))) & 0xFFFF
        bits = [_entropy_bits(np.bincount(rot >> 8, weights, 256)),
                _entropy_bits(np.bincount(rot & 0xFF, weights, 256))]
        huffman = sum(b < limit for b in bits)
        options.append((sum(b if b < limit else 8.0 for b in bits), huffman, r))
    if fast_decode and any(o[1] <= 1 for o in options):
        options = [o for o in options if o[1] <= 1]
    best = min(o[0] for o in options)
    return min(o[2] for o in options if o[0] <= best + 1e-3)


def _frame(plane: np.ndarray, out: bytearray) -> None:
    data = _zhuff.encode_frame(plane, max_ratio=MAX_RATIO)
    write_varint(len(data), out)
    out += data


def _frame_slices(view: memoryview, pos: int, number: int) -> list[memoryview]:
    frames = []
    for _ in range(number):
        length, pos = read_varint(view, pos)
        if pos + length > len(view):
            raise FormatError("floatplanes: segment ends inside a plane")
        frames.append(view[pos:pos + length])
        pos += length
    if pos != len(view):
        raise FormatError(f"floatplanes: {len(view) - pos} trailing bytes after the planes")
    return frames


class _PlaneReader:
    """Reads one plane's zstd frame chunk by chunk into a reused buffer (stays in cache)."""

    def __init__(self, frame: memoryview, count: int, chunk: int) -> None:
        import zstandard

        self._error = zstandard.ZstdError
        try:
            declared = zstandard.frame_content_size(frame)
        except zstandard.ZstdError as exc:
            raise FormatError(f"floatplanes: corrupt plane ({exc})") from exc
        if declared != count:
            raise FormatError(f"floatplanes: plane declares {declared} bytes, expected {count}")
        self._reader = zstandard.ZstdDecompressor().stream_reader(frame, read_size=1 << 18)
        self._buffer = np.empty(chunk, np.uint8)

    def read(self, n: int) -> np.ndarray:
        target = self._buffer[:n]
        try:
            got = self._reader.readinto(memoryview(target))
        except self._error as exc:
            raise FormatError(f"floatplanes: corrupt plane ({exc})") from exc
        if got != n:
            raise FormatError("floatplanes: plane holds fewer bytes than declared")
        return target


class _StoredPlaneReader:
    """Reads a plane stored in Raw and RLE blocks (:func:`_zhuff.stored_blocks`) without zstd:
    a view of the frame where a read lies in one Raw block, else a copy into a reused buffer."""

    def __init__(self, frame: memoryview, blocks: list[tuple[int, int, int]], count: int,
                 chunk: int) -> None:
        if sum(size for _, _, size in blocks) != count:
            raise FormatError(f"floatplanes: plane holds {sum(s for _, _, s in blocks)} bytes, "
                              f"expected {count}")
        self._data = np.frombuffer(frame, np.uint8)
        self._blocks = blocks
        self._block = 0
        self._used = 0  # bytes of the current block already read
        self._buffer = np.empty(chunk, np.uint8)

    def read(self, n: int) -> np.ndarray:
        kind, offset, size = self._blocks[self._block]
        if kind == 0 and size - self._used >= n:
            start = offset + self._used
            self._advance(n)
            return self._data[start:start + n]
        target = self._buffer[:n]
        done = 0
        while done < n:
            kind, offset, size = self._blocks[self._block]
            take = min(n - done, size - self._used)
            if kind == 0:
                start = offset + self._used
                target[done:done + take] = self._data[start:start + take]
            else:
                target[done:done + take] = self._data[offset]
            done += take
            self._advance(take)
        return target

    def _advance(self, n: int) -> None:
        self._used += n
        while self._block < len(self._blocks) - 1 and self._used == self._blocks[self._block][2]:
            self._block += 1
            self._used = 0


def _plane_reader(frame: memoryview, count: int, chunk: int) -> _PlaneReader | _StoredPlaneReader:
    blocks = _zhuff.stored_blocks(frame)
    if blocks is None:
        return _PlaneReader(frame, count, chunk)
    return _StoredPlaneReader(frame, blocks, count, chunk)


def _shuffled_zstd(values: np.ndarray) -> bytes:
    import zstandard

    itemsize = values.dtype.itemsize
    raw = np.ascontiguousarray(values).view(np.uint8)
    if itemsize > 1:
        raw = np.ascontiguousarray(raw.reshape(-1, itemsize).T)
    return bytes([SHUFFLED_ZSTD]) + zstandard.ZstdCompressor(level=3).compress(raw.tobytes())


def _unshuffled_zstd(view: memoryview, count: int, itemsize: int) -> np.ndarray:
    import zstandard

    expected = count * itemsize
    try:
        declared = zstandard.frame_content_size(view[1:])
        if declared != expected:
            raise FormatError(f"floatplanes: zstd frame declares {declared} bytes, "
                              f"expected {expected}")
        raw = zstandard.ZstdDecompressor().decompress(view[1:], max_output_size=expected)
    except zstandard.ZstdError as exc:
        raise FormatError(f"floatplanes: corrupt zstd stream ({exc})") from exc
    if len(raw) != expected:
        raise FormatError(f"floatplanes: zstd stream holds {len(raw)} bytes, expected {expected}")
    planes = np.frombuffer(raw, np.uint8)
    if itemsize > 1:
        planes = np.ascontiguousarray(planes.reshape(itemsize, count).T)
    return planes.reshape(-1).view(_unsigned(itemsize))


@dataclass(frozen=True)
class FloatPlanesCoder(Coder):
    """Lossless floats: exponent-aligned byte planes, each Huffman-coded as a zstd frame.

    Example:
        >>> c = FloatPlanesCoder()
        >>> s = np.array([0, 3, 3, 3, 1], dtype=np.uint8)
        >>> c.decode(c.encode(s, 4), 5, 4).tolist()
        [0, 3, 3, 3, 1]
    """

    id: ClassVar[str] = "floatplanes"
    #: True: at most one exponent plane Huffman-coded (decodes about as fast as ZipNN);
    #: False: the smallest layout (~0.3-0.5 % smaller on weights, decodes ~1.5× slower).
    fast_decode: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.fast_decode, bool):
            raise StageError(f"floatplanes: fast_decode must be true or false, "
                             f"got {self.fast_decode!r}")

    # -- the exact path: whole elements ---------------------------------------------------------

    def encode_elements(self, values: np.ndarray) -> bytes:
        """Bit-exact bytes of a 1-D array of any supported dtype (little-endian)."""
        values = np.ascontiguousarray(values).reshape(-1)
        dtype = values.dtype
        if values.shape[0] == 0:
            return bytes([EMPTY])
        itemsize = dtype.itemsize
        if not _is_float(dtype):
            return _shuffled_zstd(values.view(_unsigned(itemsize)) if itemsize > 1 else values)
        words = values.view(_unsigned(itemsize))
        top = _top16(words, itemsize)
        r = choose_rotation(top, self.fast_decode)
        rotated = _rotl16(top, r)
        out = bytearray([FLOAT_PLANES, r])
        _frame((rotated >> 8).astype(np.uint8), out)
        _frame((rotated & 0xFF).astype(np.uint8), out)
        raw = words.view(np.uint8)
        for j in range(itemsize - 2):
            _frame(raw[j::itemsize], out)
        if len(out) < TRY_ZSTD_BELOW * values.nbytes or values.nbytes <= SMALL:
            alternative = _shuffled_zstd(words)
            if len(alternative) < len(out):
                return alternative
        return bytes(out)

    def decode_elements(self, data: bytes, count: int, dtype: np.dtype,
                        out: np.ndarray | None = None) -> np.ndarray:
        """Inverse of :meth:`encode_elements`: ``count`` elements of ``dtype``, written into
        ``out`` (a contiguous array of that dtype and length) when given, and returned."""
        dtype = np.dtype(dtype)
        itemsize = dtype.itemsize
        view = memoryview(data)
        if len(view) == 0:
            raise FormatError("floatplanes: empty segment")
        layout = view[0]
        if layout == EMPTY:
            if count or len(view) != 1:
                raise FormatError("floatplanes: an empty segment must hold no elements")
            return np.zeros(0, dtype) if out is None else out
        if count <= 0:
            raise FormatError("floatplanes: a non-empty segment must hold elements")
        if layout == SHUFFLED_ZSTD:
            words = _unshuffled_zstd(view, count, itemsize)
        elif layout == FLOAT_PLANES:
            if not _is_float(dtype):
                raise FormatError(f"floatplanes: float planes cannot hold dtype {dtype}")
            if len(view) < 2 or view[1] >= 16:
                raise FormatError("floatplanes: bad rotation byte")
            frames = _frame_slices(view, 2, itemsize)
            target = None
            if out is not None and out.dtype == dtype and out.shape == (count,) \
                    and out.flags.c_contiguous and dtype.newbyteorder("<") == dtype:
                target = out.view(_unsigned(itemsize))
            words = _assemble(frames, view[1], count, itemsize, target)
            if target is not None:
                return out
        else:
            raise FormatError(f"floatplanes: unknown segment layout {layout}")
        little = dtype.newbyteorder("<") if dtype.byteorder != "|" else dtype
        values = words.view(little).astype(dtype, copy=False)
        if out is not None:
            out[...] = values
            return out
        return values

    # -- the Coder interface: integer symbols ---------------------------------------------------

    def encode(self, symbols: np.ndarray, alphabet: int) -> bytes:
        if alphabet > 1 << 32:
            raise StageError(f"floatplanes: alphabet {alphabet} exceeds 2**32")
        dtype = symbol_dtype(alphabet)
        values = np.ascontiguousarray(symbols, dtype=dtype.newbyteorder("<")).reshape(-1)
        raw = values.view(np.uint8)
        out = bytearray([dtype.itemsize])
        for j in range(dtype.itemsize):
            _frame(raw[j::dtype.itemsize], out)
        return bytes(out)

    def decode(self, data: bytes, count: int, alphabet: int) -> np.ndarray:
        dtype = symbol_dtype(alphabet)
        view = memoryview(data)
        if len(view) == 0 or view[0] != dtype.itemsize:
            raise FormatError(f"floatplanes: symbol segment must start with {dtype.itemsize} "
                              f"(bytes per symbol of alphabet {alphabet})")
        planes = [_zhuff.decode_frame(f, count) for f in _frame_slices(view, 1, dtype.itemsize)]
        if dtype.itemsize == 1:
            symbols = planes[0].copy()
        else:
            raw = np.empty((count, dtype.itemsize), np.uint8)
            for j, plane in enumerate(planes):
                raw[:, j] = plane
            symbols = raw.reshape(-1).view(dtype.newbyteorder("<")).astype(dtype)
        if symbols.size and alphabet < 1 << (8 * dtype.itemsize) \
                and int(symbols.max()) >= alphabet:
            raise FormatError(f"floatplanes: decoded symbol outside alphabet {alphabet}")
        return symbols


def _assemble(frames: list[memoryview], r: int, count: int, itemsize: int,
              out: np.ndarray | None = None) -> np.ndarray:
    """Elements from their plane frames, decoded and combined chunk by chunk so that every
    temporary stays in cache (the planes are never materialised whole); combined by
    :func:`rftpack.native.planes_assemble` where it is built."""
    size = min(CHUNK, count)
    readers = [_plane_reader(f, count, size) for f in frames]
    if out is None:
        out = np.empty(count, _unsigned(itemsize))
    top = _top16(out, itemsize)
    raw = out.view(np.uint8)
    tmp = np.empty(size, np.uint16)
    word = np.empty(size, np.uint16) if itemsize > 2 else None
    compiled = native.available()
    for i in range(0, count, CHUNK):
        j = min(count, i + CHUNK)
        n = j - i
        a, b = readers[0].read(n), readers[1].read(n)
        if compiled:  # whole elements in one pass, the same bytes
            native.planes_assemble(a, b, [reader.read(n) for reader in readers[2:]], r,
                                   out[i:j])
            continue
        w = out[i:j] if word is None else word[:n]
        np.left_shift(a, 8, out=w, dtype=np.uint16)
        np.bitwise_or(w, b, out=w)
        if r:
            t = tmp[:n]
            np.right_shift(w, r, out=t)
            np.left_shift(w, 16 - r, out=w)
            np.bitwise_or(w, t, out=w)
        if word is not None:
            top[i:j] = w
            chunk = raw[i * itemsize:j * itemsize]
            for k, reader in enumerate(readers[2:]):
                chunk[k::itemsize] = reader.read(n)
    return out
