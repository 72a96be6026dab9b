"""SARIF 2.1.0, the format GitHub code scanning and other dashboards ingest.

Findings in archive members are reported against the file on disk (SARIF locations name
files a checkout has), with the member path in the message and in ``properties``.
"""

from __future__ import annotations

import json
from typing import Any

from weightgate.sarif import sarif_log
from weightgate.scan import dispatch
from weightgate.scan.findings import RULES, Finding, ScanReport, Severity

_LEVELS = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}
# GitHub ranks security alerts by this number (CVSS-like, as a string).
_SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
    Severity.INFO: "0.0",
}


def _rule_descriptor(rule_id: str) -> dict[str, Any]:
    rule = RULES[rule_id]
    return {
        "id": rule.id,
        "name": rule.id.replace(".", "/"),
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": rule.help},
        "help": {"text": rule.help},
        "defaultConfiguration": {"level": _LEVELS[rule.severity]},
        "properties": {
            "security-severity": _SECURITY_SEVERITY[rule.severity],
            "tags": ["security", "model-supply-chain"],
        },
    }


def _result(finding: Finding, rule_index: dict[str, int], artifact: int) -> dict[str, Any]:
    file_path, _, member = finding.path.partition("!")
    text = finding.message
    if member:
        text = f"{member}: {text}"
    if finding.evidence:
        text = f"{text} [{finding.evidence}]"
    region: dict[str, Any] = {"startLine": 1}
    if finding.offset is not None and not member:
        region["byteOffset"] = finding.offset
    return {
        "ruleId": finding.rule,
        "ruleIndex": rule_index[finding.rule],
        "level": _LEVELS[finding.severity],
        "message": {"text": text},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": file_path, "index": artifact},
                    "region": region,
                }
            }
        ],
        "properties": {
            "severity": finding.severity.label,
            "member": member or None,
            "offset": finding.offset,
            "evidence": finding.evidence,
        },
    }


def report_to_sarif(report: ScanReport, version: str) -> dict[str, Any]:
    """Build the SARIF log as a mapping."""
    for module in dispatch.all_scanner_modules():  # declare every rule
        __import__(module)
    rule_ids = list(RULES)
    rule_index = {rule_id: i for i, rule_id in enumerate(rule_ids)}
    artifacts = []
    results: list[dict[str, Any]] = []
    for index, file in enumerate(report.files):
        artifacts.append(
            {
                "location": {"uri": file.path},
                "length": file.size,
                "hashes": {"sha-256": file.sha256},
                "mimeType": "application/octet-stream",
            }
        )
        results.extend(_result(f, rule_index, index) for f in file.findings)
    notifications = [
        {"level": "error", "message": {"text": f"{path}: {reason}"}}
        for path, reason in report.errors
    ]
    rules = [_rule_descriptor(rule_id) for rule_id in rule_ids]
    invocation = {
        "executionSuccessful": not report.errors,
        "toolExecutionNotifications": notifications,
    }
    return sarif_log(rules, results, version, artifacts=artifacts, invocations=[invocation])


def render_sarif(report: ScanReport, version: str) -> str:
    """Serialise the report as SARIF 2.1.0 JSON."""
    return json.dumps(report_to_sarif(report, version), indent=2) + "\n"
