"""Scanners for single compressed streams: gzip, bzip2 and xz.

The stream is decompressed into memory within the member, scan-wide and ratio bounds
(bombs are stopped early, never inflated fully), then scanned by content under the name
its file name implies (``model.tar.gz`` holds ``model.tar``).
"""

from __future__ import annotations

import posixpath

from weightgate.formats import compressed
from weightgate.formats.compressed import Codec, Outcome
from weightgate.scan.archive.members import (
    accept_decompressed,
    check_trailing,
    decompression_bounds,
)
from weightgate.scan.context import ScanContext


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
    result = compressed.decompress(data, codec, decompression_bounds(ctx), multi_stream=True)
    content = accept_decompressed(ctx, result, name, 0)
    if content is None:
        return
    if result.outcome is Outcome.COMPLETE:
        check_trailing(ctx, data, result.consumed)
    ctx.member(name).scan(content, name)
