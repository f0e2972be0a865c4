"""LEB128 unsigned varints: compact headers for coded streams."""

from __future__ import annotations

from rftpack.errors import FormatError


def write_varint(value: int, out: bytearray) -> None:
    """Append ``value`` (≥ 0) as an unsigned LEB128 varint.

    >>> b = bytearray(); write_varint(300, b); bytes(b)
    b'\\xac\\x02'
    """
    if value < 0:
        raise ValueError("varint must be non-negative")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Read a varint at ``pos``; returns (value, next position). Bounded to 64 bits."""
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise FormatError("coded stream ends inside a varint header")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise FormatError("coded stream has an over-long varint header")
