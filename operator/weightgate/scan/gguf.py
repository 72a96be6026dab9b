"""Scanner for gguf (placeholder until its reader lands)."""

from weightgate.scan.context import ScanContext


def scan_gguf(ctx: ScanContext, data: memoryview) -> None:
    """Placeholder: reports nothing."""
