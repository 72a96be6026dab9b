"""Tar archives over a memoryview, parsed by stdlib :mod:`tarfile` within bounds.

tarfile is lenient enough (it is what PyTorch's legacy loader uses) and well kept, so
we let it parse headers (ustar, GNU long names, pax) through a :class:`ViewReader` that
refuses any single read above ``max_header_bytes``: tarfile only reads headers through
it, because member data is taken here as zero-copy slices of the view. Members are
capped at ``max_members``; every data range is checked against the view; tarfile's
exceptions become :class:`FormatError`.

7z archives are read by :mod:`weightgate.formats.sevenzip`, the pickles of legacy torch
tar checkpoints found by :mod:`weightgate.formats.tar.legacy_torch`; both entry points
are re-exported by the package.
"""

from __future__ import annotations

import enum
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import Any, cast

from weightgate.errors import FormatError
from weightgate.formats.compressed import ViewReader


class MemberKind(enum.Enum):
    """What a tar member is."""

    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    DEVICE = "device"
    FIFO = "fifo"
    SPARSE = "sparse"
    OTHER = "other"


@dataclass(frozen=True)
class TarMember:
    """One member of a tar archive.

    Attributes:
        name: Its path in the archive (pax and GNU long names applied).
        kind: What it is.
        linkname: Link target for links, else empty.
        offset: Offset of its header block.
        data_offset: Offset of its data.
        size: Size of its data.
    """

    name: str
    kind: MemberKind
    linkname: str
    offset: int
    data_offset: int
    size: int

    @property
    def data(self) -> slice:
        """Where the member's data lies in the archive."""
        return slice(self.data_offset, self.data_offset + self.size)


@dataclass
class TarListing:
    """What :func:`read_tar` found.

    Attributes:
        members: Members in archive order.
        end: Offset where tarfile stopped reading (the end-of-archive marker or an
            unreadable header); data after it is trailing data.
        error: Why listing stopped early, when it did.
        truncated: ``error`` is a member whose data runs past the end of the archive.
        too_many: More than ``max_members`` members: listing stopped.
    """

    members: list[TarMember] = field(default_factory=list)
    end: int = 0
    error: FormatError | None = None
    truncated: bool = False
    too_many: bool = False


_KINDS = {
    tarfile.REGTYPE: MemberKind.FILE,
    tarfile.AREGTYPE: MemberKind.FILE,
    tarfile.CONTTYPE: MemberKind.FILE,
    tarfile.DIRTYPE: MemberKind.DIRECTORY,
    tarfile.SYMTYPE: MemberKind.SYMLINK,
    tarfile.LNKTYPE: MemberKind.HARDLINK,
    tarfile.CHRTYPE: MemberKind.DEVICE,
    tarfile.BLKTYPE: MemberKind.DEVICE,
    tarfile.FIFOTYPE: MemberKind.FIFO,
}

_TAR_ERRORS = (tarfile.TarError, ValueError, EOFError, UnicodeError, OverflowError, zlib.error)


def read_tar(view: memoryview, *, max_members: int, max_header_bytes: int) -> TarListing:
    """List the members of an uncompressed tar archive.

    Args:
        view: The archive bytes.
        max_members: Most members to list.
        max_header_bytes: Largest header (pax record, GNU long name) tarfile may read.

    Raises:
        LimitExceeded: A header is larger than ``max_header_bytes``.
    """
    reader = ViewReader(view, max_header_bytes)
    with reader:  # closing drops the view, whatever tarfile still references
        return _list_tar(view, reader, max_members)


def _list_tar(view: memoryview, reader: ViewReader, max_members: int) -> TarListing:
    listing = TarListing()
    try:
        archive = tarfile.TarFile(fileobj=reader, mode="r")
    except _TAR_ERRORS as exc:
        listing.error = FormatError(f"not a readable tar archive: {exc}", 0)
        return listing
    while True:
        try:
            info = archive.next()
        except _TAR_ERRORS as exc:
            listing.error = FormatError(f"unreadable tar header: {exc}", archive.offset)
            break
        if info is None:
            break
        # tarfile keeps every TarInfo it returns; we keep our own smaller records.
        cast(Any, archive).members.clear()
        if len(listing.members) >= max_members:
            listing.too_many = True
            break
        kind = MemberKind.SPARSE if info.issparse() else _KINDS.get(info.type, MemberKind.OTHER)
        member = TarMember(
            name=info.name,
            kind=kind,
            linkname=info.linkname,
            offset=info.offset,
            data_offset=info.offset_data,
            size=info.size if kind in (MemberKind.FILE, MemberKind.SPARSE, MemberKind.OTHER) else 0,
        )
        if member.data_offset + member.size > len(view):
            listing.error = FormatError(
                f"member {member.name!r} needs {member.size} bytes of data but the archive "
                f"ends {len(view) - member.data_offset} bytes after its header",
                member.offset,
            )
            listing.truncated = True
            break
        listing.members.append(member)
    listing.end = min(archive.offset, len(view))
    return listing
