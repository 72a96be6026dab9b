"""Red-team regressions for SavedModel graphs: file access through less obvious ops."""

from __future__ import annotations

import pytest

from tests.unit.test_savedmodel import BENIGN, function, node, rules, saved_model, scan
from weightgate.scan.findings import Severity


@pytest.mark.parametrize(
    ("op", "severity"),
    [
        ("ImmutableConst", Severity.MEDIUM),  # memory-maps the file named in an attribute
        ("WholeFileReaderV2", Severity.MEDIUM),
        ("TFRecordDatasetV2", Severity.MEDIUM),
        ("FixedLengthRecordDataset", Severity.MEDIUM),
        ("TextLineDataset", Severity.MEDIUM),
        ("DebugIdentityV2", Severity.HIGH),  # writes tfdbg dumps under its debug_urls
        ("DebugNumericSummaryV2", Severity.HIGH),
    ],
)
def test_ops_that_reach_files_by_path_are_flagged(op: str, severity: Severity) -> None:
    findings = scan(saved_model(BENIGN, [function("__inference_f_1", node("x", op))]))
    assert rules(findings) == [("savedmodel.file-op", severity)]
    assert findings[0].evidence == op


def test_vocabulary_table_initialisers_stay_quiet() -> None:
    # TF Hub text models read their vocabulary asset this way: not a finding.
    assert scan(saved_model([*BENIGN, node("t", "InitializeTableFromTextFileV2")])) == []
