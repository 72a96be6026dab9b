"""The ``weightgate`` command; each family of subcommands lives in its own module.

``scan`` is here; ``resolve`` and model URIs in :mod:`.cli_sources`; ``diff`` in
:mod:`.cli_analysis`; ``sign``, ``verify``,
``keys`` and ``records`` in :mod:`.cli_provenance`; what ``scan`` signs and records in
:mod:`.cli_scan_provenance`.

Exit codes follow DESIGN.md for every command: 0 pass, 1 could not complete (usage, I/O,
unreadable input), 2 the gate failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import NoReturn, TextIO

import yaml

from weightgate import (
    __version__,
    cli_analysis,
    cli_provenance,
    cli_scan_provenance,
    cli_sources,
)
from weightgate.errors import InputError, VerificationFailed
from weightgate.scan.engine import scan_path
from weightgate.scan.findings import FileResult, ScanReport, Severity
from weightgate.scan.reports import render_text
from weightgate.scan.reports.json import report_to_dict
from weightgate.scan.reports.sarif import report_to_sarif
from weightgate.scan.settings import ScanSettings, limits_with, settings_from_policy
from weightgate.sources.model import FetchedModel

EXIT_PASS = 0
EXIT_INCOMPLETE = 1
EXIT_GATE_FAILED = 2


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors; here 2 means "the gate failed", so use 1."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_INCOMPLETE, f"{self.prog}: error: {message}\n")


class _Progress:
    """A one-line progress bar on a terminal: downloads by bytes, then the scan by files."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.bytes = 0

    def scanned(self, result: FileResult, done: int, total: int) -> None:
        """After each scanned file."""
        self.bytes += result.size
        self._draw(done, total, f"{done}/{total} files {self.bytes / 1e6:,.0f} MB", result.path)

    def downloaded(self, path: str, done: int, total: int) -> None:
        """While downloading: bytes of the whole model done so far."""
        self._draw(done, total, f"{_amount(done)} of {_amount(total)} fetched", path)

    def _draw(self, done: int, total: int, counts: str, path: str) -> None:
        width = 30
        filled = width * min(done, total) // max(total, 1)
        bar = "#" * filled + "-" * (width - filled)
        name = path if len(path) <= 40 else "..." + path[-37:]
        self.stream.write(f"\r[{bar}] {counts}  {name:<40}")
        if done >= total:
            self.stream.write("\r" + " " * 100 + "\r")
        self.stream.flush()


