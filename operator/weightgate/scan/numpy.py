"""Scanner for numpy (placeholder until its reader lands)."""

from weightgate.scan.context import ScanContext


def scan_npy(ctx: ScanContext, data: memoryview) -> None:
    """Placeholder: reports nothing."""
