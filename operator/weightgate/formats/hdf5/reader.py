"""Bounded little-endian reads over an HDF5 file, and the limits the HDF5 reader obeys.

:class:`Hdf5Reader` knows the file's sizes of offsets and lengths and the base address
every address is relative to; each read is checked against the file (or a structure's
end) and raises :class:`~weightgate.errors.FormatError` instead of running past it.
Spec: https://docs.hdfgroup.org/hdf5/develop/_f_m_t3.html
"""

from __future__ import annotations

from dataclasses import dataclass

from weightgate.errors import FormatError


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


class Hdf5Reader:
    """Little-endian reads that never run past the file.

    Attributes:
        data: The whole file.
        size: Its length.
        offset_size: Bytes of an address (from the superblock).
        length_size: Bytes of a length (from the superblock).
        base: Where addresses count from (the superblock's position).
        heaps: Global heap collections indexed so far, by address: object index to
            (data offset, size).
        value_bytes: Bytes of attribute values read from global heaps so far.
    """

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.size = len(data)
        self.offset_size = 8
        self.length_size = 8
        self.base = 0
        self.heaps: dict[int, dict[int, tuple[int, int]]] = {}
        self.value_bytes = 0

    def set_sizes(self, offset_size: int, length_size: int, at: int) -> None:
        """Take the sizes of offsets and lengths the superblock at ``at`` declares."""
        if offset_size not in (2, 4, 8) or length_size not in (2, 4, 8):
            raise UnsupportedHdf5(f"sizes of offsets/lengths {offset_size}/{length_size}", at)
        self.offset_size = offset_size
        self.length_size = length_size

    def check(self, pos: int, count: int, what: str, end: int | None = None) -> None:
        """Raise FormatError unless ``count`` bytes at ``pos`` end by ``end`` (or the file's)."""
        limit = self.size if end is None else end
        if pos < 0 or count < 0 or pos + count > limit:
            raise FormatError(f"{what} at {pos} ({count} bytes) runs past its end ({limit})", pos)

    def uint(self, pos: int, width: int, end: int | None = None) -> int:
        """The unsigned little-endian integer of ``width`` bytes at ``pos``."""
        self.check(pos, width, "field", end)
        return int.from_bytes(self.data[pos : pos + width], "little")

    def u8(self, pos: int, end: int | None = None) -> int:
        """The byte at ``pos``."""
        return self.uint(pos, 1, end)

    def u16(self, pos: int, end: int | None = None) -> int:
        """The 16-bit unsigned integer at ``pos``."""
        return self.uint(pos, 2, end)

    def u32(self, pos: int, end: int | None = None) -> int:
        """The 32-bit unsigned integer at ``pos``."""
        return self.uint(pos, 4, end)

    def offset(self, pos: int, end: int | None = None) -> int:
        """The address (of the file's offset size) at ``pos``, relative to the base."""
        return self.uint(pos, self.offset_size, end)

    def length(self, pos: int, end: int | None = None) -> int:
        """The length (of the file's length size) at ``pos``."""
        return self.uint(pos, self.length_size, end)

    def undefined(self, address: int) -> bool:
        """True for the all-ones "undefined address" value."""
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
        """A copy of ``count`` bytes at ``pos``, checked like :meth:`check`."""
        self.check(pos, count, what, end)
        return bytes(self.data[pos : pos + count])


def pad8(size: int) -> int:
    """``size`` rounded up to a multiple of 8."""
    return (size + 7) & ~7