def _amount(size: int) -> str:
    """Bytes in decimal units (as download tools print them)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{size} B"


def _severity(text: str) -> Severity:
    try:
        return Severity.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="weightgate",
        description="Keep poisoned or tampered model weights out of clusters and pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"weightgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    scan = commands.add_parser(
        "scan",
        help="scan a model file or directory for content that runs code or is malformed",
        description="Scan a model file or directory. Formats are detected from content.",
    )
    scan.add_argument(
        "path",
        help="a model file or directory, or a model URI (hf://, s3://, models:/, oci://, "
        "https://, file://, pvc://) to fetch and scan",
    )
    scan.add_argument(
        "-f", "--format", choices=["text", "json", "sarif"], default="text", help="report format"
    )
    scan.add_argument("-o", "--output", help="write the report to this file instead of stdout")
    scan.add_argument(
        "--fail-on",
        type=_severity,
        metavar="SEVERITY",
        help="fail when a finding is at or above this severity "
        "(critical, high, medium, low, info; default: medium)",
    )
    scan.add_argument(
        "--allow-global",
        action="append",
        default=[],
        metavar="MODULE.NAME",
        help="allow a pickle global (or MODULE.* for a whole module); repeatable",
    )
    scan.add_argument(
        "--policy",
        metavar="FILE",
        help="YAML ModelPolicy (its spec.scan) or mapping with failOn, allowGlobals, limits",
    )
    scan.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a parsing limit, e.g. max_pickle_opcodes=10000000; repeatable",
    )
    scan.add_argument("-j", "--jobs", type=int, help="files scanned at once (default: CPUs)")
    scan.add_argument(
        "--no-weight-stats",
        dest="weight_stats",
        action="store_false",
        help="skip the weight statistics (NaN/Inf and per-family outliers of safetensors and "
        "GGUF weights, reported as low): they decode every weight, which costs more than "
        "hashing",
    )
    scan.add_argument("-v", "--verbose", action="store_true", help="list every file and hash")
    scan.add_argument(
        "--color",
        choices=["auto", "always", "never"],
        default="auto",
        help="colour the text report (default: when writing to a terminal)",
    )
    scan.add_argument(
        "--progress",
        choices=["auto", "always", "never"],
        default="auto",
        help="progress bar on stderr (default: on a terminal)",
    )
    cli_sources.add_source_options(scan)
    cli_scan_provenance.add_scan_options(scan)
    cli_sources.add_resolve_command(commands)
    cli_analysis.add_diff_command(commands)
    cli_provenance.add_commands(commands)
    return parser


def _settings(args: argparse.Namespace) -> ScanSettings:
    settings = ScanSettings()
    if args.policy:
        try:
            document = yaml.safe_load(Path(args.policy).read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"{args.policy}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise InputError(f"{args.policy}: not valid YAML: {exc}") from exc
        try:
            settings = settings_from_policy(document, settings)
        except ValueError as exc:
            raise InputError(f"{args.policy}: {exc}") from exc
    if args.allow_global:
        settings = replace(
            settings, allowed_globals=settings.allowed_globals | set(args.allow_global)
        )
    if args.fail_on is not None:
        settings = replace(settings, fail_on=args.fail_on)
    if args.limit:
        overrides = {}
        for item in args.limit:
            name, sep, value = item.partition("=")
            if not sep:
                raise InputError(f"--limit {item!r}: expected NAME=VALUE")
            overrides[name.strip()] = value.strip()
        try:
            settings = replace(settings, limits=limits_with(settings.limits, overrides))
        except ValueError as exc:
            raise InputError(f"--limit: {exc}") from exc
    if not args.weight_stats:
        settings = replace(settings, weight_stats=False)
    if args.jobs is not None:
        if args.jobs < 1:
            raise InputError("--jobs must be at least 1")
        settings = replace(settings, jobs=args.jobs)
    return settings


def _wants(mode: str, stream: TextIO) -> bool:
    if mode == "always":
        return True
    if mode == "never":
        return False
    return (
        stream.isatty() and os.environ.get("NO_COLOR") is None and os.environ.get("TERM") != "dumb"
    )


def _command_scan(args: argparse.Namespace) -> int:
    settings = _settings(args)
    is_reference = cli_sources.is_reference(args.path)
    # Before scanning: a bad key or store fails fast. After the report: what it signs and
    # records is what the report shows (its failure exits 1, the report already written).
    provenance = cli_scan_provenance.scan_provenance(args, is_reference)
    progress = _Progress(sys.stderr) if _wants(args.progress, sys.stderr) else None
    scanned = progress.scanned if progress else None
    if not is_reference:
        report = scan_path(args.path, settings, scanned)
        code = _report(args, settings, report, None)
        if provenance is not None:
            provenance.apply(report, settings, Path(args.path), None, sys.stderr)
        return code
    source_settings = cli_sources.source_settings(args, progress.downloaded if progress else None)
    with cli_sources.fetched_directory(args.path, source_settings) as (fetched, directory):
        report = scan_path(directory, settings, scanned)
        cli_sources.check_scanned(report, fetched)
        report.root = fetched.resolved.reference
        code = _report(args, settings, report, fetched)
        if provenance is not None:
            provenance.apply(report, settings, directory, fetched, sys.stderr)
    return code


def _command_resolve(args: argparse.Namespace) -> int:
    progress = _Progress(sys.stderr) if _wants(args.progress, sys.stderr) else None
    sys.stdout.write(cli_sources.command_resolve(args, progress.downloaded if progress else None))
    return EXIT_PASS


def _command_diff(args: argparse.Namespace) -> int:
    progress = _Progress(sys.stderr) if _wants(args.progress, sys.stderr) else None
    return cli_analysis.command_diff(args, sys.stdout, progress.downloaded if progress else None)


def _report(
    args: argparse.Namespace,
    settings: ScanSettings,
    report: ScanReport,
    fetched: FetchedModel | None,
) -> int:
    """Write the report; a fetched model's identity and revision head it in every format."""
    out: TextIO = sys.stdout
    if args.format == "json":
        document = report_to_dict(report, settings.fail_on)
        if fetched is not None:
            document["revision"] = fetched.revision
            document["source"] = cli_sources.model_fields(fetched)
        text = json.dumps(document, indent=2) + "\n"
    elif args.format == "sarif":
        document = report_to_sarif(report, __version__)
        if fetched is not None:
            document["runs"][0]["properties"] = {"model": cli_sources.model_fields(fetched)}
        text = json.dumps(document, indent=2) + "\n"
    else:
        colour = args.output is None and _wants(args.color, sys.stdout)
        text = render_text(report, settings.fail_on, colour=colour, verbose=args.verbose)
        if fetched is not None:
            text = cli_sources.text_header(fetched) + text
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{args.output}: {exc.strerror or exc}") from exc
    else:
        out.write(text)
    if report.failed(settings.fail_on):
        return EXIT_GATE_FAILED
    if report.errors:
        return EXIT_INCOMPLETE
    return EXIT_PASS


_COMMANDS = {
    "sign": cli_provenance.command_sign,
    "verify": cli_provenance.command_verify,
    "keys": cli_provenance.command_keys,
    "records": cli_provenance.command_records,
}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "scan":
            return _command_scan(args)
        if args.command == "resolve":
            return _command_resolve(args)
        if args.command == "diff":
            return _command_diff(args)
        if args.command in _COMMANDS:
            return _COMMANDS[args.command](args, sys.stdout)
    except InputError as exc:
        print(f"weightgate: error: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE
    except VerificationFailed as exc:
        print(f"weightgate: verification failed: {exc}", file=sys.stderr)
        return EXIT_GATE_FAILED
    except KeyboardInterrupt:
        print("weightgate: interrupted", file=sys.stderr)
        return EXIT_INCOMPLETE
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
