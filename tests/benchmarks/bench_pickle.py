"""Time to scan the corpus's pickle files: weightgate against picklescan and fickling.

The files are every corpus file whose content ``detect_format`` calls a pickle (plain
pickles, protocol 0-5, joblib/dill dumps; not zip checkpoints). Each tool is called
in-process on each file, the way its own scanner handles one file:

- weightgate: ``weightgate.scan.engine.scan_file``, the engine's per-file step: SHA-256 of
  the file, mmap, detection, then the pickle scanner (a static emulation of the pickle
  machine with stack and memo). Hashing is included because a scan always hashes.
- picklescan: ``picklescan.scanner.scan_file_path`` (its globals scan, no hashing).
- fickling: ``fickling.scan_file(path, graceful=True)`` (static decompilation into an AST
  and its safety analyses, no hashing).

None of these unpickles anything. Each round times all files per tool; the tools take
turns going first, and the figure is the median round.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.benchmarks.measure import Row, Table, median

PICKLESCAN_TARGET = 1.0
FICKLING_TARGET = 5.0


@dataclass(frozen=True)
class CorpusFile:
    """One pickle of the corpus and the verdict the MANIFEST expects."""

    path: Path
    expected: str


def pickle_files(corpus: Path) -> list[CorpusFile]:
    """The corpus files whose content is a pickle, in MANIFEST order."""
    from weightgate.formats.detect import FileFormat, detect_format

    found = []
    with open(corpus / "MANIFEST.tsv", newline="") as manifest:
        for row in csv.DictReader(manifest, delimiter="\t"):
            path = corpus / row["path"]
            if not path.is_file():
                continue
            # detect_format takes the whole content (it reads only the head of it)
            if detect_format(path.read_bytes(), path.name) is FileFormat.PICKLE:
                found.append(CorpusFile(path, row["expected"]))
    return found


Scanner = Callable[[Path], bool]
"""Scan one file; True when the tool flags it (or fails on it, which a gate treats alike)."""


def weightgate_scanner() -> Scanner:
    """The engine's per-file step with default settings; flagged = gate fails."""
    from weightgate.scan.engine import scan_file
    from weightgate.scan.settings import ScanSettings

    settings = ScanSettings()

    def scan(path: Path) -> bool:
        result = scan_file(path, path.name, settings)
        return any(finding.severity >= settings.fail_on for finding in result.findings)

    return scan


def picklescan_scanner() -> Scanner:
    """picklescan's file entry point; flagged = infected, or the scan errored."""
    from picklescan.scanner import scan_file_path

    def scan(path: Path) -> bool:
        try:
            result = scan_file_path(str(path))
        except Exception:  # it raises on some malformed files; count as flagged
            return True
        return bool(result.infected_files or result.issues_count or result.scan_err)

    return scan


def fickling_scanner() -> Scanner:
    """fickling's static file scan; flagged = not likely safe, or errors."""
    import fickling

    def scan(path: Path) -> bool:
        try:
            result = fickling.scan_file(str(path), graceful=True)
        except Exception:  # graceful mode still raises on a few inputs
            return True
        return not bool(result)

    return scan


def time_round(scanner: Scanner, files: list[CorpusFile]) -> tuple[float, list[bool]]:
    """Seconds to scan every file once, and what was flagged."""
    start = time.perf_counter()
    verdicts = [scanner(item.path) for item in files]
    return time.perf_counter() - start, verdicts


def detection(files: list[CorpusFile], verdicts: list[bool]) -> str:
    """'m/M malicious flagged, b/B benign flagged' against the MANIFEST labels."""
    malicious = [v for f, v in zip(files, verdicts, strict=True) if f.expected == "malicious"]
    benign = [v for f, v in zip(files, verdicts, strict=True) if f.expected == "benign"]
    return f"flags {sum(malicious)}/{len(malicious)} malicious, {sum(benign)}/{len(benign)} benign"


REFERENCES: dict[str, tuple[Callable[[], Scanner], float]] = {
    "picklescan": (picklescan_scanner, PICKLESCAN_TARGET),
    "fickling": (fickling_scanner, FICKLING_TARGET),
}
"""Each reference tool: how to make its scanner, and how many times faster we aim to be."""


def bench_pickle_corpus(
    corpus: Path,
    repeats: int,
    table: Table,
    log: Callable[[str], None],
    references: tuple[str, ...] = tuple(REFERENCES),
) -> dict[str, float]:
    """Median round time per tool; adds one ratio row per reference to ``table``."""
    files = pickle_files(corpus)
    size = sum(item.path.stat().st_size for item in files)
    log(f"pickle corpus: {len(files)} files, {size / 1e6:.2f} MB, {repeats} rounds")
    scanners = {"weightgate": weightgate_scanner()}
    scanners.update({name: REFERENCES[name][0]() for name in references})
    names = list(scanners)
    rounds: dict[str, list[float]] = {name: [] for name in names}
    verdicts: dict[str, list[bool]] = {}
    # picklescan logs and fickling prints a warning per odd file; the figures are about
    # time, not about those lines, so they go to /dev/null (for every tool alike).
    logging.disable(logging.WARNING)
    try:
        with (
            open(os.devnull, "w") as null,
            contextlib.redirect_stdout(null),
            contextlib.redirect_stderr(null),
        ):
            for name in names:  # warm-up: imports, caches, page cache
                _, verdicts[name] = time_round(scanners[name], files)
            for round_number in range(repeats):
                shift = round_number % len(names)
                for name in names[shift:] + names[:shift]:
                    seconds, _ = time_round(scanners[name], files)
                    rounds[name].append(seconds)
    finally:
        logging.disable(logging.NOTSET)
    medians = {name: median(times) for name, times in rounds.items()}
    for name in names:
        per_file = medians[name] / len(files) * 1e3
        log(
            f"  {name:<11} {medians[name] * 1e3:8.1f} ms  ({per_file:.2f} ms/file)  "
            f"{detection(files, verdicts[name])}"
        )
    ours = medians["weightgate"]
    for reference in references:
        target = REFERENCES[reference][1]
        ratio = medians[reference] / ours
        table.add(
            Row(
                f"pickle corpus ({len(files)} files) vs {reference}",
                f"{ours * 1e3:.0f} ms",
                f"{reference} {medians[reference] * 1e3:.0f} ms",
                f"{ratio:.2f}x",
                f">= {target:g}x",
                "met" if ratio >= target else "NOT MET",
            )
        )
    return medians
