"""Scanner for pickle (placeholder until its reader lands)."""

from weightgate.scan.context import ScanContext


def scan_pickle(ctx: ScanContext, data: memoryview) -> None:
    """Placeholder: reports nothing."""
