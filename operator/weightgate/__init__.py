"""weightgate: keep poisoned or tampered model weights out of clusters and pipelines.

The public surface is small on purpose. Everything else lives in subpackages whose
layout follows DESIGN.md: ``formats`` (readers that never execute anything), ``scan``
(rules, findings and reports) and the ``cli`` adapter.
"""

from weightgate.scan.engine import scan_path
from weightgate.scan.findings import Finding, ScanReport, Severity
from weightgate.scan.settings import Limits, ScanSettings
from weightgate.version import __version__

__all__ = [
    "Finding",
    "Limits",
    "ScanReport",
    "ScanSettings",
    "Severity",
    "__version__",
    "scan_path",
]
