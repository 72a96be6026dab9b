"""Scanners for archives: zip (PyTorch checkpoints, npz, keras), tar, gzip, bzip2, xz, 7z.

Every member is scanned by content through :meth:`ScanContext.scan`, one level deeper,
so nesting depth is bounded by the context. Stored zip and tar members are passed as
zero-copy slices; compressed ones are decompressed into memory within
``limits.max_member_bytes``, the scan-wide ``limits.max_total_uncompressed_bytes`` and
``limits.max_compression_ratio`` (bombs are stopped early, never inflated fully).

Members whose names say they hold raw tensor bytes (``data/0`` in PyTorch zips,
``.data/3.storage`` in torch.package) are scanned "as data": only a strong, unambiguous
magic number (a protocol 2+ pickle ending in STOP, zip, gzip, 7z, ...) sends them to a
scanner, so random float bytes never reach the protocol-0 pickle heuristic.
"""

from __future__ import annotations

import posixpath
import re
import stat
import zlib

from weightgate.errors import FormatError
from weightgate.formats import compressed, detect, tar
from weightgate.formats import zip as zipfmt
from weightgate.formats.compressed import Codec, Outcome
from weightgate.formats.detect import FileFormat
from weightgate.scan.context import MALFORMED, ScanContext
from weightgate.scan.findings import Severity, rule

