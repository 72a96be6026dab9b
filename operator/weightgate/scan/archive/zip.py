"""Scanner for zip archives (PyTorch checkpoints, npz, keras): structure, then members.

The ``zip.*`` rules say how the archive's structure lets loaders disagree (header
mismatches, hidden or overlapping entries, polyglot prefixes); the reader is
:mod:`weightgate.formats.zip`. Stored members are passed as zero-copy slices, compressed
ones inflated within bounds; members whose names say they hold raw tensor bytes
(``data/0`` in PyTorch zips, ``.data/3.storage`` in torch.package) are scanned "as data".
"""

from __future__ import annotations

import re
import stat
import zlib

from weightgate.errors import FormatError
from weightgate.formats import compressed
from weightgate.formats import zip as zipfmt
from weightgate.formats.compressed import Codec, Outcome
from weightgate.scan.archive.members import (
    BOMB,
    CORRUPT,
    ENCRYPTED,
    LINK_TARGET_MAX,
    MEMBER_TOO_LARGE,
    TOO_MANY_MEMBERS,
    TRAILING_DATA,
    TRUNCATED,
    UNSCANNABLE,
    accept_decompressed,
    check_link,
    check_member_name,
    decompression_bounds,
    recognisable,
    scan_as_data,
)
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Severity, rule

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
    zipfmt.IssueKind.CD_CHOICE: ZIP_DIRECTORY,
    zipfmt.IssueKind.OVERLAP: ZIP_OVERLAP,
    zipfmt.IssueKind.PREFIX: ZIP_PREFIX,
    zipfmt.IssueKind.TRAILING: TRAILING_DATA,
    zipfmt.IssueKind.UNREFERENCED: ZIP_UNREFERENCED,
    zipfmt.IssueKind.DUPLICATE_NAME: ZIP_DUPLICATE_NAME,
    zipfmt.IssueKind.TOO_MANY_MEMBERS: TOO_MANY_MEMBERS,
}
_ZIP_CODECS = {zipfmt.Method.DEFLATED: Codec.DEFLATE, zipfmt.Method.BZIP2: Codec.BZIP2}
_CRC_CHECK_MAX = 64 * 1024 * 1024  # stored members above this skip the CRC (time)
_RAW_STORAGE_NAME = re.compile(r"(?:^|/)\.?data/\d+(?:\.storage)?$")


def scan_zip(ctx: ScanContext, data: memoryview) -> None:
    """Scan a zip archive: its structure, then every member by content."""
    listing = zipfmt.read_zip(data, max_members=ctx.limits.max_archive_members)
    for issue in listing.issues:
        rule_ = _ZIP_ISSUE_RULES[issue.kind]
        ctx.report(rule_, issue.message, offset=issue.offset, evidence=issue.evidence)
    if listing.prefix_end:
        ctx.member("<prefix>").scan(data[: listing.prefix_end], "<prefix>")
    if listing.trailing_start is not None:
        scan_as_data(ctx, data[listing.trailing_start :], "<trailing>")
    for entry in listing.entries:
        if ctx.budget.uncompressed_bytes >= ctx.limits.max_total_uncompressed_bytes:
            break
        _scan_zip_entry(ctx, data, entry)


def _scan_zip_entry(ctx: ScanContext, data: memoryview, entry: zipfmt.ZipEntry) -> None:
    record, offset = entry.record, entry.local.offset
    name = record.name
    for alias in entry.names:
        check_member_name(ctx, alias, offset)
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
    if encrypted and not recognisable(content):
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
        check_link(ctx, name, bytes(content[:LINK_TARGET_MAX]), offset, hard=False)
    elif all(_RAW_STORAGE_NAME.search(alias) for alias in entry.names):
        scan_as_data(ctx, content, name)
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
    result = compressed.decompress(source, codec, decompression_bounds(ctx), exact_size=exact)
    if quiet and result.outcome is not Outcome.COMPLETE:
        return None
    return accept_decompressed(ctx, result, name, offset)


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
