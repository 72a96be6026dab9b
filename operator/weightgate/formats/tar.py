"""Tar and 7z archives over a memoryview, parsed by well-kept libraries within bounds.

Tar: stdlib :mod:`tarfile` parses the headers. 7z: ``py7zr`` parses and decompresses,
after the checks described in :func:`read_7z`; archives it cannot handle within bounds
raise :class:`Unscannable` (the scan fails closed).

tarfile is lenient enough (it is what PyTorch's legacy loader uses) and well kept, so
we let it parse headers (ustar, GNU long names, pax) through a :class:`ViewReader` that
refuses any single read above ``max_header_bytes``: tarfile only reads headers through
it, because member data is taken here as zero-copy slices of the view. Members are
capped at ``max_members``; every data range is checked against the view; tarfile's
exceptions become :class:`FormatError`.
"""

from __future__ import annotations

import enum
import io
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import IO, Any, cast

from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats.compressed import (
    ArchiveBomb,
    Bounds,
    BudgetExceeded,
    Unscannable,
    ViewReader,
)


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


@dataclass(frozen=True)
class SevenZipMember:
    """One member of a 7z archive.

    Attributes:
        name: Its name in the archive.
        data: Its content (the target path for symlinks); None when not extracted.
        is_symlink: The member is a symbolic link.
    """

    name: str
    data: bytes | None
    is_symlink: bool


# Coders whose decoders honour ``max_length`` (liblzma) or cannot expand (copy, branch
# filters). py7zr's deflate, bzip2, zstd, brotli and ppmd decoders ignore it, so one
# call could inflate a megabyte of input into a gigabyte: those archives are refused.
_SAFE_7Z_CODERS = frozenset(
    bytes.fromhex(h)
    for h in (
        *("00", "21", "030101", "03", "04", "05", "06", "07", "08", "09"),
        *("03030103", "03030205", "03030401", "03030501", "03030701", "03030805"),
    )
)
_7Z_SIGNATURE = struct.Struct("<6sBBIQQI")


def read_7z(
    view: memoryview, bounds: Bounds, *, max_members: int, max_header_bytes: int
) -> list[SevenZipMember]:
    """Extract a 7z archive into memory with py7zr, refusing anything unbounded.

    Declared sizes are checked before anything is decompressed (py7zr stops each member
    at its declared size and fails on more), and only coders that cannot overshoot are
    accepted; encrypted archives and other coders raise :class:`Unscannable`.

    Raises:
        FormatError: The archive is malformed.
        Unscannable: It uses encryption or a coder that cannot be bounded.
        ArchiveBomb: Declared sizes exceed ``bounds.max_ratio``.
        BudgetExceeded: Declared sizes exceed ``bounds.budget``.
        LimitExceeded: A header or the extracted total exceeds its limit.
    """
    reader = ViewReader(view, max(max_header_bytes, 1 << 22))
    with reader:  # closing drops the view, whatever py7zr still references
        return _extract_7z(view, reader, bounds, max_members, max_header_bytes)


