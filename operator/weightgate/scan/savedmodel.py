"""Scanner for savedmodel (placeholder until its reader lands)."""

from weightgate.scan.context import ScanContext


def scan_savedmodel(ctx: ScanContext, data: memoryview) -> None:
    """Placeholder: reports nothing."""
