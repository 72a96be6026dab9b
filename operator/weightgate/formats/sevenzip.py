"""7z archives over a memoryview, extracted in memory by ``py7zr`` within bounds.

py7zr parses and decompresses, after the checks described in :func:`read_7z`: declared
sizes are checked against the bounds before anything is decompressed, and only coders
whose decoders cannot overshoot are accepted. Archives it cannot handle within bounds
raise :class:`~weightgate.formats.compressed.Unscannable` (the scan fails closed).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import IO, Any, cast

from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats.compressed import (
    ArchiveBomb,
    Bounds,
    BudgetExceeded,
    Unscannable,
    ViewReader,
)


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
