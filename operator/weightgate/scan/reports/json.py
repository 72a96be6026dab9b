"""The JSON report: everything the scan knows, in a stable, documented shape."""

from __future__ import annotations

import json as _json
from collections import Counter
from typing import Any

from weightgate.scan.findings import Finding, ScanReport, Severity

SCHEMA_VERSION = 1


def finding_to_dict(finding: Finding) -> dict[str, Any]:
    """One finding as a JSON-ready mapping."""
    return {
        "rule": finding.rule,
        "severity": finding.severity.label,
        "path": finding.path,
        "message": finding.message,
        "offset": finding.offset,
        "evidence": finding.evidence,
    }


def report_to_dict(report: ScanReport, fail_on: Severity) -> dict[str, Any]:
    """The whole report as a JSON-ready mapping."""
    counts = Counter(f.severity.label for f in report.findings)
    return {
        "schemaVersion": SCHEMA_VERSION,
        "root": report.root,
        "failOn": fail_on.label,
        "passed": not report.failed(fail_on) and not report.errors,
        "summary": {
            "files": len(report.files),
            "bytes": sum(f.size for f in report.files),
            "findings": {s.label: counts.get(s.label, 0) for s in reversed(Severity)},
            "errors": len(report.errors),
        },
        "files": [
            {
                "path": result.path,
                "size": result.size,
                "sha256": result.sha256,
                "format": result.format,
                "findings": [finding_to_dict(f) for f in result.findings],
            }
            for result in report.files
        ],
        "errors": [{"path": path, "reason": reason} for path, reason in report.errors],
    }


def render_json(report: ScanReport, fail_on: Severity) -> str:
    """Serialise the report as indented JSON."""
    return _json.dumps(report_to_dict(report, fail_on), indent=2) + "\n"
