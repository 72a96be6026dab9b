"""Scanner for text (placeholder until its reader lands)."""

from weightgate.scan.context import ScanContext


def scan_json(ctx: ScanContext, data: memoryview) -> None:
    """Placeholder: reports nothing."""


def scan_text(ctx: ScanContext, data: memoryview) -> None:
    """Placeholder: reports nothing."""
