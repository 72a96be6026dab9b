"""Findings, severities, rules and the report of one scan.

Rule ids are stable API: CI gates, SARIF consumers and suppressions refer to them, so a
rule is never renamed, only deprecated. Every rule is declared once, in the scanner module
that emits it, through :func:`rule`; the catalogue (:data:`RULES`) is what the README's
rule table and the SARIF ``tool.driver.rules`` are checked against.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field


class Severity(enum.IntEnum):
    """How bad a finding is; ordered so that ``a >= b`` means "at least as bad"."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        """The lower-case name used in every output format."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        """Parse a severity name, case-insensitively.

        Raises:
            ValueError: ``text`` names no severity.
        """
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r} (expected one of: {names})") from None


@dataclass(frozen=True)
class Rule:
    """A documented check with a stable id.

    Attributes:
        id: Stable identifier, ``family.name`` (for example ``pickle.dangerous-global``).
        severity: Default severity of its findings.
        title: One line saying what the rule detects.
        help: What it means for the user and what to do about it.
    """

    id: str
    severity: Severity
    title: str
    help: str


RULES: dict[str, Rule] = {}
"""Every declared rule by id, in declaration order."""


def rule(rule_id: str, severity: Severity, title: str, help: str) -> Rule:
    """Declare a rule. Declaring the same id twice with different content is a bug."""
    declared = Rule(rule_id, severity, title, help)
    existing = RULES.setdefault(rule_id, declared)
    if existing != declared:
        raise RuntimeError(f"rule {rule_id} declared twice with different content")
    return declared


@dataclass(frozen=True)
class Finding:
    """One thing a rule found in one file.

    Attributes:
        rule: Id of the rule that produced it.
        severity: Severity of this finding (usually the rule's default).
        path: The file, relative to the scan root; members of archives are joined with
            ``!`` (``model.pt!archive/data.pkl``).
        message: What was found, in one sentence.
        offset: Byte offset inside ``path`` (the innermost member), when it applies.
        evidence: The exact bytes or names that triggered it (a global, a key, a path).
    """

    rule: str
    severity: Severity
    path: str
    message: str
    offset: int | None = None
    evidence: str | None = None


@dataclass
class FileResult:
    """What one scanned file produced.

    Attributes:
        path: Relative to the scan root (the file name when a single file was scanned).
        size: Size in bytes.
        sha256: Hex digest of the whole file, computed in the same pass as the scan.
        format: The format detected from the content (``pickle``, ``zip``, ...).
        findings: Findings in this file and every member nested in it.
    """

    path: str
    size: int
    sha256: str
    format: str
    findings: list[Finding] = field(default_factory=list)


@dataclass
class ScanReport:
    """The result of scanning a file or a directory.

    Attributes:
        root: The path that was scanned, as given.
        files: One entry per regular file, in path order.
        errors: Files that could not be read at all (path, reason); any error means the
            scan could not complete.
    """

    root: str
    files: list[FileResult] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def findings(self) -> Iterator[Finding]:
        """Every finding of every file, in file order."""
        for result in self.files:
            yield from result.findings

    @property
    def max_severity(self) -> Severity | None:
        """The worst severity found, or None when nothing was found."""
        return max((f.severity for f in self.findings), default=None)

    def failed(self, threshold: Severity) -> bool:
        """True when any finding is at or above ``threshold``."""
        return any(f.severity >= threshold for f in self.findings)
