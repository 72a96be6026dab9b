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

This module reads the central directory and cross-checks it with the local headers; the
data model is in :mod:`weightgate.formats.zip.records` (re-exported by the package), the
walk and gap search in :mod:`weightgate.formats.zip.walk`. It never trusts a count or size:
members are capped by ``max_members`` and every offset is checked against the data.
Spec: https://pkware.cachefly.net/webdocs/casestudies/APPNOTE.TXT
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from weightgate.formats.compressed import first_nonzero
from weightgate.formats.zip.records import (
    CENTRAL_SIG,
    DESCRIPTOR_SIG,
    EOCD_SIG,
    LOCAL_SIG,
    U32_MAX,
    ZIP64_EOCD_SIG,
    ZIP64_LOCATOR_SIG,
    CentralRecord,
    IssueKind,
    ZipEntry,
    ZipListing,
    unicode_path,
    zip64_values,
)
from weightgate.formats.zip.walk import LocalHeaderWalk

_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<4sHHHHIIH")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")
_EOCD_SEARCH = 65535 + _EOCD.size


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


class _Reader(LocalHeaderWalk):
    def run(self) -> None:
        directories = self._find_directories()
        walk_limit = len(self.view)
        if directories:
            self.listing.has_central_directory = True
            walk_limit = min(directory.start for directory in directories)
            for directory in directories:
                self._read_central(directory)
            if len(directories) > 1:
                self.issue(
                    IssueKind.CD_CHOICE,
                    "the end records point at "
                    f"{len(directories)} different central directories (at "
                    f"{', '.join(str(d.start) for d in directories)}); loaders pick "
                    "different ones",
                    directories[0].start,
                )
            end = directories[0].end
            trailing = first_nonzero(self.view, end)  # zero padding is fine
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
        self.walk(start, walk_limit, primary=True)
        self.search_gaps(walk_limit)
        self._finish(walk_limit)

    # -- central directory -------------------------------------------------------------

    def _find_directories(self) -> list[_Directory]:
        tail_start = max(0, len(self.view) - _EOCD_SEARCH)
        tail = bytes(self.view[tail_start:])
        found_any = False
        pos = tail.rfind(EOCD_SIG)
        while pos >= 0:
            found_any = True
            directories = self._directories_at(tail_start + pos)
            if directories:
                return directories
            pos = tail.rfind(EOCD_SIG, 0, pos)
        if found_any:
            self.issue(
                IssueKind.BAD_CENTRAL_DIRECTORY,
                "end of central directory record points at no central directory",
            )
        else:
            self.issue(IssueKind.NO_CENTRAL_DIRECTORY, "no end of central directory record")
        return []

    def _directories_at(self, eocd: int) -> list[_Directory]:
        """Every central directory some loader reads for the end record at ``eocd``.

        Loaders resolve the end records differently: zipfile reads the Zip64 record right
        before the locator (else the 32-bit fields) and the directory right before the
        record it used (correcting for prepended data); miniz (PyTorch) tries the Zip64
        record before the locator, then the one the locator names, and reads the directory
        at the declared offset as is. When these disagree each reader sees other members,
        so every candidate that holds a central directory is returned, zipfile's first.
        (In a well-formed archive they all name the same directory.)
        """
        if eocd + _EOCD.size > len(self.view):
            return []
        _, _, _, _, count, size, offset, comment_len = _EOCD.unpack_from(self.view, eocd)
        end = min(len(self.view), eocd + _EOCD.size + comment_len)
        records = [(eocd, count, size, offset)]
        locator = eocd - _ZIP64_LOCATOR.size
        if locator >= 0 and bytes(self.view[locator : locator + 4]) == ZIP64_LOCATOR_SIG:
            _, _, declared, _ = _ZIP64_LOCATOR.unpack_from(self.view, locator)
            zip64 = [
                candidate
                for candidate in (locator - _ZIP64_EOCD.size, declared)
                if 0 <= candidate <= len(self.view) - _ZIP64_EOCD.size
                and bytes(self.view[candidate : candidate + 4]) == ZIP64_EOCD_SIG
            ]
            for candidate in dict.fromkeys(zip64):
                fields = _ZIP64_EOCD.unpack_from(self.view, candidate)
                records.insert(-1, (candidate, fields[7], fields[8], fields[9]))
        found: dict[int, _Directory] = {}
        for record_start, record_count, record_size, record_offset in records:
            actual = record_start - record_size
            if actual >= 0 and (
                record_size == 0 or bytes(self.view[actual : actual + 4]) == CENTRAL_SIG
            ):
                found.setdefault(
                    actual,
                    _Directory(actual, record_size, record_count, actual - record_offset, end),
                )
            if (
                record_offset + record_size <= record_start
                and bytes(self.view[record_offset : record_offset + 4]) == CENTRAL_SIG
            ):
                found.setdefault(
                    record_offset, _Directory(record_offset, record_size, record_count, 0, end)
                )
        return list(found.values())

    def _read_central(self, directory: _Directory) -> None:
        pos, stop, parsed = directory.start, directory.start + directory.size, 0
        while pos + _CENTRAL.size <= stop and bytes(self.view[pos : pos + 4]) == CENTRAL_SIG:
            if parsed >= self.max_members:
                self.too_many(pos)
                return
            fields = _CENTRAL.unpack_from(self.view, pos)
            flags, method, crc, csize, usize = fields[3], fields[4], fields[7], fields[8], fields[9]
            name_len, extra_len, comment_len = fields[10], fields[11], fields[12]
            external_attr, local_offset = fields[15], fields[16]
            name_at = pos + _CENTRAL.size
            raw_name = bytes(self.view[name_at : name_at + name_len])
            extra = bytes(self.view[name_at + name_len : name_at + name_len + extra_len])
            usize, csize, local_offset = zip64_values(extra, [usize, csize, local_offset])
            record = CentralRecord(
                offset=pos,
                raw_name=raw_name,
                unicode_name=unicode_path(extra),
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
        if parsed != directory.count and directory.count not in (0xFFFF, U32_MAX):
            self.issue(
                IssueKind.BAD_CENTRAL_DIRECTORY,
                f"end record declares {directory.count} entries, the directory holds {parsed}",
                directory.start,
            )

    def _attach(self, record: CentralRecord) -> None:
        entry = self.by_offset.get(record.local_offset)
        if entry is None:
            local = self.parse_local(record.local_offset)
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
        for gap_start, gap_end in [] if self.full else self.gaps(limit):
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
