"""Objects of HDF5 global heap collections, where variable-length strings live.

Spec: https://docs.hdfgroup.org/hdf5/develop/_f_m_t3.html, section III.E. Each
collection is indexed once per file, and the bytes of all values read from one file
share one bound (``max_string_bytes``).
"""

from __future__ import annotations

from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats.hdf5.reader import Hdf5Bounds, Hdf5Reader, pad8


def global_heap_object(
    reader: Hdf5Reader, relative: int, index: int, at: int, bounds: Hdf5Bounds
) -> bytes:
    """The bytes of object ``index`` of the collection at ``relative`` (read at ``at``).

    Raises:
        FormatError: The collection or the object is not there.
        LimitExceeded: The collection, or all values read so far, exceed ``bounds``.
    """
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
    reader: Hdf5Reader, start: int, bounds: Hdf5Bounds
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
    header = pad8(8 + reader.length_size)
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
        pos += header + pad8(object_size)
    return objects