PATH_TRAVERSAL = rule(
    "archive.path-traversal",
    Severity.HIGH,
    "An archive member name escapes the extraction directory",
    "Names with '..' components, absolute paths or drive letters write outside the target "
    "directory when the archive is extracted. No model needs them: treat it as an attack.",
)
BACKSLASH_NAME = rule(
    "archive.backslash-name",
    Severity.LOW,
    "An archive member name uses backslashes as separators",
    "Some Windows tools write such names; extractors disagree on whether they are paths. "
    "Re-create the archive with forward slashes.",
)
LINK_ESCAPES = rule(
    "archive.link-escapes-root",
    Severity.HIGH,
    "A link member points outside the archive",
    "Extracting it creates a link to an arbitrary path (for example /etc or ~/.ssh), and "
    "later members can be written through it. Treat the archive as hostile.",
)
LINK_MEMBER = rule(
    "archive.link-member",
    Severity.MEDIUM,
    "The archive contains a symbolic or hard link",
    "Links inside model archives are unusual and change what extraction writes; the "
    "target was not followed. Re-create the archive without links.",
)
SPECIAL_MEMBER = rule(
    "archive.special-member",
    Severity.MEDIUM,
    "The archive contains a device or FIFO",
    "Extracting device nodes or FIFOs can hang or reach hardware; no model needs them.",
)
BOMB = rule(
    "archive.compression-bomb",
    Severity.MEDIUM,
    "A member decompresses to far more than its compressed size",
    "Decompression stopped early at the ratio given (limits.max_compression_ratio); the "
    "member was not scanned. Archives that expand like this are built to exhaust memory.",
)
TOO_MANY_MEMBERS = rule(
    "archive.too-many-members",
    Severity.MEDIUM,
    "The archive has more members than the configured limit",
    "Members past limits.max_archive_members were not scanned, so the verdict fails closed.",
)
MEMBER_TOO_LARGE = rule(
    "archive.member-too-large",
    Severity.MEDIUM,
    "A compressed member is larger than the configured limit",
    "It was not decompressed in full and not scanned (limits.max_member_bytes). Store "
    "large tensors uncompressed, or raise the limit.",
)
TOTAL_TOO_LARGE = rule(
    "archive.total-size-exceeded",
    Severity.MEDIUM,
    "Decompressed members add up to more than the configured limit",
    "The rest of the file was not scanned (limits.max_total_uncompressed_bytes).",
)
TRUNCATED = rule(
    "archive.truncated",
    Severity.MEDIUM,
    "Compressed or archived data ends early",
    "What was there was scanned; loaders read streams incrementally, so content before "
    "the cut still runs. Re-create the file.",
)
CORRUPT = rule(
    "archive.corrupt-member",
    Severity.MEDIUM,
    "A compressed member or stream cannot be decompressed",
    "The bytes before the error were scanned; the rest was not, so the verdict fails closed.",
)
UNSCANNABLE = rule(
    "archive.unscannable",
    Severity.MEDIUM,
    "An archive or member uses a method weightgate cannot open within bounds",
    "It was not scanned (for example zip methods other than stored, deflate, bzip2 and "
    "LZMA, sparse tar members, or 7z coders other than LZMA/LZMA2/copy), so the verdict "
    "fails closed. Re-create the archive with a common method.",
)
ENCRYPTED = rule(
    "archive.encrypted-member",
    Severity.LOW,
    "An encrypted member could not be scanned",
    "PyTorch, NumPy and Keras cannot load encrypted members, so it cannot be loaded as "
    "model content either; it was checked for recognisable plain content.",
)
TRAILING_DATA = rule(
    "archive.trailing-data",
    Severity.LOW,
    "Data follows the end of the archive or stream",
    "Most loaders ignore it; it was checked for recognisable content.",
)
ZIP_CRC_MISMATCH = rule(
    "zip.crc-mismatch",
    Severity.LOW,
    "A zip member's CRC-32 does not match its content",
    "zipfile refuses such members while PyTorch loads them, so scanners built on zipfile "
    "can be bypassed. weightgate scanned the bytes as stored.",
)
ZIP_ODD_FLAGS = rule(
    "zip.odd-flags",
    Severity.LOW,
    "A zip member sets encryption or patch flag bits",
    "zipfile refuses such members while PyTorch ignores the bits; the member was "
    "scanned as plain data where possible.",
)
ZIP_HEADER_MISMATCH = rule(
    "zip.header-mismatch",
    Severity.MEDIUM,
    "A zip member's local header and central directory record disagree",
    "Different tools then read different names, methods or sizes for the same member, a "
    "known way to slip content past scanners.",
)
ZIP_DIRECTORY = rule(
    "zip.directory-mismatch",
    Severity.MEDIUM,
    "Zip members are missing from the central directory or from the local headers",
    "Tools that read the central directory (PyTorch, zipfile) and tools that stream local "
    "headers see different members. weightgate scanned both.",
)
ZIP_OVERLAP = rule(
    "zip.overlapping-entries",
    Severity.MEDIUM,
    "Zip members share or overlap their data",
    "Overlapping entries are the building block of non-recursive zip bombs and of "
    "content that changes with the reader.",
)
ZIP_PREFIX = rule(
    "zip.prefix-data",
    Severity.MEDIUM,
    "Other data precedes the first zip member",
    "The file is two formats at once (a polyglot): loaders that look at its start see "
    "the prefix (for example a pickle), zip readers see the archive. Both were scanned.",
)
ZIP_UNREADABLE = rule(
    "zip.bad-central-directory",
    Severity.MEDIUM,
    "The zip central directory is missing or inconsistent",
    "PyTorch and zipfile cannot read the archive as written; the local headers were "
    "scanned instead. Re-create the archive.",
)
ZIP_UNREFERENCED = rule(
    "zip.unreferenced-data",
    Severity.LOW,
    "Bytes between zip members belong to no member",
    "No loader reads them; they were searched for hidden local headers.",
)
ZIP_DUPLICATE_NAME = rule(
    "zip.duplicate-name",
    Severity.LOW,
    "Two zip members have the same name",
    "Loaders disagree on which one they read; weightgate scanned both.",
)

_ZIP_ISSUE_RULES = {
    zipfmt.IssueKind.NO_CENTRAL_DIRECTORY: ZIP_UNREADABLE,
    zipfmt.IssueKind.BAD_CENTRAL_DIRECTORY: ZIP_UNREADABLE,
    zipfmt.IssueKind.MISSING_LOCAL_HEADER: ZIP_UNREADABLE,
    zipfmt.IssueKind.HEADER_MISMATCH: ZIP_HEADER_MISMATCH,
    zipfmt.IssueKind.LOCAL_ONLY: ZIP_DIRECTORY,
    zipfmt.IssueKind.CD_ONLY: ZIP_DIRECTORY,
    zipfmt.IssueKind.OVERLAP: ZIP_OVERLAP,
    zipfmt.IssueKind.PREFIX: ZIP_PREFIX,
    zipfmt.IssueKind.TRAILING: TRAILING_DATA,
    zipfmt.IssueKind.UNREFERENCED: ZIP_UNREFERENCED,
    zipfmt.IssueKind.DUPLICATE_NAME: ZIP_DUPLICATE_NAME,
    zipfmt.IssueKind.TOO_MANY_MEMBERS: TOO_MANY_MEMBERS,
}
_ZIP_CODECS = {zipfmt.Method.DEFLATED: Codec.DEFLATE, zipfmt.Method.BZIP2: Codec.BZIP2}
_CRC_CHECK_MAX = 64 * 1024 * 1024  # stored members above this skip the CRC (time)
_LINK_TARGET_MAX = 4096
_RAW_STORAGE_NAME = re.compile(r"(?:^|/)\.?data/\d+(?:\.storage)?$")
_DRIVE = re.compile(r"^[A-Za-z]:")
_STRONG_MAGICS = (
    b"PK\x03\x04",
    b"PK\x05\x06",
    b"\x1f\x8b\x08",
    b"7z\xbc\xaf\x27\x1c",
    b"\xfd7zXZ\x00",
    b"\x93NUMPY",
    b"\x89HDF\r\n\x1a\n",
    b"GGUF",
)


