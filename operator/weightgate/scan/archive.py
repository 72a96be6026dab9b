"""Scanner for archive (placeholder until its reader lands)."""

from weightgate.scan.context import ScanContext


def scan_zip(ctx: ScanContext, data: memoryview) -> None:
    """Placeholder: reports nothing."""


def scan_tar(ctx: ScanContext, data: memoryview) -> None:
    """Placeholder: reports nothing."""


def scan_gzip(ctx: ScanContext, data: memoryview) -> None:
    """Placeholder: reports nothing."""


def scan_bzip2(ctx: ScanContext, data: memoryview) -> None:
    """Placeholder: reports nothing."""


def scan_xz(ctx: ScanContext, data: memoryview) -> None:
    """Placeholder: reports nothing."""


def scan_7z(ctx: ScanContext, data: memoryview) -> None:
    """Placeholder: reports nothing."""
