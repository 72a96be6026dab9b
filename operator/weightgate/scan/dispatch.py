"""Which scanner handles which format.

Scanner modules are imported lazily, on first use, so that importing the engine stays
cheap and no scanner module has to import every other one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from weightgate.formats.detect import FileFormat

if TYPE_CHECKING:
    from weightgate.scan.context import ScanContext
    from weightgate.scan.findings import ScanReport
    from weightgate.scan.settings import ScanSettings

Scanner = Callable[["ScanContext", memoryview], None]
"""A format scanner: reads the bytes, reports findings on the context, returns nothing."""
ModelCheck = Callable[[Path, "ScanReport", "ScanSettings"], None]
"""A check of the whole scanned model (its root, the report so far, the settings)."""

_WEIGHT_CHECK = "weightgate.scan.weights:check_weights"
"""Weight statistics: once per model, after every file (a tensor's family spans shards).
Imported lazily like the scanners: it brings numpy, ml_dtypes and gguf."""

_SCANNERS: dict[FileFormat, str] = {
    FileFormat.PICKLE: "weightgate.scan.pickle:scan_pickle",
    FileFormat.ZIP: "weightgate.scan.archive.zip:scan_zip",
    FileFormat.TAR: "weightgate.scan.archive.tar:scan_tar",
    FileFormat.GZIP: "weightgate.scan.archive.streams:scan_gzip",
    FileFormat.BZIP2: "weightgate.scan.archive.streams:scan_bzip2",
    FileFormat.XZ: "weightgate.scan.archive.streams:scan_xz",
    FileFormat.SEVENZIP: "weightgate.scan.archive.sevenzip:scan_7z",
    FileFormat.SAFETENSORS: "weightgate.scan.safetensors:scan_safetensors",
    FileFormat.GGUF: "weightgate.scan.gguf:scan_gguf",
    FileFormat.NUMPY: "weightgate.scan.numpy:scan_npy",
    FileFormat.HDF5: "weightgate.scan.hdf5:scan_hdf5",
    FileFormat.ONNX: "weightgate.scan.onnx:scan_onnx",
    FileFormat.SAVEDMODEL: "weightgate.scan.savedmodel:scan_savedmodel",
    FileFormat.KERAS_METADATA: "weightgate.scan.keras_metadata:scan_keras_metadata",
    FileFormat.JSON: "weightgate.scan.text:scan_json",
    FileFormat.TEXT: "weightgate.scan.text:scan_text",
}

_loaded: dict[FileFormat, Scanner] = {}


def scanner_for(fmt: FileFormat) -> Scanner | None:
    """The scanner for ``fmt``, or None for formats that are only hashed."""
    scanner = _loaded.get(fmt)
    if scanner is None:
        target = _SCANNERS.get(fmt)
        if target is None:
            return None
        module_name, _, attribute = target.partition(":")
        scanner = getattr(importlib.import_module(module_name), attribute)
        _loaded[fmt] = scanner
    return scanner


def weight_check() -> ModelCheck:
    """The weight-statistics check of a scanned model."""
    module_name, _, attribute = _WEIGHT_CHECK.partition(":")
    check: ModelCheck = getattr(importlib.import_module(module_name), attribute)
    return check


def all_scanner_modules() -> list[str]:
    """Every scanner module, for tools that need all rules declared (docs, SARIF)."""
    targets = [*_SCANNERS.values(), _WEIGHT_CHECK]
    return sorted({target.partition(":")[0] for target in targets})