# -- zip -----------------------------------------------------------------------------------


def scan_zip(ctx: ScanContext, data: memoryview) -> None:
    """Scan a zip archive: its structure, then every member by content."""
    listing = zipfmt.read_zip(data, max_members=ctx.limits.max_archive_members)
    for issue in listing.issues:
        rule_ = _ZIP_ISSUE_RULES[issue.kind]
        ctx.report(rule_, issue.message, offset=issue.offset, evidence=issue.evidence)
    if listing.prefix_end:
        ctx.member("<prefix>").scan(data[: listing.prefix_end], "<prefix>")
    if listing.trailing_start is not None:
        _scan_as_data(ctx, data[listing.trailing_start :], "<trailing>")
    for entry in listing.entries:
        if ctx.budget.uncompressed_bytes >= ctx.limits.max_total_uncompressed_bytes:
            break
        _scan_zip_entry(ctx, data, entry)


def _scan_zip_entry(ctx: ScanContext, data: memoryview, entry: zipfmt.ZipEntry) -> None:
    record, offset = entry.record, entry.local.offset
    name = record.name
    for alias in entry.names:
        _check_name(ctx, alias, offset)
    odd = [label for bit, label in zipfmt.ODD_FLAGS.items() if entry.flags & bit]
    if odd:
        ctx.report(ZIP_ODD_FLAGS, f"flag bits set: {', '.join(odd)}", offset=offset, evidence=name)
    if entry.truncated:
        ctx.report(
            TRUNCATED, "member data runs past the end of the archive", offset=offset, evidence=name
        )
    encrypted = bool(entry.flags & (zipfmt.FLAG_ENCRYPTED | zipfmt.FLAG_STRONG_ENCRYPTION))
    source = data[entry.data]
    if record.method == zipfmt.Method.STORED:
        content: memoryview | bytearray = source
    elif record.method in (*_ZIP_CODECS, zipfmt.Method.LZMA):
        inflated = _inflate_zip_member(ctx, entry, source, quiet=encrypted)
        if inflated is None:
            if encrypted:
                ctx.report(
                    ENCRYPTED,
                    "encrypted member (not plain compressed data)",
                    offset=offset,
                    evidence=name,
                )
            return
        content = inflated
    else:
        ctx.report(
            UNSCANNABLE,
            f"compression method {record.method} is not supported",
            offset=offset,
            evidence=name,
        )
        return
    if encrypted and not _recognisable(content):
        ctx.report(
            ENCRYPTED,
            "encrypted member with no recognisable plain content",
            offset=offset,
            evidence=name,
        )
        return
    _check_crc(ctx, entry, content)
    mode = entry.central[0].external_attr >> 16 if entry.central else 0
    if stat.S_ISLNK(mode):
        _check_link(ctx, name, bytes(content[:_LINK_TARGET_MAX]), offset, hard=False)
    elif all(_RAW_STORAGE_NAME.search(alias) for alias in entry.names):
        _scan_as_data(ctx, content, name)
    else:
        ctx.member(name).scan(content, name)


