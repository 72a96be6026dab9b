"""Scanner for keras (placeholder until its reader lands)."""

from weightgate.scan.context import ScanContext


def scan_hdf5(ctx: ScanContext, data: memoryview) -> None:
    """Placeholder: reports nothing."""


def scan_keras_config(ctx: ScanContext, config: object) -> None:
    """Placeholder: checks a parsed Keras model config (from config.json or an .h5 attribute)."""