def _extract_7z(
    view: memoryview, reader: ViewReader, bounds: Bounds, max_members: int, max_header_bytes: int
) -> list[SevenZipMember]:
    import py7zr  # noqa: PLC0415 - heavy import, only needed for 7z files
    from py7zr.archiveinfo import StreamsInfo  # noqa: PLC0415
    from py7zr.helpers import get_sanitized_output_path  # noqa: PLC0415
    from py7zr.io import Py7zIO, WriterFactory  # noqa: PLC0415

    if len(view) < _7Z_SIGNATURE.size:
        raise FormatError("7z file shorter than its signature header", 0)
    _, _, _, _, next_offset, next_size, _ = _7Z_SIGNATURE.unpack_from(view)
    header_at = _7Z_SIGNATURE.size + next_offset
    if next_size > max_header_bytes:
        raise LimitExceeded(f"7z header of {next_size} bytes", 20)
    if header_at + next_size > len(view):
        raise FormatError("7z header lies beyond the end of the file", 12)
    header = bytes(view[header_at : header_at + next_size])

    def check_coders(folders: list[Any]) -> None:
        for folder in folders:
            for coder in folder.coders:
                if bytes(coder["method"]) not in _SAFE_7Z_CODERS:
                    raise Unscannable(
                        f"7z coder {bytes(coder['method']).hex()} cannot be decompressed "
                        "within bounds (only LZMA, LZMA2, copy and branch filters are)",
                        header_at,
                    )

    try:
        if header[:1] == b"\x17":  # encoded header: check how it is encoded first
            streams = StreamsInfo.retrieve(io.BytesIO(header[1:]))
            check_coders(streams.unpackinfo.folders)
            if any(max(f.unpacksizes) > max_header_bytes for f in streams.unpackinfo.folders):
                raise LimitExceeded("7z encoded header decodes to more than the limit", header_at)
        archive = py7zr.SevenZipFile(cast(IO[bytes], reader), mode="r")
    except (FormatError, MemoryError):
        raise
    except Exception as exc:  # py7zr parses hostile bytes: any failure is malformed input
        raise FormatError(f"unreadable 7z archive: {type(exc).__name__}: {exc}", 0) from exc
    with archive:
        files = list(archive.files)
        if len(files) > max_members:
            raise LimitExceeded(f"more than {max_members} members", header_at)
        if archive.password_protected:
            raise Unscannable("encrypted 7z archive", header_at)
        streams = archive.header.main_streams
        if streams is not None:
            check_coders(streams.unpackinfo.folders)
        total = sum(f.uncompressed for f in files if not f.emptystream)
        packed = sum(streams.packinfo.packsizes) if streams is not None else 0
        if total > bounds.min_ratio_check and total > bounds.max_ratio * max(packed, 1):
            raise ArchiveBomb(f"declares {total} bytes from {packed} compressed bytes", 0)
        if total > bounds.budget:
            raise BudgetExceeded(f"declares {total} uncompressed bytes", 0)
        if total > bounds.max_output:
            raise LimitExceeded(f"declares {total} uncompressed bytes in all", 0)

        class Sink(Py7zIO):
            def __init__(self) -> None:
                self.buffer = bytearray()

            def write(self, s: bytes | bytearray) -> int:
                if len(self.buffer) + len(s) > total:
                    raise LimitExceeded("7z member larger than declared", 0)
                self.buffer += s
                return len(s)

            def read(self, size: int | None = None) -> bytes:
                return b""

            def seek(self, offset: int, whence: int = 0) -> int:
                return 0

            def flush(self) -> None:
                return None

            def size(self) -> int:
                return len(self.buffer)

        class Sinks(WriterFactory):
            def __init__(self) -> None:
                self.products: dict[str, Sink] = {}

            def create(self, filename: str) -> Py7zIO:
                self.products[filename] = Sink()
                return self.products[filename]

        # py7zr keys products by its sanitized output name and refuses names it thinks
        # unsafe; mirror both so every member maps back to its bytes.
        keys: list[str | None] = []
        seen: dict[str, int] = {}
        for f in files:
            out = f.filename if f.filename not in seen else f"{f.filename}_{seen[f.filename]}"
            seen[f.filename] = seen.get(f.filename, -1) + 1
            try:
                keys.append(get_sanitized_output_path(out, None).as_posix())
            except Exception:
                keys.append(None)
        sinks = Sinks()
        archive.max_extract_size = total
        targets = [f.filename for f, key in zip(files, keys, strict=True) if key is not None]
        try:
            archive.extract(targets=targets, factory=sinks)
        except (FormatError, MemoryError):
            raise
        except Exception as exc:
            raise FormatError(f"7z extraction failed: {type(exc).__name__}: {exc}", 0) from exc
    members = []
    for f, key in zip(files, keys, strict=True):
        if f.is_directory:
            continue
        sink = sinks.products.get(key) if key is not None else None
        members.append(
            SevenZipMember(f.filename, bytes(sink.buffer) if sink else None, f.is_symlink)
        )
    return members


LEGACY_TORCH_MEMBERS = frozenset({"sys_info", "pickle", "storages", "tensors"})
"""Members of a torch < 0.4 tar checkpoint (serialization.py, ``legacy_load``)."""

_ELEMENT_SIZES = {
    "Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2,
    "Char": 1, "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16,
}  # fmt: skip
_MAX_PICKLE_ARG = 64 * 1024 * 1024


