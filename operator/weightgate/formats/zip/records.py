"""The zip data model: signatures, flag bits, and the headers and entries a reader finds.

Shared by the central-directory reader (:mod:`weightgate.formats.zip.central_directory`)
and the local-header walk (:mod:`weightgate.formats.zip.walk`), with the extra-field decoding
both need (Zip64 sizes and offsets, Info-ZIP Unicode paths). Spec:
https://pkware.cachefly.net/webdocs/casestudies/APPNOTE.TXT
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

LOCAL_SIG = b"PK\x03\x04"
CENTRAL_SIG = b"PK\x01\x02"
EOCD_SIG = b"PK\x05\x06"
ZIP64_EOCD_SIG = b"PK\x06\x06"
ZIP64_LOCATOR_SIG = b"PK\x06\x07"
DESCRIPTOR_SIG = b"PK\x07\x08"

U32_MAX = 0xFFFFFFFF
"""A 32-bit size, offset or count with this value defers to the Zip64 fields."""

FLAG_ENCRYPTED = 0x1
FLAG_LZMA_EOS = 0x2
FLAG_DATA_DESCRIPTOR = 0x8
FLAG_STRONG_ENCRYPTION = 0x40
FLAG_UTF8 = 0x800
ODD_FLAGS = {
    0x1: "encrypted",
    0x20: "compressed patched data",
    0x40: "strong encryption",
    0x2000: "masked local header",
}
"""Flag bits that make zipfile refuse a member while PyTorch's reader ignores them."""


class Method(enum.IntEnum):
    """Compression methods this reader's callers can decompress."""

    STORED = 0
    DEFLATED = 8
    BZIP2 = 12
    LZMA = 14


class IssueKind(enum.Enum):
    """Structural oddities of one zip file."""

    NO_CENTRAL_DIRECTORY = "no-central-directory"
    BAD_CENTRAL_DIRECTORY = "bad-central-directory"
    CD_CHOICE = "cd-choice"
    MISSING_LOCAL_HEADER = "missing-local-header"
    HEADER_MISMATCH = "header-mismatch"
    LOCAL_ONLY = "local-only"
    CD_ONLY = "cd-only"
    OVERLAP = "overlap"
    PREFIX = "prefix"
    TRAILING = "trailing"
    UNREFERENCED = "unreferenced"
    DUPLICATE_NAME = "duplicate-name"
    TOO_MANY_MEMBERS = "too-many-members"


@dataclass(frozen=True)
class ZipIssue:
    """One oddity, with where it is."""

    kind: IssueKind
    message: str
    offset: int | None = None
    evidence: str | None = None


@dataclass(frozen=True)
class HeaderFields:
    """Fields a local header and a central directory record share."""

    offset: int
    raw_name: bytes
    unicode_name: str | None
    flags: int
    method: int
    crc32: int
    compressed_size: int
    uncompressed_size: int

    @property
    def name(self) -> str:
        """The name as loaders decode it (UTF-8 when flagged, else cp437)."""
        encoding = "utf-8" if self.flags & FLAG_UTF8 else "cp437"
        return self.raw_name.decode(encoding, errors="replace")


@dataclass(frozen=True)
class LocalHeader(HeaderFields):
    """A local file header."""

    data_offset: int = 0
    sizes_known: bool = True


@dataclass(frozen=True)
class CentralRecord(HeaderFields):
    """A central directory record (``local_offset`` already resolved in the file)."""

    local_offset: int = 0
    external_attr: int = 0


@dataclass
class ZipEntry:
    """One member: a local header and the central records that point at it.

    Attributes:
        local: Its local header.
        central: Central directory records naming this local header (usually one).
        data_end: End of its data; an upper bound only when ``size_known`` is False.
        size_known: False for members with a data descriptor and no central record.
        truncated: The data runs past the end of the file.
        in_walk: Reached by walking local headers from the start of the archive.
    """

    local: LocalHeader
    central: list[CentralRecord] = field(default_factory=list)
    data_end: int = 0
    size_known: bool = True
    truncated: bool = False
    in_walk: bool = False

    @property
    def record(self) -> HeaderFields:
        """The header loaders go by: the central record when there is one."""
        return self.central[0] if self.central else self.local

    @property
    def names(self) -> list[str]:
        """Every distinct name this member goes by (local, central, unicode extras)."""
        found: list[str] = []
        for header in (self.local, *self.central):
            for name in (header.name, header.unicode_name):
                if name is not None and name not in found:
                    found.append(name)
        return found

    @property
    def flags(self) -> int:
        """Flag bits of the local header and every central record, combined."""
        combined = self.local.flags
        for record in self.central:
            combined |= record.flags
        return combined

    @property
    def data(self) -> slice:
        """Where the member's (compressed) data lies in the file."""
        return slice(self.local.data_offset, self.data_end)


@dataclass
class ZipListing:
    """Everything :func:`read_zip` found.

    Attributes:
        entries: Members in file order.
        issues: Structural oddities.
        prefix_end: Length of data before the first member (0 when none).
        trailing_start: Where data after the end record starts, or None.
        has_central_directory: A usable end record and central directory were found.
    """

    entries: list[ZipEntry] = field(default_factory=list)
    issues: list[ZipIssue] = field(default_factory=list)
    prefix_end: int = 0
    trailing_start: int | None = None
    has_central_directory: bool = False


def _extra_fields(extra: bytes) -> dict[int, bytes]:
    fields: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(extra):
        header_id, size = struct.unpack_from("<HH", extra, pos)
        fields.setdefault(header_id, extra[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return fields


def zip64_values(extra: bytes, values: list[int]) -> list[int]:
    """Replace the 0xFFFFFFFF values, in order, with the Zip64 extra field's 8-byte ones."""
    data = _extra_fields(extra).get(0x0001)
    if data is None:
        return values
    resolved, pos = list(values), 0
    for index, value in enumerate(values):
        if value == U32_MAX and pos + 8 <= len(data):
            (resolved[index],) = struct.unpack_from("<Q", data, pos)
            pos += 8
    return resolved


def unicode_path(extra: bytes) -> str | None:
    """The name in an Info-ZIP Unicode Path extra field (0x7075), if there is one."""
    # Some extractors write to this name, not the header's.
    data = _extra_fields(extra).get(0x7075)
    if data is None or len(data) < 5:
        return None
    return data[5:].decode("utf-8", errors="replace")
