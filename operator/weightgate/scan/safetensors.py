"""Scanner for safetensors (placeholder until its reader lands)."""

from weightgate.scan.context import ScanContext


def scan_safetensors(ctx: ScanContext, data: memoryview) -> None:
    """Placeholder: reports nothing."""
