"""A minimal, bounded reader of the root-group attributes of an HDF5 file.

Spec: https://docs.hdfgroup.org/hdf5/develop/_f_m_t3.html (HDF5 File Format Specification
Version 3). Section numbers below refer to it.

Keras' legacy ``.h5`` format keeps the model architecture as a JSON string in the
``model_config`` attribute of the root group; that is where Lambda layers and custom
objects are declared. We read it ourselves instead of through h5py because h5py wraps
libhdf5, a large C library with a long record of crashes on hostile files, and a segfault
would end the whole scan. This reader only needs: the superblock (versions 0-3), the root
object header (versions 1 and 2, with continuation blocks), attribute messages (versions
1-3) whose values are fixed-length or variable-length strings, and global heap
collections (where variable-length strings live). Every offset is checked against the
file size, every size against explicit bounds, and continuation loops are detected.

What it does not read, it says so instead of guessing: attributes held in dense storage
(a fractal heap, used by files written with ``libver='latest'`` when an object has many
or very large attributes) and attribute messages in the shared-message heap are listed in
:attr:`RootAttributes.unreadable`. libhdf5 reads *only* dense storage when it exists, so
a caller must treat such a file as unreadable rather than trust the compact messages.
Checksums of version-2 metadata are not verified: libhdf5 refuses a block whose checksum
fails, so a bad checksum can only make a file unloadable, never change what it loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from weightgate.errors import FormatError, LimitExceeded

SIGNATURE = b"\x89HDF\r\n\x1a\n"

# Object header message types (IV.A.2).
MSG_NIL = 0x0000
MSG_ATTRIBUTE = 0x000C
MSG_CONTINUATION = 0x0010
MSG_ATTRIBUTE_INFO = 0x0015
MSG_FLAG_SHARED = 0x02

# Datatype classes (IV.A.2.d).
CLASS_STRING = 3
CLASS_VLEN = 9
VLEN_TYPE_STRING = 1

MAX_RANK = 32
"""libhdf5's H5S_MAX_RANK."""


class UnsupportedHdf5(FormatError):
    """A valid HDF5 feature this reader does not implement (reported, never guessed at)."""


@dataclass(frozen=True)
class Hdf5Bounds:
    """Limits on what the reader will parse or allocate.

    Attributes:
        max_header_bytes: Object-header bytes (all chunks) and global heap collection size.
        max_string_bytes: Bytes of one attribute value.
        max_messages: Object-header messages and attribute elements.
    """

    max_header_bytes: int
    max_string_bytes: int
    max_messages: int


@dataclass(frozen=True)
class Hdf5Attribute:
    """One attribute of the root group.

    Attributes:
        name: Attribute name.
        offset: File offset of its attribute message.
        values: Its string elements (a scalar has one), when it was asked for and is
            a string; None otherwise.
        problem: Why ``values`` is None for an attribute that was asked for.
    """

    name: str
    offset: int
    values: tuple[str, ...] | None = None
    problem: str | None = None


@dataclass
class RootAttributes:
    """What the reader found on the root group.

    Attributes:
        superblock_version: 0 to 3.
        attributes: Attributes by name, the first message of a name winning (as in libhdf5).
        unreadable: Why some attributes could not be read (dense or shared storage).
    """

    superblock_version: int
    attributes: dict[str, Hdf5Attribute] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)


