"""Every labelled sample of the third-party corpus gets the verdict its MANIFEST gives.

The MANIFEST is iterated, so new samples are picked up without touching this file. The
files are hostile: they are only ever read as bytes by weightgate's own readers.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import weightgate
from tests.conftest import CORPUS

# Samples whose label we believe is wrong, with the reason. Each one is still asserted:
# the test checks that weightgate gives the opposite verdict, so a change is noticed.
MISLABELLED: dict[str, str] = {}


def _rows(*labels: str) -> list[dict[str, str]]:
    manifest = CORPUS / "MANIFEST.tsv"
    if not manifest.is_file():
        # Fail collection loudly: an empty parameter list would only skip.
        raise RuntimeError(f"corpus MANIFEST not found at {manifest} (set WEIGHTGATE_CORPUS)")
    with manifest.open(newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle, delimiter="\t") if row["expected"] in labels]


LABELLED = _rows("malicious", "benign")
UNLABELLED = _rows("unknown")


def test_manifest_is_present_and_labelled(corpus_dir: Path) -> None:
    assert len(LABELLED) > 100, "the corpus MANIFEST lists fewer labelled samples than expected"


@pytest.mark.parametrize("row", LABELLED, ids=[row["path"] for row in LABELLED])
def test_labelled_sample_verdict(corpus_dir: Path, row: dict[str, str]) -> None:
    report = weightgate.scan_path(corpus_dir / row["path"])
    assert not report.errors
    findings = list(report.findings)
    assert not any(f.rule == "scan.internal-error" for f in findings), findings
    failed = report.failed(weightgate.ScanSettings().fail_on)
    expect_fail = row["expected"] == "malicious"
    if row["path"] in MISLABELLED:
        expect_fail = not expect_fail
    detail = "\n".join(f"{f.severity.label} {f.rule} {f.message} [{f.evidence}]" for f in findings)
    assert failed == expect_fail, f"{row['path']} ({row['expected']}):\n{detail}"


@pytest.mark.parametrize("row", UNLABELLED, ids=[row["path"] for row in UNLABELLED])
def test_unlabelled_sample_scans_cleanly(corpus_dir: Path, row: dict[str, str]) -> None:
    """No verdict is asserted for these, but the scan must complete without a bug."""
    report = weightgate.scan_path(corpus_dir / row["path"])
    assert not report.errors
    assert len(report.files) == 1
    assert len(report.files[0].sha256) == 64
    assert not any(f.rule == "scan.internal-error" for f in report.findings)


def test_sha256_matches_manifest(corpus_dir: Path) -> None:
    """The hash computed in the scan pass is the file's real sha256."""
    report = weightgate.scan_path(corpus_dir / "picklescan")
    by_path = {f"picklescan/{r.path}": r.sha256 for r in report.files}
    rows = [row for row in LABELLED if row["path"].startswith("picklescan/")]
    assert rows
    for row in rows:
        assert by_path[row["path"]] == row["sha256"], row["path"]
