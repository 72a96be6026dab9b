"""The messages of an HDF5 object header (versions 1 and 2, with continuation blocks).

Spec: https://docs.hdfgroup.org/hdf5/develop/_f_m_t3.html, section IV.A. Chunks are
followed through continuation messages with loop detection; their total size and the
number of messages are bounded by :class:`~weightgate.formats.hdf5.reader.Hdf5Bounds`.
"""

from __future__ import annotations

from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats.hdf5.reader import Hdf5Bounds, Hdf5Reader

# Object header message types (IV.A.2).
MSG_NIL = 0x0000
MSG_ATTRIBUTE = 0x000C
MSG_CONTINUATION = 0x0010
MSG_ATTRIBUTE_INFO = 0x0015
MSG_FLAG_SHARED = 0x02


def header_messages(
    reader: Hdf5Reader, address: int, bounds: Hdf5Bounds
) -> list[tuple[int, int, int, int]]:
    """(type, flags, data start, data end) of every message of an object header."""
    start = reader.address(address, "root object header", address)
    v2 = reader.bytes_at(start, 4, "object header") == b"OHDR"
    if v2:
        chunk, creation_order = _first_chunk_v2(reader, start)
    else:
        chunk, creation_order = _first_chunk_v1(reader, start), False
    messages: list[tuple[int, int, int, int]] = []
    visited: set[int] = set()
    total = 0
    chunks = [chunk]
    while chunks:
        chunk_start, chunk_end = chunks.pop(0)
        if chunk_start in visited:
            raise FormatError("object header continuation blocks form a loop", chunk_start)
        visited.add(chunk_start)
        total += chunk_end - chunk_start
        if total > bounds.max_header_bytes:
            raise LimitExceeded(
                f"object header larger than {bounds.max_header_bytes} bytes "
                "(limits.max_header_bytes)",
                chunk_start,
            )
        reader.check(chunk_start, chunk_end - chunk_start, "object header chunk")
        for message in _chunk_messages(reader, chunk_start, chunk_end, v2, creation_order):
            if len(messages) >= bounds.max_messages:
                raise LimitExceeded(
                    f"more than {bounds.max_messages} object header messages", message[2]
                )
            if message[0] == MSG_CONTINUATION:
                chunks.append(_continuation(reader, message[2], message[3], v2))
            else:
                messages.append(message)
    return messages


def _first_chunk_v1(reader: Hdf5Reader, start: int) -> tuple[int, int]:
    # IV.A.1.a: version, reserved, message count (2), reference count (4), header size (4),
    # then padding to an 8-byte boundary.
    if reader.u8(start) != 1:
        raise FormatError(f"object header version {reader.u8(start)} (expected 1)", start)
    size = reader.u32(start + 8)
    return start + 16, start + 16 + size


def _first_chunk_v2(reader: Hdf5Reader, start: int) -> tuple[tuple[int, int], bool]:
    # IV.A.1.b: "OHDR", version 2, flags, optional times and attribute phase change
    # values, then the size of chunk 0 in 1, 2, 4 or 8 bytes; a checksum follows it.
    if reader.u8(start + 4) != 2:
        raise FormatError(f"object header version {reader.u8(start + 4)} (expected 2)", start)
    flags = reader.u8(start + 5)
    pos = start + 6
    if flags & 0x20:
        pos += 16
    if flags & 0x10:
        pos += 4
    width = 1 << (flags & 0x03)
    size = reader.uint(pos, width)
    pos += width
    # Flag 0x04: attribute creation order is tracked, so every message header carries it.
    return (pos, pos + size), bool(flags & 0x04)


def _continuation(reader: Hdf5Reader, start: int, end: int, v2: bool) -> tuple[int, int]:
    # IV.A.2.q: offset and length of the next block; version-2 blocks are framed by the
    # "OCHK" signature and a checksum.
    address = reader.address(reader.offset(start, end), "continuation block", start)
    length = reader.length(start + reader.offset_size, end)
    reader.check(address, length, "continuation block")
    if not v2:
        return address, address + length
    if length < 8 or reader.bytes_at(address, 4, "continuation block") != b"OCHK":
        raise FormatError("continuation block without its OCHK signature", address)
    return address + 4, address + length - 4


def _chunk_messages(
    reader: Hdf5Reader, start: int, end: int, v2: bool, creation_order: bool
) -> list[tuple[int, int, int, int]]:
    messages = []
    header = (6 if creation_order else 4) if v2 else 8
    pos = start
    # A version-2 chunk may end in a gap smaller than a message header.
    while end - pos >= header:
        if v2:
            message_type, size, flags = reader.u8(pos), reader.u16(pos + 1), reader.u8(pos + 3)
        else:
            message_type, size, flags = reader.u16(pos), reader.u16(pos + 2), reader.u8(pos + 4)
        data_start = pos + header
        if size > end - data_start:
            raise FormatError(f"object header message of {size} bytes runs past its chunk", pos)
        if message_type != MSG_NIL:
            messages.append((message_type, flags, data_start, data_start + size))
        pos = data_start + size
    return messages