def read_root_attributes(
    data: memoryview, bounds: Hdf5Bounds, wanted: frozenset[str]
) -> RootAttributes:
    """Read the names of the root group's attributes, and the values of ``wanted`` ones.

    Raises:
        FormatError: The structures read break the format (offsets out of the file, bad
            signatures, loops). :class:`UnsupportedHdf5` for valid features not handled.
        LimitExceeded: A size or count exceeds ``bounds``.
    """
    reader = _Reader(data)
    superblock = _find_superblock(data)
    # libhdf5 takes the superblock's position as the base of every address, whatever the
    # stored base address says (H5F__super_read).
    reader.base = superblock
    version = reader.u8(superblock + 8)
    if version in (0, 1):
        root_address = _superblock_v0(reader, superblock, version)
    elif version in (2, 3):
        reader.set_sizes(reader.u8(superblock + 9), reader.u8(superblock + 10), superblock + 9)
        root_address = reader.offset(superblock + 12 + 3 * reader.offset_size)
    else:
        raise UnsupportedHdf5(f"superblock version {version}", superblock + 8)
    result = RootAttributes(version)
    for message_type, flags, start, end in _header_messages(reader, root_address, bounds):
        if message_type == MSG_ATTRIBUTE:
            if flags & MSG_FLAG_SHARED:
                result.unreadable.append(f"attribute message at {start} is a shared message")
                continue
            attribute = _attribute(reader, start, end, bounds, wanted)
            first = result.attributes.setdefault(attribute.name, attribute)
            if first is not attribute and attribute.name in wanted:
                # libhdf5 would return the first; a second copy only exists to confuse.
                result.unreadable.append(
                    f"attribute {attribute.name!r} appears twice (at {first.offset} and {start})"
                )
        elif message_type == MSG_ATTRIBUTE_INFO:
            heap = _dense_storage_address(reader, start, end)
            if heap is not None:
                result.unreadable.append(
                    f"attributes in dense storage (fractal heap at {heap}) are not read"
                )
    return result


