"""The scan context: where findings go, how deep we are, and how to descend.

A context is handed to every format scanner. Archive scanners call :meth:`ScanContext.scan`
on each member, which detects the member's format from its bytes, checks its name against
its content, and dispatches to the member's scanner with a child context one level deeper.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats import detect
from weightgate.formats.detect import BytesLike, FileFormat
from weightgate.formats.problems import FaultT, Problem
from weightgate.scan import dispatch
from weightgate.scan.findings import Finding, Rule, Severity, rule
from weightgate.scan.settings import Limits, ScanSettings

EXTENSION_MISMATCH = rule(
    "format.extension-mismatch",
    Severity.LOW,
    "The file name claims a different format than its content",
    "weightgate judges files by content, so the scan is not affected; loaders that trust "
    "the extension may misbehave. Rename the file to match its content.",
)
DISGUISED = rule(
    "format.disguised",
    Severity.HIGH,
    "Code-carrying content behind a name that promises a code-free format",
    "A pickle named like safetensors, GGUF, NumPy, ONNX or JSON is a classic disguise: "
    "some loaders dispatch on content and will unpickle it. Treat the file as hostile.",
)
UNRECOGNIZED = rule(
    "format.unrecognized",
    Severity.INFO,
    "Content is not a model format weightgate knows",
    "The file was hashed but not parsed. If it is model content, report the format.",
)
DEPTH_EXCEEDED = rule(
    "archive.depth-exceeded",
    Severity.MEDIUM,
    "Archives nested deeper than the configured limit",
    "Members below the limit were not scanned, so the verdict fails closed. Raise "
    "limits.max_archive_depth if such nesting is expected.",
)
POLYGLOT = rule(
    "format.polyglot",
    Severity.MEDIUM,
    "The content is two formats at once: it also ends like a zip archive",
    "Loaders that start at the beginning see one format, zipfile-based loaders see the "
    "archive at the end. Both were scanned; a model file has no reason to be both.",
)
MALFORMED = rule(
    "format.malformed",
    Severity.MEDIUM,
    "The file breaks the rules of its format",
    "A reader stopped at the offset given. Loaders may read such files differently from "
    "the scanner, so the verdict fails closed. Re-export the model with its own tools.",
)
LIMIT_EXCEEDED = rule(
    "format.limit-exceeded",
    Severity.MEDIUM,
    "A size or count in the file exceeds a configured limit",
    "The rest of the object was not parsed, so the verdict fails closed. If the model is "
    "legitimately that large, raise the named limit.",
)
INTERNAL_ERROR = rule(
    "scan.internal-error",
    Severity.HIGH,
    "The scanner failed on this file",
    "This is a weightgate bug; the file is treated as failing (fail closed). Please "
    "report it with the message.",
)


@dataclass
class Budget:
    """Counters shared by every level of one top-level file."""

    uncompressed_bytes: int = 0
    """Bytes produced by decompression so far, all levels."""


class ScanContext:
    """Where one file or archive member is being scanned.

    Attributes:
        settings: The scan settings.
        path: Display path of the object (``a.zip!b/data.pkl`` for members).
        depth: Archive nesting depth; 0 for a file on disk.
        budget: Counters shared with every other level of the same top-level file.
        findings: Where findings are appended (shared with the whole file).
    """

    def __init__(
        self,
        settings: ScanSettings,
        path: str,
        findings: list[Finding],
        *,
        depth: int = 0,
        budget: Budget | None = None,
    ) -> None:
        self.settings = settings
        self.path = path
        self.depth = depth
        self.budget = budget if budget is not None else Budget()
        self.findings = findings

    @property
    def limits(self) -> Limits:
        """Shortcut for ``settings.limits``."""
        return self.settings.limits

    def report(
        self,
        rule: Rule,
        message: str,
        *,
        offset: int | None = None,
        evidence: str | None = None,
        severity: Severity | None = None,
    ) -> None:
        """Record a finding of ``rule`` at this context's path."""
        self.findings.append(
            Finding(
                rule=rule.id,
                severity=rule.severity if severity is None else severity,
                path=self.path,
                message=message,
                offset=offset,
                evidence=evidence,
            )
        )

    def report_problems(
        self, problems: Iterable[Problem[FaultT]], rules: Mapping[FaultT, Rule]
    ) -> None:
        """Record the problems a reader collected, each under the rule for its fault."""
        for problem in problems:
            self.report(
                rules[problem.fault],
                problem.message,
                offset=problem.offset,
                evidence=problem.evidence,
            )

    def member(self, name: str) -> ScanContext:
        """A context for a member of the object scanned here, one level deeper."""
        return ScanContext(
            self.settings,
            f"{self.path}!{name}",
            self.findings,
            depth=self.depth + 1,
            budget=self.budget,
        )

    def scan(self, data: BytesLike, name: str) -> FileFormat:
        """Detect the format of ``data`` (this context's object) and scan it.

        ``name`` is the object's own name (file or member name), used to spot names that
        disagree with the content. Returns the detected format.
        """
        view = memoryview(data)
        fmt = detect.detect_format(view, name)
        claims = detect.claimed_formats(name)
        self._check_name(fmt, name, claims)
        if self.depth > self.limits.max_archive_depth:
            self.report(
                DEPTH_EXCEEDED,
                f"nested {self.depth} levels deep (limit {self.limits.max_archive_depth}); "
                "not scanned",
                evidence=fmt.value,
            )
            return fmt
        unrecognised = fmt in (FileFormat.UNKNOWN, FileFormat.EMPTY, FileFormat.TEXT)
        if unrecognised and claims is not None and len(claims) == 1:
            (claimed,) = claims
            if claimed in detect.VERIFIABLE_CLAIMS:
                self.scan_as(claimed, view)
                return fmt
        self.scan_as(fmt, view)
        if fmt is not FileFormat.ZIP and detect.ends_with_zip_directory(view):
            self.report(POLYGLOT, f"{fmt.value} content that also ends with a zip directory")
            self.scan_as(FileFormat.ZIP, view)
        return fmt

    def scan_as(self, fmt: FileFormat, data: BytesLike) -> None:
        """Scan ``data`` as ``fmt`` (a scanner that finds it mis-detected re-routes here)."""
        scanner = dispatch.scanner_for(fmt)
        if scanner is None:
            if fmt is FileFormat.UNKNOWN:
                self.report(UNRECOGNIZED, "content not recognised; hashed but not parsed")
            return
        try:
            scanner(self, memoryview(data))
        except LimitExceeded as exc:
            self.report(LIMIT_EXCEEDED, str(exc), offset=exc.offset, evidence=fmt.value)
        except FormatError as exc:
            self.report(MALFORMED, f"{fmt.value}: {exc}", offset=exc.offset)
        except RecursionError:
            self.report(INTERNAL_ERROR, f"{fmt.value}: structure nested too deeply to scan")
        except Exception as exc:  # a scanner bug must not let the file through
            self.report(INTERNAL_ERROR, f"{fmt.value}: {type(exc).__name__}: {exc}")

    def _check_name(self, fmt: FileFormat, name: str, claims: frozenset[FileFormat] | None) -> None:
        if claims is None or fmt in claims or fmt is FileFormat.EMPTY:
            return
        claimed = "/".join(sorted(f.value for f in claims))
        if fmt in detect.CODE_CARRYING_FORMATS and claims <= detect.CODE_FREE_FORMATS:
            self.report(
                DISGUISED,
                f"named as {claimed} but the content is {fmt.value}",
                evidence=name,
            )
        else:
            self.report(
                EXTENSION_MISMATCH,
                f"named as {claimed} but the content is {fmt.value}",
                evidence=name,
            )