@dataclass
class LegacyRecords:
    """Where the pickles of a legacy checkpoint member lie.

    Attributes:
        pickles: Ranges of every pickle found, in order (all of them are unpickled by
            ``torch.load``).
        end: Where the structure ends.
        error: Why the walk stopped early; the pickles before it were still found.
    """

    pickles: list[slice] = field(default_factory=list)
    end: int = 0
    error: FormatError | None = None


def legacy_torch_pickles(
    view: memoryview, member: str, *, max_opcodes: int, max_records: int
) -> LegacyRecords:
    """Find the pickles of a legacy checkpoint's ``storages`` or ``tensors`` member.

    Both members interleave pickles with raw bytes, and ``torch.load`` unpickles every
    one of them, so each must be scanned, not just the first. ``storages``: a count, then
    per storage a pickled (key, location, storage type), an int64 element count and the
    elements; then a pickled list of views. ``tensors``: a count, then per tensor a pickled
    (key, storage key, type), int32 ndim, 4 padding bytes, ndim sizes and strides (int64)
    and an int64 offset. Pickles are delimited with :func:`pickletools.genops` (static).
    """
    found = LegacyRecords()
    try:
        _walk_legacy(view, member, found, max_opcodes, max_records)
    except FormatError as exc:
        # A fresh error: the raised one's traceback holds frames that hold the view.
        found.error = type(exc)(str(exc), exc.offset)
    return found


def _walk_legacy(
    view: memoryview, member: str, found: LegacyRecords, max_opcodes: int, max_records: int
) -> None:
    end, args = _pickle_at(view, 0, max_opcodes)
    found.pickles.append(slice(0, end))
    count = next((a for a in args if isinstance(a, int) and not isinstance(a, bool)), None)
    if count is None or not 0 <= count <= max_records:
        raise LimitExceeded(f"legacy torch {member}: record count {count!r}", 0)
    pos = found.end = end
    for _ in range(count):
        end, args = _pickle_at(view, pos, max_opcodes)
        found.pickles.append(slice(pos, end))
        pos = end
        if member == "storages":
            names = [a.split()[-1] for a in args if isinstance(a, str) and a.endswith("Storage")]
            size = _ELEMENT_SIZES.get(names[-1].removesuffix("Storage")) if names else None
            if size is None or pos + 8 > len(view):
                raise FormatError(f"legacy torch storage record of unknown type {names}", pos)
            (numel,) = struct.unpack_from("<q", view, pos)
            pos = -1 if numel < 0 else pos + 8 + numel * size
        else:
            if pos + 4 > len(view):
                raise FormatError("legacy torch tensor record ends early", pos)
            (ndim,) = struct.unpack_from("<i", view, pos)
            pos = -1 if ndim < 0 else pos + 8 + 16 * ndim + 8
        if not end <= pos <= len(view):
            raise FormatError(f"legacy torch {member} record runs past the end", end)
        found.end = pos
    if member == "storages":
        end, _ = _pickle_at(view, pos, max_opcodes)
        found.pickles.append(slice(pos, end))
        found.end = end


def _pickle_at(view: memoryview, start: int, max_opcodes: int) -> tuple[int, list[object]]:
    reader = ViewReader(view, _MAX_PICKLE_ARG)
    reader.seek(start)
    args: list[object] = []
    with reader:
        return _genops_until_stop(reader, start, max_opcodes, args), args


def _genops_until_stop(reader: ViewReader, start: int, max_opcodes: int, args: list[object]) -> int:
    import pickletools  # noqa: PLC0415 - only legacy checkpoints need it

    try:
        for count, (opcode, arg, _) in enumerate(pickletools.genops(cast(IO[bytes], reader))):
            if count > max_opcodes:
                raise LimitExceeded(f"pickle at {start} has more than {max_opcodes} opcodes", start)
            if isinstance(arg, int | str) and opcode.name != "PROTO":
                args.append(arg)
            if opcode.name == "STOP":
                return reader.tell()
    except (ValueError, EOFError, struct.error, UnicodeError) as exc:
        raise FormatError(f"no pickle at {start}: {exc}", start) from exc
    raise FormatError(f"pickle at {start} has no STOP", start)