class _Reader:
    """Little-endian reads that never run past the file."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.size = len(data)
        self.offset_size = 8
        self.length_size = 8
        self.base = 0
        self.heaps: dict[int, dict[int, tuple[int, int]]] = {}
        self.value_bytes = 0

    def set_sizes(self, offset_size: int, length_size: int, at: int) -> None:
        if offset_size not in (2, 4, 8) or length_size not in (2, 4, 8):
            raise UnsupportedHdf5(f"sizes of offsets/lengths {offset_size}/{length_size}", at)
        self.offset_size = offset_size
        self.length_size = length_size

    def check(self, pos: int, count: int, what: str, end: int | None = None) -> None:
        limit = self.size if end is None else end
        if pos < 0 or count < 0 or pos + count > limit:
            raise FormatError(f"{what} at {pos} ({count} bytes) runs past its end ({limit})", pos)

    def uint(self, pos: int, width: int, end: int | None = None) -> int:
        self.check(pos, width, "field", end)
        return int.from_bytes(self.data[pos : pos + width], "little")

    def u8(self, pos: int, end: int | None = None) -> int:
        return self.uint(pos, 1, end)

    def u16(self, pos: int, end: int | None = None) -> int:
        return self.uint(pos, 2, end)

    def u32(self, pos: int, end: int | None = None) -> int:
        return self.uint(pos, 4, end)

    def offset(self, pos: int, end: int | None = None) -> int:
        return self.uint(pos, self.offset_size, end)

    def length(self, pos: int, end: int | None = None) -> int:
        return self.uint(pos, self.length_size, end)

    def undefined(self, address: int) -> bool:
        return address == (1 << (8 * self.offset_size)) - 1

    def address(self, relative: int, what: str, at: int) -> int:
        """Absolute file offset of an address read at ``at``."""
        if self.undefined(relative):
            raise FormatError(f"{what} address is undefined", at)
        absolute = self.base + relative
        if absolute >= self.size:
            raise FormatError(f"{what} address {absolute} is past the end of the file", at)
        return absolute

    def bytes_at(self, pos: int, count: int, what: str, end: int | None = None) -> bytes:
        self.check(pos, count, what, end)
        return bytes(self.data[pos : pos + count])


def _find_superblock(data: memoryview) -> int:
    # II.A: the superblock is at 0 or, after a user block, at 512, 1024, 2048, ...
    position = 0
    while position + len(SIGNATURE) <= len(data):
        if data[position : position + len(SIGNATURE)] == SIGNATURE:
            return position
        position = 512 if position == 0 else position * 2
    raise FormatError("no HDF5 signature at offset 0 or 512 x 2^n", 0)


def _superblock_v0(reader: _Reader, superblock: int, version: int) -> int:
    # II.A: versions 0 and 1 share a layout; version 1 adds 4 bytes after the flags. The
    # addresses that follow are base, free-space, end-of-file and driver information,
    # then the root group's symbol table entry (link name offset, object header address).
    reader.set_sizes(reader.u8(superblock + 13), reader.u8(superblock + 14), superblock + 13)
    entry = superblock + (24 if version == 0 else 28) + 4 * reader.offset_size
    return reader.offset(entry + reader.offset_size)


def _header_messages(
    reader: _Reader, address: int, bounds: Hdf5Bounds
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


def _first_chunk_v1(reader: _Reader, start: int) -> tuple[int, int]:
    # IV.A.1.a: version, reserved, message count (2), reference count (4), header size (4),
    # then padding to an 8-byte boundary.
    if reader.u8(start) != 1:
        raise FormatError(f"object header version {reader.u8(start)} (expected 1)", start)
    size = reader.u32(start + 8)
    return start + 16, start + 16 + size


def _first_chunk_v2(reader: _Reader, start: int) -> tuple[tuple[int, int], bool]:
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


def _continuation(reader: _Reader, start: int, end: int, v2: bool) -> tuple[int, int]:
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
    reader: _Reader, start: int, end: int, v2: bool, creation_order: bool
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


def _dense_storage_address(reader: _Reader, start: int, end: int) -> int | None:
    # IV.A.2.v: version 0, flags, [max creation index], fractal heap address, ...
    if reader.u8(start, end) != 0:
        raise UnsupportedHdf5(f"attribute info message version {reader.u8(start, end)}", start)
    pos = start + 2 + (2 if reader.u8(start + 1, end) & 0x01 else 0)
    heap = reader.offset(pos, end)
    return None if reader.undefined(heap) else reader.base + heap


def _pad8(size: int) -> int:
    return (size + 7) & ~7


def _unpadded(size: int) -> int:
    return size


def _attribute(
    reader: _Reader, start: int, end: int, bounds: Hdf5Bounds, wanted: frozenset[str]
) -> Hdf5Attribute:
    # IV.A.2.m: version 1 pads name, datatype and dataspace to 8 bytes; versions 2 and 3
    # do not, and version 3 adds the name's character set.
    version = reader.u8(start, end)
    if version not in (1, 2, 3):
        raise UnsupportedHdf5(f"attribute message version {version}", start)
    flags = reader.u8(start + 1, end) if version > 1 else 0
    name_size = reader.u16(start + 2, end)
    type_size = reader.u16(start + 4, end)
    space_size = reader.u16(start + 6, end)
    pos = start + (9 if version == 3 else 8)
    raw_name = reader.bytes_at(pos, name_size, "attribute name", end)
    name = raw_name.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
    pad = _pad8 if version == 1 else _unpadded
    type_start = pos + pad(name_size)
    space_start = type_start + pad(type_size)
    value_start = space_start + pad(space_size)
    reader.check(type_start, value_start - type_start, "attribute datatype/dataspace", end)
    if name not in wanted:
        return Hdf5Attribute(name, start)
    if flags & 0x03:
        return Hdf5Attribute(name, start, problem="its datatype or dataspace is shared")
    count = _element_count(reader, space_start, space_start + space_size, bounds)
    try:
        values = _string_values(reader, type_start, value_start, end, count=count, bounds=bounds)
    except UnsupportedHdf5 as exc:
        return Hdf5Attribute(name, start, problem=str(exc))
    return Hdf5Attribute(name, start, values=values)


def _element_count(reader: _Reader, start: int, end: int, bounds: Hdf5Bounds) -> int:
    # IV.A.2.b: version 1 has 5 reserved bytes before the dimensions; version 2 has a
    # type byte (0 scalar, 1 simple, 2 null) instead.
    version = reader.u8(start, end)
    rank = reader.u8(start + 1, end)
    if version not in (1, 2):
        raise UnsupportedHdf5(f"dataspace message version {version}", start)
    if rank > MAX_RANK:
        raise FormatError(f"dataspace of rank {rank} (at most {MAX_RANK})", start)
    if version == 2 and reader.u8(start + 3, end) == 2:
        return 0
    count = 1
    pos = start + (8 if version == 1 else 4)
    for index in range(rank):
        count *= reader.length(pos + index * reader.length_size, end)
        if count > bounds.max_messages:
            raise LimitExceeded(f"attribute of more than {bounds.max_messages} elements", start)
    return count


def _string_values(
    reader: _Reader,
    type_start: int,
    value_start: int,
    end: int,
    *,
    count: int,
    bounds: Hdf5Bounds,
) -> tuple[str, ...]:
    # IV.A.2.d: class in the low nibble of the first byte, then 3 bytes of class bits and
    # the element size.
    class_bits = reader.u8(type_start, end)
    type_class = class_bits & 0x0F
    bits0 = reader.u8(type_start + 1, end)
    element_size = reader.u32(type_start + 4, end)
    if type_class == CLASS_STRING:
        if element_size * count > end - value_start:
            raise FormatError("fixed-length string attribute runs past its message", value_start)
        if element_size > bounds.max_string_bytes:
            raise LimitExceeded(f"string attribute of {element_size} bytes", value_start)
        padding = bits0 & 0x0F
        values = []
        for index in range(count):
            pos = value_start + index * element_size
            raw = reader.bytes_at(pos, element_size, "string value", end)
            # Null-terminated and null-padded strings end at the first NUL; space-padded
            # ones lose their trailing spaces (libhdf5 does the same on read).
            raw = raw.rstrip(b" ") if padding == 2 else raw.split(b"\0", 1)[0]
            values.append(_decode(raw, pos))
        return tuple(values)
    if type_class == CLASS_VLEN and bits0 & 0x0F == VLEN_TYPE_STRING:
        # On disk each element is a length (4 bytes) and a global heap id (address, index).
        element = 4 + reader.offset_size + 4
        if element * count > end - value_start:
            raise FormatError("variable-length attribute runs past its message", value_start)
        values = []
        for index in range(count):
            pos = value_start + index * element
            heap = reader.offset(pos + 4, end)
            heap_index = reader.u32(pos + 4 + reader.offset_size, end)
            if reader.u32(pos, end) == 0 and heap_index == 0:
                values.append("")
                continue
            raw = _global_heap_object(reader, heap, heap_index, pos, bounds)
            values.append(_decode(raw, pos))
        return tuple(values)
    raise UnsupportedHdf5(f"not a string (datatype class {type_class})", type_start)


def _decode(raw: bytes, at: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsupportedHdf5(f"string is not valid UTF-8 (byte {exc.start})", at) from exc


def _global_heap_object(
    reader: _Reader, relative: int, index: int, at: int, bounds: Hdf5Bounds
) -> bytes:
    start = reader.address(relative, "global heap collection", at)
    # Each collection is indexed once: thousands of strings pointing into one large
    # collection must not walk it thousands of times.
    objects = reader.heaps.get(start)
    if objects is None:
        objects = reader.heaps[start] = _global_heap_index(reader, start, bounds)
    found = objects.get(index)
    if found is None:
        raise FormatError(f"global heap object {index} not found in its collection", start)
    pos, size = found
    # All values read from one file share max_string_bytes, so many elements naming one
    # large object cannot multiply it in memory.
    reader.value_bytes += size
    if reader.value_bytes > bounds.max_string_bytes:
        raise LimitExceeded(
            f"attribute strings add up to more than {bounds.max_string_bytes} bytes "
            "(limits.max_string_bytes)",
            pos,
        )
    return reader.bytes_at(pos, size, "global heap object")


def _global_heap_index(
    reader: _Reader, start: int, bounds: Hdf5Bounds
) -> dict[int, tuple[int, int]]:
    # III.E: "GCOL", version 1, 3 reserved bytes, collection size; then objects: index (2),
    # reference count (2), reserved (4), size, data padded to 8 bytes. Index 0 is the
    # free space that ends the used part of the collection.
    if reader.bytes_at(start, 4, "global heap collection") != b"GCOL":
        raise FormatError("global heap collection without its GCOL signature", start)
    size = reader.length(start + 8)
    if size > bounds.max_header_bytes:
        raise LimitExceeded(f"global heap collection of {size} bytes", start)
    reader.check(start, size, "global heap collection")
    end = start + size
    # libhdf5 aligns the collection header and each object header to 8 bytes
    # (H5HG_SIZEOF_HDR, H5HG_SIZEOF_OBJHDR), which matters when lengths are 2 or 4 bytes.
    header = _pad8(8 + reader.length_size)
    pos = start + header
    objects: dict[int, tuple[int, int]] = {}
    while end - pos >= header:
        object_index = reader.u16(pos, end)
        object_size = reader.length(pos + 8, end)
        if object_index == 0:
            break
        if object_size > end - pos - header:
            raise FormatError("global heap object runs past its collection", pos)
        objects.setdefault(object_index, (pos + header, object_size))
        pos += header + _pad8(object_size)
    return objects
