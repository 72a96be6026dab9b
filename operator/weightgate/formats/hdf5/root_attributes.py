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
The object header (:mod:`weightgate.formats.hdf5.object_header`), the global heap
(:mod:`weightgate.formats.hdf5.heap`) and the bounded reads they share
(:mod:`weightgate.formats.hdf5.reader`) have their own modules.

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
from weightgate.formats.hdf5.heap import global_heap_object
from weightgate.formats.hdf5.object_header import (
    MSG_ATTRIBUTE,
    MSG_ATTRIBUTE_INFO,
    MSG_FLAG_SHARED,
    header_messages,
)
from weightgate.formats.hdf5.reader import Hdf5Bounds, Hdf5Reader, UnsupportedHdf5, pad8

SIGNATURE = b"\x89HDF\r\n\x1a\n"

# Datatype classes (IV.A.2.d).
CLASS_STRING = 3
CLASS_VLEN = 9
VLEN_TYPE_STRING = 1

MAX_RANK = 32
"""libhdf5's H5S_MAX_RANK."""


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
    reader = Hdf5Reader(data)
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
    for message_type, flags, start, end in header_messages(reader, root_address, bounds):
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


def _find_superblock(data: memoryview) -> int:
    # II.A: the superblock is at 0 or, after a user block, at 512, 1024, 2048, ...
    position = 0
    while position + len(SIGNATURE) <= len(data):
        if data[position : position + len(SIGNATURE)] == SIGNATURE:
            return position
        position = 512 if position == 0 else position * 2
    raise FormatError("no HDF5 signature at offset 0 or 512 x 2^n", 0)


def _superblock_v0(reader: Hdf5Reader, superblock: int, version: int) -> int:
    # II.A: versions 0 and 1 share a layout; version 1 adds 4 bytes after the flags. The
    # addresses that follow are base, free-space, end-of-file and driver information,
    # then the root group's symbol table entry (link name offset, object header address).
    reader.set_sizes(reader.u8(superblock + 13), reader.u8(superblock + 14), superblock + 13)
    entry = superblock + (24 if version == 0 else 28) + 4 * reader.offset_size
    return reader.offset(entry + reader.offset_size)


def _dense_storage_address(reader: Hdf5Reader, start: int, end: int) -> int | None:
    # IV.A.2.v: version 0, flags, [max creation index], fractal heap address, ...
    if reader.u8(start, end) != 0:
        raise UnsupportedHdf5(f"attribute info message version {reader.u8(start, end)}", start)
    pos = start + 2 + (2 if reader.u8(start + 1, end) & 0x01 else 0)
    heap = reader.offset(pos, end)
    return None if reader.undefined(heap) else reader.base + heap


def _unpadded(size: int) -> int:
    return size


def _attribute(
    reader: Hdf5Reader, start: int, end: int, bounds: Hdf5Bounds, wanted: frozenset[str]
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
    pad = pad8 if version == 1 else _unpadded
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


def _element_count(reader: Hdf5Reader, start: int, end: int, bounds: Hdf5Bounds) -> int:
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
    reader: Hdf5Reader,
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
            raw = global_heap_object(reader, heap, heap_index, pos, bounds)
            values.append(_decode(raw, pos))
        return tuple(values)
    raise UnsupportedHdf5(f"not a string (datatype class {type_class})", type_start)


def _decode(raw: bytes, at: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsupportedHdf5(f"string is not valid UTF-8 (byte {exc.start})", at) from exc