def _inflate_zip_member(
    ctx: ScanContext, entry: zipfmt.ZipEntry, source: memoryview, *, quiet: bool
) -> bytearray | None:
    record, name = entry.record, entry.record.name
    declared = record.uncompressed_size if entry.size_known else 0
    offset = entry.local.offset
    if (
        not quiet
        and declared > ctx.limits.min_bomb_check_bytes
        and (declared > ctx.limits.max_compression_ratio * max(len(source), 1))
    ):
        ctx.report(
            BOMB,
            f"declares {declared} bytes from {len(source)} compressed bytes "
            f"(ratio {declared / max(len(source), 1):.0f}:1)",
            offset=offset,
            evidence=name,
        )
        return None
    if not quiet and declared > ctx.limits.max_member_bytes:
        ctx.report(
            MEMBER_TOO_LARGE,
            f"declares {declared} uncompressed bytes (limit {ctx.limits.max_member_bytes})",
            offset=offset,
            evidence=name,
        )
        return None
    codec: Codec | compressed.DecompressorFactory
    exact = None
    if record.method == zipfmt.Method.LZMA:
        try:
            skip, codec = compressed.zip_lzma_factory(source[:9])
        except FormatError as exc:
            if not quiet:
                ctx.report(CORRUPT, f"LZMA member: {exc}", offset=offset, evidence=name)
            return None
        source = source[skip:]
        exact = None if entry.flags & zipfmt.FLAG_LZMA_EOS else record.uncompressed_size
    else:
        codec = _ZIP_CODECS[zipfmt.Method(record.method)]
    result = compressed.decompress(source, codec, _bounds(ctx), exact_size=exact)
    if quiet and result.outcome is not Outcome.COMPLETE:
        return None
    return _accept(ctx, result, name, offset)


def _check_crc(ctx: ScanContext, entry: zipfmt.ZipEntry, content: memoryview | bytearray) -> None:
    record = entry.record
    if not entry.size_known or (entry.flags & zipfmt.FLAG_ENCRYPTED):
        return
    if not entry.central and entry.local.flags & zipfmt.FLAG_DATA_DESCRIPTOR:
        return  # the CRC is in a descriptor we did not parse
    if len(content) > _CRC_CHECK_MAX:
        return
    actual = zlib.crc32(content)
    if actual != record.crc32:
        ctx.report(
            ZIP_CRC_MISMATCH,
            f"CRC-32 is {actual:08x}, the header says {record.crc32:08x}",
            offset=entry.local.offset,
            evidence=record.name,
        )


# -- tar -----------------------------------------------------------------------------------


def scan_tar(ctx: ScanContext, data: memoryview) -> None:
    """Scan a tar archive (including legacy PyTorch checkpoints) member by member."""
    listing = tar.read_tar(
        data,
        max_members=ctx.limits.max_archive_members,
        max_header_bytes=ctx.limits.max_header_bytes,
    )
    if listing.too_many:
        ctx.report(
            TOO_MANY_MEMBERS,
            f"more than {ctx.limits.max_archive_members} members; the rest was not scanned",
            offset=listing.end,
        )
    if listing.error is not None:
        rule_ = TRUNCATED if listing.truncated else MALFORMED
        ctx.report(rule_, str(listing.error), offset=listing.error.offset)
    legacy = {m.name for m in listing.members} >= tar.LEGACY_TORCH_MEMBERS
    for member in listing.members:
        _check_name(ctx, member.name, member.offset)
        kind = member.kind
        if kind in (tar.MemberKind.SYMLINK, tar.MemberKind.HARDLINK):
            _check_link(
                ctx,
                member.name,
                member.linkname.encode(),
                member.offset,
                hard=kind is tar.MemberKind.HARDLINK,
            )
        elif kind in (tar.MemberKind.DEVICE, tar.MemberKind.FIFO):
            ctx.report(
                SPECIAL_MEMBER, f"{kind.value} member", offset=member.offset, evidence=member.name
            )
        elif kind is tar.MemberKind.SPARSE:
            ctx.report(UNSCANNABLE, "sparse member", offset=member.offset, evidence=member.name)
        elif kind is tar.MemberKind.DIRECTORY:
            continue
        elif legacy and member.name in ("storages", "tensors"):
            _scan_legacy_torch_member(ctx, data[member.data], member.name)
        else:
            ctx.member(member.name).scan(data[member.data], member.name)
    if listing.error is None and not listing.too_many:
        _check_trailing(ctx, data, listing.end)


