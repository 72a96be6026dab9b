"""A lenient, bounded zip reader: every member any loader could see, none it could hide.

Python's :mod:`zipfile` is too strict for a scanner (it refuses CRC mismatches, the
encryption flag bits 0x1/0x20/0x40 and local/central name mismatches, all of which
PyTorch's miniz reader ignores), and too trusting of sizes. A member that zipfile refuses
but PyTorch loads is exactly how scanners get bypassed, so this reader:

* reads the central directory (EOCD found in the last 64 KiB + 22 bytes, Zip64 locator,
  record and extra fields), resolving offsets like zipfile when data was prepended;
* also walks the local file headers from the start, as a streaming reader would, and
  searches the gaps between known entries for hidden local headers;
* locates member data from the local header (as miniz does), with the central
  directory's sizes when there is one;
* reports every disagreement (names, methods, sizes, entries in only one directory,
  overlaps, data before the first or after the last record) as a :class:`ZipIssue`.

It never trusts a count or size: members are capped by ``max_members`` and every offset is
checked against the data. Spec: https://pkware.cachefly.net/webdocs/casestudies/APPNOTE.TXT
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from weightgate.formats.compressed import first_nonzero

LOCAL_SIG = b"PK\x03\x04"
CENTRAL_SIG = b"PK\x01\x02"
EOCD_SIG = b"PK\x05\x06"
ZIP64_EOCD_SIG = b"PK\x06\x06"
ZIP64_LOCATOR_SIG = b"PK\x06\x07"
DESCRIPTOR_SIG = b"PK\x07\x08"

_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<4sHHHHIIH")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")
_EOCD_SEARCH = 65535 + _EOCD.size
_GAP_SEARCH_WINDOW = 1 << 20
_U32_MAX = 0xFFFFFFFF

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


@dataclass(frozen=True)
class _Directory:
    start: int
    size: int
    count: int
    concat: int
    end: int


def read_zip(view: memoryview, *, max_members: int) -> ZipListing:
    """List the members of a zip file as leniently as any loader would.

    Args:
        view: The whole file (or archive member).
        max_members: Most entries to read; more is reported as TOO_MANY_MEMBERS.
    """
    reader = _Reader(view, max_members)
    reader.run()
    return reader.listing


class _Reader:
    def __init__(self, view: memoryview, max_members: int) -> None:
        self.view = view
        self.max_members = max_members
        self.listing = ZipListing()
        self.by_offset: dict[int, ZipEntry] = {}
        self.full = False

    def issue(self, kind: IssueKind, message: str, offset: int | None = None, ev: str = "") -> None:
        self.listing.issues.append(ZipIssue(kind, message, offset, ev or None))

    def run(self) -> None:
        directory = self._find_directory()
        walk_limit = len(self.view)
        if directory is not None:
            self.listing.has_central_directory = True
            walk_limit = directory.start
            self._read_central(directory)
            trailing = first_nonzero(self.view, directory.end)  # zero padding is fine
            if trailing is not None:
                self.listing.trailing_start = trailing
                self.issue(
                    IssueKind.TRAILING,
                    f"{len(self.view) - trailing} bytes after the end of central directory",
                    trailing,
                )
        start = 4 if bytes(self.view[:8]) == DESCRIPTOR_SIG + LOCAL_SIG else 0
        if bytes(self.view[start : start + 4]) != LOCAL_SIG and self.by_offset:
            start = min(self.by_offset)  # data was prepended: walk from the first member
        self._walk(start, walk_limit, primary=True)
        self._search_gaps(walk_limit)
        self._finish(walk_limit)

    # -- central directory -------------------------------------------------------------

    def _find_directory(self) -> _Directory | None:
        tail_start = max(0, len(self.view) - _EOCD_SEARCH)
        tail = bytes(self.view[tail_start:])
        found_any = False
        pos = tail.rfind(EOCD_SIG)
        while pos >= 0:
            found_any = True
            directory = self._directory_at(tail_start + pos)
            if directory is not None:
                return directory
            pos = tail.rfind(EOCD_SIG, 0, pos)
        if found_any:
            self.issue(
                IssueKind.BAD_CENTRAL_DIRECTORY,
                "end of central directory record points at no central directory",
            )
        else:
            self.issue(IssueKind.NO_CENTRAL_DIRECTORY, "no end of central directory record")
        return None

    def _directory_at(self, eocd: int) -> _Directory | None:
        if eocd + _EOCD.size > len(self.view):
            return None
        _, _, _, _, count, size, offset, comment_len = _EOCD.unpack_from(self.view, eocd)
        end = min(len(self.view), eocd + _EOCD.size + comment_len)
        record_start = eocd
        locator = eocd - _ZIP64_LOCATOR.size
        if locator >= 0 and bytes(self.view[locator : locator + 4]) == ZIP64_LOCATOR_SIG:
            _, _, declared, _ = _ZIP64_LOCATOR.unpack_from(self.view, locator)
            # Like zipfile, prefer the record right before the locator (robust to prepended
            # data); fall back to the declared offset.
            for candidate in (locator - _ZIP64_EOCD.size, declared):
                if 0 <= candidate <= len(self.view) - _ZIP64_EOCD.size and (
                    bytes(self.view[candidate : candidate + 4]) == ZIP64_EOCD_SIG
                ):
                    fields = _ZIP64_EOCD.unpack_from(self.view, candidate)
                    count, size, offset = fields[7], fields[8], fields[9]
                    record_start = candidate
                    break
        actual = record_start - size
        if actual >= 0 and (size == 0 or bytes(self.view[actual : actual + 4]) == CENTRAL_SIG):
            return _Directory(actual, size, count, actual - offset, end)
        # miniz (PyTorch) uses the declared offset as is.
        if offset + size <= record_start and bytes(self.view[offset : offset + 4]) == CENTRAL_SIG:
            return _Directory(offset, size, count, 0, end)
        return None

    def _read_central(self, directory: _Directory) -> None:
        pos, stop, parsed = directory.start, directory.start + directory.size, 0
        while pos + _CENTRAL.size <= stop and bytes(self.view[pos : pos + 4]) == CENTRAL_SIG:
            if parsed >= self.max_members:
                self._too_many(pos)
                return
            fields = _CENTRAL.unpack_from(self.view, pos)
            flags, method, crc, csize, usize = fields[3], fields[4], fields[7], fields[8], fields[9]
            name_len, extra_len, comment_len = fields[10], fields[11], fields[12]
            external_attr, local_offset = fields[15], fields[16]
            name_at = pos + _CENTRAL.size
            raw_name = bytes(self.view[name_at : name_at + name_len])
            extra = bytes(self.view[name_at + name_len : name_at + name_len + extra_len])
            usize, csize, local_offset = _zip64_values(extra, [usize, csize, local_offset])
            record = CentralRecord(
                offset=pos,
                raw_name=raw_name,
                unicode_name=_unicode_path(extra),
                flags=flags,
                method=method,
                crc32=crc,
                compressed_size=csize,
                uncompressed_size=usize,
                local_offset=local_offset + directory.concat,
                external_attr=external_attr,
            )
            self._attach(record)
            parsed += 1
            pos = name_at + name_len + extra_len + comment_len
        if parsed != directory.count and directory.count not in (0xFFFF, _U32_MAX):
            self.issue(
                IssueKind.BAD_CENTRAL_DIRECTORY,
                f"end record declares {directory.count} entries, the directory holds {parsed}",
                directory.start,
            )

    def _attach(self, record: CentralRecord) -> None:
        entry = self.by_offset.get(record.local_offset)
        if entry is None:
            local = self._parse_local(record.local_offset)
            if local is None:
                self.issue(
                    IssueKind.MISSING_LOCAL_HEADER,
                    f"central record points at offset {record.local_offset}, where "
                    "there is no local header",
                    record.offset,
                    record.name,
                )
                return
            entry = ZipEntry(local)
            self.by_offset[local.offset] = entry
        entry.central.append(record)
        if len(entry.central) == 1:
            entry.data_end = entry.local.data_offset + record.compressed_size
            if entry.data_end > len(self.view):
                entry.truncated, entry.data_end = True, len(self.view)

    # -- local headers -------------------------------------------------------------------

    def _parse_local(self, offset: int) -> LocalHeader | None:
        if not 0 <= offset <= len(self.view) - _LOCAL.size:
            return None
        if bytes(self.view[offset : offset + 4]) != LOCAL_SIG:
            return None
        _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len = _LOCAL.unpack_from(
            self.view, offset
        )
        name_at = offset + _LOCAL.size
        data_offset = name_at + name_len + extra_len
        if data_offset > len(self.view):
            return None
        extra = bytes(self.view[name_at + name_len : data_offset])
        usize, csize = _zip64_values(extra, [usize, csize])
        unknown = bool(flags & FLAG_DATA_DESCRIPTOR) and csize == 0 and crc == 0
        return LocalHeader(
            offset=offset,
            raw_name=bytes(self.view[name_at : name_at + name_len]),
            unicode_name=_unicode_path(extra),
            flags=flags,
            method=method,
            crc32=crc,
            compressed_size=csize,
            uncompressed_size=usize,
            data_offset=data_offset,
            sizes_known=not unknown,
        )

    def _walk(self, pos: int, limit: int, *, primary: bool) -> int:
        """Follow consecutive local headers from ``pos``; return where the walk stopped.

        Positions only grow (data starts after its header), so the walk always ends.
        """
        while pos < limit and bytes(self.view[pos : pos + 4]) == LOCAL_SIG and not self.full:
            entry = self.by_offset.get(pos)
            if entry is None:
                if len(self.by_offset) >= self.max_members:
                    self._too_many(pos)
                    break
                local = self._parse_local(pos)
                if local is None:
                    break
                entry = ZipEntry(local)
                self._size_from_local(entry, limit)
                self.by_offset[pos] = entry
            entry.in_walk = entry.in_walk or primary
            pos = self._next_header(entry, limit)
        return pos

    def _size_from_local(self, entry: ZipEntry, limit: int) -> None:
        local = entry.local
        if local.sizes_known:
            entry.data_end = local.data_offset + local.compressed_size
        else:
            # Data descriptor and no central record. A stored member ends where a
            # descriptor recording its own length begins; a compressed stream ends itself,
            # before the next header, and its decompressor finds where.
            entry.size_known = False
            entry.data_end = limit
            for pos, sig in self._hits(
                (DESCRIPTOR_SIG, LOCAL_SIG, CENTRAL_SIG), local.data_offset, limit
            ):
                if sig != DESCRIPTOR_SIG:
                    entry.data_end = pos
                    break
                if local.method == Method.STORED and pos + 16 <= len(self.view):
                    (csize,) = struct.unpack_from("<I", self.view, pos + 8)
                    if csize == pos - local.data_offset:
                        entry.data_end, entry.size_known = pos, True
                        break
        if entry.data_end > len(self.view):
            entry.truncated, entry.data_end = True, len(self.view)

    def _next_header(self, entry: ZipEntry, limit: int) -> int:
        end = entry.data_end
        if not entry.size_known:
            return end
        described = entry.flags & FLAG_DATA_DESCRIPTOR or bytes(self.view[end : end + 4]) == (
            DESCRIPTOR_SIG
        )
        for skip in (0, 12, 16, 20, 24) if described else (0,):
            sig = bytes(self.view[end + skip : end + skip + 4])
            if sig in (LOCAL_SIG, CENTRAL_SIG, EOCD_SIG, ZIP64_EOCD_SIG) or end + skip == limit:
                return end + skip
        return end + (16 if bytes(self.view[end : end + 4]) == DESCRIPTOR_SIG else 0)

    def _hits(self, sigs: tuple[bytes, ...], start: int, limit: int) -> Iterator[tuple[int, bytes]]:
        """Offsets of the 4-byte signatures ``sigs`` in [start, limit), in order.

        Copies one window at a time, so dense fake signatures cost linear time.
        """
        pos = start
        while pos < limit:
            window_end = min(limit, pos + _GAP_SEARCH_WINDOW)
            window = bytes(self.view[pos : window_end + 3])
            hit = window.find(b"PK")
            while 0 <= hit < window_end - pos:
                if window[hit : hit + 4] in sigs:
                    yield pos + hit, window[hit : hit + 4]
                hit = window.find(b"PK", hit + 1)
            pos = window_end

    def _search_gaps(self, limit: int) -> None:
        # Local headers hidden between known entries are invisible to zipfile and miniz
        # but not to every extractor; find them and walk on from each.
        for gap_start, gap_end in self._gaps(limit):
            walked_to = gap_start
            for hit, _ in self._hits((LOCAL_SIG,), gap_start, gap_end):
                if self.full:
                    return
                if hit < walked_to or self._parse_local(hit) is None:
                    continue
                walked_to = self._walk(hit, limit, primary=False)

    def _gaps(self, limit: int) -> list[tuple[int, int]]:
        if not self.by_offset:
            return []
        gaps: list[tuple[int, int]] = []
        cursor = min(self.by_offset)
        for offset in sorted(self.by_offset):
            entry = self.by_offset[offset]
            if offset > cursor:
                gaps.append((cursor, offset))
            cursor = max(cursor, self._next_header(entry, limit))
        if cursor < limit:
            gaps.append((cursor, limit))
        return gaps

    def _too_many(self, offset: int) -> None:
        if not self.full:
            self.full = True
            self.issue(
                IssueKind.TOO_MANY_MEMBERS,
                f"more than {self.max_members} members; the rest was not read",
                offset,
            )

    # -- cross-checks ----------------------------------------------------------------------

    def _finish(self, limit: int) -> None:
        entries = [self.by_offset[offset] for offset in sorted(self.by_offset)]
        self.listing.entries = entries
        spanned = (
            entries and entries[0].local.offset == 4 and (bytes(self.view[:4]) == DESCRIPTOR_SIG)
        )
        if entries and entries[0].local.offset > 0 and not spanned:
            self.listing.prefix_end = entries[0].local.offset
            self.issue(
                IssueKind.PREFIX,
                f"{entries[0].local.offset} bytes of other data before the first member",
                0,
            )
        # Once reading stopped at the member limit, gaps and unwalked members are
        # expected, not findings.
        for gap_start, gap_end in [] if self.full else self._gaps(limit):
            self.issue(
                IssueKind.UNREFERENCED,
                f"{gap_end - gap_start} bytes between members belong to no member",
                gap_start,
            )
        seen: dict[str, int] = {}
        previous: ZipEntry | None = None
        has_cd = self.listing.has_central_directory and not self.full
        for entry in entries:
            self._compare_headers(entry)
            name = entry.record.name
            if name in seen:
                self.issue(
                    IssueKind.DUPLICATE_NAME,
                    f"two members named {name!r}",
                    entry.local.offset,
                    name,
                )
            seen[name] = entry.local.offset
            if has_cd and not entry.central:
                self.issue(
                    IssueKind.LOCAL_ONLY,
                    "member has a local header but no central directory record",
                    entry.local.offset,
                    name,
                )
            if has_cd and entry.central and not entry.in_walk:
                self.issue(
                    IssueKind.CD_ONLY,
                    "member is not reachable by walking the local headers",
                    entry.local.offset,
                    name,
                )
            if len(entry.central) > 1:
                self.issue(
                    IssueKind.OVERLAP,
                    f"{len(entry.central)} central records share one local header",
                    entry.local.offset,
                    name,
                )
            if previous is not None and entry.local.offset < previous.data_end:
                self.issue(
                    IssueKind.OVERLAP,
                    f"member overlaps the data of {previous.record.name!r}",
                    entry.local.offset,
                    name,
                )
            previous = entry if previous is None or entry.data_end > previous.data_end else previous

    def _compare_headers(self, entry: ZipEntry) -> None:
        local = entry.local
        for record in entry.central:
            differences = []
            if record.raw_name != local.raw_name:
                differences.append(f"name {local.name!r} vs {record.name!r}")
            if record.method != local.method:
                differences.append(f"method {local.method} vs {record.method}")
            if local.sizes_known and (
                (local.compressed_size, local.uncompressed_size)
                != (record.compressed_size, record.uncompressed_size)
            ):
                differences.append(
                    f"sizes {local.compressed_size}/{local.uncompressed_size} vs "
                    f"{record.compressed_size}/{record.uncompressed_size}"
                )
            if differences:
                self.issue(
                    IssueKind.HEADER_MISMATCH,
                    "local header and central record disagree: " + "; ".join(differences),
                    local.offset,
                    record.name,
                )


def _extra_fields(extra: bytes) -> dict[int, bytes]:
    fields: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(extra):
        header_id, size = struct.unpack_from("<HH", extra, pos)
        fields.setdefault(header_id, extra[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return fields


def _zip64_values(extra: bytes, values: list[int]) -> list[int]:
    """Replace the 0xFFFFFFFF values, in order, with the Zip64 extra field's 8-byte ones."""
    data = _extra_fields(extra).get(0x0001)
    if data is None:
        return values
    resolved, pos = list(values), 0
    for index, value in enumerate(values):
        if value == _U32_MAX and pos + 8 <= len(data):
            (resolved[index],) = struct.unpack_from("<Q", data, pos)
            pos += 8
    return resolved


def _unicode_path(extra: bytes) -> str | None:
    # Info-ZIP Unicode Path (0x7075): some extractors write to this name, not the header's.
    data = _extra_fields(extra).get(0x7075)
    if data is None or len(data) < 5:
        return None
    return data[5:].decode("utf-8", errors="replace")
