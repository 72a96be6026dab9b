"""``weightgate diff --format sarif``: each failing detector's tensors as SARIF 2.1.0 results.

One rule per detector (``diff.manifest``, ``diff.bit-flips``, ``diff.census``,
``diff.spectral``); each result points at the candidate file that holds the tensor, at the
tensor's first byte, so code-scanning dashboards show where the change is. For a language
model, a result about a tensor read out by :mod:`.evidence` carries that tensor's candidate
trigger/target tokens (or changed embedding rows) in its ``evidence`` property.
"""

from __future__ import annotations

from typing import Any

from weightgate.analysis.detectors import DETECTORS
from weightgate.analysis.diff import DiffReport
from weightgate.analysis.report import tensor_evidence_dict
from weightgate.sarif import sarif_log


def diff_to_sarif(report: DiffReport, version: str) -> dict[str, Any]:
    """The SARIF log of a diff, as a mapping."""
    rules = [
        {
            "id": f"diff.{detector}",
            "name": f"diff/{detector}",
            "shortDescription": {"text": title},
            "fullDescription": {"text": text},
            "help": {"text": text},
            "defaultConfiguration": {"level": "error"},
            "properties": {"security-severity": "8.0", "tags": ["security", "model-weights"]},
        }
        for detector, (title, text) in DETECTORS.items()
    ]
    index = {detector: number for number, detector in enumerate(DETECTORS)}
    results = []
    for verdict in report.verdicts:
        if verdict.status == "pass":
            continue
        level = "error" if verdict.status == "fail" else "warning"
        for tensor in verdict.tensors or ("",):
            location = report.locations.get(tensor)
            result: dict[str, Any] = {
                "ruleId": f"diff.{verdict.detector}",
                "ruleIndex": index[verdict.detector],
                "level": level,
                "message": {"text": f"{tensor}: {verdict.message}" if tensor else verdict.message},
                "properties": {"tensor": tensor or None},
            }
            evidence = tensor_evidence_dict(report.evidence, tensor)
            if evidence is not None:
                result["properties"]["evidence"] = evidence
            if location is not None:
                path, offset = location
                result["locations"] = [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": path},
                            "region": {"byteOffset": offset},
                        }
                    }
                ]
            results.append(result)
    properties = {"baseline": report.baseline, "candidate": report.candidate}
    return sarif_log(rules, results, version, properties=properties)
