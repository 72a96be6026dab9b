"""The human report: one block per file with findings, worst first, and a verdict line."""

from __future__ import annotations

from collections import Counter

from weightgate.scan.findings import RULES, Finding, ScanReport, Severity

_COLOURS = {
    Severity.CRITICAL: "\x1b[1;31m",
    Severity.HIGH: "\x1b[31m",
    Severity.MEDIUM: "\x1b[33m",
    Severity.LOW: "\x1b[36m",
    Severity.INFO: "\x1b[2m",
}
_RESET = "\x1b[0m"
_BOLD = "\x1b[1m"
_GREEN = "\x1b[32m"


def _paint(text: str, code: str, colour: bool) -> str:
    return f"{code}{text}{_RESET}" if colour else text


def _finding_line(finding: Finding, colour: bool) -> str:
    label = _paint(f"{finding.severity.label.upper():8}", _COLOURS[finding.severity], colour)
    where = ""
    _, _, member = finding.path.partition("!")
    if member:
        where = f" in {member}"
    if finding.offset is not None:
        where += f" at offset {finding.offset:#x}"
    evidence = f"\n             evidence: {finding.evidence}" if finding.evidence else ""
    return f"  {label} {finding.rule}{where}: {finding.message}{evidence}"


def render_text(
    report: ScanReport, fail_on: Severity, *, colour: bool = False, verbose: bool = False
) -> str:
    """Render the report for a terminal.

    Args:
        report: The scan report.
        fail_on: The gate threshold, for the verdict line.
        colour: Use ANSI colours (only when writing to a terminal).
        verbose: Also list files without findings, with their sha256.
    """
    lines: list[str] = []
    for file in report.files:
        shown = [f for f in file.findings if verbose or f.severity > Severity.INFO]
        if not shown and not verbose:
            continue
        header = f"{file.path}  ({file.format}, {file.size} bytes)"
        lines.append(_paint(header, _BOLD, colour))
        if verbose:
            lines.append(f"  sha256 {file.sha256}")
        for finding in sorted(shown, key=lambda f: (-f.severity, f.offset or 0)):
            lines.append(_finding_line(finding, colour))
    for path, reason in report.errors:
        lines.append(
            _paint(f"{path}: could not be read: {reason}", _COLOURS[Severity.HIGH], colour)
        )
    lines.extend(_what_to_do(report, fail_on))
    counts = Counter(f.severity for f in report.findings)
    summary = ", ".join(f"{counts[s]} {s.label}" for s in reversed(Severity) if counts[s])
    files = len(report.files)
    noun = "file" if files == 1 else "files"
    lines.append(f"Scanned {files} {noun}: {summary or 'no findings'}.")
    if report.failed(fail_on):
        verdict = _paint(
            f"FAIL: findings at or above {fail_on.label}.", _COLOURS[Severity.CRITICAL], colour
        )
    elif report.errors:
        verdict = _paint(
            "INCOMPLETE: some files could not be read.", _COLOURS[Severity.HIGH], colour
        )
    else:
        verdict = _paint(f"PASS: nothing at or above {fail_on.label}.", _GREEN, colour)
    lines.append(verdict)
    return "\n".join(lines) + "\n"


def _what_to_do(report: ScanReport, fail_on: Severity) -> list[str]:
    # The help of each rule that failed the gate, once: what it means and what to do.
    failing = sorted({f.rule for f in report.findings if f.severity >= fail_on})
    if not failing:
        return []
    lines = ["", "What the failing rules mean:"]
    for rule_id in failing:
        rule = RULES.get(rule_id)
        lines.append(f"  {rule_id}: {rule.help if rule else 'undocumented rule'}")
    lines.append("")
    return lines
