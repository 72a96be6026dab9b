"""Scanners for archives: zip (PyTorch checkpoints, npz, keras), tar, gzip, bzip2, xz, 7z.

One module per container: :mod:`.zip`, :mod:`.tar`, :mod:`.streams` (gzip, bzip2, xz)
and :mod:`.sevenzip`; :mod:`.members` holds the ``archive.*`` rules and the checks they
share. Every member is scanned by content through :meth:`ScanContext.scan`, one level
deeper, so nesting depth is bounded by the context. Stored zip and tar members are passed
as zero-copy slices; compressed ones are decompressed into memory within
``limits.max_member_bytes``, the scan-wide ``limits.max_total_uncompressed_bytes`` and
``limits.max_compression_ratio`` (bombs are stopped early, never inflated fully).

Members whose names say they hold raw tensor bytes (``data/0`` in PyTorch zips,
``.data/3.storage`` in torch.package) are scanned "as data": only a strong, unambiguous
magic number (a protocol 2+ pickle ending in STOP, zip, gzip, 7z, ...) sends them to a
scanner, so random float bytes never reach the protocol-0 pickle heuristic.
"""

from __future__ import annotations

from weightgate.scan.archive.sevenzip import scan_7z
from weightgate.scan.archive.streams import scan_bzip2, scan_gzip, scan_xz
from weightgate.scan.archive.tar import scan_tar
from weightgate.scan.archive.zip import scan_zip

__all__ = ["scan_7z", "scan_bzip2", "scan_gzip", "scan_tar", "scan_xz", "scan_zip"]
