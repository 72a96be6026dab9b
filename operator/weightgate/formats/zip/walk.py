"""The local-header half of the zip reader: walk the headers, search the gaps between them.

A streaming extractor reads local headers one after another from the start of the file,
never looking at the central directory; :class:`LocalHeaderWalk` does the same, and then
searches the gaps between known entries for local headers hidden from both kinds of
reader. It holds the entries found so far (keyed by local header offset), which
:mod:`weightgate.formats.zip.central_directory` adds the central directory to and cross-checks.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from weightgate.formats.zip.records import (
    CENTRAL_SIG,
    DESCRIPTOR_SIG,
    EOCD_SIG,
    FLAG_DATA_DESCRIPTOR,
    LOCAL_SIG,
    ZIP64_EOCD_SIG,
    IssueKind,
    LocalHeader,
    Method,
    ZipEntry,
    ZipIssue,
    ZipListing,
    unicode_path,
    zip64_values,
)

_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_GAP_SEARCH_WINDOW = 1 << 20


class LocalHeaderWalk:
    """Entries found so far, and the walk over local headers that finds more.

    Attributes:
        view: The whole file (or archive member).
        max_members: Most entries to read; more is reported as TOO_MANY_MEMBERS.
        listing: What was found; issues are added to it as they are found.
        by_offset: Entries by the offset of their local header.
        full: ``max_members`` entries were read: reading stopped.
    """

    def __init__(self, view: memoryview, max_members: int) -> None:
        self.view = view
        self.max_members = max_members
        self.listing = ZipListing()
        self.by_offset: dict[int, ZipEntry] = {}
        self.full = False

    def issue(self, kind: IssueKind, message: str, offset: int | None = None, ev: str = "") -> None:
        """Record a structural oddity."""
        self.listing.issues.append(ZipIssue(kind, message, offset, ev or None))

    def parse_local(self, offset: int) -> LocalHeader | None:
        """The local header at ``offset``, or None when there is none (or it is cut off)."""
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
        usize, csize = zip64_values(extra, [usize, csize])
        unknown = bool(flags & FLAG_DATA_DESCRIPTOR) and csize == 0 and crc == 0
        return LocalHeader(
            offset=offset,
            raw_name=bytes(self.view[name_at : name_at + name_len]),
            unicode_name=unicode_path(extra),
            flags=flags,
            method=method,
            crc32=crc,
            compressed_size=csize,
            uncompressed_size=usize,
            data_offset=data_offset,
            sizes_known=not unknown,
        )

    def walk(self, pos: int, limit: int, *, primary: bool) -> int:
        """Follow consecutive local headers from ``pos``; return where the walk stopped.

        Positions only grow (data starts after its header), so the walk always ends.
        """
        while pos < limit and bytes(self.view[pos : pos + 4]) == LOCAL_SIG and not self.full:
            entry = self.by_offset.get(pos)
            if entry is None:
                if len(self.by_offset) >= self.max_members:
                    self.too_many(pos)
                    break
                local = self.parse_local(pos)
                if local is None:
                    break
                entry = ZipEntry(local)
                self._size_from_local(entry, limit)
                self.by_offset[pos] = entry
            entry.in_walk = entry.in_walk or primary
            pos = self.next_header(entry, limit)
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

    def next_header(self, entry: ZipEntry, limit: int) -> int:
        """Where the header after ``entry`` should be (past its data and any descriptor)."""
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

    def search_gaps(self, limit: int) -> None:
        """Walk on from every local header found in the gaps between known entries."""
        # Local headers hidden between known entries are invisible to zipfile and miniz
        # but not to every extractor; find them and walk on from each.
        for gap_start, gap_end in self.gaps(limit):
            walked_to = gap_start
            for hit, _ in self._hits((LOCAL_SIG,), gap_start, gap_end):
                if self.full:
                    return
                if hit < walked_to or self.parse_local(hit) is None:
                    continue
                walked_to = self.walk(hit, limit, primary=False)

    def gaps(self, limit: int) -> list[tuple[int, int]]:
        """Byte ranges up to ``limit`` that no known entry (header, data) covers."""
        if not self.by_offset:
            return []
        gaps: list[tuple[int, int]] = []
        cursor = min(self.by_offset)
        for offset in sorted(self.by_offset):
            entry = self.by_offset[offset]
            if offset > cursor:
                gaps.append((cursor, offset))
            cursor = max(cursor, self.next_header(entry, limit))
        if cursor < limit:
            gaps.append((cursor, limit))
        return gaps

    def too_many(self, offset: int) -> None:
        """Stop reading at the member limit, reporting it once."""
        if not self.full:
            self.full = True
            self.issue(
                IssueKind.TOO_MANY_MEMBERS,
                f"more than {self.max_members} members; the rest was not read",
                offset,
            )
