"""weightgate: keep poisoned or tampered model weights out of clusters and pipelines.

The public surface is small on purpose. Everything else lives in subpackages whose
layout follows DESIGN.md: ``formats`` (readers that never execute anything), ``scan``
(rules, findings and reports) and the ``cli`` adapter.
"""

from weightgate.scan.engine import scan_path
from weightgate.scan.findings import Finding, ScanReport, Severity
from weightgate.scan.settings import Limits, ScanSettings

__all__ = ["Finding", "Limits", "ScanReport", "ScanSettings", "Severity", "scan_path"]
__version__ = "0.1.0"
