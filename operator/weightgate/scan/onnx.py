"""Scanner for onnx (placeholder until its reader lands)."""

from weightgate.scan.context import ScanContext


def scan_onnx(ctx: ScanContext, data: memoryview) -> None:
    """Placeholder: reports nothing."""
