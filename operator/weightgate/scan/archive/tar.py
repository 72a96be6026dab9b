"""Scanner for tar archives, including legacy (torch < 0.4) PyTorch checkpoints.

Members are taken as zero-copy slices of the archive (:mod:`weightgate.formats.tar`) and
scanned by content; links, devices and FIFOs are reported instead. In a legacy
checkpoint, every pickle record of the ``storages`` and ``tensors`` members is scanned
(:mod:`weightgate.formats.tar.legacy_torch`), because ``torch.load`` unpickles them all.
"""

from __future__ import annotations

from weightgate.formats import tar
from weightgate.formats.tar import legacy_torch
from weightgate.scan.archive.members import (
    SPECIAL_MEMBER,
    TOO_MANY_MEMBERS,
    TRAILING_DATA,
    TRUNCATED,
    UNSCANNABLE,
    check_link,
    check_member_name,
    check_trailing,
    scan_as_data,
)
from weightgate.scan.context import MALFORMED, ScanContext


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
    legacy = {m.name for m in listing.members} >= legacy_torch.LEGACY_TORCH_MEMBERS
    for member in listing.members:
        check_member_name(ctx, member.name, member.offset)
        kind = member.kind
        if kind in (tar.MemberKind.SYMLINK, tar.MemberKind.HARDLINK):
            check_link(
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
        check_trailing(ctx, data, listing.end)


def _scan_legacy_torch_member(ctx: ScanContext, data: memoryview, name: str) -> None:
    # torch.load unpickles every record of these members, not only the first pickle.
    found = legacy_torch.legacy_torch_pickles(
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
        scan_as_data(ctx, data[found.end :], f"{name}@{found.end}")