def _scan_legacy_torch_member(ctx: ScanContext, data: memoryview, name: str) -> None:
    # torch.load unpickles every record of these members, not only the first pickle.
    found = tar.legacy_torch_pickles(
        data,
        name,
        max_opcodes=ctx.limits.max_pickle_opcodes,
        max_records=ctx.limits.max_metadata_entries,
    )
    for span in found.pickles:
        ctx.member(f"{name}@{span.start}").scan(data[span], name)
    if found.error is not None:
        error = found.error
        ctx.report(MALFORMED, f"legacy torch {name}: {error}", offset=error.offset, evidence=name)
    elif found.end < len(data):
        ctx.report(
            TRAILING_DATA,
            f"{len(data) - found.end} bytes after the last record",
            offset=found.end,
            evidence=name,
        )
        _scan_as_data(ctx, data[found.end :], f"{name}@{found.end}")


# -- single-stream compression -------------------------------------------------------------


def scan_gzip(ctx: ScanContext, data: memoryview) -> None:
    """Decompress a gzip stream within bounds and scan its content."""
    _scan_stream(ctx, data, Codec.GZIP, {".gz": "", ".tgz": ".tar"})


def scan_bzip2(ctx: ScanContext, data: memoryview) -> None:
    """Decompress a bzip2 stream within bounds and scan its content."""
    _scan_stream(ctx, data, Codec.BZIP2, {".bz2": "", ".tbz2": ".tar", ".tbz": ".tar"})


def scan_xz(ctx: ScanContext, data: memoryview) -> None:
    """Decompress an xz stream within bounds and scan its content."""
    _scan_stream(ctx, data, Codec.XZ, {".xz": "", ".txz": ".tar"})


def _scan_stream(
    ctx: ScanContext, data: memoryview, codec: Codec, suffixes: dict[str, str]
) -> None:
    own = posixpath.basename(ctx.path.rsplit("!", 1)[-1])
    stem, suffix = posixpath.splitext(own)
    name = stem + suffixes[suffix.lower()] if suffix.lower() in suffixes else f"{own}.content"
    result = compressed.decompress(data, codec, _bounds(ctx), multi_stream=True)
    content = _accept(ctx, result, name, 0)
    if content is None:
        return
    if result.outcome is Outcome.COMPLETE:
        _check_trailing(ctx, data, result.consumed)
    ctx.member(name).scan(content, name)


# -- 7z ------------------------------------------------------------------------------------


def scan_7z(ctx: ScanContext, data: memoryview) -> None:
    """Scan a 7z archive with py7zr when it can be done within bounds; else fail closed."""
    try:
        members = tar.read_7z(
            data,
            _bounds(ctx),
            max_members=ctx.limits.max_archive_members,
            max_header_bytes=ctx.limits.max_header_bytes,
        )
    except compressed.Unscannable as exc:
        ctx.report(UNSCANNABLE, str(exc), offset=exc.offset)
        return
    except compressed.ArchiveBomb as exc:
        ctx.report(BOMB, str(exc), offset=exc.offset)
        return
    except compressed.BudgetExceeded as exc:
        ctx.report(TOTAL_TOO_LARGE, str(exc), offset=exc.offset)
        return
    ctx.budget.uncompressed_bytes += sum(len(m.data or b"") for m in members)
    for member in members:
        _check_name(ctx, member.name, None)
        if member.data is None:
            continue  # a name py7zr refuses to extract; reported above
        if member.is_symlink:
            _check_link(ctx, member.name, member.data[:_LINK_TARGET_MAX], None, hard=False)
        else:
            ctx.member(member.name).scan(member.data, member.name)


# -- shared --------------------------------------------------------------------------------


def _bounds(ctx: ScanContext) -> compressed.Bounds:
    limits = ctx.limits
    return compressed.Bounds(
        max_output=limits.max_member_bytes,
        budget=max(0, limits.max_total_uncompressed_bytes - ctx.budget.uncompressed_bytes),
        max_ratio=limits.max_compression_ratio,
        min_ratio_check=limits.min_bomb_check_bytes,
    )


