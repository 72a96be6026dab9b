"""Scanner for 7z archives: extracted in memory by py7zr when that can be bounded.

:func:`weightgate.formats.sevenzip.read_7z` refuses what cannot be decompressed within
bounds (encryption, coders that overshoot, declared sizes past the limits); the scan
then fails closed with the matching ``archive.*`` rule.
"""

from __future__ import annotations

from weightgate.formats import compressed, sevenzip
from weightgate.scan.archive.members import (
    BOMB,
    LINK_TARGET_MAX,
    TOTAL_TOO_LARGE,
    UNSCANNABLE,
    check_link,
    check_member_name,
    decompression_bounds,
)
from weightgate.scan.context import ScanContext


def scan_7z(ctx: ScanContext, data: memoryview) -> None:
    """Scan a 7z archive with py7zr when it can be done within bounds; else fail closed."""
    try:
        members = sevenzip.read_7z(
            data,
            decompression_bounds(ctx),
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
        check_member_name(ctx, member.name, None)
        if member.data is None:
            continue  # a name py7zr refuses to extract; reported above
        if member.is_symlink:
            check_link(ctx, member.name, member.data[:LINK_TARGET_MAX], None, hard=False)
        else:
            ctx.member(member.name).scan(member.data, member.name)