def _accept(
    ctx: ScanContext, result: compressed.Decompressed, name: str, offset: int
) -> bytearray | None:
    """Account for a decompression and report how it ended; the bytes worth scanning."""
    ctx.budget.uncompressed_bytes += len(result.data)
    produced = len(result.data)
    if result.outcome is Outcome.RATIO:
        ctx.report(
            BOMB,
            f"expands beyond {ctx.limits.max_compression_ratio:.0f}:1 "
            f"({produced} bytes from {result.consumed}); stopped",
            offset=offset,
            evidence=name,
        )
    elif result.outcome is Outcome.SIZE:
        ctx.report(
            MEMBER_TOO_LARGE,
            f"decompresses to more than {ctx.limits.max_member_bytes} "
            "bytes (limits.max_member_bytes); stopped",
            offset=offset,
            evidence=name,
        )
    elif result.outcome is Outcome.BUDGET:
        ctx.report(
            TOTAL_TOO_LARGE,
            "decompressed data exceeds limits.max_total_uncompressed_bytes; stopped",
            offset=offset,
            evidence=name,
        )
    elif result.outcome is Outcome.TRUNCATED:
        ctx.report(
            TRUNCATED,
            f"compressed stream ends early (after {produced} bytes)",
            offset=offset,
            evidence=name,
        )
        return result.data
    elif result.outcome is Outcome.CORRUPT:
        ctx.report(
            CORRUPT,
            f"cannot decompress after {produced} bytes: {result.detail}",
            offset=offset,
            evidence=name,
        )
        return result.data
    else:
        return result.data
    return None


def _check_trailing(ctx: ScanContext, data: memoryview, end: int) -> None:
    # Zero padding (tar records, tape blocks) is normal; anything else is reported and
    # looked at from its first non-zero byte.
    start = compressed.first_nonzero(data, end)
    if start is not None:
        ctx.report(TRAILING_DATA, f"{len(data) - start} bytes after the end", offset=start)
        _scan_as_data(ctx, data[start:], "<trailing>")


def _check_name(ctx: ScanContext, name: str, offset: int | None) -> None:
    path = name.replace("\\", "/")
    if "\x00" in name:
        problem = "contains a NUL byte"
    elif path.startswith("/"):
        problem = "is an absolute path"
    elif _DRIVE.match(path):
        problem = "starts with a drive letter"
    elif ".." in path.split("/"):
        problem = "has a '..' component"
    elif "\\" in name:
        ctx.report(BACKSLASH_NAME, "member name uses backslashes", offset=offset, evidence=name)
        return
    else:
        return
    ctx.report(PATH_TRAVERSAL, f"member name {problem}", offset=offset, evidence=name)


def _check_link(
    ctx: ScanContext, name: str, target: bytes, offset: int | None, *, hard: bool
) -> None:
    text = target.decode("utf-8", errors="replace").replace("\\", "/")
    kind = "hard link" if hard else "symbolic link"
    base = "" if hard else posixpath.dirname(name.replace("\\", "/"))
    resolved = posixpath.normpath(posixpath.join(base, text)) if text else "."
    escapes = (
        text.startswith("/")
        or bool(_DRIVE.match(text))
        or resolved == ".."
        or resolved.startswith(("../", "/"))
    )
    rule_ = LINK_ESCAPES if escapes else LINK_MEMBER
    ctx.report(rule_, f"{kind} to {text!r}", offset=offset, evidence=name)


def _has_strong_magic(data: memoryview | bytearray) -> bool:
    head = bytes(data[:512])
    if head.startswith(_STRONG_MAGICS):
        return True
    if (
        head[:3] == b"BZh"
        and head[3:4] in b"123456789"
        and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90")
    ):
        return True
    if head[detect.TAR_MAGIC_OFFSET : detect.TAR_MAGIC_OFFSET + 6] in detect.TAR_MAGICS:
        return True
    # A binary pickle: PROTO 2-5 at the start and STOP at the end (4 in 65536 random
    # buffers start like a pickle; almost none also end with '.').
    return (
        len(head) >= 2
        and head[0] == detect.PICKLE_PROTO
        and 2 <= head[1] <= 5
        and (bytes(data[-1:]) == b".")
    )


def _recognisable(data: memoryview | bytearray) -> bool:
    if _has_strong_magic(data):
        return True
    fmt = detect.detect_format(data)
    if fmt is FileFormat.PICKLE:
        return bytes(data[:1]) != bytes([detect.PICKLE_PROTO])
    return fmt in (FileFormat.TEXT, FileFormat.JSON)


def _scan_as_data(ctx: ScanContext, data: memoryview | bytearray, name: str) -> None:
    """Scan raw bytes only if a strong magic number says they are something else."""
    if _has_strong_magic(data):
        ctx.member(name).scan(data, name)
